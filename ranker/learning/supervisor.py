"""The learner beside a server: ``ranker serve`` (and ``make serve-prod``'s gunicorn master) run ``ranker learn``
as a child process and keep it running.

- The child gets the server's data directory, key prefix and a stable consumer
  name (:func:`consumer_name`: one per host and data directory, or
  ``RANKER_LEARN_CONSUMER``), so a restarted learner resumes the pending
  entries of the one before it; the Redis URL goes in its environment
  (``REDIS_URL``), never on its command line, where ``ps`` would show a
  password. Every other learner setting comes from the same ``RANKER_*``
  environment.
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


class LearnerSupervisor:
    """Starts ``ranker learn`` and restarts it when it exits, until :meth:`stop`."""

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
        self.client = client
        self.consumer = consumer_name(data_dir, consumer)
        self.command = [sys.executable, "-m", "ranker.cli", "learn", "--data-dir", str(data_dir), "--prefix", prefix, "--consumer", self.consumer, *extra_args]
        self.redis_url = redis_url
        self.status_key = key(prefix, "learner", group, "supervisor")
        self.stop_timeout_s = stop_timeout_s
        self.min_backoff_s = min_backoff_s
        self.restarts = 0
        self.process: subprocess.Popen[Any] | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._keep_running, name="learner-supervisor", daemon=True)

    @property
    def pid(self) -> int | None:
        process = self.process
        return process.pid if process is not None and process.poll() is None else None

    def start(self) -> LearnerSupervisor:
        self._thread.start()
        return self

    def _spawn(self) -> subprocess.Popen[Any] | None:
        with self._lock:
            if self._stopping.is_set():
                return None
            env = dict(os.environ, **{PARENT_PID_ENV: str(os.getpid()), "REDIS_URL": self.redis_url})
            env.pop("RANKER_REDIS_URL", None)
            self.process = subprocess.Popen(self.command, env=env, start_new_session=True)
            log.info("learner started (pid %d)", self.process.pid)
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
            log.warning("learner (pid %d) exited with %s; restarting in %.0f s (restart %d)", process.pid, code, backoff, self.restarts)
            try:
                with self.client.pipeline(transaction=False) as pipe:
                    pipe.hincrby(self.status_key, "restarts", 1)
                    pipe.hset(self.status_key, mapping={"last_exit": str(code), "last_restart_at": time.time()})
                    pipe.execute()
            except redis.RedisError:
                log.warning("could not count the learner restart: Redis unavailable")
            if self._stopping.wait(backoff):
                return
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    def stop(self) -> int | None:
        """Stop the learner at a safe point (SIGTERM; SIGKILL after ``stop_timeout_s``); returns its exit code."""
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
                    log.warning("learner (pid %d) did not stop within %.0f s; killing it", process.pid, self.stop_timeout_s)
                    process.kill()
                    process.wait()
            code = process.returncode
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        return code
