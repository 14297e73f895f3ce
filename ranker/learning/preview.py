"""Off-policy preview: a candidate policy's value estimated from the latest logged rankings, before it gets
traffic (``GET /v1/policies/<version>/estimate``, ``ranker ab estimate``).

The logged slates are joined with their feedback (:mod:`ranker.learning.join`), replayed into the policy's
inputs (:mod:`ranker.learning.replay`) and handed to the estimators of :mod:`ranker.evaluation.ope`; the figures
mean what that module says. Rankings without propensities (greedy, retrieval-order or interleaved slates)
cannot be used and are counted as skipped.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ranker.evaluation.ope import ESTIMATORS, effective_sample_size, ridge_reward_model
from ranker.learning.config import LearnerConfig
from ranker.learning.join import Joiner, Trajectory, replayable
from ranker.learning.replay import logged_data, replay
from ranker.live.events import EventLog
from ranker.ranking.policy import RankingPolicy


def logged_trajectories(
    events: EventLog, *, rankings: int, config: LearnerConfig | None = None, now: float | None = None
) -> tuple[list[Trajectory], dict[str, int]]:
    """The latest ``rankings`` logged rankings joined with their feedback (those past the label delay), and what was skipped."""
    config = config or LearnerConfig()
    now = time.time() if now is None else now
    latest = events.client.xrevrange(events.rankings_stream, count=rankings)
    if not latest:
        return [], {}
    joiner = Joiner(config)
    oldest = min(entry_id for entry_id, _ in latest)
    for entry_id, ranking in events.rankings(start=oldest):
        joiner.add_ranking(entry_id, ranking, now)
    for entry_id, interaction in events.interactions(start=oldest):
        joiner.add_interaction(entry_id, interaction, now)
    ready = joiner.ready(now)
    skipped: dict[str, int] = {"waiting": len(joiner.pending)}
    kept = []
    for trajectory in ready:
        problem = replayable(trajectory)
        if problem is None:
            kept.append(trajectory)
        else:
            skipped[problem] = skipped.get(problem, 0) + 1
    return kept, skipped


def estimate(candidate: RankingPolicy, trajectories: Sequence[Trajectory], *, resamples: int = 500, seed: int = 0) -> dict[str, Any]:
    """IPS, SNIPS and DR values of ``candidate`` on ``trajectories``, each with a bootstrap 95% interval."""
    if not trajectories:
        return {"rankings": 0, "logged_value": None, "estimators": {}, "effective_sample_size": None}
    steps = replay(trajectories)
    data = logged_data(candidate, steps)
    q = ridge_reward_model(steps.features, steps.mask, steps.actions, data["reward"])
    estimators = {}
    for name, estimator in ESTIMATORS.items():
        interval = estimator().estimate_interval(**data, estimated_rewards_by_reg_model=q, n_bootstrap_samples=resamples, random_state=seed)
        estimators[name] = {"value": interval.value, "ci95": interval.ci}
    return {
        "rankings": len(trajectories),
        "logged_value": float(data["reward"].sum() / len(trajectories)),
        "estimators": estimators,
        "effective_sample_size": effective_sample_size(data["ranking"], data["position"], data["action"], data["pscore"], data["action_dist"]),
    }
