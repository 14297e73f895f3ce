"""``SlateShopping``: the ranking MDP of DESIGN.md as a Gymnasium environment.

One episode composes one slate for one simulated search: L steps, each
placing one of K retrieved candidates at the next position.

- Observation (``Dict``): ``features`` [K, F] from :mod:`ranker.ranking.features`
  (the same code that serves live traffic), ``mask`` [K] (1 = still
  available), ``position`` (t; L after the last step) and ``context``.
- Action: ``Discrete(K)``; :meth:`SlateShoppingEnv.action_masks` gives the
  valid ones (for sb3-contrib's MaskablePPO). A masked action (an item
  already placed, an empty slot) places nothing: reward 0, the same state,
  ``info["masked"]`` true, as in sb3-contrib's masked-action example, so an
  agent that ignores the mask still runs; after K masked actions in one
  session the episode is truncated. An action outside ``[0, K)`` or a step
  after the episode ended raises :class:`InvalidActionError`.
- Reward: the outcome of the item just placed, under the click model:
  ``w_click [click] + w_cart [cart] + w_purchase [purchase] * value``.
  Outcomes depend only on positions <= t, so the reward is causal.

**The world.** Popularity counters and user profiles persist across episodes
(each finished slate counts as impressions, its clicks and purchases update
the counters and the user's profile), so personal features fill in as users
come back. ``reset(seed=s)`` starts a new world from ``s``: new hidden
preferences, warm counters, no profiles. Sessions and outcomes draw from two
separate streams of the world, and a session always takes the same number of
draws, so every policy evaluated from the same seed meets the same shoppers
with the same searches, in the same order.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.catalog import SimCatalog, load_sim_catalog
from envs.click_models import make_click_model
from envs.config import ConfigError, EnvConfig, make_config
from envs.shoppers import Session, Utilities, World
from ranker.ranking.features import (
    CONTEXT_FEATURES,
    FEATURES,
    CandidateSet,
    FeatureBuilder,
    SlateFeatures,
    UserProfile,
    examination_prior,
)
from ranker.ranking.objective import objective_of_purchase_value, purchase_values

MAX_SIM_COLUMN = FEATURES.index("max_sim_to_placed")
# Features are similarities, shares, z-scores over K and log-price gaps: far inside this.
FEATURE_BOUND = 1_000.0


class InvalidActionError(ValueError):
    """An action outside the action space, or a step after the episode ended (a masked action is a no-op instead)."""


class SlateShoppingEnv(gym.Env):
    """Compose a slate of ``slate_size`` items from ``n_candidates`` for a simulated shopper."""

    metadata = {"render_modes": ["ansi"]}

    def __init__(self, catalog: SimCatalog | str = "demo", *, render_mode: str | None = None, **config: Any):
        self.config: EnvConfig = make_config(**config)
        if render_mode not in (None, "ansi"):
            raise ConfigError(f"render_mode: unsupported {render_mode!r}; use 'ansi' or None", parameter="render_mode", value=render_mode)
        self.render_mode = render_mode
        self.catalog = load_sim_catalog(catalog)
        k, length = self.config.n_candidates, self.config.slate_size
        if length > self.catalog.n_items:
            raise ConfigError(f"slate_size: {length} positions, but the catalog has only {self.catalog.n_items} items", parameter="slate_size", value=length)
        shopper = self.config.shopper
        self.click_model = make_click_model(shopper.click_model, length, position_bias=shopper.position_bias, examination=shopper.examination)
        self.builder = FeatureBuilder(k, length)
        weights = self.config.reward_weights
        self._w_click, self._w_cart, self._w_purchase = weights["click"], weights["add_to_cart"], weights["purchase"]
        self.action_space = spaces.Discrete(k)
        self.observation_space = spaces.Dict(
            {
                "features": spaces.Box(-FEATURE_BOUND, FEATURE_BOUND, shape=(k, len(FEATURES)), dtype=np.float32),
                "mask": spaces.MultiBinary(k),
                "position": spaces.Discrete(length + 1),
                "context": spaces.Box(-FEATURE_BOUND, FEATURE_BOUND, shape=(len(CONTEXT_FEATURES),), dtype=np.float32),
            }
        )
        self.world: World | None = None
        self.world_seed: int | None = None
        self.episode = 0

    # ------------------------------------------------------------ the world
    def _new_world(self, seed: int) -> None:
        self.world_seed = seed
        self.world = World(self.catalog, self.config.shopper, seed, slate_size=self.config.slate_size)
        self.counts = self.world.initial_counts.copy()
        self.profiles: dict[int, UserProfile] = {}
        self.episode = 0
        # Two streams: sessions take a fixed number of draws each, so the n-th
        # session of a world is the same whatever the policy did before it.
        self._session_rng = np.random.default_rng([seed, 0])
        self._rng = np.random.default_rng([seed, 1])

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start a session. ``options``: ``{"user": u}`` picks the shopper."""
        super().reset(seed=seed)
        if seed is not None or self.world is None:
            self._new_world(int(seed) if seed is not None else int(self.np_random.integers(2**62)))
        assert self.world is not None and self.world_seed is not None
        self.episode += 1
        user = (options or {}).get("user")
        if user is not None and not 0 <= int(user) < self.config.shopper.n_users:
            raise ConfigError(f"options.user: must be in [0, {self.config.shopper.n_users}), got {user}", parameter="options.user", value=user)
        self.session: Session = self.world.sample_session(self._session_rng, user=None if user is None else int(user))
        catalog = self.catalog
        bank = catalog.intents
        assert bank is not None
        query = self.session.query
        if self.config.parse_queries and "text" in self.session.mode and bank.parsed[query] >= 0:
            query = int(bank.parsed[query])  # the parsed twin: the rest of the text, the price filter, the intent
        found = catalog.retrieve(query, self.session.mode, self.config.n_candidates, image_noise=self.config.shopper.image_query_noise)
        self.rows = found.rows
        vectors = catalog.text[self.rows]
        candidates = CandidateSet(
            item_ids=catalog.item_id_array[self.rows].tolist(),
            categories=catalog.category_of_row[self.rows].tolist(),
            brands=catalog.brand_of_row[self.rows].tolist(),
            prices=catalog.prices[self.rows],
            has_image=catalog.has_image[self.rows],
            text_vectors=vectors,
            retrieval_scores=found.fused,
            channel_scores=found.channels,
            colours=catalog.colour_of_row[self.rows].tolist(),
        )
        observation = self.builder.build(
            candidates,
            counts=self.counts[self.rows],
            profile=self.profiles.get(self.session.user) or UserProfile(),
            query_has_text="text" in self.session.mode,
            query_has_image="image" in self.session.mode,
            intent=bank.intent(query, catalog.brand_names, catalog.colour_names),
        )
        self.slate = SlateFeatures(observation, self.config.slate_size)
        self.utilities: Utilities = self.world.utilities(self.session, self.rows, vectors).padded(self.config.n_candidates)
        values = purchase_values(objective_of_purchase_value(self.config.purchase_value), catalog.prices[self.rows], catalog.median_price)
        self._values = values if len(values) == self.config.n_candidates else np.pad(values, (0, self.config.n_candidates - len(values)))
        self._active = True
        self._masked_steps, self._truncated = 0, False
        self.outcomes: list[tuple[int, bool, bool, bool, bool]] = []  # (slot, examined, click, cart, purchase)
        info = {
            "user": self.session.user,
            "query": catalog.query_texts[self.session.query],
            "mode": self.session.mode,
            "target_item": catalog.item_ids[self.session.target],
            "n_candidates": len(self.rows),
        }
        return self._observation(), info

    # ---------------------------------------------------------------- steps
    def action_masks(self) -> np.ndarray:
        """[K] bool: the candidates that may be placed next."""
        return self.slate.available.copy()

    def step(self, action: int) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        slot = int(action)
        position = len(self.slate.placed)
        if position >= self.config.slate_size or self._truncated or not self.slate.available.any():
            raise InvalidActionError("action: the slate is complete; call reset() to start the next session")
        if not 0 <= slot < self.config.n_candidates:
            raise InvalidActionError(f"action: {slot} is out of range [0, {self.config.n_candidates})")
        if not self.slate.available[slot]:
            return self._masked_step(slot, position)
        discount = self._discount(slot)
        attraction = float(self.utilities.attraction[slot] * discount)
        rng = self._rng
        examined = self.click_model.examined(position, self._active, rng)
        click = cart = purchase = False
        if examined:
            click = bool(rng.random() < attraction)
            cart = click and bool(rng.random() < self.utilities.cart[slot] * discount)
            purchase = cart and bool(rng.random() < self.utilities.purchase[slot])
            self._active = self.click_model.goes_on(click, purchase, self.utilities.patience, rng)
        reward = self._w_click * click + self._w_cart * cart + self._w_purchase * purchase * self._value(slot)
        self.slate.place(slot)
        self.outcomes.append((slot, examined, click, cart, purchase))
        terminated = position + 1 == self.config.slate_size or not self.slate.available.any()  # a price filter can leave fewer than L
        if terminated:
            self._commit()
        info = {
            "item_id": self.catalog.item_ids[self.rows[slot]],
            "position": position,
            "examined": examined,
            "click": click,
            "add_to_cart": cart,
            "purchase": purchase,
            "revenue": float(self.catalog.prices[self.rows[slot]]) if purchase else 0.0,
            "attraction": attraction,
            "masked": False,
        }
        return self._observation(), float(reward), terminated, False, info

    def _masked_step(self, slot: int, position: int) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """A masked candidate places nothing and the shopper sees nothing: reward 0, the same observation. K of them
        in one session truncate it (the slate shown so far becomes history), so an agent blind to the mask ends."""
        self._masked_steps += 1
        self._truncated = self._masked_steps >= self.config.n_candidates
        if self._truncated:
            self._commit()
        reason = "already placed" if slot in self.slate.placed else "an empty slot (fewer candidates than K)"
        info = {"item_id": None, "position": position, "examined": False, "click": False, "add_to_cart": False, "purchase": False}
        info.update({"revenue": 0.0, "attraction": 0.0, "masked": True, "masked_reason": f"candidate {slot} is masked ({reason})"})
        return self._observation(), 0.0, False, self._truncated, info

    def _discount(self, slot: int) -> float:
        """The near-duplicate factor of ``slot`` at the next position (applies to attraction and cart)."""
        if not self.slate.placed:
            return 1.0
        return self.world.duplicate_factor_one(float(self.slate.features[slot, MAX_SIM_COLUMN]))  # type: ignore[union-attr]

    def _value(self, slot: int) -> float:
        return float(self._values[slot])

    def _commit(self) -> None:
        """The finished slate becomes history: impressions, clicks, purchases, the user's profile."""
        catalog = self.catalog
        profile = self.profiles.get(self.session.user) or UserProfile()
        for position, (slot, _examined, click, cart, purchase) in enumerate(self.outcomes):
            row = self.rows[slot]
            self.counts[row, 0] += 1
            self.counts[row, 1] += click
            self.counts[row, 2] += purchase
            self.counts[row, 3] += examination_prior(position)
            for kind, happened in (("click", click), ("add_to_cart", cart), ("purchase", purchase)):
                if happened:
                    profile.record(
                        kind=kind,
                        category=catalog.category_names[catalog.category_codes[row]],
                        brand=catalog.brand_names[catalog.brand_codes[row]],
                        price=float(catalog.prices[row]),
                        text_vector=catalog.text[row],
                    )
        if profile.n_interactions:
            self.profiles[self.session.user] = profile

    def _observation(self) -> dict[str, Any]:
        return {
            "features": self.slate.features.copy(),
            "mask": self.slate.available.astype(np.int8),
            "position": len(self.slate.placed),
            "context": self.slate.observation.context.copy(),
        }

    # --------------------------------------------------------- ground truth
    def expected_rewards(self) -> tuple[np.ndarray, np.ndarray]:
        """(r, c) per candidate if placed next: expected reward when examined, and continuation.

        Uses the simulator's true probabilities and the discounts for what is
        already placed; -inf reward for masked candidates.
        """
        max_similarity = self.slate.features[:, MAX_SIM_COLUMN] if self.slate.placed else np.zeros(len(self.slate.available))
        discount = self.world.duplicate_factor(max_similarity)  # type: ignore[union-attr]
        reward, probabilities = self._expected(np.arange(len(discount)), discount)
        continuation = self.click_model.continuation(*probabilities, self.utilities.patience)
        return np.where(self.slate.available, reward, -np.inf), continuation

    def intent_blind_expected_rewards(self) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`expected_rewards` without the hidden target: every user and item parameter known, but the
        relevance term reads the cosine of each candidate to the *query* (its MiniLM vector) instead of the cosine
        to the item the shopper has in mind. A picture query shows the target itself, so sessions that search
        with a picture keep the target's relevance. What a policy that learnt everything else could reach."""
        if getattr(self, "_blind_session", None) != (self.world_seed, self.episode):
            utilities = self.utilities
            if self.session.mode == "text":
                vectors = self.catalog.text[self.rows]
                relevance = vectors @ self.catalog.query_text[self.session.query]
                utilities = self.world.utilities(self.session, self.rows, vectors, relevance=relevance).padded(self.config.n_candidates)  # type: ignore[union-attr]
            self._blind, self._blind_session = utilities, (self.world_seed, self.episode)
        max_similarity = self.slate.features[:, MAX_SIM_COLUMN] if self.slate.placed else np.zeros(len(self.slate.available))
        discount = self.world.duplicate_factor(max_similarity)  # type: ignore[union-attr]
        utilities = self._blind
        attraction, cart, purchase = utilities.attraction * discount, utilities.cart * discount, utilities.purchase
        reward = attraction * (self._w_click + cart * (self._w_cart + purchase * self._w_purchase * self._values))
        continuation = self.click_model.continuation(attraction, cart, purchase, utilities.patience)
        return np.where(self.slate.available, reward, -np.inf), continuation

    def expected_slate_reward(self, slots: list[int]) -> float:
        """The exact expected reward of showing candidates ``slots`` in this order to this session's user."""
        vectors = self.slate.observation.text_vectors
        above = [max((float(vectors[slot] @ vectors[other]) for other in slots[:position]), default=0.0) for position, slot in enumerate(slots)]
        discount = self.world.duplicate_factor(np.array(above))  # type: ignore[union-attr]
        reward, probabilities = self._expected(np.asarray(slots), discount)
        return float(np.sum(self.click_model.examination(*probabilities, self.utilities.patience) * reward))

    def _expected(self, slots: np.ndarray, discount: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Expected reward if examined, and (attraction, cart, purchase) after the near-duplicate discount."""
        utilities = self.utilities
        attraction, cart, purchase = utilities.attraction[slots] * discount, utilities.cart[slots] * discount, utilities.purchase[slots]
        reward = attraction * (self._w_click + cart * (self._w_cart + purchase * self._w_purchase * self._values[slots]))
        return reward, (attraction, cart, purchase)

    # ------------------------------------------------------------ rendering
    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        lines = [
            f"user {self.session.user} searched {self.catalog.query_texts[self.session.query]!r} ({self.session.mode}); "
            f"wants {self.catalog.titles[self.session.target]!r}"
        ]
        for position, (slot, examined, click, cart, purchase) in enumerate(self.outcomes):
            row = self.rows[slot]
            outcome = "purchase" if purchase else "cart" if cart else "click" if click else "seen" if examined else "-"
            lines.append(f"{position + 1:>3}. {self.catalog.titles[row][:60]:<60} {self.catalog.prices[row]:>9.2f}  {outcome}")
        return "\n".join(lines)
