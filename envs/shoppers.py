"""The shopper model: a population of users with hidden preferences, their intents and utilities.

A :class:`World` is the hidden truth of one simulated shop, drawn from a seed:
item quality and popularity, warm popularity counters, and every user's
category interests, brand affinities, budget, price sensitivity, patience and
activity. :meth:`World.sample_session` draws who shops and what for;
:meth:`World.utilities` gives the probabilities the click model and the
purchase model act on. Equations: ``envs/README.md``.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass

import numpy as np

from envs.catalog import SimCatalog
from envs.config import QUERY_MODES, ShopperConfig
from ranker.ranking.features import mean_examination


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def logit(p: float) -> float:
    return float(np.log(p / (1.0 - p)))


@dataclass(frozen=True)
class Session:
    """One search: the user, what they want, and how they asked for it."""

    user: int
    category: int  # code of the intended category
    target: int  # catalog row of the item the user has in mind
    query: int  # row of the query bank
    mode: str  # text, image or text+image
    log_budget: float  # this session's budget, log price
    price_limit: float | None = None  # the limit the query states ("under 60"): items above it lose utility
    colour: int = -1  # colour code the query states
    brand: int = -1  # brand code the query states


@dataclass
class Utilities:
    """Per-candidate probabilities for one session (before near-duplicate discounts)."""

    attraction: np.ndarray  # P(click | examined)
    cart: np.ndarray  # P(add to cart | click)
    purchase: np.ndarray  # P(purchase | add to cart)
    utility: np.ndarray  # the latent utility m
    patience: float  # gamma_u

    def padded(self, size: int) -> Utilities:
        """Zero probabilities for the empty slots past the candidates."""
        n = len(self.attraction)
        if size <= n:
            return self
        grown = np.zeros((4, size))
        grown[0, :n], grown[1, :n], grown[2, :n], grown[3, :n] = self.attraction, self.cart, self.purchase, self.utility
        return Utilities(grown[0], grown[1], grown[2], grown[3], self.patience)


class World:
    """Hidden preferences of a simulated shop's items and users, drawn from ``seed``."""

    def __init__(self, catalog: SimCatalog, config: ShopperConfig, seed: int, *, slate_size: int = 10):
        self.catalog = catalog
        self.config = config
        rng = np.random.default_rng([seed, 101])
        n, n_categories, n_brands, n_users = catalog.n_items, len(catalog.category_names), len(catalog.brand_names), config.n_users
        # items
        self.quality = config.quality_scale * rng.standard_normal(n)
        self.popularity = np.exp(config.popularity_spread * rng.standard_normal(n))
        impressions = rng.poisson(config.history_impressions * self.popularity / self.popularity.mean())
        clicks = rng.binomial(impressions, sigmoid(logit(0.05) + self.quality))
        purchases = rng.binomial(clicks, sigmoid(logit(0.1) + self.quality))
        # history without positions: each impression counts the mean examination prior as exposure
        exposure = impressions * mean_examination(slate_size)
        self.initial_counts = np.stack([impressions, clicks, purchases, exposure], axis=1).astype(np.float64)
        if config.cold_item_share > 0:  # new items: no history (a stream of its own, so the rest of the world is unchanged)
            self.initial_counts[np.random.default_rng([seed, 102]).random(n) < config.cold_item_share] = 0.0
        # users
        # only items with a query in the bank can be what a user looks for
        queryable = np.zeros(n, dtype=bool)
        queryable[list(catalog.queries_of_item)] = True
        present = np.bincount(catalog.category_codes[queryable], minlength=n_categories) > 0
        interests = rng.gamma(config.interest_concentration, size=(n_users, n_categories)) * present
        interests[interests.sum(axis=1) == 0] = present  # a user with no drawn interest browses everything
        self.interests = interests / interests.sum(axis=1, keepdims=True)
        self.brand_affinity = config.brand_affinity_scale * rng.standard_normal((n_users, n_brands))
        self.budget_offset = config.budget_spread * rng.standard_normal(n_users)
        mean, shape = config.price_sensitivity_mean, config.price_sensitivity_shape
        self.price_sensitivity = rng.gamma(shape, mean / shape, size=n_users) if mean > 0 else np.zeros(n_users)
        a = config.patience_mean * config.patience_concentration
        b = (1.0 - config.patience_mean) * config.patience_concentration
        self.patience = np.full(n_users, config.patience_mean) if min(a, b) <= 0 else rng.beta(a, b, size=n_users)
        activity = np.exp(config.activity_spread * rng.standard_normal(n_users))
        # sampling tables (inverse CDFs), as lists: bisect on a list is what np.searchsorted does, without its overhead
        self._user_cdf = np.cumsum(activity / activity.sum()).tolist()
        self._interest_cdf = np.cumsum(self.interests, axis=1).tolist()
        self._category_rows = [np.flatnonzero((catalog.category_codes == code) & queryable) for code in range(n_categories)]
        self._category_cdf = [(np.cumsum(self.popularity[rows]) / self.popularity[rows].sum()).tolist() if len(rows) else [] for rows in self._category_rows]
        self._log_price = np.log(np.maximum(catalog.prices, 0.01))
        self._thresholds = np.array([[config.click_threshold], [config.cart_threshold], [config.purchase_threshold]])
        modes = {mode: share for mode, share in config.query_modes.items() if catalog.has_pictures or mode == "text"}
        if not catalog.has_pictures:  # without pictures every session searches by text
            modes = {"text": 1.0}
        total = sum(modes.values())
        self.modes = [mode for mode in QUERY_MODES if modes.get(mode, 0) > 0]
        self._mode_cdf = np.cumsum([modes[mode] / total for mode in self.modes]).tolist()

    def sample_session(self, rng: np.random.Generator, *, user: int | None = None) -> Session:
        """Who shops (by activity), for which category (by interest), which item (by popularity), how asked.

        A text session states an intent with probability ``intent_share``: its query is the target's stated
        phrase (``envs.intents``), and the shopper holds to what it states."""
        u, c, t, q, m, i = rng.random(6).tolist()
        noise = rng.standard_normal()
        if user is None:
            user = min(bisect_left(self._user_cdf, u), len(self._user_cdf) - 1)
        interest = self._interest_cdf[user]
        category = min(bisect_left(interest, c), len(interest) - 1)
        rows = self._category_rows[category]
        target = int(rows[min(bisect_left(self._category_cdf[category], t), len(rows) - 1)])
        mode = self.modes[min(bisect_left(self._mode_cdf, m), len(self.modes) - 1)]
        stated = self.catalog.stated_queries_of_item.get(target) if "text" in mode and i < self.config.intent_share else None
        queries = self.catalog.queries_of_item[target] if stated is None else stated
        query = int(queries[int(q * len(queries))])
        log_budget = float(np.log(self.catalog.category_median_price[category]) + self.budget_offset[user] + self.config.session_budget_noise * noise)
        if stated is None:
            return Session(user=user, category=category, target=target, query=query, mode=mode, log_budget=log_budget)
        bank = self.catalog.intents
        assert bank is not None
        limit = float(bank.asked_price_max[query])
        return Session(
            user=user,
            category=category,
            target=target,
            query=query,
            mode=mode,
            log_budget=log_budget,
            price_limit=None if np.isnan(limit) else limit,
            colour=int(bank.asked_colour[query]),
            brand=int(bank.asked_brand[query]),
        )

    def utilities(self, session: Session, rows: np.ndarray, vectors: np.ndarray | None = None, *, relevance: np.ndarray | None = None) -> Utilities:
        """The user's probabilities for the items at catalog ``rows``.

        ``m = w_rel cos(item, target) + w_cat [same category] + a_u[brand] + q_item - lambda_u over_budget - stated``
        with ``over_budget = max(0, log price - log budget)`` and ``stated`` the penalties for breaking what the
        query states (``intent_price_penalty`` above its price limit, ``intent_colour_penalty`` for another colour,
        ``intent_brand_penalty`` for another brand); attraction =
        sigmoid(m - tau_click), cart = sigmoid(m - tau_cart), purchase =
        sigmoid(m - tau_buy - lambda_u over_budget): price weighs on the decision to buy twice.
        ``vectors``: the rows' text vectors, when the caller has them already. ``relevance``: a relevance to use
        instead of the cosine to the hidden target (the intent-blind oracle's, to the query).
        """
        cfg, catalog = self.config, self.catalog
        if relevance is None:
            relevance = (catalog.text[rows] if vectors is None else vectors) @ catalog.text[session.target]
        over_budget = np.maximum(self._log_price[rows] - session.log_budget, 0.0)
        price_penalty = self.price_sensitivity[session.user] * over_budget
        utility = (
            cfg.relevance_weight * relevance
            + cfg.category_weight * (catalog.category_codes[rows] == session.category)
            + self.brand_affinity[session.user, catalog.brand_codes[rows]]
            + self.quality[rows]
            - price_penalty
            - self._stated_penalty(session, rows)
        )
        shifted = utility - self._thresholds  # [3, n]: against the click, cart and purchase thresholds
        shifted[2] -= price_penalty  # price weighs on buying twice
        attraction, cart, purchase = sigmoid(shifted)
        return Utilities(attraction=attraction, cart=cart, purchase=purchase, utility=utility, patience=float(self.patience[session.user]))

    def _stated_penalty(self, session: Session, rows: np.ndarray) -> np.ndarray | float:
        """The utility each item at ``rows`` loses for breaking the limit, colour or brand the query states."""
        cfg, catalog = self.config, self.catalog
        penalty: np.ndarray | float = 0.0
        if session.price_limit is not None:
            penalty = penalty + cfg.intent_price_penalty * (catalog.prices[rows] > session.price_limit)
        if session.colour >= 0:
            penalty = penalty + cfg.intent_colour_penalty * (catalog.colour_codes[rows] != session.colour)  # type: ignore[index]
        if session.brand >= 0:
            penalty = penalty + cfg.intent_brand_penalty * (catalog.brand_codes[rows] != session.brand)
        return penalty

    def duplicate_factor(self, max_similarity: np.ndarray) -> np.ndarray:
        """Attraction kept by items whose highest cosine to an item above them is ``max_similarity``."""
        cfg = self.config
        overlap = np.clip((np.asarray(max_similarity) - cfg.duplicate_threshold) / (1.0 - cfg.duplicate_threshold), 0.0, 1.0)
        return 1.0 - cfg.duplicate_penalty * overlap

    def duplicate_factor_one(self, max_similarity: float) -> float:
        """:meth:`duplicate_factor` for one item, in plain floats (a step's hot path)."""
        cfg = self.config
        overlap = (max_similarity - cfg.duplicate_threshold) / (1.0 - cfg.duplicate_threshold)
        return 1.0 - cfg.duplicate_penalty * min(max(overlap, 0.0), 1.0)
