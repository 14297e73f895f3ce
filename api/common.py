"""What the blueprints share: the process's service and metrics, and the key checks (:mod:`api.security`)."""

from __future__ import annotations

from flask import current_app

from api.metrics import Metrics
from api.security import SECURED, SECURITY_SCHEMES, requires
from ranker.serving import RankingService

__all__ = ["SECURED", "SECURITY_SCHEMES", "metrics", "require_admin_key", "require_ingest_key", "service"]

require_ingest_key = requires("ingest")  # rank and feedback (api.security)
require_admin_key = requires("admin")  # catalog, policies, experiments, erasure


def service() -> RankingService:
    return current_app.extensions["ranking_service"]


def metrics() -> Metrics:
    return current_app.extensions["ranker_metrics"]
