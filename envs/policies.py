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
- ``sub_intent_oracle`` (session environment): the intent-blind oracle on a
  session's first page; from its second page on it is *told the sub-intent*,
  the bank phrase nearest the hidden target
  (:meth:`envs.session.SessionShoppingEnv.sub_intent_phrase`), and measures
  relevance to that phrase instead of the query: what reading the first
  page's clicks perfectly, down to the best words for the target, could give.

:class:`WithoutSession` runs any policy with the session features zeroed
(what a service without session state shows it: the first page's values).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ranker.ranking.features import CONTEXT_FEATURES, FEATURES

SESSION_FEATURES = ("sim_to_clicked", "shown_in_session")
SESSION_CONTEXT = ("session_page", "session_rephrasings", "session_clicks")

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


class SubIntentOraclePolicy(OraclePolicy):
    """The intent-blind oracle, told the sub-intent after the session's first page (session environment only)."""

    name = "sub_intent_oracle"

    def expected(self, simulator: Any) -> tuple[np.ndarray, np.ndarray]:
        return simulator.sub_intent_expected_rewards()


class WithoutSession:
    """``policy`` as a service without session state runs it: the session features read as on a first page with no
    click (``sim_to_clicked``, ``shown_in_session`` and the ``session_*`` context zeroed)."""

    columns = [FEATURES.index(name) for name in SESSION_FEATURES]
    context = [CONTEXT_FEATURES.index(name) for name in SESSION_CONTEXT]

    def __init__(self, policy: Policy, name: str | None = None):
        self.policy = policy
        self.name = name or f"{getattr(policy, 'name', 'policy')}_without_session"

    def __call__(self, env: Any, observation: dict[str, np.ndarray]) -> int:
        features, context = observation["features"].copy(), observation["context"].copy()
        features[:, self.columns] = 0.0
        context[self.context] = 0.0
        return self.policy(env, {**observation, "features": features, "context": context})


def reference_policies(seed: int = 0) -> dict[str, Policy]:
    """The reference set, in table order."""
    return {
        "random": RandomPolicy(seed),
        "retrieval": FeaturePolicy("retrieval", "retrieval_rank", ascending=True),
        "popularity": FeaturePolicy("popularity", "ctr"),
        "intent_blind_oracle": IntentBlindOraclePolicy(),
        "oracle": OraclePolicy(),
    }


def session_reference_policies(seed: int = 0) -> dict[str, Policy]:
    """The reference set of the session environment: :func:`reference_policies` and the sub-intent oracle."""
    policies = reference_policies(seed)
    oracle = policies.pop("oracle")
    return {**policies, "sub_intent_oracle": SubIntentOraclePolicy(), "oracle": oracle}
