"""The feature schema: the columns of a candidate row and of the context vector, and the hash that names them.

One layout serves the simulator, offline training and live traffic (:mod:`ranker.ranking.features` builds it).
A policy artifact records :func:`schema_hash` and refuses to load against another.

Version history:

- 2: position-debiased click and purchase rates, ``price_vs_category``, stored input standardisation;
- 3: the query's intent (a price range, brands, colours) as context and per-item matches;
- 4 (this one): **the session** (what the shopper clicked earlier in it, which page of the query this is,
  how often they rephrased, whether an item was shown already) and **the user's revealed taste**, debiased by
  what they were shown: a brand's or a colour's share of their interactions against its share of their
  impressions (``user_brand_lift``, ``user_colour_lift``), and where the prices they act on sit against the prices
  they are shown (``price_vs_user_level``, ``user_price_response``). A price's *level* is its log distance to the
  median price of its category in the catalog (:func:`ranker.ranking.profile.price_level`).
"""

from __future__ import annotations

import hashlib
import json

from ranker.interactions import EVENT_TYPES

FEATURE_SCHEMA_VERSION = 4
COUNTERS: tuple[str, ...] = ("impressions", "clicks", "purchases", "exposure")  # item counter columns, in this order
INTERACTION_KINDS: tuple[str, ...] = EVENT_TYPES  # what a profile records (ranker.interactions)
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
    "user_brand_lift",  # log(brand's smoothed share of the user's interactions / its share of their impressions); 0 without history
    "user_colour_lift",  # the same for the item's colour
    "price_vs_user_level",  # the item's price level - the mean level of what the user acted on (0 when unknown)
    "sim_to_clicked",  # highest text cosine to an item clicked earlier in this session (0 before a click)
    "shown_in_session",  # 1 when the item was shown earlier in this session (under another query: a page never repeats its own)
)
SLATE_FEATURES: tuple[str, ...] = (
    "max_sim_to_placed",  # highest text similarity to an item already in the slate
    "same_category_placed",  # share of placed items in this item's category
    "position",  # the position being filled, 0 .. 1
)
FEATURES: tuple[str, ...] = STATIC_FEATURES + SLATE_FEATURES
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
    "session_page",  # (page - 1) / 4 of this query, at most 1: how far the shopper paged without finding it
    "session_rephrasings",  # queries before this one in the session / 3, at most 1
    "session_clicks",  # log1p(clicks earlier in the session) / log1p(10), at most 1
    "user_price_response",  # mean level of what the user acted on - mean level of what they were shown (< 0: cheaper than shown)
)


def schema_hash() -> str:
    """A short hash of the feature layout; it changes whenever the layout does."""
    layout = {"version": FEATURE_SCHEMA_VERSION, "features": FEATURES, "context": CONTEXT_FEATURES}
    return hashlib.sha256(json.dumps(layout, sort_keys=True).encode()).hexdigest()[:16]


def feature_schema() -> dict[str, object]:
    """The documented schema, as recorded in policy manifests."""
    return {"version": FEATURE_SCHEMA_VERSION, "hash": schema_hash(), "features": list(FEATURES), "context": list(CONTEXT_FEATURES)}
