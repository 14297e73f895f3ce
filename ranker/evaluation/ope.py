"""Off-policy preview: a candidate policy's value estimated from logged rankings, before it gets traffic.

Every logged slate was sampled position by position by the policy that served
it, with each position's log-probability logged (``ranker.live.events``). Replaying
the slates (``ranker.learning.replay.replay``) gives, at every position t of ranking
i, the candidate's probability of the logged choice, and so the per-decision
importance weight ``w[i,t] = prod_{s<=t} pi(a_s | x_s) / mu(a_s | x_s)``
(Precup et al. 2000). The value of a policy is the expected sum of the
positions' rewards (click 0.1, cart 0.3, purchase 1.0 by default), and:

- IPS: ``1/n sum_i sum_t w[i,t] r[i,t]``: unbiased, high variance;
- SNIPS: per position, the weighted mean ``sum_i w[i,t] r[i,t] / sum_i w[i,t]``,
  summed over positions: slightly biased, far steadier;
- DR (doubly robust, per decision; Jiang and Li 2016): a reward model
  ``q(x, a)`` (ridge regression of a position's reward on the chosen item's
  features) plus the importance-weighted correction of its errors,
  ``1/n sum_i sum_t [ w[i,t] (r[i,t] - q(x_t, a_t)) + w[i,t-1] sum_a pi(a|x_t) q(x_t, a) ]``;
  unbiased when either the weights or the model are right.

Intervals: 95% percentile bootstrap over rankings. Rankings without
propensities (greedy, retrieval-order or interleaved slates) cannot be
used and are counted as skipped. The effective sample size
``(sum w)^2 / sum w^2`` of the last position says how much the logs can say
about the candidate: far below the number of rankings, the candidate acts
unlike the logging policy and the intervals are wide.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ranker.learning.config import LearnerConfig
from ranker.learning.join import Joiner, Trajectory, replayable
from ranker.learning.replay import Steps, action_log_probs, replay
from ranker.live.events import EventLog
from ranker.ranking.policy import RankingPolicy

RIDGE = 1.0


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


def _positions(trajectory: np.ndarray) -> np.ndarray:
    """Each step's position in its ranking (steps are stored ranking by ranking, in position order)."""
    starts = np.r_[0, np.flatnonzero(np.diff(trajectory)) + 1]
    lengths = np.diff(np.r_[starts, len(trajectory)])
    return np.arange(len(trajectory)) - np.repeat(starts, lengths)


def fit_reward_model(steps: Steps) -> np.ndarray:
    """Ridge coefficients predicting a position's reward from the chosen item's features (and a bias)."""
    x = steps.features[np.arange(len(steps.actions)), steps.actions]
    x = np.c_[x, np.ones(len(x))]
    gram = x.T @ x + RIDGE * np.eye(x.shape[1])
    return np.linalg.solve(gram, x.T @ steps.rewards)


def estimate(candidate: RankingPolicy, trajectories: Sequence[Trajectory], *, resamples: int = 500, seed: int = 0) -> dict[str, Any]:
    """IPS, SNIPS and DR values of ``candidate`` on ``trajectories``, each with a bootstrap 95% interval."""
    n = len(trajectories)
    if n == 0:
        return {"rankings": 0, "logged_value": None, "estimators": {}, "effective_sample_size": None}
    steps = replay(trajectories)
    log_pi = action_log_probs(candidate, steps)
    pi = np.exp(log_pi)
    rows = np.arange(len(steps.actions))
    ratio_log = np.clip(log_pi[rows, steps.actions] - steps.old_log_probs, -20.0, 20.0)
    position = _positions(steps.trajectory)
    # the log-ratio summed from the ranking's first position to this one
    running = np.cumsum(ratio_log)
    start = rows - position
    within = running - (running[start] - ratio_log[start])
    weights = np.exp(within)  # w[i,t]
    previous = np.exp(within - ratio_log)  # w[i,t-1], 1 at the first position
    coef = fit_reward_model(steps)
    q_all = np.c_[steps.features.reshape(-1, steps.features.shape[2]), np.ones(steps.features.shape[0] * steps.features.shape[1])] @ coef
    q_all = q_all.reshape(steps.features.shape[:2])
    q_chosen = q_all[rows, steps.actions]
    q_expected = (pi * np.where(steps.mask > 0, q_all, 0.0)).sum(axis=1)
    rewards = steps.rewards
    dr_terms = weights * (rewards - q_chosen) + previous * q_expected

    positions = int(position.max()) + 1

    def values(counts: np.ndarray) -> dict[str, float]:
        """The estimates on a (re)sample of rankings: ``counts[i]`` copies of ranking i."""
        c = counts[steps.trajectory]
        total = counts.sum()
        mass = np.bincount(position, weights=c * weights, minlength=positions)
        gained = np.bincount(position, weights=c * weights * rewards, minlength=positions)
        return {
            "ips": float(gained.sum() / total),
            "snips": float((gained[mass > 0] / mass[mass > 0]).sum()),
            "dr": float((c * dr_terms).sum() / total),
            "logged": float((c * rewards).sum() / total),
        }

    point = values(np.ones(n))
    rng = np.random.default_rng(seed)
    draws = [values(np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)) for _ in range(resamples)]
    estimators = {}
    for name in ("ips", "snips", "dr"):
        low, high = np.percentile([draw[name] for draw in draws], [2.5, 97.5])
        estimators[name] = {"value": point[name], "ci95": [float(low), float(high)]}
    last = weights[position == position.max()]
    return {
        "rankings": n,
        "logged_value": point["logged"],
        "estimators": estimators,
        "effective_sample_size": float(last.sum() ** 2 / max((last**2).sum(), 1e-300)),
    }
