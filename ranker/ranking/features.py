"""The feature builder: (user, query, candidates) -> the policy's observation.

One piece of code serves the simulator, offline training and live traffic, so
a policy trained in simulation serves unchanged (DESIGN.md, "The ranking MDP").

Features are catalog-independent: similarities, normalised price, smoothed
rates, affinities, never raw ids or raw category names. A candidate row has
:data:`STATIC_FEATURES` (fixed for the request) followed by
:data:`SLATE_FEATURES` (they change as the slate fills: similarity to what is
already placed, and the position). The context vector describes the user and
the query. :func:`schema_hash` names the whole layout; a policy artifact
records it and refuses to load against another.

Static features and text similarities are rounded to float16 where they are
made (:func:`snapshot_precision`): the event log keeps them at half the bytes
and a learner replaying a logged slate sees exactly what the policy saw.

Rates are debiased by position: an item shown low in a slate is seen less
often, so each impression counts as much *exposure* as the documented
examination prior of its position, :func:`examination_prior` (``1/(t+1)``, the
position-based model's usual shape). A click rate over exposure ("clicks over
expected clicks") compares an item shown at the top with one shown at the
bottom. Smoothed with a Beta prior: ``ctr = (clicks + a) / (exposure + b)``
with ``a = prior_ctr * prior_strength`` and ``b = prior_strength *
mean_examination``, so an item with no history gets ``prior_ctr /
mean_examination``; the purchase rate likewise. Counters are
``[impressions, clicks, purchases, exposure]`` (:data:`COUNTERS`) in the
simulator and live.

Schema version 2 added the debiasing, ``price_vs_category`` and stored input
standardisation (:class:`ranker.ranking.policy.SlateNet`). Version 3 (this
one) adds the query's intent (:class:`QueryIntent`, parsed by
:mod:`ranker.retrieval.query_intent`): whether a price range, a brand or a
colour was asked for (context), how far each item's price is from the range
and whether its brand and colour match (candidate rows); and, on an index
whose channels are calibrated (:mod:`ranker.retrieval.fusion`, with the
learned text-picture bridge of :mod:`ranker.retrieval.bridge`), the
candidates come in the calibrated fusion's order (``retrieval_rank``) while
``sim_text``, ``sim_image``, ``sim_cross`` and ``retrieval_score`` stay raw
cosines and their uncalibrated weighted mean: the features mean the same on a
calibrated index and on one that is not (yet), such as a catalog written
through the API before ``ranker index bridge`` ran, so one policy serves both.
Artifacts of another version are refused with a message to retrain.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

FEATURE_SCHEMA_VERSION = 3
COUNTERS: tuple[str, ...] = ("impressions", "clicks", "purchases", "exposure")  # item counter columns, in this order
STATIC_FEATURES: tuple[str, ...] = (
    "sim_text",  # query text vs item text (0 when the query has no text); raw cosines, also on a calibrated index
    "sim_image",  # query picture vs item picture (0 when either lacks one)
    "sim_cross",  # best cross-modal similarity (text->picture, picture->text)
    "retrieval_score",  # the fused retrieval score (ranker.retrieval.fusion.fuse_scores)
    "retrieval_rank",  # rank among candidates, 0 (first) .. 1 (last)
    "has_image",
    "price_z",  # log price, standardised within the candidates
    "price_vs_user",  # log(price) - the user's mean log price paid (0 when unknown)
    "price_vs_category",  # log(price) - the median log price of the candidates in the item's category
    "ctr",  # smoothed clicks per exposure (position-debiased click rate)
    "purchase_rate",  # smoothed purchases per exposure
    "log_popularity",  # log1p(impressions), scaled by the candidates' maximum
    "user_affinity",  # cosine of the user's profile embedding and the item text
    "user_category_affinity",  # share of the user's interactions in this category
    "user_brand_affinity",  # share of the user's interactions with this brand
    "price_vs_limit",  # log distance of the price to the asked range's nearest bound: > 0 outside it, < 0 inside (0: no range asked)
    "brand_match",  # 1 when the query named brands and this item is one of them
    "colour_match",  # 1 when the query named colours and this item has one of them
)
SLATE_FEATURES: tuple[str, ...] = (
    "max_sim_to_placed",  # highest text similarity to an item already in the slate
    "same_category_placed",  # share of placed items in this item's category
    "position",  # the position being filled, 0 .. 1
)
FEATURES: tuple[str, ...] = STATIC_FEATURES + SLATE_FEATURES
_STATIC_COLUMN = {name: column for column, name in enumerate(STATIC_FEATURES)}
SNAPSHOT_DTYPE = np.float16  # what the event log stores static features and similarities as
_SNAPSHOT_MAX = float(np.finfo(SNAPSHOT_DTYPE).max)
CONTEXT_FEATURES: tuple[str, ...] = (
    "query_has_text",
    "query_has_image",
    "user_history",  # log1p(number of interactions), scaled: 1.0 at 100
    "user_has_profile",
    "mean_retrieval_score",
    "candidate_fill",  # share of the K slots holding a real candidate
    "query_price_limit",  # the query asked for a price range ("under 50", "cheap")
    "query_brand",  # the query named a brand
    "query_colour",  # the query named a colour
)


def schema_hash() -> str:
    """A short hash of the feature layout; it changes whenever the layout does."""
    layout = {"version": FEATURE_SCHEMA_VERSION, "features": FEATURES, "context": CONTEXT_FEATURES}
    return hashlib.sha256(json.dumps(layout, sort_keys=True).encode()).hexdigest()[:16]


def feature_schema() -> dict[str, object]:
    """The documented schema, as recorded in policy manifests."""
    return {"version": FEATURE_SCHEMA_VERSION, "hash": schema_hash(), "features": list(FEATURES), "context": list(CONTEXT_FEATURES)}


class FeatureError(ValueError):
    """Bad input to the feature builder; the message names the argument."""


def examination_prior(positions: np.ndarray | int) -> np.ndarray:
    """The exposure one impression at 0-based ``positions`` counts for: ``1 / (t + 1)``.

    A fixed, documented prior (not fitted, not read from a simulator), the
    shape of the position-based model with position bias 1.
    """
    return 1.0 / (np.asarray(positions, dtype=np.float64) + 1.0)


def mean_examination(slate_size: int) -> float:
    """The mean :func:`examination_prior` over a slate's positions: the exposure of an impression at an unknown
    position (history recorded without positions counts this much per impression)."""
    return float(examination_prior(np.arange(slate_size)).mean())


INTERACTION_KINDS: tuple[str, ...] = ("click", "add_to_cart", "purchase")


@dataclass(frozen=True)
class QueryIntent:
    """What a parsed query asks of the items, as the features read it (names compared case-insensitively).

    A price range is also a hard filter on retrieval; brands and colours are soft: only features.
    """

    price_min: float | None = None
    price_max: float | None = None
    brands: tuple[str, ...] = ()
    colours: tuple[str, ...] = ()

    @property
    def has_price(self) -> bool:
        return self.price_min is not None or self.price_max is not None

    def price_distance(self, log_price: np.ndarray) -> np.ndarray:
        """[n] log distance of each price to the range's nearest bound: > 0 outside the range, <= 0 inside."""
        distances = []
        if self.price_max is not None:
            distances.append(log_price - math.log(max(self.price_max, 0.01)))
        if self.price_min is not None:
            distances.append(math.log(max(self.price_min, 0.01)) - log_price)
        return np.maximum.reduce(distances) if len(distances) > 1 else distances[0]


NO_INTENT = QueryIntent()


@dataclass
class UserProfile:
    """What the state provider knows of a user; :meth:`record` folds in one interaction."""

    embedding: np.ndarray | None = None  # unit vector in the text space
    n_interactions: int = 0
    category_counts: dict[str, float] = field(default_factory=dict)
    brand_counts: dict[str, float] = field(default_factory=dict)
    log_price_sum: float = 0.0  # over purchases
    n_purchases: int = 0

    @property
    def mean_log_price(self) -> float | None:
        """Mean log price of what the user bought; None before the first purchase."""
        return self.log_price_sum / self.n_purchases if self.n_purchases else None

    def record(self, *, kind: str, category: str, brand: str, price: float, text_vector: np.ndarray, decay: float = 0.9) -> None:
        """A click, add_to_cart or purchase of an item with these attributes.

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
        if kind == "purchase" and price > 0:
            self.log_price_sum += float(np.log(price))
            self.n_purchases += 1


@dataclass
class CandidateSet:
    """K retrieved candidates as arrays (rows in retrieval order)."""

    item_ids: list[str]
    categories: list[str]
    brands: list[str]
    prices: np.ndarray  # [n]
    has_image: np.ndarray  # [n] bool
    text_vectors: np.ndarray  # [n, d] unit rows in the text space
    retrieval_scores: np.ndarray  # [n] fused
    channel_scores: dict[str, np.ndarray]  # channel -> [n], NaN where the item lacks that part
    colours: list[str] | None = None  # the item's colour attribute ("" when it has none); None: nobody knows

    def __post_init__(self) -> None:
        n = len(self.item_ids)
        for name in ("categories", "brands") + (("colours",) if self.colours is not None else ()):
            if len(getattr(self, name)) != n:
                raise FeatureError(f"{name}: {len(getattr(self, name))} entries for {n} candidates")
        for name in ("prices", "has_image", "retrieval_scores"):
            if np.shape(getattr(self, name)) != (n,):
                raise FeatureError(f"{name}: shape {np.shape(getattr(self, name))}, expected ({n},)")
        if self.text_vectors.ndim != 2 or len(self.text_vectors) != n:
            raise FeatureError(f"text_vectors: shape {self.text_vectors.shape}, expected ({n}, d)")

    def __len__(self) -> int:
        return len(self.item_ids)


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

    def record_interaction(self, user_key: str, *, item_id: str, kind: str, category: str, brand: str, price: float, text_vector: np.ndarray) -> None:
        """A click, add_to_cart or purchase: item counters and the user's profile move at once."""
        profile = self._profiles.get(user_key) or UserProfile()
        profile.record(kind=kind, category=category, brand=brand, price=price, text_vector=text_vector, decay=self.profile_decay)
        self._profiles[user_key] = profile
        counts = self._counts.setdefault(item_id, np.zeros(len(COUNTERS)))
        if kind == "click":
            counts[1] += 1
        elif kind == "purchase":
            counts[2] += 1


@dataclass
class Observation:
    """The request's features: static part, context, and what slate features need."""

    static: np.ndarray  # [K, len(STATIC_FEATURES)] float32, zero rows past the candidates
    context: np.ndarray  # [len(CONTEXT_FEATURES)] float32
    valid: np.ndarray  # [K] bool: a real candidate in this slot
    text_vectors: np.ndarray  # [K, d] candidate text vectors, zero rows for empty slots
    category_codes: np.ndarray  # [K] int, -1 for empty slots
    _similarity: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def similarity_to(self, slot: int) -> np.ndarray:
        """[K] text cosine of every candidate to candidate ``slot``, computed on demand (a slate needs L rows, not K)
        and once: every arm ranking the request, and the event log, read the same row."""
        row = self._similarity.get(slot)
        if row is None:
            row = self._similarity[slot] = snapshot_precision(self.text_vectors @ self.text_vectors[slot])
        return row


class FeatureBuilder:
    """Builds observations for K candidate slots and a slate of L positions."""

    def __init__(self, n_candidates: int, slate_size: int, *, prior_ctr: float = 0.05, prior_purchase_rate: float = 0.01, prior_strength: float = 20.0):
        if n_candidates < 1:
            raise FeatureError(f"n_candidates: must be >= 1, got {n_candidates}")
        if not 1 <= slate_size <= n_candidates:
            raise FeatureError(f"slate_size: must be between 1 and n_candidates={n_candidates}, got {slate_size}")
        for name, value in (("prior_ctr", prior_ctr), ("prior_purchase_rate", prior_purchase_rate)):
            if not 0.0 < value < 1.0:
                raise FeatureError(f"{name}: must be in (0, 1), got {value}")
        if prior_strength <= 0:
            raise FeatureError(f"prior_strength: must be > 0, got {prior_strength}")
        self.n_candidates = n_candidates
        self.slate_size = slate_size
        self.prior_ctr = prior_ctr
        self.prior_purchase_rate = prior_purchase_rate
        self.prior_strength = prior_strength

    @property
    def n_features(self) -> int:
        return len(FEATURES)

    def build(
        self,
        candidates: CandidateSet,
        *,
        counts: np.ndarray,
        profile: UserProfile,
        query_has_text: bool,
        query_has_image: bool,
        intent: QueryIntent = NO_INTENT,
    ) -> Observation:
        """Static features and context for ``candidates`` (at most K; the rest is padding)."""
        n, k = len(candidates), self.n_candidates
        if n > k:
            raise FeatureError(f"candidates: {n} given for {k} slots")
        if counts.shape != (n, len(COUNTERS)):
            raise FeatureError(f"counts: shape {counts.shape}, expected ({n}, {len(COUNTERS)}): {', '.join(COUNTERS)}")
        static = np.zeros((k, len(STATIC_FEATURES)), dtype=np.float32)
        codes = np.full(k, -1, dtype=np.int64)
        valid = np.zeros(k, dtype=bool)
        valid[:n] = True
        if n:
            self._fill_static(static[:n], candidates, counts, profile)
            _fill_intent(static[:n], candidates, intent)
            static[:n] = snapshot_precision(static[:n])
            code_of = {category: code for code, category in enumerate(dict.fromkeys(candidates.categories))}
            codes[:n] = [code_of[category] for category in candidates.categories]
        context = np.array(
            [
                float(query_has_text),
                float(query_has_image),
                min(math.log1p(profile.n_interactions) / math.log1p(100), 1.0),
                float(profile.embedding is not None),
                float(candidates.retrieval_scores.mean()) if n else 0.0,
                n / k,
                float(intent.has_price),
                float(bool(intent.brands)),
                float(bool(intent.colours)),
            ],
            dtype=np.float32,
        )
        vectors = candidates.text_vectors.astype(np.float32, copy=False)
        if n < k:
            vectors = np.concatenate([vectors, np.zeros((k - n, vectors.shape[1]), dtype=np.float32)])
        return Observation(static=static, context=context, valid=valid, text_vectors=vectors, category_codes=codes)

    def _fill_static(self, out: np.ndarray, candidates: CandidateSet, counts: np.ndarray, profile: UserProfile) -> None:
        """Write the :data:`STATIC_FEATURES` columns of ``out`` ([n, S], zeros on entry)."""
        n = len(candidates)
        scores = candidates.channel_scores
        column = _STATIC_COLUMN
        for feature, channel in (("sim_text", "text"), ("sim_image", "image")):
            if channel in scores:
                out[:, column[feature]] = finite_or_zero(scores[channel])
        cross = [finite_or_zero(scores[channel]) for channel in ("text_to_image", "image_to_text") if channel in scores]
        if cross:
            out[:, column["sim_cross"]] = np.maximum.reduce(cross) if len(cross) > 1 else cross[0]
        out[:, column["retrieval_score"]] = finite_or_zero(candidates.retrieval_scores)
        out[:, column["retrieval_rank"]] = np.arange(n) / max(n - 1, 1)
        out[:, column["has_image"]] = candidates.has_image
        log_price = np.log(np.maximum(candidates.prices, 0.01))
        centred = log_price - log_price.sum() / n
        spread = math.sqrt(float(centred @ centred) / n)
        if spread > 1e-9:
            out[:, column["price_z"]] = centred / spread
        if profile.mean_log_price is not None:
            out[:, column["price_vs_user"]] = log_price - profile.mean_log_price
        out[:, column["price_vs_category"]] = log_price - _group_medians(log_price, candidates.categories)
        impressions, exposure = counts[:, 0], counts[:, 3]
        prior_exposure = self.prior_strength * mean_examination(self.slate_size)
        out[:, column["ctr"]] = (counts[:, 1] + self.prior_ctr * self.prior_strength) / (exposure + prior_exposure)
        out[:, column["purchase_rate"]] = (counts[:, 2] + self.prior_purchase_rate * self.prior_strength) / (exposure + prior_exposure)
        popularity = np.log1p(impressions)
        top = popularity.max()
        if top > 0:
            out[:, column["log_popularity"]] = popularity / top
        if profile.embedding is not None:
            out[:, column["user_affinity"]] = candidates.text_vectors @ profile.embedding
        history = max(profile.n_interactions, 1)
        if profile.category_counts:
            out[:, column["user_category_affinity"]] = _shares(profile.category_counts, candidates.categories, history)
        if profile.brand_counts:
            out[:, column["user_brand_affinity"]] = _shares(profile.brand_counts, candidates.brands, history)


def _fill_intent(out: np.ndarray, candidates: CandidateSet, intent: QueryIntent) -> None:
    """Write the intent columns of ``out`` ([n, S]): the price's distance to the asked range, brand and colour matches."""
    column = _STATIC_COLUMN
    if intent.has_price:
        out[:, column["price_vs_limit"]] = intent.price_distance(np.log(np.maximum(candidates.prices, 0.01)))
    if intent.brands:
        out[:, column["brand_match"]] = _matches(candidates.brands, intent.brands)
    if intent.colours and candidates.colours is not None:
        out[:, column["colour_match"]] = _matches(candidates.colours, intent.colours)


def _matches(names: Sequence[str], wanted: Sequence[str]) -> np.ndarray:
    """[n] 1.0 where the name is one of ``wanted`` (case-insensitive)."""
    folded = {name.casefold() for name in wanted}
    return np.array([name.casefold() in folded for name in names], dtype=np.float32)


def snapshot_precision(values: np.ndarray) -> np.ndarray:
    """``values`` as float32 holding exactly what :data:`SNAPSHOT_DTYPE` can store (clipped to its range, so never infinite)."""
    return np.clip(values, -_SNAPSHOT_MAX, _SNAPSHOT_MAX).astype(SNAPSHOT_DTYPE).astype(np.float32)


def finite_or_zero(values: np.ndarray) -> np.ndarray:
    """``values`` with NaN and infinities replaced by 0."""
    return np.where(np.isfinite(values), values, 0.0)


def _group_medians(values: np.ndarray, groups: Sequence[str]) -> np.ndarray:
    """[n] the median of ``values`` over the entries sharing each entry's group."""
    labels = np.asarray(groups, dtype=object)
    medians = np.empty(len(values), dtype=np.float64)
    for group in dict.fromkeys(groups):
        members = labels == group
        medians[members] = np.median(values[members])
    return medians


def _shares(counts: dict[str, float], names: Sequence[str], total: float) -> np.ndarray:
    return np.array([counts.get(name, 0.0) for name in names]) / total


class SlateFeatures:
    """The full [K, F] feature matrix while a slate fills, updated in O(K) per placement."""

    def __init__(self, observation: Observation, slate_size: int):
        self.observation = observation
        self.slate_size = slate_size
        k = len(observation.valid)
        self.features = np.zeros((k, len(FEATURES)), dtype=np.float32)
        self.features[:, : len(STATIC_FEATURES)] = observation.static
        self.available = observation.valid.copy()
        self.placed: list[int] = []
        self._max_sim = np.zeros(k, dtype=np.float32)
        # one counter per category code, plus a last one that stays 0 for empty slots (code -1)
        self._category_placed = np.zeros(int(observation.category_codes.max()) + 2, dtype=np.float32)
        self._slate_column = len(STATIC_FEATURES)

    def place(self, slot: int) -> None:
        """Put candidate ``slot`` at the next position."""
        if not 0 <= slot < len(self.available) or not self.available[slot]:
            raise FeatureError(f"action: candidate {slot} is not available (placed already, or an empty slot)")
        if len(self.placed) >= self.slate_size:
            raise FeatureError(f"action: the slate already holds {self.slate_size} items")
        self.available[slot] = False
        self.placed.append(slot)
        observation, column, features = self.observation, self._slate_column, self.features
        np.maximum(self._max_sim, observation.similarity_to(slot), out=self._max_sim)
        code = observation.category_codes[slot]
        if code >= 0:
            self._category_placed[code] += 1
        features[:, column] = self._max_sim
        features[:, column + 1] = self._category_placed[observation.category_codes] * (1.0 / len(self.placed))
        features[:, column + 2] = len(self.placed) / self.slate_size
