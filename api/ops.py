"""Operations: ``/healthz``, ``/readyz``, ``/metrics``, ``/openapi.json``."""

from __future__ import annotations

from typing import Any

import redis
from flask import Response, current_app, jsonify
from flask_openapi3 import APIBlueprint, Tag

from api.common import metrics, service
from ranker.learning.status import LearnerStatus
from ranker.live.catalog_stream import catalog_state

bp = APIBlueprint("ops", __name__, abp_tags=[Tag(name="operations")])


@bp.get("/healthz", operation_id="healthz")
def healthz() -> Any:
    """Liveness: the process answers."""
    return {"status": "ok"}


@bp.get("/readyz", operation_id="readyz")
def readyz() -> Any:
    """Readiness: Redis answers and a policy is loaded (503 with the reasons otherwise); ``encoders`` says what runs them;
    ``policy_fallback`` says when the pointer's version would not load and an older one serves instead; ``catalog``
    which text-picture bridge serves in this process and when it was fitted (catalog writes and a newly published
    bridge are applied first, as for a rank request)."""
    svc = service()
    problems = []
    try:
        svc.sync()  # keyed, not PING: on a cluster it asks the node serving this deployment
    except redis.RedisError as exc:
        problems.append(f"redis: {exc}")
    if svc.policies.policy is None:
        problems.append("policy: none loaded")
    body = {
        "status": "ready" if not problems else "not_ready",
        "problems": problems,
        "items": len(svc.engine),
        "policy_version": svc.policies.version,
        "policy_fallback": svc.policies.fallback,
        "encoders": svc.engine.encoders.runtime(),
        "catalog": catalog_state(svc.engine, svc.catalog_log),
    }
    return jsonify(body), (200 if not problems else 503)


@bp.get("/metrics", operation_id="metrics")
def prometheus() -> Any:
    """Prometheus exposition of the service's metrics."""
    svc, m = service(), metrics()
    m.items.set(len(svc.engine))
    m.serving(svc.policies.version)
    m.policy_fallback.set(1 if svc.policies.fallback else 0)
    try:
        m.learner(LearnerStatus(svc.client, prefix=current_app.config["PREFIX"]).summary())
        m.catalog_skipped.set(svc.catalog_log.skipped_total())
    except redis.RedisError:
        pass  # counted by the rank path; the scrape still answers
    fitted_at = (svc.engine.bridge_info().get("fit") or {}).get("fitted_at")
    m.bridge_fitted.set(fitted_at or 0)
    payload, content_type = m.exposition()
    return Response(payload, content_type=content_type)


@bp.get("/openapi.json", operation_id="openapi")
def openapi() -> Any:
    """This document."""
    return jsonify(with_error_bodies(current_app.api_doc))


# What every operation of a kind may answer besides its own responses (api.security, api.errors, the body checks)
COMMON_ERRORS = {
    "secured": {"401": "the key is missing or not this endpoint's"},
    "post": {"415": "neither JSON nor the key header (a post a web page could forge)"},
    "body": {"400": "malformed or too deeply nested JSON", "413": "over the size limit", "415": "not JSON", "422": "a field breaks a rule"},
    "path": {"422": "a path parameter breaks a rule"},
}


def with_error_bodies(spec: dict[str, Any]) -> dict[str, Any]:
    """The document with every error this API answers described as ``ErrorResponse`` (``api.errors``): the 422s
    flask-openapi3 documents as its own validation-error list, which this API never sends, and the 400, 401, 413 and
    415 that the checks before a view answer (so the document and the answers agree: schemathesis' status check)."""
    error_body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
    for path, path_item in spec.get("paths", {}).items():
        for method, operation in path_item.items():
            responses = operation.setdefault("responses", {})
            unprocessable = responses.get("422")
            if unprocessable and unprocessable.get("content", {}).get("application/json", {}).get("schema", {}).get("type") == "array":
                unprocessable["content"] = error_body
            kinds = [
                kind
                for kind, applies in (
                    ("secured", bool(operation.get("security"))),
                    ("post", method == "post" and path.startswith("/v1/")),
                    ("body", "requestBody" in operation),
                    ("path", "{" in path),
                )
                if applies
            ]
            if not any(status.startswith(("2", "3")) for status in responses):  # an operation without a body model (healthz, metrics)
                responses["200"] = {"description": "OK"}
            if path == "/readyz":
                responses.setdefault("503", {"description": "not ready: the reasons are in `problems`"})
            for kind in kinds:
                for status, description in COMMON_ERRORS[kind].items():
                    responses.setdefault(status, {"description": description, "content": error_body})
    return spec
