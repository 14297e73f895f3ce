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
    """Readiness: Redis answers and a policy is loaded (503 with the reasons otherwise); ``encoders`` says what runs them,
    ``catalog`` which text-picture bridge serves in this process and when it was fitted (catalog writes and a newly
    published bridge are applied first, as for a rank request)."""
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


def with_error_bodies(spec: dict[str, Any]) -> dict[str, Any]:
    """The document with every 422 described as what ``api.errors`` answers (``ErrorResponse``): flask-openapi3
    documents the 422s it was not told about as its own validation-error list, which this API never sends."""
    error_body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
    for path_item in spec.get("paths", {}).values():
        for operation in path_item.values():
            unprocessable = operation.get("responses", {}).get("422")
            if unprocessable and unprocessable.get("content", {}).get("application/json", {}).get("schema", {}).get("type") == "array":
                unprocessable["content"] = error_body
    return spec
