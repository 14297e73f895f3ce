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

The layout and its versions are in :mod:`ranker.ranking.schema`; the user's
profile and the session are in :mod:`ranker.ranking.profile`. Schema version 2
added the debiasing, ``price_vs_category`` and stored input standardisation
(:class:`ranker.ranking.network.SlateNet`). Version 3 adds the query's intent (:class:`QueryIntent`, parsed by
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
Version 4 (this one) adds the session (similarity to what was clicked in it, what
was shown in it, the page and the rephrasings) and the user's taste revealed
against what they were shown (brand and colour lifts, price levels). Artifacts
of another version are refused with a message to retrain.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ranker.ranking.profile import (  # noqa: F401  (re-exported: the features' inputs)
    NO_SESSION,
    FeatureError,
    InMemoryStateProvider,
    SessionState,
    StateProvider,
    UserProfile,
    examination_prior,
    lift,
    price_level,
)
from ranker.ranking.schema import (  # noqa: F401  (re-exported: the layout the builder fills)
    CONTEXT_FEATURES,
    COUNTERS,
    FEATURE_SCHEMA_VERSION,
    FEATURES,
    INTERACTION_KINDS,
    SLATE_FEATURES,
    STATIC_FEATURES,
    feature_schema,
    schema_hash,
)
from ranker.retrieval.intent import NO_INTENT, QueryIntent  # noqa: F401  (re-exported: the intent the builder reads)

_STATIC_COLUMN = {name: column for column, name in enumerate(STATIC_FEATURES)}
_RATES = slice(_STATIC_COLUMN["ctr"], _STATIC_COLUMN["ctr"] + 2)
assert STATIC_FEATURES[_RATES] == ("ctr", "purchase_rate")
SNAPSHOT_DTYPE = np.float16  # what the event log stores static features and similarities as
_SNAPSHOT_MAX = float(np.finfo(SNAPSHOT_DTYPE).max)


def mean_examination(slate_size: int) -> float:
    """The mean :func:`examination_prior` over a slate's positions: the exposure of an impression at an unknown
    position (history recorded without positions counts this much per impression)."""
    return float(examination_prior(np.arange(slate_size)).mean())


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
    price_levels: np.ndarray | None = None  # [n] each price's level in its catalog category (profile.price_level); None: unknown

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


@dataclass(frozen=True)
class QueryPart:
    """What a request's features take from its candidates and its query alone (not from the user, the item counters
    or the session): those static columns at snapshot precision (zeros elsewhere), the candidates' categories
    grouped and their mean retrieval score. :meth:`FeatureBuilder.query_part` makes it; a caller that builds
    features for the same candidates and query again (the simulator, for a bank query) keeps it and passes it to
    :meth:`FeatureBuilder.build`, which then skips that work and returns the same bits."""

    static: np.ndarray  # [n, len(STATIC_FEATURES)] float32
    categories: _Grouped
    mean_retrieval_score: float
    brands: _Grouped | None = None  # the candidates' brands and colours grouped (None: grouped when needed)
    colours: _Grouped | None = None


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
        # the rates' Beta priors as pseudo-counts: clicks and purchases, over exposure
        self._prior_counts = np.array([prior_ctr * prior_strength, prior_purchase_rate * prior_strength])
        self._prior_exposure = prior_strength * mean_examination(slate_size)

    @property
    def n_features(self) -> int:
        return len(FEATURES)

    def query_part(self, candidates: CandidateSet, intent: QueryIntent = NO_INTENT) -> QueryPart:
        """The part of :meth:`build`'s work that depends only on ``candidates`` and the query's ``intent``."""
        n = len(candidates)
        categories = _Grouped(candidates.categories)
        static = np.zeros((n, len(STATIC_FEATURES)), dtype=np.float32)
        if n:
            _fill_query(static, candidates, categories)
            _fill_intent(static, candidates, intent)
            static = snapshot_precision(static)
        return QueryPart(
            static=static,
            categories=categories,
            mean_retrieval_score=float(candidates.retrieval_scores.mean()) if n else 0.0,
            brands=_Grouped(candidates.brands),
            colours=None if candidates.colours is None else _Grouped(candidates.colours),
        )

    def build(
        self,
        candidates: CandidateSet,
        *,
        counts: np.ndarray,
        profile: UserProfile,
        query_has_text: bool,
        query_has_image: bool,
        intent: QueryIntent = NO_INTENT,
        session: SessionState = NO_SESSION,
        query_part: QueryPart | None = None,
    ) -> Observation:
        """Static features and context for ``candidates`` (at most K; the rest is padding), for a user with
        ``profile`` in ``session``. ``query_part``: :meth:`query_part` of these candidates and ``intent``, made
        earlier (the simulator keeps one per bank query); None: made here."""
        n, k = len(candidates), self.n_candidates
        if n > k:
            raise FeatureError(f"candidates: {n} given for {k} slots")
        if counts.shape != (n, len(COUNTERS)):
            raise FeatureError(f"counts: shape {counts.shape}, expected ({n}, {len(COUNTERS)}): {', '.join(COUNTERS)}")
        if query_part is None:
            query_part = self.query_part(candidates, intent)
        elif len(query_part.static) != n:
            raise FeatureError(f"query_part: made for {len(query_part.static)} candidates, not these {n}")
        static = np.zeros((k, len(STATIC_FEATURES)), dtype=np.float32)
        codes = np.full(k, -1, dtype=np.int64)
        valid = np.zeros(k, dtype=bool)
        valid[:n] = True
        if n:
            own = static[:n]
            own[:] = query_part.static
            categories = query_part.categories
            brands = colours = None
            if profile.brand_counts or profile.n_interactions:
                brands = query_part.brands or _Grouped(candidates.brands)
                colours = query_part.colours
            self._fill_user(own, candidates, counts, profile, categories, brands)
            _fill_taste(own, candidates, profile, brands, colours)
            _fill_session(own, candidates, session)
            own[:] = snapshot_precision(own)
            codes[:n] = categories.inverse
        context = np.array(
            [
                float(query_has_text),
                float(query_has_image),
                min(math.log1p(profile.n_interactions) / math.log1p(100), 1.0),
                float(profile.embedding is not None),
                query_part.mean_retrieval_score,
                n / k,
                float(intent.has_price),
                float(bool(intent.brands)),
                float(bool(intent.colours)),
                min((session.page - 1) / 4, 1.0),
                min(session.rephrasings / 3, 1.0),
                min(math.log1p(session.n_clicked) / math.log1p(10), 1.0),
                min(max(profile.price_response, -3.0), 3.0),
            ],
            dtype=np.float32,
        )
        vectors = candidates.text_vectors.astype(np.float32, copy=False)
        if n < k:
            vectors = np.concatenate([vectors, np.zeros((k - n, vectors.shape[1]), dtype=np.float32)])
        return Observation(static=static, context=context, valid=valid, text_vectors=vectors, category_codes=codes)

    def _fill_user(
        self, out: np.ndarray, candidates: CandidateSet, counts: np.ndarray, profile: UserProfile, categories: _Grouped, brands: _Grouped | None
    ) -> None:
        """Write the columns of ``out`` ([n, S]) that read the item counters and the user's profile; ``categories``
        and ``brands``: the candidates' names grouped (``brands`` None when the profile has no brand counts)."""
        column = _STATIC_COLUMN
        if profile.mean_log_price is not None:
            out[:, column["price_vs_user"]] = np.log(np.maximum(candidates.prices, 0.01)) - profile.mean_log_price
        # ctr and purchase_rate (adjacent columns) at once: (clicks, purchases) + prior, over exposure + prior
        out[:, _RATES] = (counts[:, 1:3] + self._prior_counts) / (counts[:, 3:4] + self._prior_exposure)
        popularity = np.log1p(counts[:, 0])
        top = popularity.max()
        if top > 0:
            out[:, column["log_popularity"]] = popularity / top
        if profile.embedding is not None:
            out[:, column["user_affinity"]] = candidates.text_vectors @ profile.embedding
        history = max(profile.n_interactions, 1)
        if profile.category_counts:
            out[:, column["user_category_affinity"]] = categories.expand(_shares(profile.category_counts, categories.names, history))
        if profile.brand_counts and brands is not None:
            out[:, column["user_brand_affinity"]] = brands.expand(_shares(profile.brand_counts, brands.names, history))


def _fill_query(out: np.ndarray, candidates: CandidateSet, categories: _Grouped) -> None:
    """Write the columns of ``out`` ([n, S], zeros on entry) that read only the candidates: similarities, retrieval,
    pictures and prices against each other."""
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
    out[:, column["price_vs_category"]] = log_price - _group_medians(log_price, categories)


def _fill_intent(out: np.ndarray, candidates: CandidateSet, intent: QueryIntent) -> None:
    """Write the intent columns of ``out`` ([n, S]): the price's distance to the asked range, brand and colour matches."""
    column = _STATIC_COLUMN
    if intent.has_price:
        out[:, column["price_vs_limit"]] = intent.price_distance(np.log(np.maximum(candidates.prices, 0.01)))
    if intent.brands:
        out[:, column["brand_match"]] = _matches(candidates.brands, intent.brands)
    if intent.colours and candidates.colours is not None:
        out[:, column["colour_match"]] = _matches(candidates.colours, intent.colours)


def _fill_taste(out: np.ndarray, candidates: CandidateSet, profile: UserProfile, brands: _Grouped | None, colours: _Grouped | None = None) -> None:
    """Write the revealed-taste columns of ``out`` ([n, S]): brand and colour lifts over what the user was shown, and
    each price's level against the level of what the user acted on (``brands``, ``colours``: the candidates' names
    grouped, when known)."""
    column = _STATIC_COLUMN
    if not profile.n_interactions:
        return
    brands = brands or _Grouped(candidates.brands)
    out[:, column["user_brand_lift"]] = brands.expand(
        lift(profile.brand_counts, profile.n_interactions, profile.shown_brand_counts, profile.shown, brands.names)
    )
    if candidates.colours is not None:
        colours = colours or _Grouped(candidates.colours)
        out[:, column["user_colour_lift"]] = colours.expand(
            lift(profile.colour_counts, profile.n_interactions, profile.shown_colour_counts, profile.shown, colours.names)
        )
    if candidates.price_levels is not None and profile.mean_level is not None:
        out[:, column["price_vs_user_level"]] = np.minimum(np.maximum(finite_or_zero(candidates.price_levels) - profile.mean_level, -5.0), 5.0)


def _fill_session(out: np.ndarray, candidates: CandidateSet, session: SessionState) -> None:
    """Write the session columns of ``out`` ([n, S]): similarity to what was clicked in it, and what was shown in it."""
    column = _STATIC_COLUMN
    if session.clicked is not None and len(session.clicked):
        out[:, column["sim_to_clicked"]] = (candidates.text_vectors @ np.asarray(session.clicked, dtype=np.float32).T).max(axis=1)
    if session.shown:
        out[:, column["shown_in_session"]] = [item_id in session.shown for item_id in candidates.item_ids]


def _matches(names: Sequence[str], wanted: Sequence[str]) -> np.ndarray:
    """[n] 1.0 where the name is one of ``wanted`` (case-insensitive)."""
    folded = {name.casefold() for name in wanted}
    return np.array([name.casefold() in folded for name in names], dtype=np.float32)


def snapshot_precision(values: np.ndarray) -> np.ndarray:
    """``values`` as float32 holding exactly what :data:`SNAPSHOT_DTYPE` can store (clipped to its range, so never
    infinite; NaN stays NaN). Two ufuncs rather than :func:`numpy.clip`, whose wrappers cost more than the work on
    a request's few hundred values."""
    return np.minimum(np.maximum(values, -_SNAPSHOT_MAX), _SNAPSHOT_MAX).astype(SNAPSHOT_DTYPE).astype(np.float32)


def finite_or_zero(values: np.ndarray) -> np.ndarray:
    """``values`` with NaN and infinities replaced by 0."""
    return np.where(np.isfinite(values), values, 0.0)


class _Grouped:
    """Names (categories, brands, colours) of the candidates grouped: the distinct ones in first-seen order and each
    candidate's index into them, so a per-name value is computed once per name (the same arithmetic, so the same
    bits) and spread to the candidates with one gather."""

    __slots__ = ("names", "inverse")

    def __init__(self, names: Sequence[str]):
        index: dict[str, int] = {}
        self.inverse = np.array([index.setdefault(name, len(index)) for name in names], dtype=np.intp)
        self.names = list(index)

    def expand(self, per_name: np.ndarray) -> np.ndarray:
        return per_name[self.inverse]


def _group_medians(values: np.ndarray, groups: _Grouped) -> np.ndarray:
    """[n] the median of ``values`` over the entries sharing each entry's group: one sort for all groups, the middle
    order statistics averaged as :func:`numpy.median` does (``(a + b) / 2``; a lone middle one as it is)."""
    if not np.isfinite(values).all():  # NaN sorts last where numpy.median propagates it: the plain way
        labels = groups.inverse
        medians = np.empty(len(values), dtype=np.float64)
        for code in range(len(groups.names)):
            members = labels == code
            medians[members] = np.median(values[members])
        return medians
    codes = groups.inverse
    order = np.lexsort((values, codes))
    ordered = values[order]
    sizes = np.bincount(codes, minlength=len(groups.names))
    starts = np.cumsum(sizes) - sizes
    middle = (ordered[starts + (sizes - 1) // 2] + ordered[starts + sizes // 2]) / 2
    return middle[codes]


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
