"""What the blueprints share: the process's service and metrics, and the API key check."""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable
from typing import Any

from flask import current_app, request

from api.errors import ApiError
from api.metrics import Metrics
from ranker.serving import RankingService

# OpenAPI: the scheme named by write and admin operations
SECURITY_SCHEMES = {"api_key": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
SECURED = [{"api_key": []}]


def service() -> RankingService:
    return current_app.extensions["ranking_service"]


def metrics() -> Metrics:
    return current_app.extensions["ranker_metrics"]


def require_api_key(view: Callable[..., Any]) -> Callable[..., Any]:
    """Write and admin endpoints: when ``API_KEY`` is configured, ``X-API-Key`` (or ``Authorization: Bearer``) must match."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        expected = current_app.config.get("API_KEY")
        if expected:
            given = request.headers.get("X-API-Key") or request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            if not given:
                raise ApiError(401, "unauthorized", "X-API-Key: this endpoint needs an API key (header X-API-Key)", "X-API-Key")
            if not hmac.compare_digest(given.encode(), str(expected).encode()):
                raise ApiError(401, "unauthorized", "X-API-Key: the key given is not valid", "X-API-Key")
        return view(*args, **kwargs)

    return wrapper
