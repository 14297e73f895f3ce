"""``/v1/experiments``: A/B and interleaving experiments between policy versions, and their reports."""

from __future__ import annotations

from typing import Any

from flask_openapi3 import APIBlueprint, Tag

from api.common import SECURED, require_admin_key, service
from api.schemas import ErrorResponse, ExperimentIn, ExperimentOut, ExperimentPath, ExperimentsResponse, ReportQuery, ReportResponse
from ranker.experiments.store import Arm

bp = APIBlueprint("experiments", __name__, url_prefix="/v1/experiments", abp_tags=[Tag(name="experiments", description="A/B tests and interleaving")])


@bp.post("", responses={201: ExperimentOut, 404: ErrorResponse, 409: ErrorResponse, 422: ErrorResponse}, security=SECURED, operation_id="create_experiment")
@require_admin_key
def create(body: ExperimentIn) -> Any:
    """Start an experiment (now, or at `start_at`).

    Arms are policy versions (or `retrieval`); their weights must sum to 1.
    Users are assigned by a hash of the experiment's salt and the
    pseudonymised user, so each keeps one arm. An experiment that would share
    users with another one not yet stopped is refused (409) unless both
    declare the same `layer`, which splits its users between them.
    """
    svc = service()
    fields = body.model_dump(exclude={"arms"})
    experiment = svc.experiments.create(arms=[Arm(**arm.model_dump()) for arm in body.arms], known_versions=svc.registry.versions(), **fields)
    return experiment.public(), 201


@bp.get("", responses={200: ExperimentsResponse}, operation_id="list_experiments")
def list_experiments() -> Any:
    """Every experiment, oldest first, with its status."""
    return {"experiments": [experiment.public() for experiment in service().experiments.list()]}


@bp.get("/<experiment_id>", responses={200: ExperimentOut, 404: ErrorResponse}, operation_id="get_experiment")
def get(path: ExperimentPath) -> Any:
    """One experiment's definition and status."""
    return service().experiments.get(path.experiment_id).public()


@bp.post("/<experiment_id>/stop", responses={200: ExperimentOut, 404: ErrorResponse, 409: ErrorResponse}, security=SECURED, operation_id="stop_experiment")
@require_admin_key
def stop(path: ExperimentPath) -> Any:
    """Stop taking traffic; the logs and the report stay. Stopping a stopped experiment is a 409."""
    return service().experiments.stop(path.experiment_id).public()


@bp.get("/<experiment_id>/report", responses={200: ReportResponse, 404: ErrorResponse}, operation_id="experiment_report")
def report(path: ExperimentPath, query: ReportQuery) -> Any:
    """The analysis so far: per-arm metrics with intervals, tests against the first arm (Welch on per-user
    aggregates, two-proportion z, Holm-corrected), an always-valid sequential p-value (mSPRT) that may be read
    at any time, CUPED, Bayesian probability to be best, the sample-ratio-mismatch check, guardrails, and the
    series over time. Interleaving experiments report wins, losses, ties and a sign test instead."""
    return service().experiments.report(path.experiment_id, alpha=query.alpha, mde=query.mde)
