"""``POST /v1/feedback``: what the user did with a slate; ``POST /v1/feedback/batch``: many slates' at once."""

from __future__ import annotations

from typing import Any

from flask_openapi3 import APIBlueprint, Tag

from api import limits
from api.common import SECURED, metrics, require_ingest_key, service
from api.errors import status_and_code
from api.schemas import BODY_ERRORS, ErrorResponse, FeedbackBatchRequest, FeedbackBatchResponse, FeedbackRequest, FeedbackResponse
from ranker.feedback import BatchResult, take_feedback_batch

bp = APIBlueprint("feedback", __name__, url_prefix="/v1", abp_tags=[Tag(name="feedback", description="clicks, add-to-carts and purchases")])


@bp.post(
    "/feedback",
    responses={202: FeedbackResponse, **BODY_ERRORS, 401: ErrorResponse, 404: ErrorResponse, 429: ErrorResponse, 503: ErrorResponse},
    security=SECURED,
    operation_id="feedback",
)
@require_ingest_key
def feedback(body: FeedbackRequest) -> Any:
    """Report interactions with a served ranking.

    Each event must name an item of that ranking. Events are appended to the
    event log once per `event_id` (a repeat is counted in `duplicates`), and
    the item's counters and the user's profile move at once, so the next
    ranking for this user already reflects them. If the event log cannot be
    reached the answer is 503 with Retry-After and nothing is stored. An
    event is a duplicate when its `(ranking_id, event_id)` was seen before;
    live counters move once per event type and shown position. `ts` is unix
    time in seconds, near now. Rate limited per API key and per user (429
    with Retry-After).
    """
    limits.check("feedback_per_key", limits.key_identity())
    accepted, duplicates = service().feedback(body.ranking_id, [event.model_dump() for event in body.events])
    metrics().feedback.labels("accepted").inc(accepted)
    metrics().feedback.labels("duplicate").inc(duplicates)
    return {"accepted": accepted, "duplicates": duplicates}, 202


@bp.post(
    "/feedback/batch",
    responses={202: FeedbackBatchResponse, **BODY_ERRORS, 401: ErrorResponse, 429: ErrorResponse, 503: ErrorResponse},
    security=SECURED,
    operation_id="feedback_batch",
)
@require_ingest_key
def feedback_batch(body: FeedbackBatchRequest) -> Any:
    """Report interactions with many served rankings in one request (a collector's batch).

    Each entry is what `POST /v1/feedback` takes for one ranking, with the
    same checks and effects; the entries are recorded in one round trip to
    the event log. An entry is recorded whole or refused whole: a refused
    entry (unknown ranking, an item outside its slate, a bad `ts` or `value`,
    its user over the feedback limit) stores nothing and its result carries
    the error, with the field prefixed `rankings[i].`; the other entries are
    recorded all the same. The answer is 202 with a result per entry, in
    order. A body that breaks the schema (or more than 1,000 rankings or
    10,000 events) is refused whole with 422. If the event log cannot be
    reached the answer is 503 and some entries may be stored: retry the batch
    with the same `event_id`s (a duplicate is counted once). The per-key rate
    limit counts each entry as one request.
    """
    limits.check("feedback_per_key", limits.key_identity(), cost=len(body.rankings))
    results = take_feedback_batch(service(), [(ranking.ranking_id, [event.model_dump() for event in ranking.events]) for ranking in body.rankings])
    answered = [batch_result(result) for result in results]
    accepted = sum(result.accepted for result in results)
    duplicates = sum(result.duplicates for result in results)
    metrics().feedback.labels("accepted").inc(accepted)
    metrics().feedback.labels("duplicate").inc(duplicates)
    refused = sum(result.error is not None for result in results)
    return {"accepted": accepted, "duplicates": duplicates, "refused": refused, "results": answered}, 202


def batch_result(result: BatchResult) -> dict[str, Any]:
    out: dict[str, Any] = {"ranking_id": result.ranking_id, "accepted": result.accepted, "duplicates": result.duplicates}
    if result.error is not None:
        _, code = status_and_code(result.error)
        out["error"] = {"code": code, "message": str(result.error), "field": result.error.field}
        retry = getattr(result.error, "retry_after_s", None)
        if retry:
            out["retry_after_s"] = int(retry)
    return out
