"""The maintenance worker: in the background, what keeps a catalog written through the API as good as one built from
a file, with no command run.

``ranker serve`` (and the gunicorn master of ``make serve-prod``) run it beside the API as a child process,
``ranker maintain``, restarted when it exits (:mod:`ranker.learning.supervisor`); ``ranker maintain --once`` runs
one round and exits. It opens the data directory's engine as a server does (the snapshot, the catalog stream from
the entry the snapshot includes, then the item store) and then, every ``interval_s``:

1. applies the catalog stream: every write, from any process;
2. fits the text-picture bridge and the channel calibration when they are due (:func:`ranker.retrieval.bridge.refit_bridge`:
   the learned head once the catalog holds ``min_pairs`` (title, picture) pairs, a refit once
   :data:`~ranker.retrieval.bridge.REFIT_SHARE` of the pairs it was fitted on were written or deleted). It waits
   for the catalog to be quiet for ``settle_s`` (a bulk load is fitted once, at its end), but never longer than
   ``max_wait_s`` after the fit fell due. One worker of a deployment fits at a time (a lock in Redis). The fit
   runs on CUDA when present, else on one CPU thread of a process at lowered priority that sleeps after each
   step to keep at most ``fit_cpu_share`` of a core: on a shared 2-core machine any busy thread, even one at
   the idle scheduling class, slowed rank requests by about two thirds (bench/README.md, "The catalog's home");
3. publishes what it fitted through the catalog stream: every server process, on this machine or another,
   installs the new bridge and calibration at its next request, in one step, without a restart
   (:mod:`ranker.live.catalog_stream`);
4. compacts the indexes once deleted or replaced rows pass ``compact_share`` of them, and writes a snapshot
   (atomic, :mod:`ranker.retrieval.snapshots`) once the catalog changed and ``snapshot_interval_s`` passed since
   the last one; and again when it stops, so a restart starts from everything written.

A round that raises (a fit, a full disk) is logged, counted in ``{prefix}:maintenance:status`` and tried again
at the next round; losing Redis is waited out. The status hash (heartbeat, fits, snapshots, errors by kind) is
read by ``/metrics`` and the console.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from ranker.config import default
from ranker.live.backend import as_text, key
from ranker.live.catalog_stream import CatalogLog
from ranker.retrieval.bridge import REFIT_SHARE, learnable, refit_bridge

log = logging.getLogger(__name__)

FIT_LOCK_TTL_S = 3600  # a worker that died while fitting frees the lock after this long
ALIVE_AFTER_S = 30.0


@dataclass
class MaintenanceConfig:
    """When the worker fits, compacts and snapshots (the defaults are :class:`ranker.config.Settings`')."""

    prefix: str = default("prefix")
    interval_s: float = default("maintenance_interval_s")
    settle_s: float = default("bridge_settle_s")
    max_wait_s: float = default("bridge_max_wait_s")
    snapshot_interval_s: float = default("snapshot_interval_s")
    min_pairs: int = default("bridge_min_pairs")
    compact_share: float = 0.05
    device: str = default("device")
    threads: int = 1
    fit_cpu_share: float = default("bridge_fit_cpu_share")


@dataclass
class Round:
    """What one round did."""

    applied: int = 0
    reconciled: int = 0
    fitted: dict[str, Any] | None = None
    snapshot: Path | None = None
    compacted: bool = False
    notes: list[str] = field(default_factory=list)


class Maintenance:
    """One data directory's maintenance worker (see the module docstring)."""

    def __init__(
        self, client: redis.Redis, data_dir: Path, config: MaintenanceConfig | None = None, *, engine: Any = None, clock: Callable[[], float] = time.monotonic
    ):
        """``engine``: an open engine over ``data_dir`` (tests); unset, opened with the encoders its snapshot names."""
        from ranker.retrieval.engine import open_engine

        self.client = client
        self.config = config = config or MaintenanceConfig()
        self.clock = clock
        self.engine = engine if engine is not None else open_engine(Path(data_dir), device=config.device, reconcile=False)
        self.catalog_log = CatalogLog(client, prefix=config.prefix)
        self.status_key = key(config.prefix, "maintenance", "status")
        self.lock_key = key(config.prefix, "maintenance", "fit")
        applied = self.catalog_log.catch_up(self.engine)
        reconciled = self.engine.reconcile()
        self._saved = (self.engine.stream_position or "0-0", self.engine.saved_at)
        self._dirty = bool(applied or reconciled) or self.engine.snapshot_problem is not None
        now = clock()
        self._last_change = now
        self._last_snapshot = now
        self._due_since: float | None = None
        self._tried_at: str | None = None  # the stream position of the last fit that left it still due (not retried there)

    # ------------------------------------------------------------ a round
    def round(self, *, now_or_never: bool = False) -> Round:
        """Apply the stream, fit when due, compact and snapshot when due (see the module docstring).
        ``now_or_never`` (``ranker maintain --once``): fit a due bridge without waiting for the catalog to settle,
        and snapshot whatever changed."""
        done = Round()
        done.applied = self.catalog_log.catch_up(self.engine)
        now = self.clock()
        if done.applied:
            self._last_change = now
            self._dirty = True
        if self.due():
            self._due_since = self._due_since if self._due_since is not None else now
            settled = now_or_never or now - self._last_change >= self.config.settle_s or now - self._due_since >= self.config.max_wait_s
            if settled and self._tried_at != self.catalog_log.last_id:
                done.fitted = self.fit()
        else:
            self._due_since = None
        if self._dirty and (now_or_never or now - self._last_snapshot >= self.config.snapshot_interval_s):
            done.compacted = self.compact()
            done.snapshot = self.snapshot()
        self._beat()
        return done

    def due(self) -> bool:
        """Whether the bridge (and with it the calibration) should be fitted now."""
        engine = self.engine
        if not learnable(engine):
            return False
        pairs = len(engine.indexes["image"])
        if engine.bridge is None:
            return pairs >= self.config.min_pairs
        fitted = int(engine.bridge_record.get("fitted_pairs", 0))
        return pairs >= self.config.min_pairs and engine.pairs_changed >= REFIT_SHARE * max(fitted, 1)

    def fit(self) -> dict[str, Any] | None:
        """Fit the bridge and calibration and publish them to every process; None when another worker holds the fit."""
        lock = self.client.lock(self.lock_key, timeout=FIT_LOCK_TTL_S, blocking=False)
        if not lock.acquire():
            log.info("another maintenance worker is fitting the bridge; this one waits for its result")
            return None
        try:
            started = time.perf_counter()
            log.info("fitting the bridge and the calibration on %d (title, picture) pairs", len(self.engine.indexes["image"]))
            state = refit_bridge(
                self.engine,
                min_pairs=self.config.min_pairs,
                device=self.config.device,
                threads=self.config.threads,
                progress=False,
                cpu_share=self.config.fit_cpu_share,
            )
            self.catalog_log.publish_bridge(self.engine)
            seconds = time.perf_counter() - started
        finally:
            try:
                lock.release()
            except redis.exceptions.LockError:
                log.warning("the bridge fit outlived its lock (%d s)", FIT_LOCK_TTL_S)
        self._tried_at = self.catalog_log.last_id if self.due() else None
        self._dirty = True
        self._count(
            "fits", last_fit_at=time.time(), last_fit=json.dumps({"serving": state["serving"], "reason": state["reason"], "seconds": round(seconds, 2)})
        )
        log.warning("bridge: %s (%s) in %.1f s; published to every server", state["serving"], state["reason"], seconds)
        return state

    def compact(self) -> bool:
        """Rebuild the indexes without deleted and replaced rows once they pass ``compact_share``; True when it did."""
        compacted = False
        for index in self.engine.indexes.values():
            rows = len(index) + index.n_dead
            if rows and index.n_dead / rows > self.config.compact_share:
                index.compact()
                compacted = True
        return compacted

    def snapshot(self) -> Path | None:
        """Write a snapshot of everything applied so far (nothing when nothing changed since the last one)."""
        if not self._dirty:
            return None
        folder = self.engine.save(stream_position=self.catalog_log.last_id)
        self._saved = (self.catalog_log.last_id, self.engine.saved_at)
        self._dirty = False
        self._last_snapshot = self.clock()
        self._count("snapshots", last_snapshot_at=time.time(), last_snapshot=str(folder))
        log.info("index snapshot written: %s (%d items, catalog stream at %s)", folder, len(self.engine), self.catalog_log.last_id)
        return folder

    # ------------------------------------------------------------- the loop
    def run(self, *, until: Callable[[], bool], max_rounds: int | None = None, sleep: Callable[[float], None] = time.sleep) -> int:
        """Rounds every ``interval_s`` until ``until()``; then a last snapshot. Returns the rounds run."""
        rounds = 0
        while not until() and (max_rounds is None or rounds < max_rounds):
            try:
                self.round()
            except redis.RedisError as exc:
                log.warning("Redis unavailable during maintenance (%s); trying again", exc)
            except Exception as exc:  # noqa: BLE001  (a worker never dies of one bad round)
                log.error("maintenance round failed: %s\n%s", exc, traceback.format_exc())
                self._count_error(type(exc).__name__)
            rounds += 1
            waited = 0.0
            while waited < self.config.interval_s and not until():
                sleep(min(0.5, self.config.interval_s - waited))
                waited += 0.5
        self.stop()
        return rounds

    def stop(self) -> None:
        """The last snapshot, so a restart starts from everything applied."""
        try:
            self.catalog_log.catch_up(self.engine)
        except redis.RedisError as exc:
            log.warning("Redis unavailable at stop (%s): the snapshot holds what was applied", exc)
        if self._dirty or self.catalog_log.last_id != self._saved[0]:
            self._dirty = True
            self.compact()
            self.snapshot()

    # ------------------------------------------------------------- status
    def _beat(self) -> None:
        self.client.hset(
            self.status_key, mapping={"heartbeat": time.time(), "items": len(self.engine), "bridge": json.dumps(self.engine.bridge_info().get("serving"))}
        )

    def _count(self, counter: str, **fields: Any) -> None:
        try:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.hincrby(self.status_key, counter, 1)
                pipe.hset(self.status_key, mapping={name: value for name, value in fields.items()})
                pipe.execute()
        except redis.RedisError as exc:
            log.warning("could not record the maintenance status: %s", exc)

    def _count_error(self, kind: str) -> None:
        try:
            self.client.hincrby(self.status_key, f"errors:{kind}", 1)
        except redis.RedisError:
            pass


def save_if_behind(engine: Any, catalog_log: CatalogLog) -> Path | None:
    """At a server's stop: a snapshot of its own engine when the data directory's latest one lacks catalog writes
    the server applied (the maintenance worker is off, or was stopped before it wrote one); None otherwise."""
    from ranker.retrieval.snapshots import SnapshotUnreadable, read_manifest_file

    if engine.data_dir is None or catalog_log.last_id == "0-0":
        return None
    try:
        manifest = read_manifest_file(Path(engine.data_dir) / "index") or {}
    except SnapshotUnreadable:
        manifest = {}
    saved = (manifest.get("catalog_stream") or {}).get("last_id") or "0-0"
    if _entry_id(saved) >= _entry_id(catalog_log.last_id):
        return None
    return engine.save(stream_position=catalog_log.last_id)


def _entry_id(entry: str) -> tuple[int, int]:
    milliseconds, _, sequence = entry.partition("-")
    return int(milliseconds), int(sequence or 0)


def maintenance_status(client: redis.Redis, prefix: str = "ranker") -> dict[str, Any]:
    """What the worker recorded: running (a fresh heartbeat), fits, snapshots, the last of each, errors by kind."""
    raw = {as_text(name): as_text(value) for name, value in client.hgetall(key(prefix, "maintenance", "status")).items()}
    restarts = client.hget(key(prefix, "maintenance", "supervisor"), "restarts")
    heartbeat = float(raw.get("heartbeat", 0) or 0)
    return {
        "running": bool(heartbeat) and time.time() - heartbeat < ALIVE_AFTER_S,
        "heartbeat": heartbeat or None,
        "fits": int(raw.get("fits", 0)),
        "snapshots": int(raw.get("snapshots", 0)),
        "last_fit_at": float(raw["last_fit_at"]) if "last_fit_at" in raw else None,
        "last_fit": json.loads(raw["last_fit"]) if "last_fit" in raw else None,
        "last_snapshot_at": float(raw["last_snapshot_at"]) if "last_snapshot_at" in raw else None,
        "errors": {name.split(":", 1)[1]: int(value) for name, value in raw.items() if name.startswith("errors:")},
        "restarts": int(restarts or 0),
    }
