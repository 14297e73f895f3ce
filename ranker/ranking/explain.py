"""Why an item ranks where it does: exact Shapley values of the policy's score over named feature groups, and reasons.

What is explained. The policy (:class:`ranker.ranking.network.SlateNet`) scores
a candidate from three parts: its own standardised feature row, the summary
(the mean standardised row of the candidates still available) and the
context (user and query). A served item is explained *in the state in which
it was placed*: its own row with the slate features (``max_sim_to_placed``,
``same_category_placed``, ``position``) given the items actually above it, and
the summary and context of that placement held fixed. The explained score
(``score`` here) is therefore the policy's score at the item's placement. For
position 0 that is the item's served score; further down a greedy slate (sorted
by one first pass over the whole candidate set) it differs, because the slate
features and the summary have moved since then.

Method (``shapley-groups/v1``). The item's row is split into the named groups
of :data:`GROUPS` (a feature in no group falls in ``other``). A coalition ``S``
of groups keeps the row's values on the columns of ``S`` and sets every other
column to its baseline, the feature's training mean (standardised value 0: the
policy's :class:`~ranker.ranking.network.Standardiser` mean; a column with
infinite scale reads 0 whatever its value, so it contributes nothing). With
``v(S)`` the policy's score of that row, a group's contribution is its exact
Shapley value over all ``2^G`` coalitions::

    phi_g = sum over S without g of |S|! (G - |S| - 1)! / G! * (v(S + g) - v(S))

Efficiency makes them add up: ``baseline + sum(phi) == score``, where
``baseline = v({})`` is the score of a candidate with every feature at its
training mean in the same placement state. Exactness is cheap because the first
layer is linear: the pre-activation of a coalition is ``base + sum of the
group deltas in S`` (``base`` from the summary, context and bias; a group's
delta its columns times their weights), so all ``2^G`` coalitions (4096 for 12
groups) of an item take one matrix product per layer; no sampling, no
approximation, no gradient path. A first-layer unit that is on (or off) in
every coalition is linear (or zero) over them and is folded in without a
per-coalition ReLU, which about halves the second layer's work.

Reasons. Each item gets up to two short phrases, from its groups with the
largest positive contributions. A phrase is worded from the item's raw values
and said only when it is true of the item (:func:`reasons_for`): "cheaper than
most results" needs more than half the other results to cost more; a group
whose contribution is positive but for which no phrase is true gives none, and
the next group is tried. Fewer than two positive groups give fewer reasons; an
item that no phrase fits gets "found for your search" (true of every served
item: each one was retrieved for the query), so every result says something.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from math import factorial
from typing import Any

import numpy as np

from ranker.ranking.features import CONTEXT_FEATURES, FEATURES, Observation, SlateFeatures
from ranker.ranking.policy import RankingPolicy
from ranker.ranking.standardise import CLIP
from ranker.retrieval.fusion import CHANNEL_WEIGHTS

METHOD = "shapley-groups/v1"
OTHER = "other"
# Groups of the item's own feature row, named as users see them. A name missing from FEATURES is skipped, so the
# grouping works before and after a schema adds features; a feature of FEATURES in no group goes to "other".
GROUPS: dict[str, tuple[str, ...]] = {
    "text_match": ("sim_text",),
    "image_match": ("sim_image", "has_image"),
    "cross_modal": ("sim_cross",),
    "retrieval": ("retrieval_score", "retrieval_rank"),
    "price": ("price_z", "price_vs_user", "price_vs_category", "price_vs_user_level"),
    "click_rate": ("ctr", "purchase_rate"),
    "popularity": ("log_popularity",),
    "personal_affinity": ("user_affinity", "user_category_affinity", "user_colour_lift"),
    "brand_affinity": ("user_brand_affinity", "user_brand_lift"),
    "diversity": ("max_sim_to_placed", "same_category_placed"),
    "position": ("position",),
    "session": ("sim_to_clicked", "shown_in_session"),
    "intent_match": ("price_vs_limit", "brand_match", "colour_match"),
}
TEXT_CHANNELS = ("text", "text_to_image")  # retrieval channels driven by the query's text
IMAGE_CHANNELS = ("image", "image_to_text")  # ... and by its picture
MAX_GROUPS = 14  # 2^14 coalitions per item: beyond that exact Shapley values stop being cheap


def feature_groups(features: Sequence[str] = FEATURES) -> dict[str, np.ndarray]:
    """Group name -> the column indices of ``features`` in it, in :data:`GROUPS` order, then ``other`` (if any);
    groups with no column in ``features`` are left out."""
    column = {name: index for index, name in enumerate(features)}
    groups = {name: np.array([column[f] for f in members if f in column], dtype=np.int64) for name, members in GROUPS.items()}
    grouped = {int(index) for columns in groups.values() for index in columns}
    groups[OTHER] = np.array([index for index in range(len(features)) if index not in grouped], dtype=np.int64)
    return {name: columns for name, columns in groups.items() if len(columns)}


@lru_cache(maxsize=4)
def _coalitions(n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Membership [2^G, G] of every coalition (bit g of its index: group g in it), and the Shapley matrix
    A [2^G, G] with ``phi = v @ A``: +w(|S|-1) where g is in S, -w(|S|) where it is not, w(s) = s!(G-s-1)!/G!."""
    masks = np.arange(1 << n_groups)
    members = ((masks[:, None] >> np.arange(n_groups)) & 1).astype(np.float64)
    size = members.sum(axis=1).astype(np.int64)
    weight = np.array([factorial(s) * factorial(n_groups - s - 1) / factorial(n_groups) for s in range(n_groups)] + [0.0])
    shapley = np.where(members > 0, weight[np.maximum(size - 1, 0)][:, None], -weight[size][:, None])
    return members.astype(np.float32), shapley


def group_shapley(
    weights: Sequence[tuple[np.ndarray, np.ndarray]],
    rows: np.ndarray,
    summaries: np.ndarray,
    context: np.ndarray,
    groups: Sequence[np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact Shapley values of the score of each of ``rows`` over ``groups`` of its columns.

    ``weights``: :meth:`RankingPolicy.numpy_weights`. ``rows`` [n, F] raw feature rows; ``summaries`` [n, F] the
    standardised summary each row is scored with; ``context`` [C] raw; ``groups`` disjoint column index arrays
    covering the F columns. Returns (scores [n], baselines [n], contributions [n, G]) in float64, with
    ``baselines + contributions.sum(1) == scores`` up to rounding.
    """
    (feature_mean, feature_inverse), (context_mean, context_inverse), (w1, b1), (w2, b2), (w3, b3) = weights
    n_groups = len(groups)
    if not 0 < n_groups <= MAX_GROUPS:
        raise ValueError(f"groups: {n_groups} groups; exact Shapley values take 1 to {MAX_GROUPS}")
    n_features = len(feature_mean)
    rows = np.clip((np.asarray(rows, dtype=np.float32) - feature_mean) * feature_inverse, -CLIP, CLIP)  # baseline: 0
    context = np.clip((np.asarray(context, dtype=np.float32) - context_mean) * context_inverse, -CLIP, CLIP)
    own, summary_weights, context_weights = w1[:n_features], w1[n_features : 2 * n_features], w1[2 * n_features :]
    base = np.asarray(summaries, dtype=np.float32) @ summary_weights + (context @ context_weights + b1)  # [n, H]
    deltas = np.stack([rows[:, columns] @ own[columns] for columns in groups], axis=1)  # [n, G, H]
    members, shapley = _coalitions(n_groups)
    values = np.empty((len(rows), len(members)), dtype=np.float64)
    for item in range(len(rows)):
        # A first-layer unit whose pre-activation is >= 0 in every coalition (base + its negative deltas >= 0) is
        # linear over them, one <= 0 in every coalition is off: only the units that switch need each coalition's
        # ReLU, the linear ones pass through as a [G, H] product. Exact; it about halves the work.
        lowest = base[item] + np.minimum(deltas[item], 0.0).sum(axis=0)
        highest = base[item] + np.maximum(deltas[item], 0.0).sum(axis=0)
        on, switching = lowest >= 0, (lowest < 0) & (highest > 0)
        linear = members @ (deltas[item][:, on] @ w2[on]) + (base[item, on] @ w2[on] + b2)  # [2^G, H]
        switched = np.maximum(base[item, switching] + members @ deltas[item][:, switching], 0.0) @ w2[switching]
        values[item] = (np.maximum(linear + switched, 0.0) @ w3 + b3)[:, 0]
    return values[:, -1], values[:, 0], values @ shapley  # the full coalition is the last index, the empty one the first


def modality_split(channel_scores: dict[str, float | None], score: float, *, calibrated: bool = False) -> dict[str, float]:
    """Split a served ``score`` into the retrieval score's text part, its image part and the policy's adjustment,
    ``score - retrieval score``; the three sum to ``score``. ``channel_scores``: a candidate's score per channel.

    The parts follow the fusion (:func:`ranker.retrieval.fusion.fuse_scores`): with a ``calibrated`` index, each
    query part's best channel over the number of query parts matched; otherwise the text-query and picture-query
    channels' shares of the weighted mean."""
    present = {channel: value for channel, value in channel_scores.items() if value is not None}
    if calibrated:
        best = {
            part: max((present[c] for c in channels if c in present), default=None) for part, channels in (("text", TEXT_CHANNELS), ("image", IMAGE_CHANNELS))
        }
        matched = sum(value is not None for value in best.values()) or 1
        text, image = ((best[part] or 0.0) / matched for part in ("text", "image"))
        return {"text_similarity": round(text, 6), "image_similarity": round(image, 6), "policy_adjustment": round(score - text - image, 6)}
    total_weight = sum(CHANNEL_WEIGHTS[channel] for channel in present) or 1.0

    def part(channels: Sequence[str]) -> float:
        return sum(CHANNEL_WEIGHTS[c] * present[c] for c in channels if c in present) / total_weight

    text, image = part(TEXT_CHANNELS), part(IMAGE_CHANNELS)
    return {"text_similarity": round(text, 6), "image_similarity": round(image, 6), "policy_adjustment": round(score - text - image, 6)}


@dataclass
class Explanation:
    """One served item's explanation: the placement-state score, the baseline, each group's share and the reasons."""

    score: float
    baseline: float
    contributions: dict[str, float]
    reasons: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "score": round(self.score, 6),
            "baseline": round(self.baseline, 6),
            "contributions": {name: round(value, 6) for name, value in self.contributions.items()},
            "reasons": self.reasons,
            "method": METHOD,
        }


@dataclass
class PlacedSlate:
    """What :func:`explain_slate` needs of a served slate; :class:`ranker.serving.RankResult` carries it when an
    explanation is asked for, so the normal path computes nothing."""

    policy: RankingPolicy
    observation: Observation
    slots: list[int]
    slate_size: int

    def explain(self) -> list[Explanation]:
        return explain_slate(self.policy, self.observation, self.slots, self.slate_size)


def explain_slate(policy: RankingPolicy, observation: Observation, slots: Sequence[int], slate_size: int) -> list[Explanation]:
    """An :class:`Explanation` for each of ``slots`` (display order), each in the state in which it was placed."""
    if not len(slots):
        return []
    weights = policy.numpy_weights()
    (feature_mean, feature_inverse) = weights[0]
    slate = SlateFeatures(observation, slate_size)
    rows, summaries, peers = [], [], []
    for slot in slots:
        standardised = np.clip((slate.features - feature_mean) * feature_inverse, -CLIP, CLIP)
        available = slate.available.astype(np.float32)[:, None]
        summaries.append((standardised * available).sum(axis=0) / max(float(available.sum()), 1.0))
        rows.append(slate.features[slot].copy())
        peers.append(slate.features[observation.valid & (np.arange(len(observation.valid)) != slot)].copy())
        slate.place(int(slot))
    groups = feature_groups()
    scores, baselines, contributions = group_shapley(weights, np.stack(rows), np.stack(summaries), observation.context, list(groups.values()))
    standardised_rows = np.clip((np.stack(rows) - feature_mean) * feature_inverse, -CLIP, CLIP)
    out = []
    for index in range(len(slots)):
        shares = dict(zip(groups, contributions[index].tolist()))
        facts = Facts(rows[index], standardised_rows[index], peers[index], observation.context)
        out.append(Explanation(float(scores[index]), float(baselines[index]), shares, reasons_for(shares, facts)))
    return out


# ------------------------------------------------------------------ reasons
_COLUMN = {name: index for index, name in enumerate(FEATURES)}
_CONTEXT = {name: index for index, name in enumerate(CONTEXT_FEATURES)}


@dataclass
class Facts:
    """What a phrase may be checked against: the item's raw row and standardised row (against the training mean),
    the raw rows of the other valid candidates in the same placement state, and the raw context."""

    row: np.ndarray
    z: np.ndarray
    peers: np.ndarray
    context: np.ndarray

    def value(self, feature: str) -> float:
        return float(self.row[_COLUMN[feature]]) if feature in _COLUMN else 0.0

    def deviation(self, feature: str) -> float:
        """How far from the training mean, in standard deviations (0 for a feature not in the schema)."""
        return float(self.z[_COLUMN[feature]]) if feature in _COLUMN else 0.0

    def share_above(self, feature: str) -> float:
        """The share of the other candidates whose ``feature`` is strictly higher than this item's."""
        if feature not in _COLUMN or not len(self.peers):
            return 0.0
        return float((self.peers[:, _COLUMN[feature]] > self.value(feature)).mean())

    def share_below(self, feature: str) -> float:
        if feature not in _COLUMN or not len(self.peers):
            return 0.0
        return float((self.peers[:, _COLUMN[feature]] < self.value(feature)).mean())

    def high(self, feature: str) -> bool:
        """Above its training mean and above most of the other results."""
        return self.deviation(feature) > 0 and self.share_below(feature) > 0.5

    def query(self, name: str, default: bool) -> bool:
        """A context flag (``query_has_text``...); ``default`` when the schema has no such flag."""
        return bool(self.context[_CONTEXT[name]] > 0.5) if name in _CONTEXT else default

    @property
    def placed_above(self) -> bool:
        return self.value("position") > 0


# group -> (feature the phrase rests on, the check that makes it true, the phrase); among a group's true phrases
# the one whose feature is furthest from its training mean is said.
Check = Callable[[Facts], bool]
PHRASES: dict[str, list[tuple[str, Check, str | Callable[[Facts], str]]]] = {
    "text_match": [("sim_text", lambda f: f.query("query_has_text", True) and f.value("sim_text") > 0 and f.high("sim_text"), "matches your search words")],
    "image_match": [
        ("sim_image", lambda f: f.query("query_has_image", True) and f.value("sim_image") > 0 and f.high("sim_image"), "looks like your picture"),
        ("has_image", lambda f: f.value("has_image") > 0.5, "has a photo"),
    ],
    "cross_modal": [
        (
            "sim_cross",
            lambda f: f.value("sim_cross") > 0 and f.high("sim_cross"),
            lambda f: (
                "its description matches your picture"
                if f.query("query_has_image", False) and not f.query("query_has_text", True)
                else "its photo matches your search"
            ),
        )
    ],
    "retrieval": [
        ("retrieval_rank", lambda f: f.value("retrieval_rank") <= 0.1, "one of the closest matches to your search"),
        ("retrieval_score", lambda f: f.high("retrieval_score"), "a close match to your search"),
    ],
    "price": [
        ("price_z", lambda f: f.share_above("price_z") > 0.5, "cheaper than most results"),
        ("price_vs_user", lambda f: f.value("price_vs_user") < 0, "cheaper than what you usually buy"),
        ("price_vs_category", lambda f: f.value("price_vs_category") < 0, "cheaper than most of its kind here"),
        ("price_vs_user_level", lambda f: f.value("price_vs_user_level") < 0, "at or below the price level you usually choose"),
        ("price_z", lambda f: f.share_below("price_z") > 0.5, "a premium pick, pricier than most results"),
    ],
    "click_rate": [
        ("ctr", lambda f: f.high("ctr"), "often clicked by other shoppers"),
        ("purchase_rate", lambda f: f.high("purchase_rate"), "often bought"),
    ],
    "popularity": [("log_popularity", lambda f: f.value("log_popularity") > 0 and f.high("log_popularity"), "popular")],
    "personal_affinity": [
        ("user_affinity", lambda f: f.value("user_affinity") > 0 and f.high("user_affinity"), "close to what you viewed before"),
        ("user_category_affinity", lambda f: f.value("user_category_affinity") > 0, "from a category you shop"),
        ("user_colour_lift", lambda f: f.value("user_colour_lift") > 0, "in a colour you pick more often than you are shown it"),
    ],
    # the profile's brand counts fold in clicks and carts as well as purchases: "bought" would overclaim
    "brand_affinity": [
        ("user_brand_affinity", lambda f: f.value("user_brand_affinity") > 0, "you like this brand"),
        ("user_brand_lift", lambda f: f.value("user_brand_lift") > 0, "a brand you pick more often than you are shown it"),
    ],
    "diversity": [
        ("max_sim_to_placed", lambda f: f.placed_above and f.deviation("max_sim_to_placed") < 0, "unlike the items above"),
        ("same_category_placed", lambda f: f.placed_above and f.value("same_category_placed") == 0, "a different kind from the items above"),
    ],
    "position": [("position", lambda f: f.value("position") <= 0.2, "shown near the top")],
    "session": [("sim_to_clicked", lambda f: f.value("sim_to_clicked") > 0 and f.high("sim_to_clicked"), "like what you clicked in this search")],
    "intent_match": [
        ("colour_match", lambda f: f.value("colour_match") > 0.5, "matches the colour you asked for"),
        ("brand_match", lambda f: f.value("brand_match") > 0.5, "matches the brand you asked for"),
        ("price_vs_limit", lambda f: f.value("price_vs_limit") < 0 and f.query("query_price_limit", True), "within the price you asked for"),
    ],
}
N_REASONS = 2
FALLBACK_REASON = "found for your search"  # true of every served item: each was a retrieved candidate


def phrase_for(group: str, facts: Facts) -> str | None:
    """The group's phrase that is true of the item (the one resting on the most unusual feature), or None."""
    true = [(abs(facts.deviation(feature)), order, phrase) for order, (feature, check, phrase) in enumerate(PHRASES.get(group, [])) if check(facts)]
    if not true:
        return None
    _, _, phrase = max(true, key=lambda entry: (entry[0], -entry[1]))
    return phrase(facts) if callable(phrase) else phrase


def reasons_for(contributions: dict[str, float], facts: Facts, limit: int = N_REASONS) -> list[str]:
    """Up to ``limit`` phrases from the groups with the largest positive contributions, each true of the item."""
    reasons: list[str] = []
    for group, value in sorted(contributions.items(), key=lambda entry: -entry[1]):
        if value <= 0 or len(reasons) == limit:
            break
        phrase = phrase_for(group, facts)
        if phrase is not None and phrase not in reasons:
            reasons.append(phrase)
    if not reasons:  # nothing pulled it up that words fit: it is here because retrieval found it for the query
        reasons.append(FALLBACK_REASON)
    return reasons
