"""``/v1/policies``: which policy versions exist, which serves, promote and rollback."""

from __future__ import annotations

from typing import Any

from flask_openapi3 import APIBlueprint, Tag

from api.common import SECURED, require_admin_key, service
from api.schemas import ErrorResponse, EstimateQuery, EstimateResponse, PoliciesResponse, PolicyPath, PromoteResponse

bp = APIBlueprint("policies", __name__, url_prefix="/v1/policies", abp_tags=[Tag(name="policies", description="policy versions")])


@bp.get("", responses={200: PoliciesResponse}, operation_id="list_policies")
def list_policies() -> Any:
    """Versions on disk (oldest first), the one serving, and the rollback history (newest first)."""
    registry = service().registry
    return {
        "current": registry.current(),
        "serving_here": service().policies.version,
        "history": registry.history(),
        "policies": [info.to_json() for info in registry.describe()],
    }


@bp.post("/<version>/promote", responses={200: PromoteResponse, 404: ErrorResponse, 409: ErrorResponse}, security=SECURED, operation_id="promote_policy")
@require_admin_key
def promote(path: PolicyPath) -> Any:
    """Serve `version` from the next request on, in every process; the version it replaces can be rolled back to."""
    previous = service().registry.promote(path.version)
    return {"current": path.version, "previous": previous}


@bp.post("/rollback", responses={200: PromoteResponse, 409: ErrorResponse}, security=SECURED, operation_id="rollback_policy")
@require_admin_key
def rollback() -> Any:
    """Return to the version that served before the current one."""
    previous, current = service().registry.rollback()
    return {"current": current, "previous": previous}


@bp.get("/<version>/estimate", responses={200: EstimateResponse, 404: ErrorResponse, 409: ErrorResponse}, operation_id="estimate_policy")
def estimate(path: PolicyPath, query: EstimateQuery) -> Any:
    """Off-policy preview: `version`'s value per ranking estimated from the latest logged rankings (IPS, SNIPS,
    doubly robust, with bootstrap 95% intervals), before it gets any traffic. Only rankings sampled with
    logged propensities count; the others are listed under `skipped`."""
    from ranker.learning.preview import estimate as estimate_value
    from ranker.learning.preview import logged_trajectories

    svc = service()
    candidate = svc.registry.load(path.version)
    trajectories, skipped = logged_trajectories(svc.events, rankings=query.rankings)
    result = estimate_value(candidate, trajectories, resamples=query.resamples)
    return dict(result, version=path.version, skipped=skipped)
