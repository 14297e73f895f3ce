"""Every error is JSON ``{error: {code, message, field?}}`` with a 4xx status (DESIGN.md).

Validation errors from pydantic become 422 naming the first failing field in
dotted form (``query.text``, ``events[2].type``) with the value that was
given; malformed JSON is 400, an oversized body 413, a missing key 401, an
unreachable Redis on a write 503 with ``Retry-After``. A 500 would be a bug:
it is logged with its traceback and answered in the same JSON shape.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import redis
from flask import Flask, jsonify, make_response
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from ranker.catalog.items import CatalogError
from ranker.errors import RequestError
from ranker.experiments.store import ExperimentError
from ranker.live.registry import RegistryError
from ranker.retrieval.engine import QueryError
from ranker.serving import FeedbackError, Unavailable

log = logging.getLogger(__name__)
RETRY_AFTER_S = 5

# The one place where domain errors become HTTP: a kind's status, and the code each error class answers with
STATUS_OF_KIND = {"invalid": 422, "not_found": 404, "conflict": 409, "limited": 429}
CODES: dict[tuple[type[RequestError], str], str] = {
    (FeedbackError, "invalid"): "invalid_feedback",
    (ExperimentError, "invalid"): "invalid_experiment",
    (RegistryError, "conflict"): "policy_conflict",
}
DEFAULT_CODES = {"invalid": "invalid_request", "not_found": "not_found", "conflict": "conflict", "limited": "rate_limited"}


def status_and_code(exc: RequestError) -> tuple[int, str]:
    """The HTTP status and error code of a domain error."""
    for cls in type(exc).__mro__:
        if (cls, exc.kind) in CODES:
            return STATUS_OF_KIND[exc.kind], CODES[(cls, exc.kind)]
    return STATUS_OF_KIND[exc.kind], DEFAULT_CODES[exc.kind]


class ApiError(Exception):
    """Raised by views: ``status``, ``code``, a message naming the field."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.field, self.headers = status, code, message, field, headers


def error_response(status: int, code: str, message: str, field: str | None = None, headers: dict[str, str] | None = None) -> Any:
    body: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    response = make_response(jsonify(error=body), status)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def dotted(loc: tuple[Any, ...]) -> str:
    """('events', 2, 'type') -> 'events[2].type'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after", "function-before") or str(part).startswith(("function-", "literal[")):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "body"


def validation_error_response(exc: ValidationError) -> Any:
    """flask-openapi3's hook: a pydantic error as our JSON error (422)."""
    first = exc.errors(include_url=False)[0]
    field = dotted(tuple(first["loc"]))
    value = first.get("input")
    shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    if len(shown) > 80:
        shown = shown[:77] + "..."
    message = first["msg"].removeprefix("Value error, ")
    named = re.match(r"^([A-Za-z_][\w.\[\]]*): (.+)$", message) if first["type"] == "value_error" else None
    if named:  # a model-level rule that names its field: "num_candidates: must be ..."
        field = named.group(1) if field == "body" else f"{field}.{named.group(1)}"
        message = named.group(2)
    if first["type"] == "missing":
        text = f"{field}: required field is missing"
    elif first["type"] == "extra_forbidden":
        text = f"{field}: unknown field"
    else:
        text = f"{field}: {message} (got {shown})"
    return error_response(422, "invalid_request", text, field)


def register(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Any:
        headers = dict(exc.headers or {})
        if getattr(exc, "retry_after", None):
            headers["Retry-After"] = str(exc.retry_after)
        return error_response(exc.status, exc.code, exc.message, exc.field, headers=headers)

    @app.errorhandler(QueryError)
    def _query_error(exc: QueryError) -> Any:
        return error_response(422, "invalid_query", str(exc), exc.field)

    @app.errorhandler(CatalogError)  # image decoding (ImageError) included
    def _catalog_error(exc: CatalogError) -> Any:
        field = exc.field or "image"
        return error_response(422, "invalid_image" if "image" in field else "invalid_item", str(exc), field)

    @app.errorhandler(RequestError)  # feedback outside a served slate, unknown policy versions, ...
    def _request_error(exc: RequestError) -> Any:
        status, code = status_and_code(exc)
        retry = getattr(exc, "retry_after_s", None)
        return error_response(status, code, str(exc), exc.field, headers={"Retry-After": str(retry)} if retry else None)

    @app.errorhandler(Unavailable)
    def _unavailable(exc: Unavailable) -> Any:
        what = "retry with the same event_id (a duplicate is counted once)" if getattr(exc, "maybe_stored", False) else "nothing was stored, retry later"
        return error_response(503, "unavailable", f"{exc}; {what}", headers={"Retry-After": str(RETRY_AFTER_S)})

    @app.errorhandler(redis.RedisError)  # Redis went away during an admin or read request
    def _redis_down(exc: redis.RedisError) -> Any:
        return error_response(503, "unavailable", f"Redis unreachable ({type(exc).__name__}); retry later", headers={"Retry-After": str(RETRY_AFTER_S)})

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Any:
        field = "body" if exc.code in (400, 413, 415) else None
        # the headers the exception carries: Allow on a 405 (RFC 9110), Retry-After on a 429 or 503
        kept = {name: value for name, value in exc.get_headers() if name.lower() in ("allow", "retry-after")}
        return error_response(exc.code or 500, (exc.name or "error").lower().replace(" ", "_"), exc.description or exc.name, field, headers=kept)

    @app.errorhandler(Exception)
    def _bug(exc: Exception) -> Any:
        log.exception("unhandled error")
        return error_response(500, "internal_error", f"internal error ({type(exc).__name__}); this is a bug, please report it")
