"""Rate limits on rank and feedback, kept in Redis so every worker and replica shares them (``limits``, the library
under Flask-Limiter: fixed windows, one round trip per limit).

- per API key (a hash of the key given; the client's address on a server without keys):
  ``RANKER_RANK_LIMIT_PER_KEY``, ``RANKER_FEEDBACK_LIMIT_PER_KEY``;
- per user: on rank, the keyed hash of ``user_id`` (``RANKER_RANK_LIMIT_PER_USER``); on feedback, the ranking's
  user, counted inside the feedback script where the ranking's record names them
  (``RANKER_FEEDBACK_LIMIT_PER_USER``, :mod:`ranker.live.events`), so feedback stays one round trip.

A request over a limit is answered 429 with ``Retry-After`` (seconds to the window's end). No raw key or user id
is stored: the counters' keys carry hashes, under the deployment's hash tag. With Redis unreachable the limits are
not applied (ranking goes on serving; feedback answers 503 anyway). ``RANKER_RATE_LIMITS=0`` turns them off.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Sequence

import redis
from flask import Flask, current_app, request
from limits import RateLimitItem, parse_many
from limits.errors import StorageError
from limits.storage import RedisClusterStorage, RedisStorage
from limits.strategies import FixedWindowRateLimiter

from api.errors import ApiError
from api.security import given_key

log = logging.getLogger(__name__)


class RateLimits:
    """The limits of one app: ``check(scope, identity)`` raises a 429 :class:`ApiError` past a limit."""

    def __init__(self, client: redis.Redis, prefix: str, limits: dict[str, str]):
        from redis.cluster import RedisCluster

        key_prefix = "{" + prefix + "}:limits"
        if isinstance(client, RedisCluster):
            node = client.get_default_node()
            storage = RedisClusterStorage(f"redis+cluster://{node.host}:{node.port}", key_prefix=key_prefix)
        else:  # the service's own connections; a separate client, so the service's round trips stay its own
            storage = RedisStorage("redis://", connection_pool=client.connection_pool, key_prefix=key_prefix)
        self.limiter = FixedWindowRateLimiter(storage)
        self.items: dict[str, list[RateLimitItem]] = {name: parse_many(spec) if spec.strip() else [] for name, spec in limits.items()}

    def check(self, scope: str, identity: str) -> None:
        """Count one request of ``scope`` (``rank_per_key``, ...) for ``identity``; 429 past any of its limits."""
        for item in self.items.get(scope, []):
            try:
                allowed = self.limiter.hit(item, scope, identity)
                if allowed:
                    continue
                reset = self.limiter.get_window_stats(item, scope, identity).reset_time
            except (redis.RedisError, StorageError) as exc:
                log.warning("rate limits unavailable (%s); not applied", exc)
                return
            retry_after = max(1, math.ceil(reset - time.time()))
            raise RateLimited(scope, str(item), retry_after)


class RateLimited(ApiError):
    def __init__(self, scope: str, limit: str, retry_after: int):
        what, _, per = scope.partition("_per_")
        super().__init__(429, "rate_limited", f"{per}: over the {what} limit of {limit} per {per}; retry after {retry_after} s", per)
        self.retry_after = retry_after


def hashed(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:24]


def key_identity() -> str:
    """Who a per-key limit counts: the key given (hashed), else the client's address."""
    key = given_key()
    return "key:" + hashed(key) if key else "addr:" + (request.remote_addr or "unknown")


def install(app: Flask, client: redis.Redis, prefix: str, settings: object) -> None:
    if not getattr(settings, "rate_limits", True):
        return
    names: Sequence[str] = ("rank_limit_per_key", "rank_limit_per_user", "feedback_limit_per_key")
    app.extensions["rate_limits"] = RateLimits(client, prefix, {name.replace("_limit", ""): str(getattr(settings, name)) for name in names})


def check(scope: str, identity: str) -> None:
    limits: RateLimits | None = current_app.extensions.get("rate_limits")
    if limits is not None:
        limits.check(scope, identity)
