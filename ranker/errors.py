"""The error a service operation raises for a request it cannot carry out.

It names the field and the value at fault, and says what kind of failure it is:
``invalid`` (the request breaks a rule), ``not_found`` (it names something that
does not exist), ``conflict`` (it clashes with the current state) or ``limited``
(its sender is over a rate limit; ``retry_after_s`` says when to retry). It carries
no HTTP status: ``api.errors`` maps kinds and error classes to statuses and
codes, in one place.
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
