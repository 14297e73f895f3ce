"""Exact replay of logged decisions: the policy's inputs at every position of every logged slate, rebuilt from the
RankingEvent's feature snapshot, and the log-probabilities a policy gives the logged actions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ranker.learning.join import Trajectory
from ranker.live.events import RankingEvent
from ranker.ranking.features import FEATURES, SlateFeatures
from ranker.ranking.network import logged_log_softmax
from ranker.ranking.policy import SCORE_SCALE, RankingPolicy


class LoggedObservation:
    """The parts of :class:`ranker.ranking.features.Observation` that :class:`SlateFeatures` reads, from a logged event."""

    def __init__(self, event: RankingEvent):
        n = len(event.features)
        self.static = event.features
        self.context = event.context
        self.valid = np.ones(n, dtype=bool)
        self.category_codes = np.asarray(event.category_codes, dtype=np.int64)
        self._rows = {slot: row for row, slot in enumerate(event.slots)}
        self._similarity = event.placed_similarity

    def similarity_to(self, slot: int) -> np.ndarray:
        return self._similarity[self._rows[slot]]


@dataclass
class Steps:
    """Every logged decision of a batch, padded to the largest candidate set."""

    features: np.ndarray  # [N, K, F]
    mask: np.ndarray  # [N, K]
    context: np.ndarray  # [N, C]
    actions: np.ndarray  # [N]
    old_log_probs: np.ndarray  # [N]
    temperatures: np.ndarray  # [N]
    returns: np.ndarray  # [N] reward-to-go
    rewards: np.ndarray  # [N]
    trajectory: np.ndarray  # [N] index of the trajectory
    positions: np.ndarray  # [N] the position in its ranking
    outcomes: np.ndarray  # [N, 3] 0/1 click, add to cart, purchase of the placed item
    values: np.ndarray  # [N, K] each candidate's purchase value under the objective (1: purchases)
    normalised: np.ndarray  # [N] bool: the temperature is in standardised-score units (SCORE_SCALE)
    bonus: np.ndarray  # [N, K] the cold-start bonus each candidate's logit had when the decision was sampled


def replay(trajectories: Sequence[Trajectory], values_of: Callable[[Sequence[str]], np.ndarray] | None = None) -> Steps:
    """Rebuild the policy's inputs at every position of every logged slate. ``values_of``: the candidates' purchase
    values under the objective (:mod:`ranker.ranking.objective`); unset, 1."""
    k = max(len(t.event.features) for t in trajectories)
    rows: dict[str, list[Any]] = {name: [] for name in Steps.__dataclass_fields__}
    for index, trajectory in enumerate(trajectories):
        event = trajectory.event
        observation = LoggedObservation(event)
        slate = SlateFeatures(observation, event.slate_size or len(event.slots))  # fewer candidates than asked: fewer slots
        n = len(event.features)
        reward_to_go = np.cumsum(trajectory.rewards[::-1])[::-1]
        outcomes = trajectory.outcome_table()
        values = np.zeros(k, dtype=np.float32)
        values[:n] = 1.0 if values_of is None else values_of(event.candidate_ids)
        bonus = np.zeros(k, dtype=np.float32)
        for row, logit in (event.bonus or {}).items():
            bonus[int(row)] = logit
        for position, slot in enumerate(event.slots):
            features = np.zeros((k, len(FEATURES)), dtype=np.float32)
            features[:n] = slate.features
            mask = np.zeros(k, dtype=np.float32)
            mask[:n] = slate.available
            rows["features"].append(features)
            rows["mask"].append(mask)
            rows["context"].append(event.context)
            rows["actions"].append(slot)
            rows["old_log_probs"].append(
                event.log_probs[position] if event.log_probs else np.nan
            )  # imported history may lack propensities: the critic still fits on it
            rows["temperatures"].append(event.temperatures[position] if event.temperatures else event.temperature)
            rows["returns"].append(reward_to_go[position])
            rows["rewards"].append(trajectory.rewards[position])
            rows["trajectory"].append(index)
            rows["positions"].append(position)
            rows["outcomes"].append(outcomes[position])
            rows["values"].append(values)
            rows["normalised"].append(event.score_scale == SCORE_SCALE)
            rows["bonus"].append(bonus)
            slate.place(slot)
    return Steps(**{name: np.asarray(values, dtype=_DTYPES.get(name, np.float32)) for name, values in rows.items()})


_DTYPES = {"actions": np.int64, "trajectory": np.int64, "positions": np.int64, "normalised": bool}


def action_log_probs(policy: RankingPolicy, steps: Steps, device: torch.device | str = "cpu", *, chunk: int = 2048) -> np.ndarray:
    """[N, K] the network's log-probability of every candidate at every logged step, at the logged temperature, on the
    logged score scale (``chunk`` steps per forward pass, so memory stays bounded on long logs). The head's draw and
    the cold-start bonus belong to serving: what is replayed here is the network, the policy PPO trains."""
    net = policy.net.to(device)
    out = []
    with torch.no_grad():
        for start in range(0, len(steps.actions), chunk):
            rows = slice(start, start + chunk)
            mask = torch.as_tensor(steps.mask[rows], device=device)
            scores, _ = net(torch.as_tensor(steps.features[rows], device=device), torch.as_tensor(steps.context[rows], device=device), mask)
            temperatures = torch.as_tensor(steps.temperatures[rows], device=device)
            out.append(logged_log_softmax(scores, mask, temperatures, torch.as_tensor(steps.normalised[rows], device=device)).cpu().numpy())
    policy.net.to("cpu")
    return np.concatenate(out) if out else np.zeros((0, steps.mask.shape[1]), dtype=np.float32)


def log_probs_of(policy: RankingPolicy, steps: Steps, device: torch.device | str = "cpu") -> np.ndarray:
    """The policy's log-probability of each logged action, at the logged temperature."""
    return np.take_along_axis(action_log_probs(policy, steps, device), steps.actions[:, None], axis=1)[:, 0]


def logged_data(policy: RankingPolicy, steps: Steps, device: torch.device | str = "cpu") -> dict[str, np.ndarray]:
    """The logged decisions as the off-policy estimators take them (:mod:`ranker.evaluation.ope`), with
    ``policy`` as the evaluated one."""
    return {
        "ranking": steps.trajectory,
        "position": steps.positions,
        "action": steps.actions,
        "reward": steps.rewards.astype(np.float64),
        "pscore": np.exp(steps.old_log_probs.astype(np.float64)),
        "action_dist": np.exp(action_log_probs(policy, steps, device).astype(np.float64)),
    }
