"""Reference policies for the simulator: the floor, what shops use today, and the ceiling.

A policy here is a callable ``policy(env, observation) -> action`` that
places one candidate per call (the env is passed so the oracle can read the
simulator's ground truth; the others use only the observation).

- ``random``: a uniformly random available candidate.
- ``retrieval``: retrieval order (the fused retrieval score), what the
  service does without a learned policy.
- ``popularity``: highest smoothed click-through rate first (the shop's
  counters), ties in retrieval order.
- ``oracle``: knows every simulated user's true probabilities. It places
  the candidate with the highest index ``r / (1 - c)``, where ``r`` is the
  expected reward if examined and ``c`` the chance to go on past it (just
  ``r`` under the position-based model). With no near-duplicates this order
  is optimal for a scanning user (exchange argument: ``i`` before ``j`` iff
  ``r_i (1 - c_j) > r_j (1 - c_i)``). It reads the session's hidden target,
  which nothing a policy observes reveals, so it is an upper bound, not a
  reachable ceiling.
- ``intent_blind_oracle``: the same rule with every hidden user and item
  parameter known but relevance measured to the query (its vector) instead
  of to the hidden target. The fair ceiling: what a policy that learnt
  everything else could reach.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ranker.ranking.features import FEATURES

Policy = Callable[[Any, dict[str, np.ndarray]], int]


def best_available(scores: np.ndarray, mask: np.ndarray) -> int:
    """The available slot with the highest score; ties go to the lower slot (retrieval order)."""
    return int(np.argmax(np.where(mask.astype(bool), scores, -np.inf)))


class RandomPolicy:
    name = "random"

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)

    def __call__(self, env: Any, observation: dict[str, np.ndarray]) -> int:
        return int(self.rng.choice(np.flatnonzero(observation["mask"])))


class FeaturePolicy:
    """Highest value of one feature column first (negated with ``ascending``)."""

    def __init__(self, name: str, feature: str, *, ascending: bool = False):
        self.name = name
        self.column = FEATURES.index(feature)
        self.sign = -1.0 if ascending else 1.0

    def __call__(self, env: Any, observation: dict[str, np.ndarray]) -> int:
        return best_available(self.sign * observation["features"][:, self.column], observation["mask"])


class OraclePolicy:
    name = "oracle"

    def expected(self, simulator: Any) -> tuple[np.ndarray, np.ndarray]:
        return simulator.expected_rewards()

    def __call__(self, env: Any, observation: dict[str, np.ndarray]) -> int:
        simulator = env.unwrapped
        reward, continuation = self.expected(simulator)
        if not simulator.click_model.scans:
            return best_available(reward, observation["mask"])
        return best_available(reward / np.maximum(1.0 - continuation, 1e-9), observation["mask"])


class IntentBlindOraclePolicy(OraclePolicy):
    """The oracle without the session's hidden target: every user and item parameter known, relevance to the
    query instead of to the target (:meth:`envs.shopping.SlateShoppingEnv.intent_blind_expected_rewards`)."""

    name = "intent_blind_oracle"

    def expected(self, simulator: Any) -> tuple[np.ndarray, np.ndarray]:
        return simulator.intent_blind_expected_rewards()


def reference_policies(seed: int = 0) -> dict[str, Policy]:
    """The reference set, in table order."""
    return {
        "random": RandomPolicy(seed),
        "retrieval": FeaturePolicy("retrieval", "retrieval_rank", ascending=True),
        "popularity": FeaturePolicy("popularity", "ctr"),
        "intent_blind_oracle": IntentBlindOraclePolicy(),
        "oracle": OraclePolicy(),
    }
