"""How an experiment's arms compose a slate: the serving policy's, the assigned arm's, or a team-draft interleaving
of the two arms' rankings, and what the response says about who served it.

:class:`ranker.serving.RankingService` calls :func:`compose` for every ranking, with the user's assignment (None
outside every experiment) and a way to load an arm's policy version.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ranker.experiments.interleaving import team_draft
from ranker.experiments.store import RETRIEVAL_ARM, Assignment
from ranker.ranking.features import Observation
from ranker.ranking.policy import Ranking, RankingPolicy


@dataclass
class Composed:
    """A slate and who composed it: the serving policy, an experiment's arm, or an interleaving of two."""

    ranking: Ranking
    version: str
    temperature: float
    arm: str | None = None
    teams: list[int] | None = None
    policy: RankingPolicy | None = None  # the one policy that placed every item (None: retrieval order, interleaving)


@dataclass
class Sampling:
    """How a request's slate is drawn: the temperature (0: greedy), the entropy target and the cold-start bonus."""

    temperature: float
    target_entropy: float | None = None
    bonus: np.ndarray | None = None  # [K] logit bonuses (ranker.ranking.policy.cold_start_bonus)

    def rank(self, policy: RankingPolicy, observation: Observation, num_results: int, rng: np.random.Generator) -> Ranking:
        return policy.rank(observation, num_results, temperature=self.temperature or None, rng=rng, target_entropy=self.target_entropy, bonus=self.bonus)


def compose(
    observation: Observation,
    retrieval_scores: np.ndarray,
    num_results: int,
    sampling: Sampling,
    policy: RankingPolicy,
    assignment: Assignment | None,
    *,
    serving_version: str,
    load_policy: Callable[[str], RankingPolicy | None],
    rng: np.random.Generator,
) -> Composed | None:
    """The slate: the serving policy's, the assigned arm's, or a team-draft interleaving of the two arms' rankings
    (None when an arm's policy cannot be loaded: ``load_policy`` gives None for a version)."""
    temperature = sampling.temperature
    if assignment is None:
        ranking = sampling.rank(policy, observation, num_results, rng)
        return Composed(ranking, serving_version, ranking.temperature or temperature, policy=policy)
    experiment = assignment.experiment
    if experiment.mode == "ab":
        arm = experiment.arms[assignment.arm]
        if arm.policy == RETRIEVAL_ARM:
            return Composed(retrieval_order(retrieval_scores, num_results), RETRIEVAL_ARM, 0.0, arm=arm.name)
        arm_policy = load_policy(arm.policy)
        if arm_policy is None:
            return None
        ranking = sampling.rank(arm_policy, observation, num_results, rng)
        return Composed(ranking, arm.policy, ranking.temperature or temperature, arm=arm.name, policy=arm_policy)
    rankings = []
    for arm in experiment.arms:  # interleaving: each arm's greedy ranking
        if arm.policy == RETRIEVAL_ARM:
            rankings.append(retrieval_order(retrieval_scores, num_results))
            continue
        arm_policy = load_policy(arm.policy)
        if arm_policy is None:
            return None
        rankings.append(arm_policy.rank(observation, num_results))
    slots, teams = team_draft(rankings[0].slots, rankings[1].slots, num_results, rng)
    scores = np.zeros(max(len(ranking.scores) for ranking in rankings))
    for slot, team in zip(slots, teams):  # each item keeps the score its team's ranker gave it
        scores[slot] = rankings[team].scores[slot]
    version = "interleaved:" + ",".join(arm.policy for arm in experiment.arms)
    return Composed(Ranking(slots=[int(slot) for slot in slots], scores=scores), version, 0.0, teams=[int(team) for team in teams])


def served_by(assignment: Assignment | None, composed: Composed) -> dict[str, Any] | None:
    """The response's ``experiment``: which experiment, mode and arm served (and each position's team when interleaved)."""
    if assignment is None:
        return None
    experiment = assignment.experiment
    served: dict[str, Any] = {"experiment_id": experiment.experiment_id, "mode": experiment.mode, "arm": composed.arm}
    if composed.teams is not None:
        served["teams"] = [experiment.arms[team].name for team in composed.teams]
    return served


def retrieval_order(retrieval_scores: np.ndarray, num_results: int) -> Ranking:
    """The baseline arm's slate: the candidates as retrieval ordered them (the engine's fused score, best first)."""
    return Ranking(slots=list(range(min(num_results, len(retrieval_scores)))), scores=np.asarray(retrieval_scores, dtype=np.float64))
