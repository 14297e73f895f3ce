"""What the features know of the shopper: the user's profile across sessions and the state of this session.

- :class:`UserProfile`: a user's interactions (an embedding of their taste, category, brand and colour counts,
  prices paid) and, to debias them, what they were *shown* (brand and colour counts, price levels). A user who
  clicks one brand because it is all they see has no taste for it; a user who clicks it at three times its share
  of their impressions has (``user_brand_lift``).
- :class:`SessionState`: one search session: which page of the current query this is, how many queries came
  before it, the items clicked (their text vectors) and the items shown so far.
- :class:`StateProvider` reads both; :class:`InMemoryStateProvider` keeps them in process (the simulator,
  tests); ``ranker.live.state`` keeps them in Redis.

A price's *level* (:func:`price_level`) is its log distance to the median price of its category in the catalog:
comparable across categories, so "this user buys below the median" carries from bags to mugs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ranker.ranking.schema import COUNTERS, INTERACTION_KINDS


class FeatureError(ValueError):
    """Bad input to the feature builder; the message names the argument."""


def examination_prior(positions: np.ndarray | int) -> np.ndarray:
    """The exposure one impression at 0-based ``positions`` counts for: ``1 / (t + 1)``.

    A fixed, documented prior (not fitted, not read from a simulator), the
    shape of the position-based model with position bias 1.
    """
    return 1.0 / (np.asarray(positions, dtype=np.float64) + 1.0)


def price_level(price: np.ndarray | float, category_median: np.ndarray | float) -> np.ndarray:
    """``log(price / median price of the item's category)``: > 0 above its category's median."""
    return np.log(np.maximum(np.asarray(price, dtype=np.float64), 0.01)) - np.log(np.maximum(np.asarray(category_median, dtype=np.float64), 0.01))


@dataclass
class UserProfile:
    """What the state provider knows of a user; :meth:`record` folds in one interaction, :meth:`record_shown` a slate."""

    embedding: np.ndarray | None = None  # unit vector in the text space
    n_interactions: int = 0
    category_counts: dict[str, float] = field(default_factory=dict)
    brand_counts: dict[str, float] = field(default_factory=dict)
    log_price_sum: float = 0.0  # over purchases
    n_purchases: int = 0
    colour_counts: dict[str, float] = field(default_factory=dict)  # interactions by the item's colour ("" when it has none)
    level_sum: float = 0.0  # price levels of the interactions
    n_levels: int = 0
    shown: float = 0.0  # items shown to the user
    shown_brand_counts: dict[str, float] = field(default_factory=dict)
    shown_colour_counts: dict[str, float] = field(default_factory=dict)
    shown_level_sum: float = 0.0

    @property
    def mean_log_price(self) -> float | None:
        """Mean log price of what the user bought; None before the first purchase."""
        return self.log_price_sum / self.n_purchases if self.n_purchases else None

    @property
    def mean_level(self) -> float | None:
        """Mean price level of what the user acted on; None before the first interaction with a known level."""
        return self.level_sum / self.n_levels if self.n_levels else None

    @property
    def price_response(self) -> float:
        """Mean level of what they acted on minus mean level of what they were shown (0 when either is unknown)."""
        if not self.n_levels or not self.shown:
            return 0.0
        return self.level_sum / self.n_levels - self.shown_level_sum / self.shown

    def record(
        self,
        *,
        kind: str,
        category: str,
        brand: str,
        price: float,
        text_vector: np.ndarray,
        decay: float = 0.9,
        colour: str = "",
        level: float | None = None,
    ) -> None:
        """A click, add_to_cart or purchase of an item with these attributes (``level``: its price level).

        The embedding is an exponential moving average of interacted items'
        text vectors (weight ``1 - decay`` on the newest), kept unit length, so
        it follows the user's recent taste.
        """
        if kind not in INTERACTION_KINDS:
            raise FeatureError(f"kind: unknown interaction {kind!r}; use click, add_to_cart or purchase")
        vector = np.asarray(text_vector, dtype=np.float32)
        mixed = vector if self.embedding is None else decay * self.embedding + (1 - decay) * vector
        self.embedding = mixed / max(float(np.linalg.norm(mixed)), 1e-12)
        self.n_interactions += 1
        self.category_counts[category] = self.category_counts.get(category, 0.0) + 1.0
        self.brand_counts[brand] = self.brand_counts.get(brand, 0.0) + 1.0
        self.colour_counts[colour] = self.colour_counts.get(colour, 0.0) + 1.0
        if level is not None and np.isfinite(level):
            self.level_sum += float(level)
            self.n_levels += 1
        if kind == "purchase" and price > 0:
            self.log_price_sum += float(np.log(price))
            self.n_purchases += 1

    def record_shown(self, brands: Sequence[str], colours: Sequence[str], levels: Sequence[float]) -> None:
        """A slate shown to the user: its items' brands, colours and price levels."""
        for brand in brands:
            self.shown_brand_counts[brand] = self.shown_brand_counts.get(brand, 0.0) + 1.0
        for colour in colours:
            self.shown_colour_counts[colour] = self.shown_colour_counts.get(colour, 0.0) + 1.0
        self.shown += len(brands)
        self.shown_level_sum += float(np.sum(levels))


def lift(interactions: dict[str, float], total: float, shown: dict[str, float], shown_total: float, names: Sequence[str], *, prior: float = 2.0) -> np.ndarray:
    """[n] ``log(p_acted(name) / p_shown(name))`` per name: the share of the user's interactions smoothed toward its
    share of their impressions with ``prior`` pseudo-interactions, over that share (itself smoothed by one
    impression and ten of the rest). 0 without interactions: the user told nothing yet."""
    if not total:
        return np.zeros(len(names))
    shown_share = np.array([(shown.get(name, 0.0) + 1.0) / (shown_total + 10.0) for name in names])
    acted = np.array([interactions.get(name, 0.0) for name in names])
    return np.log((acted + prior * shown_share) / (total + prior) / shown_share)


@dataclass
class SessionState:
    """One search session, as the features read it (the simulator's and ``ranker.live.state``'s)."""

    page: int = 1  # 1-based page of the current query
    rephrasings: int = 0  # queries before the current one in this session
    clicked: np.ndarray | None = None  # [c, d] text vectors of the items clicked so far in the session, or None
    shown: frozenset[str] = frozenset()  # items shown earlier in this session (under any query)

    @property
    def n_clicked(self) -> int:
        return 0 if self.clicked is None else len(self.clicked)


NO_SESSION = SessionState()


class StateProvider(Protocol):
    """Live state the features read: item counters and user profiles."""

    def item_counts(self, item_ids: Sequence[str]) -> np.ndarray:
        """[n, 4] impressions, clicks, purchases, exposure (:data:`COUNTERS`)."""
        ...

    def user_profile(self, user_key: str | None) -> UserProfile: ...


class InMemoryStateProvider:
    """A :class:`StateProvider` in process memory (simulation, tests, single process)."""

    def __init__(self, *, profile_decay: float = 0.9):
        self.profile_decay = profile_decay
        self._counts: dict[str, np.ndarray] = {}
        self._profiles: dict[str, UserProfile] = {}

    def item_counts(self, item_ids: Sequence[str]) -> np.ndarray:
        zero = np.zeros(len(COUNTERS))
        return np.array([self._counts.get(item_id, zero) for item_id in item_ids], dtype=np.float64).reshape(len(item_ids), len(COUNTERS))

    def user_profile(self, user_key: str | None) -> UserProfile:
        if user_key is None:
            return UserProfile()
        return self._profiles.get(user_key, UserProfile())

    def record_impressions(self, item_ids: Sequence[str]) -> None:
        """A slate shown: ``item_ids`` in display order (position 0 first)."""
        for position, item_id in enumerate(item_ids):
            counts = self._counts.setdefault(item_id, np.zeros(len(COUNTERS)))
            counts[0] += 1
            counts[3] += examination_prior(position)

    def record_interaction(
        self,
        user_key: str,
        *,
        item_id: str,
        kind: str,
        category: str,
        brand: str,
        price: float,
        text_vector: np.ndarray,
        colour: str = "",
        level: float | None = None,
    ) -> None:
        """A click, add_to_cart or purchase: item counters and the user's profile move at once."""
        profile = self._profiles.get(user_key) or UserProfile()
        profile.record(kind=kind, category=category, brand=brand, price=price, text_vector=text_vector, decay=self.profile_decay, colour=colour, level=level)
        self._profiles[user_key] = profile
        counts = self._counts.setdefault(item_id, np.zeros(len(COUNTERS)))
        if kind == "click":
            counts[1] += 1
        elif kind == "purchase":
            counts[2] += 1
