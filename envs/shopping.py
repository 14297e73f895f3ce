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
the counters; the user's profile records what they were shown, by brand,
colour and price level, and what they did with it), so personal features fill
in as users come back. ``reset(seed=s)`` starts a new world from ``s``: new
hidden preferences, warm counters, and the profiles of the world's history
(``history_sessions_per_user``, :mod:`envs.history`; none by default here).
Sessions and outcomes draw from two separate streams of the world, and a
session always takes the same number of draws, so every policy evaluated from
the same seed meets the same shoppers with the same searches, in the same
order.

The multi-page session (buy, page on, rephrase or leave after each page) is
:class:`envs.session.SessionShoppingEnv`; this environment is its single-page
special case.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.catalog import Retrieved, SimCatalog
from envs.click_models import make_click_model
from envs.config import ConfigError, EnvConfig, make_config
from envs.history import play_history, record_slate
from envs.shoppers import Session, Utilities, World
from envs.worlds import load_sim_catalog
from ranker.ranking.features import (
    CONTEXT_FEATURES,
    FEATURES,
    NO_SESSION,
    CandidateSet,
    FeatureBuilder,
    QueryPart,
    SessionState,
    SlateFeatures,
    UserProfile,
)
from ranker.ranking.objective import objective_of_purchase_value, purchase_values

MAX_SIM_COLUMN = FEATURES.index("max_sim_to_placed")
# Pages whose candidate names and query features are kept (shared by the environments of one catalog, K and
# retrieval depth): about 14 kB each at K=100, so at most ~57 MB; a bank query's page seen before skips that work.
QUERY_PAGES_KEPT = 4096
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
        # every item's purchase value under the objective, once: a page gathers its K
        self._row_values = purchase_values(objective_of_purchase_value(self.config.purchase_value), self.catalog.prices, self.catalog.median_price)
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
        self._page_serial = 0  # pages opened by this environment: what the oracles' caches are keyed on
        self.retrieval_depth = k  # how deep a query's retrieval reads (the session environment reads past K)

    @property
    def _query_pages(self) -> OrderedDict[tuple[int, str, bytes], tuple[tuple[list[str], ...], QueryPart]]:
        """The pages kept per (retrieving bank row, query mode, candidate rows), least recently used first."""
        key = ("query_pages", self.config.n_candidates, self.retrieval_depth, self.config.shopper.image_query_noise)
        pages = self.catalog._cache.get(key)
        if pages is None:
            pages = self.catalog._cache[key] = OrderedDict()
        return pages

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
        history = round(self.config.shopper.history_sessions_per_user * self.config.shopper.n_users)
        if history:  # a stream of its own: the sessions and outcomes above are those of a world without history
            play_history(self, history, np.random.default_rng([seed, 2]))

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
        self._start_session()
        info = {
            "user": self.session.user,
            "query": self.catalog.query_texts[self.session.query],
            "mode": self.session.mode,
            "target_item": self.catalog.item_ids[self.session.target],
            "n_candidates": len(self.rows),
        }
        return self._observation(), info

    def _start_session(self) -> None:
        """Show the new session its first page (the session environment also sets up its state here)."""
        self._open_page(self.session, self._retrieve(self.session.query))

    def _retrieved_query(self, query: int) -> int:
        """The bank row that retrieves for typed row ``query``: its parsed twin (the rest of the text, the price
        filter, the intent) when the service's parser reads one and ``parse_queries`` is on, else ``query``."""
        bank = self.catalog.intents
        assert bank is not None
        if self.config.parse_queries and "text" in self.session.mode and bank.parsed[query] >= 0:
            return int(bank.parsed[query])
        return query

    def _retrieve(self, query: int) -> Retrieved:
        """The retrieval for typed bank row ``query``: its top :attr:`retrieval_depth` (fewer when a price filter leaves
        fewer)."""
        depth = self.retrieval_depth
        return self.catalog.retrieve(self._retrieved_query(query), self.session.mode, depth, image_noise=self.config.shopper.image_query_noise)

    def _open_page(self, session: Session, found: Retrieved, state: SessionState = NO_SESSION) -> None:
        """Make the retrieved ``found`` (at most K) the candidates of a new page for ``session`` (in ``state``): its
        observation, the shopper's probabilities and the purchase values. What the page's query and candidates give
        the features is kept per (query, mode, candidates), so a page seen before skips that work."""
        catalog = self.catalog
        self._page_serial += 1
        rows = self.rows = found.rows
        vectors = catalog.text[rows]
        query = self._retrieved_query(session.query)
        key = (query, session.mode, rows.tobytes())
        known = self._query_pages.get(key)
        if known is None:
            names = (
                catalog.item_id_array[rows].tolist(),
                catalog.category_of_row[rows].tolist(),
                catalog.brand_of_row[rows].tolist(),
                catalog.colour_of_row[rows].tolist(),
            )
        else:
            self._query_pages.move_to_end(key)
            names, query_part = known
        candidates = CandidateSet(
            item_ids=names[0],
            categories=names[1],
            brands=names[2],
            prices=catalog.prices[rows],
            has_image=catalog.has_image[rows],
            text_vectors=vectors,
            retrieval_scores=found.fused,
            channel_scores=found.channels,
            colours=names[3],
            price_levels=catalog.price_level_of_row[rows],
        )
        bank = catalog.intents
        assert bank is not None
        intent = bank.intent(query, catalog.brand_names, catalog.colour_names)
        if known is None:
            query_part = self.builder.query_part(candidates, intent)
            self._query_pages[key] = (names, query_part)
            if len(self._query_pages) > QUERY_PAGES_KEPT:
                self._query_pages.popitem(last=False)
        observation = self.builder.build(
            candidates,
            counts=self.counts[rows],
            profile=self.profiles.get(session.user) or UserProfile(),
            query_has_text="text" in session.mode,
            query_has_image="image" in session.mode,
            intent=intent,
            session=state,
            query_part=query_part,
        )
        self.slate = SlateFeatures(observation, self.config.slate_size)
        k = self.config.n_candidates
        self.utilities: Utilities = self.world.utilities(session, rows, vectors).padded(k)  # type: ignore[union-attr]
        values = self._row_values[rows]
        if len(values) < k:
            values = np.concatenate([values, np.zeros(k - len(values))])
        self._values = values
        self._active = True
        self._masked_steps, self._truncated = 0, False
        self.outcomes: list[tuple[int, bool, bool, bool, bool]] = []  # (slot, examined, click, cart, purchase)

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
        examined, click, cart, purchase = self._outcome(position, slot, attraction, discount)
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

    def _outcome(self, position: int, slot: int, attraction: float, discount: float) -> tuple[bool, bool, bool, bool]:
        """(examined, click, cart, purchase) of candidate ``slot`` at ``position``, drawn from the outcome stream;
        whether the shopper reads on past it is kept for the next position."""
        rng = self._rng
        examined = self.click_model.examined(position, self._active, rng)
        click = cart = purchase = False
        if examined:
            click = bool(rng.random() < attraction)
            cart = click and bool(rng.random() < self.utilities.cart[slot] * discount)
            purchase = cart and bool(rng.random() < self.utilities.purchase[slot])
            self._active = self.click_model.goes_on(click, purchase, self.utilities.patience, rng)
        return examined, click, cart, purchase

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
        """The finished slate becomes history: impressions, clicks, purchases, and the user's profile (what they
        were shown, what they did with it)."""
        profile = self.profiles.get(self.session.user) or UserProfile()
        record_slate(self.catalog, self.counts, profile, self.rows[[slot for slot, *_ in self.outcomes]], self.outcomes)
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
        return self.phrase_expected_rewards(self.session.query)

    def phrase_expected_rewards(self, phrase: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`expected_rewards` with relevance read as the cosine to bank phrase ``phrase`` instead of to the
        hidden target (text sessions; a picture shows the target, so the others keep the target's relevance)."""
        key = (self.world_seed, self.episode, self._page_serial, phrase)
        if getattr(self, "_blind_key", None) != key:
            utilities = self.utilities
            if self.session.mode == "text":
                vectors = self.catalog.text[self.rows]
                relevance = vectors @ self.catalog.query_text[phrase]
                utilities = self.world.utilities(self.session, self.rows, vectors, relevance=relevance).padded(self.config.n_candidates)  # type: ignore[union-attr]
            self._blind, self._blind_key = utilities, key
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
