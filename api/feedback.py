"""``POST /v1/feedback``: what the user did with a slate."""

from __future__ import annotations

from typing import Any

from flask_openapi3 import APIBlueprint, Tag

from api import limits
from api.common import SECURED, metrics, require_ingest_key, service
from api.schemas import BODY_ERRORS, ErrorResponse, FeedbackRequest, FeedbackResponse

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
