"""The workers beside a server: ``ranker serve`` (and ``make serve-prod``'s gunicorn master) run ``ranker learn``
(the online learner) and ``ranker maintain`` (the catalog's maintenance worker, :mod:`ranker.learning.maintenance`)
as child processes and keep them running.

- The child gets the server's data directory and key prefix, and the learner a
  stable consumer name (:func:`consumer_name`: one per host and data directory,
  or ``RANKER_LEARN_CONSUMER``), so a restarted learner resumes the pending
  entries of the one before it; the Redis URL goes in its environment
  (``REDIS_URL``), never on its command line, where ``ps`` would show a
  password. Every other setting comes from the same ``RANKER_*`` environment.
- A child that exits while the server runs is restarted after a backoff
  (``MIN_BACKOFF_S``, doubling to ``MAX_BACKOFF_S``; back to the minimum once a
  child ran ``STABLE_AFTER_S``). Each restart is counted in Redis
  (``{prefix}:learner:<group>:supervisor``), where ``/metrics`` and the console read it.
- :meth:`LearnerSupervisor.stop` sends SIGTERM: the learner finishes the round
  it is in (a stop never cuts an update short) and exits; past ``stop_timeout_s``
  it is killed, which loses nothing (the learner acknowledges entries only
  with the update that used them).
- The child runs in its own session, so a Ctrl-C in the terminal reaches the
  server alone, which then stops the learner in order; and it exits by itself
  when its parent is gone (``RANKER_LEARN_PARENT_PID``), so a server killed
  with SIGKILL leaves no learner behind.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

from ranker.live.backend import key

log = logging.getLogger(__name__)


MIN_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0
STABLE_AFTER_S = 60.0
STOP_TIMEOUT_S = 60.0
PARENT_PID_ENV = "RANKER_LEARN_PARENT_PID"


def consumer_name(data_dir: Path, configured: str | None = None) -> str:
    """The consumer name of the learner beside a server: ``configured`` (``RANKER_LEARN_CONSUMER``), else one per host
    and data directory, the same across restarts of the learner and of the server."""
    if configured:
        return configured
    where = hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:8]
    return f"{socket.gethostname()}-{where}"


class ChildSupervisor:
    """Starts a ``ranker`` command as a child process and restarts it when it exits, until :meth:`stop`."""

    name = "child"

    def __init__(
        self,
        client: redis.Redis,
        command: Sequence[str],
        status_key: str,
        redis_url: str,
        *,
        stop_timeout_s: float = STOP_TIMEOUT_S,
        min_backoff_s: float = MIN_BACKOFF_S,
    ):
        """``redis_url`` reaches the child as ``REDIS_URL`` in its environment, never on its command line."""
        self.client = client
        self.command = [sys.executable, "-m", "ranker.cli", *command]
        self.redis_url = redis_url
        self.status_key = status_key
        self.stop_timeout_s = stop_timeout_s
        self.min_backoff_s = min_backoff_s
        self.restarts = 0
        self.process: subprocess.Popen[Any] | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._keep_running, name=f"{self.name}-supervisor", daemon=True)

    @property
    def pid(self) -> int | None:
        process = self.process
        return process.pid if process is not None and process.poll() is None else None

    def start(self) -> ChildSupervisor:
        self._thread.start()
        return self

    def _spawn(self) -> subprocess.Popen[Any] | None:
        with self._lock:
            if self._stopping.is_set():
                return None
            env = dict(os.environ, **{PARENT_PID_ENV: str(os.getpid()), "REDIS_URL": self.redis_url})
            env.pop("RANKER_REDIS_URL", None)
            self.process = subprocess.Popen(self.command, env=env, start_new_session=True)
            log.info("%s started (pid %d)", self.name, self.process.pid)
            return self.process

    def _keep_running(self) -> None:
        backoff = self.min_backoff_s
        while True:
            started = time.monotonic()
            process = self._spawn()
            if process is None:
                return
            code = process.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started >= STABLE_AFTER_S:
                backoff = self.min_backoff_s
            self.restarts += 1
            log.warning("%s (pid %d) exited with %s; restarting in %.0f s (restart %d)", self.name, process.pid, code, backoff, self.restarts)
            try:
                with self.client.pipeline(transaction=False) as pipe:
                    pipe.hincrby(self.status_key, "restarts", 1)
                    pipe.hset(self.status_key, mapping={"last_exit": str(code), "last_restart_at": time.time()})
                    pipe.execute()
            except redis.RedisError:
                log.warning("could not count the %s restart: Redis unavailable", self.name)
            if self._stopping.wait(backoff):
                return
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    def stop(self) -> int | None:
        """Stop the child at a safe point (SIGTERM; SIGKILL after ``stop_timeout_s``); returns its exit code."""
        with self._lock:
            self._stopping.set()
            process = self.process
        code = None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=self.stop_timeout_s)
                except subprocess.TimeoutExpired:
                    log.warning("%s (pid %d) did not stop within %.0f s; killing it", self.name, process.pid, self.stop_timeout_s)
                    process.kill()
                    process.wait()
            code = process.returncode
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        return code


class LearnerSupervisor(ChildSupervisor):
    """``ranker learn`` beside the server; restarts counted in ``{prefix}:learner:<group>:supervisor``."""

    name = "learner"

    def __init__(
        self,
        client: redis.Redis,
        data_dir: Path,
        redis_url: str,
        *,
        prefix: str = "ranker",
        group: str = "learner",
        consumer: str | None = None,
        extra_args: Sequence[str] = (),
        stop_timeout_s: float = STOP_TIMEOUT_S,
        min_backoff_s: float = MIN_BACKOFF_S,
    ):
        """``consumer``: the learner's consumer name (default :func:`consumer_name`)."""
        self.consumer = consumer_name(data_dir, consumer)
        command = ["learn", "--data-dir", str(data_dir), "--prefix", prefix, "--consumer", self.consumer, *extra_args]
        status = key(prefix, "learner", group, "supervisor")
        super().__init__(client, command, status, redis_url, stop_timeout_s=stop_timeout_s, min_backoff_s=min_backoff_s)


class MaintenanceSupervisor(ChildSupervisor):
    """``ranker maintain`` beside the server; restarts counted in ``{prefix}:maintenance:supervisor``."""

    name = "maintenance worker"

    def __init__(
        self,
        client: redis.Redis,
        data_dir: Path,
        redis_url: str,
        *,
        prefix: str = "ranker",
        extra_args: Sequence[str] = (),
        stop_timeout_s: float = STOP_TIMEOUT_S,
        min_backoff_s: float = MIN_BACKOFF_S,
    ):
        command = ["maintain", "--data-dir", str(data_dir), "--prefix", prefix, *extra_args]
        status = key(prefix, "maintenance", "supervisor")
        super().__init__(client, command, status, redis_url, stop_timeout_s=stop_timeout_s, min_backoff_s=min_backoff_s)
