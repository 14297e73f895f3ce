"""The error a service operation raises for a request it cannot carry out.

It names the field and the value at fault, and says what kind of failure it is:
``invalid`` (the request breaks a rule), ``not_found`` (it names something that
does not exist), ``conflict`` (it clashes with the current state) or ``limited``
(its sender is over a rate limit; ``retry_after_s`` says when to retry). It carries
no HTTP status: ``api.errors`` maps kinds and error classes to statuses and
codes, in one place.

:class:`Unavailable` (Redis cannot be reached) and :class:`FeedbackError` (feedback that matches no served
ranking) live here too, beside the service that raises them, so that the modules it delegates to
(``ranker.feedback``) raise them without importing it.
"""

from __future__ import annotations

from typing import Any, Literal

Kind = Literal["invalid", "not_found", "conflict", "limited"]


class RequestError(ValueError):
    def __init__(self, message: str, *, field: str, value: Any = None, kind: Kind = "invalid"):
        super().__init__(message)
        self.field = field
        self.value = value
        self.kind = kind


class Unavailable(RuntimeError):
    """Redis cannot be reached and the operation must not pretend it succeeded. ``maybe_stored``: the write may
    have reached the primary without the replicas confirming it (a retry with the same ``event_id`` is safe)."""

    def __init__(self, message: str, *, maybe_stored: bool = False):
        super().__init__(message)
        self.maybe_stored = maybe_stored


class FeedbackError(RequestError):
    """Feedback that does not match a served ranking (``invalid``), or names no ranking at all (``not_found``)."""
