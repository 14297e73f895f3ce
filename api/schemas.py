"""Request and response bodies of HTTP API v1, as pydantic models.

flask-openapi3 validates requests against these and publishes them in
``/openapi.json``; nothing in the views re-checks a type by hand. Models are
strict (``"5"`` is not a number) and closed (an unknown field is an error).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ranker.catalog.items import ItemFields as CatalogItemFields
from ranker.catalog.items import ItemId
from ranker.interactions import EventType

MAX_RESULTS = 100
MAX_PAGE = 100  # pages of one query in a session
MAX_CANDIDATES = 1000
MAX_BATCH = 1000
MAX_EVENTS = 1000
MAX_BATCH_RANKINGS = 1000  # rankings in one feedback batch
MAX_BATCH_EVENTS = 10_000  # events in one feedback batch, all its rankings together
MAX_IMAGE_BASE64 = 28_000_000  # ~20 MB of image bytes


class Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _whole_number(cls: type, value: Any) -> Any:
    """JSON Schema counts 3.0 as an integer; strings, booleans and 2.5 stay errors."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def decode_base64(value: str) -> bytes:
    """Strict base64 (a ``data:`` URI prefix is allowed)."""
    payload = value.partition(",")[2] if value.startswith("data:") else value
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not valid base64") from None
    if not data:
        raise ValueError("empty image")
    return data


def _valid_base64(cls: type, value: str | None) -> str | None:
    if value is not None:
        decode_base64(value)
    return value


# ---------------------------------------------------------------- rank
class Query(Closed):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "anyOf": [{"required": ["text"], "properties": {"text": {"type": "string"}}}, {"required": ["image"], "properties": {"image": {"type": "string"}}}]
        },
    )

    text: str | None = Field(default=None, min_length=1, max_length=1000, description="what the user typed")
    image: str | None = Field(
        default=None, min_length=4, max_length=MAX_IMAGE_BASE64, description="a picture, base64 (or a data: URI)", json_schema_extra={"format": "byte"}
    )

    _image = field_validator("image")(_valid_base64)

    @model_validator(mode="after")
    def _something(self) -> Query:
        if not (self.text and self.text.strip()) and self.image is None:
            raise ValueError("give a non-empty text, an image, or both")
        return self

    def image_bytes(self) -> bytes | None:
        return None if self.image is None else decode_base64(self.image)


class RankFilters(Closed):
    categories: list[str] | None = Field(default=None, max_length=100)
    price_min: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    price_max: float | None = Field(default=None, ge=0, allow_inf_nan=False)


class RankRequest(Closed):
    user_id: str = Field(min_length=1, max_length=256, description="the shop's user id; pseudonymised (keyed HMAC) before anything is stored")
    query: Query
    num_results: int | None = Field(default=None, ge=1, le=MAX_RESULTS, description="slate length (default: RANKER_NUM_RESULTS, 10)")
    num_candidates: int | None = Field(
        default=None, ge=1, le=MAX_CANDIDATES, description="candidates retrieved before ranking (default: RANKER_NUM_CANDIDATES, 100)"
    )
    filters: RankFilters | None = None
    explain: bool = False
    session_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="the shopper's search session: its pages never repeat an item of the same query, and the ranking reads what was clicked in it",
    )
    page: int = Field(default=1, ge=1, le=MAX_PAGE, description="the page of this query in the session, 1-based (a page above 1 needs session_id)")
    greedy: bool = Field(default=False, description="sort by score instead of sampling with the serving temperature")
    parse_query: bool = Field(
        default=True,
        description="read price, brand, colour and category intent from the text: a price range and categories filter the candidates "
        "(relaxed when nothing satisfies them), brands and colours become features; false: the text is embedded as typed",
    )

    _whole_numbers = field_validator("num_results", "num_candidates", "page", mode="before")(_whole_number)

    @model_validator(mode="after")
    def _enough_candidates(self) -> RankRequest:
        if self.page > 1 and self.session_id is None:
            raise ValueError(f"page: {self.page} needs a session_id (the pages of a query are counted per session)")
        if self.num_candidates is not None and self.num_results is not None and self.num_candidates < self.num_results:
            raise ValueError(f"num_candidates: must be >= num_results ({self.num_results}), got {self.num_candidates}")
        return self


class Explanation(BaseModel):
    """Why an item ranks where it does. The modality split: ``score = text_similarity + image_similarity +
    policy_adjustment``. The policy's part, when one policy placed the slate (not the retrieval arm or an
    interleaving): ``score`` here is the policy's score in the state the item was placed in (the items above it
    placed, the candidates below still available); it equals the item's ``score`` at position 0 of a greedy
    ranking and differs further down, where the slate features have moved. ``baseline + sum(contributions) ==
    score`` (within 1e-4): exact Shapley values over named feature groups against a baseline candidate with every
    feature at its training mean (``ranker.ranking.explain``)."""

    text_similarity: float = Field(description="the text-query channels' share of the retrieval score")
    image_similarity: float = Field(description="the picture-query channels' share of the retrieval score")
    policy_adjustment: float = Field(description="the item's score minus its retrieval score")
    score: float | None = Field(default=None, description="the policy's score of the item in the state it was placed in")
    baseline: float | None = Field(default=None, description="the score of a candidate with every feature at its training mean, same state")
    contributions: dict[str, float] | None = Field(
        default=None,
        description="group -> Shapley value: text_match, image_match, cross_modal, retrieval, price, click_rate, popularity, "
        "personal_affinity, brand_affinity, diversity, position, intent_match (and other: features in no group)",
    )
    reasons: list[str] | None = Field(default=None, description="up to two short phrases from the largest positive contributions, each true of the item")
    method: str | None = Field(default=None, description="how the contributions were computed: shapley-groups/v1")


class RankedItemOut(BaseModel):
    item_id: str
    position: int
    score: float
    retrieval_score: float
    title: str
    category: str
    brand: str
    price: float
    explain: Explanation | None = None


class ServedBy(BaseModel):
    experiment_id: str
    mode: Literal["ab", "interleave"]
    arm: str | None = Field(description="the user's arm (A/B); null when interleaved")
    teams: list[str] | None = Field(default=None, description="interleaving: the arm whose ranking placed each item, in slate order")


class ParsedQueryOut(BaseModel):
    text: str = Field(description="the rest of the text once the intent is taken out")
    price_min: float | None = None
    price_max: float | None = None
    price_phrase: str | None = Field(default=None, description="the words that asked for the price range, as typed")
    price_quantile: float | None = Field(default=None, description="0.25 for cheap-like words, 0.75 for premium-like words: the bound is that price quantile")
    brands: list[str] = Field(description="brands of the catalog the query names")
    colours: list[str] = Field(description="colours of the catalog the query names")
    categories: list[str] = Field(description="categories of the catalog the query names")
    truncated: bool = Field(default=False, description="the query was longer than the parser reads (256 characters, 48 words); the rest stays text")


class QueryOut(BaseModel):
    text: str | None = Field(description="the text embedded for retrieval: the rest once the intent is taken out, or the text as typed")
    parsed: ParsedQueryOut | None = Field(description="what the parser read; null when parsing is off or the query has no text")
    relaxed: list[Literal["price", "category"]] = Field(description="parsed constraints dropped because no candidate satisfied them")


class RankResponse(BaseModel):
    ranking_id: str
    query: QueryOut | None = Field(default=None, description="what was understood of the query")
    policy_version: str = Field(description="the policy that ranked: a version, `retrieval` (baseline arm), or `interleaved:A,B`")
    logged: bool = Field(description="false when the event log was unreachable: the slate is served but cannot take feedback")
    temperature: float
    n_candidates: int
    experiment: ServedBy | None = Field(default=None, description="the experiment and arm that served this ranking, if any")
    items: list[RankedItemOut]


# ------------------------------------------------------------ feedback
class FeedbackEvent(Closed):
    event_id: str | None = Field(default=None, min_length=1, max_length=128, description="idempotency key: a repeat is counted as a duplicate")
    item_id: str = Field(min_length=1, max_length=256)
    type: EventType
    value: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    ts: float | None = Field(default=None, gt=0, allow_inf_nan=False)


class FeedbackRequest(Closed):
    ranking_id: str = Field(min_length=1, max_length=128)
    events: list[FeedbackEvent] = Field(min_length=1, max_length=MAX_EVENTS)


class FeedbackResponse(BaseModel):
    accepted: int
    duplicates: int


class FeedbackBatchRequest(Closed):
    rankings: list[FeedbackRequest] = Field(min_length=1, max_length=MAX_BATCH_RANKINGS, description="each ranking's events, as POST /v1/feedback takes them")

    @model_validator(mode="after")
    def _bounded(self) -> FeedbackBatchRequest:
        total = sum(len(ranking.events) for ranking in self.rankings)
        if total > MAX_BATCH_EVENTS:
            raise ValueError(f"rankings: {total:,} events in one batch, over the limit of {MAX_BATCH_EVENTS:,}; send several batches")
        return self


class FeedbackBatchResult(BaseModel):
    ranking_id: str
    accepted: int
    duplicates: int
    error: ErrorDetail | None = Field(default=None, description="why this ranking's events were refused (none of them stored); absent when recorded")
    retry_after_s: int | None = Field(default=None, description="with error code rate_limited: when this ranking's user may send again")


class FeedbackBatchResponse(BaseModel):
    accepted: int
    duplicates: int
    refused: int = Field(description="rankings refused whole (see their results)")
    results: list[FeedbackBatchResult] = Field(description="one per ranking, in the order sent")


# --------------------------------------------------------------- items
class ItemFields(CatalogItemFields):
    """The catalog's item schema (``ranker.catalog.items.ItemFields``: one set of limits), strict and closed, with
    the picture as base64."""

    model_config = ConfigDict(extra="forbid", strict=True)

    image: str | None = Field(
        default=None,
        min_length=4,
        max_length=MAX_IMAGE_BASE64,
        description="the product picture, base64 (or a data: URI)",
        json_schema_extra={"format": "byte"},
    )
    price: float = Field(ge=0, allow_inf_nan=False)

    _image = field_validator("image")(_valid_base64)


class ItemIn(ItemFields):
    item_id: ItemId


class ItemPath(BaseModel):
    item_id: str = Field(min_length=1, max_length=256)


class ItemsBatch(Closed):
    items: list[ItemIn] = Field(min_length=1, max_length=MAX_BATCH)

    @model_validator(mode="after")
    def _unique(self) -> ItemsBatch:
        seen: set[str] = set()
        for item in self.items:
            if item.item_id in seen:
                raise ValueError(f"items: item_id {item.item_id!r} appears twice in one batch")
            seen.add(item.item_id)
        return self


class ItemOut(BaseModel):
    item_id: str
    title: str
    description: str
    price: float
    category: str
    brand: str
    has_image: bool
    attributes: dict[str, Any]


class Rejected(BaseModel):
    item_id: str
    field: str
    message: str


class BatchResponse(BaseModel):
    upserted: int
    rejected: list[Rejected]


# ------------------------------------------------------------ policies
class PolicyOut(BaseModel):
    version: str
    parent: str | None
    created_at: str | None
    evaluation: dict[str, Any] | None
    current: bool


class PoliciesResponse(BaseModel):
    current: str | None
    serving_here: str | None = Field(description="the version this process serves (it follows `current` within one request)")
    history: list[str]
    policies: list[PolicyOut]


class PolicyPath(BaseModel):
    version: str = Field(min_length=1, max_length=128)


class PromoteResponse(BaseModel):
    current: str
    previous: str | None


class EstimateQuery(BaseModel):
    rankings: int = Field(default=2000, ge=10, le=100_000, description="how many of the latest logged rankings to use")
    resamples: int = Field(default=500, ge=50, le=5000, description="bootstrap resamples for the intervals")


class EstimateResponse(BaseModel):
    version: str
    rankings: int = Field(description="logged rankings used (those with propensities)")
    skipped: dict[str, int]
    logged_value: float | None = Field(description="mean reward per ranking of the logging policies")
    estimators: dict[str, Any] = Field(description="per estimator (ips, snips, dr): value and 95% interval")
    effective_sample_size: float | None


# --------------------------------------------------------- experiments
Metric = Literal["purchases_per_session", "purchase_rate", "click_through", "revenue_per_session"]
NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class ArmIn(Closed):
    name: str = Field(pattern=NAME, description="the arm's name in reports")
    policy: str = Field(min_length=1, max_length=128, description="a policy version, or `retrieval` (retrieval order, no policy)")
    weight: float = Field(gt=0, le=1, allow_inf_nan=False, description="share of the experiment's users (weights sum to 1)")

    @field_validator("weight", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


class ExperimentIn(Closed):
    name: str = Field(min_length=1, max_length=200)
    experiment_id: str | None = Field(default=None, pattern=NAME, description="default: generated")
    mode: Literal["ab", "interleave"] = Field(default="ab", description="`ab`: users split between arms; `interleave`: team-draft interleaving of 2 arms")
    arms: list[ArmIn] = Field(min_length=2, max_length=10)
    layer: str | None = Field(
        default=None, pattern=NAME, description="experiments that share a layer split its users; without one an experiment may not share users with another"
    )
    traffic: float = Field(default=1.0, gt=0, le=1, allow_inf_nan=False, description="share of users in the experiment")
    primary_metric: Metric = "purchases_per_session"
    guardrail_metrics: list[Metric] = Field(default_factory=lambda: ["click_through"], max_length=4)
    start_at: float | None = Field(default=None, gt=0, allow_inf_nan=False, description="unix time; default: now")
    end_at: float | None = Field(default=None, gt=0, allow_inf_nan=False, description="unix time; default: open-ended (stop it)")
    description: str = Field(default="", max_length=2000)

    @field_validator("traffic", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


class ArmOut(BaseModel):
    name: str
    policy: str
    weight: float


class ExperimentOut(BaseModel):
    experiment_id: str
    name: str
    mode: str
    arms: list[ArmOut]
    salt: str
    layer: str | None
    traffic: float
    buckets: list[int]
    primary_metric: str
    guardrail_metrics: list[str]
    created_at: float
    start_at: float
    end_at: float | None
    stopped_at: float | None
    description: str
    status: Literal["scheduled", "running", "stopped"]


class ExperimentsResponse(BaseModel):
    experiments: list[ExperimentOut]


class ExperimentPath(BaseModel):
    experiment_id: str = Field(min_length=1, max_length=64)


class ReportQuery(BaseModel):
    alpha: float = Field(default=0.05, gt=0, lt=0.5, allow_inf_nan=False)
    mde: float = Field(default=0.10, gt=0, le=10, allow_inf_nan=False, description="relative effect the sequential test is tuned for")


class ReportResponse(BaseModel):
    model_config = ConfigDict(extra="allow")
    experiment: ExperimentOut
    mode: str
    generated_at: float


# -------------------------------------------------------------- errors
class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


# what any operation with a JSON body may answer besides its own: malformed or too deeply nested JSON, too large, not JSON
BODY_ERRORS: dict[int, type[BaseModel]] = {400: ErrorResponse, 413: ErrorResponse, 415: ErrorResponse, 422: ErrorResponse}

FeedbackBatchResult.model_rebuild()  # its ErrorDetail is defined below it
FeedbackBatchResponse.model_rebuild()
