"""The error a service operation raises for a request it cannot carry out.

It names the field and the value at fault and carries the HTTP status and
code the API answers with, so ``api.errors`` needs one handler for all of
them (unknown rankings, items outside a slate, unknown or unloadable policy
versions, nothing to roll back to).
"""

from __future__ import annotations

from typing import Any


class RequestError(ValueError):
    def __init__(self, message: str, *, field: str, value: Any = None, status: int = 422, code: str = "invalid_request"):
        super().__init__(message)
        self.field = field
        self.value = value
        self.status = status
        self.code = code
