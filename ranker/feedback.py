"""Taking feedback: bounds on what a shop may report, then one round trip that records it
(:meth:`ranker.live.events.EventLog.record_feedback`: the ranking lookup, the checks, the user's feedback rate,
dedup per ``(ranking_id, event_id)``, the stream append, the counters, the profile and the experiment's outcomes in
one script, so the events are stored with everything they move or not at all).

Bounds (each a 422 naming the field, before anything is stored):

- ``ts`` is unix time in **seconds**, within ``feedback_ts_past_s`` before now (default: the ranking retention, 24 h)
  and ``feedback_ts_future_s`` after it (default 5 minutes of clock skew). A time in milliseconds is refused with a
  message that says so: accepted, every such event would fall outside the learner's attribution window;
- ``value`` is at most ``max_event_value`` (default 1,000,000): a purchase's revenue feeds experiment reports.

A batch (:func:`take_feedback_batch`, ``POST /v1/feedback/batch``: many rankings' events in one request, as Segment
and Snowplow collectors take them) runs the same checks and the same script per ranking, pipelined in one round
trip: each ranking is recorded whole or refused whole, with the error it met, and a refused ranking stores nothing
while the others are recorded.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import redis

from ranker.errors import FeedbackError, Unavailable
from ranker.interactions import EVENT_TYPES
from ranker.live.backend import confirm_replicated
from ranker.live.events import Feedback, FeedbackRateLimited, FeedbackRefused
from ranker.live.state import Interaction
from ranker.ranking.profile import price_level

if TYPE_CHECKING:
    from ranker.serving import RankingService


class FeedbackLimited(FeedbackError):
    """The ranking's user is over a feedback rate limit; nothing was stored (``retry_after_s``)."""

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message, field="ranking_id", kind="limited")
        self.retry_after_s = retry_after_s


def checked_events(events: Sequence[dict[str, Any]], *, now: float, past_s: float, future_s: float, max_value: float) -> list[Feedback]:
    """The reported events as :class:`Feedback`, or a :class:`FeedbackError` naming the first bad field."""
    reported: list[Feedback] = []
    for index, raw in enumerate(events):
        if raw["type"] not in EVENT_TYPES:
            raise FeedbackError(
                f"events[{index}].type: {raw['type']!r} is not one of {', '.join(EVENT_TYPES)}", field=f"events[{index}].type", value=raw["type"]
            )
        ts = raw.get("ts")
        if ts is not None and not now - past_s <= ts <= now + future_s:
            hint = " (it looks like milliseconds: send seconds)" if ts > (now + future_s) * 100 else ""
            raise FeedbackError(
                f"events[{index}].ts: {ts!r} is not unix time in seconds within {past_s:.0f} s before now and {future_s:.0f} s after{hint}",
                field=f"events[{index}].ts",
                value=ts,
            )
        value = raw.get("value")
        if value is not None and value > max_value:
            raise FeedbackError(f"events[{index}].value: {value!r} is over the ceiling of {max_value:g}", field=f"events[{index}].value", value=value)
        reported.append(
            Feedback(event_id=raw.get("event_id") or uuid.uuid4().hex, item_id=raw["item_id"], type=raw["type"], value=value, ts=ts if ts is not None else now)
        )
    return reported


def take_feedback(service: RankingService, ranking_id: str, events: Sequence[dict[str, Any]]) -> tuple[int, int]:
    """Check and record ``events`` for ``ranking_id``; (accepted, duplicates)."""
    config = service.config
    reported = checked_events(events, now=time.time(), past_s=config.feedback_ts_past_s, future_s=config.feedback_ts_future_s, max_value=config.max_event_value)
    describe(service, reported)
    try:
        flags = service.events.record_feedback(ranking_id, reported)
    except (FeedbackRefused, FeedbackRateLimited) as refused:
        raise refusal(service, ranking_id, reported, refused) from None
    except redis.RedisError as exc:
        raise Unavailable(f"event log unreachable: {exc}") from None
    confirm(service)
    accepted = sum(flags)
    return accepted, len(flags) - accepted


@dataclass
class BatchResult:
    """What became of one ranking's events in a batch: counted, or refused whole (``error``, nothing stored)."""

    ranking_id: str
    accepted: int = 0
    duplicates: int = 0
    error: FeedbackError | None = None


def take_feedback_batch(service: RankingService, batches: Sequence[tuple[str, Sequence[dict[str, Any]]]]) -> list[BatchResult]:
    """Check and record many rankings' events in one round trip; a :class:`BatchResult` per ranking, in order. A
    ranking whose events break a bound, whose id is unknown, which names an item outside its slate or whose user is
    over the feedback limit is refused (its error's field is prefixed ``rankings[i].``); the rest are recorded."""
    config = service.config
    now = time.time()
    results = [BatchResult(ranking_id) for ranking_id, _ in batches]
    checked: list[tuple[int, str, list[Feedback]]] = []
    for index, (ranking_id, events) in enumerate(batches):
        try:
            reported = checked_events(events, now=now, past_s=config.feedback_ts_past_s, future_s=config.feedback_ts_future_s, max_value=config.max_event_value)
        except FeedbackError as exc:
            results[index].error = within(exc, index)
            continue
        checked.append((index, ranking_id, reported))
    describe(service, [event for _, _, reported in checked for event in reported])
    try:
        outcomes = service.events.record_feedback_many([(ranking_id, reported) for _, ranking_id, reported in checked])
    except redis.RedisError as exc:
        raise Unavailable(f"event log unreachable: {exc}", maybe_stored=True) from None
    for (index, ranking_id, reported), outcome in zip(checked, outcomes, strict=True):
        if isinstance(outcome, (FeedbackRefused, FeedbackRateLimited)):
            results[index].error = within(refusal(service, ranking_id, reported, outcome), index)
        else:
            results[index].accepted = sum(outcome)
            results[index].duplicates = len(outcome) - results[index].accepted
    if checked:
        confirm(service)
    return results


def refusal(service: RankingService, ranking_id: str, reported: Sequence[Feedback], refused: FeedbackRefused | FeedbackRateLimited) -> FeedbackError:
    """The request error for what the feedback script refused."""
    config = service.config
    if isinstance(refused, FeedbackRateLimited):
        return FeedbackLimited(
            f"ranking_id: the user of ranking {ranking_id} is over the feedback limit ({config.feedback_limit_per_user}); retry after {refused.retry_after_s} s",
            refused.retry_after_s,
        )
    if refused.index is None:
        return FeedbackError(
            f"ranking_id: no ranking {ranking_id!r} (unknown, erased, or older than the {config.ranking_ttl_s} s retention)",
            field="ranking_id",
            value=ranking_id,
            kind="not_found",
        )
    item_id = reported[refused.index].item_id
    return FeedbackError(
        f"events[{refused.index}].item_id: {item_id!r} was not in ranking {ranking_id}", field=f"events[{refused.index}].item_id", value=item_id
    )


def within(error: FeedbackError, index: int) -> FeedbackError:
    """``error`` as the batch's ranking ``index`` has it: its field (and message) prefixed ``rankings[index].``."""
    where = f"rankings[{index}]."
    error.args = (where + str(error),)
    error.field = where + error.field
    return error


def confirm(service: RankingService) -> None:
    """On a replicated Redis: only what a replica holds too survives a failover."""
    config = service.config
    try:
        confirm_replicated(service.client, config.prefix, config.redis_replicas, config.redis_replica_timeout_ms)
    except redis.RedisError as exc:
        raise Unavailable(f"event log not confirmed by its replicas: {exc}", maybe_stored=True) from None


def describe(service: RankingService, reported: Sequence[Feedback]) -> None:
    """Fill in what the script needs from the catalog: a purchase's revenue (the value the shop reported, else the
    item's price) and what the user's profile learns (nothing from an item deleted since it was shown)."""
    engine = service.engine
    with service._engine_lock:
        items = [engine.get(event.item_id) for event in reported]
        keys = [engine.store.key_of(event.item_id) for event in reported]
        vectors, present = engine.indexes["text"].vectors_for(np.array([-1 if key is None else key for key in keys], dtype=np.int64))
    for row, (event, item) in enumerate(zip(reported, items)):
        if event.type == "purchase":
            event.revenue = float(event.value) if event.value is not None else float(item.price) if item is not None else 0.0
        if item is not None and present[row]:
            median = engine.query_vocabulary.price_quantile(0.5, [item.category]) or item.price
            level = float(price_level(item.price, median))
            event.profile = Interaction(event.type, item.category, item.brand, item.price, vectors[row], colour=item.colour, level=level)
