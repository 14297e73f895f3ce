"""Installing a newly published bridge in a serving process without stalling its requests.

A new head means every stored picture is projected into the text space again: about 0.2 s per 10,000 pictures
on a free core, 2 s on a busy one (bench/README.md, "The catalog's home"), and ten times that at 100,000. Done
under the engine lock, that would be a pause of every request of the process. :class:`BackgroundInstall` does it
in a thread instead:

1. the keys of the stored pictures are read, then their vectors a chunk at a time, each chunk under the engine
   lock for the time of a copy; the projection runs outside it, while the process goes on serving with the
   bridge and calibration it had (catalog writes too: they are projected with that bridge meanwhile, and
   :meth:`BackgroundInstall.touch` records their keys);
2. then, under the lock, in one step: the pictures written meanwhile are projected with the new head, the new
   ``image_in_text`` index is built from all of them, and the bridge, that index, the calibration and the
   bridge's record are swapped in together. A search sees the old ones or the new ones, never a mix.

A newer head published while one is being installed cancels it. Small catalogs (:data:`INLINE_PICTURES`) and a
process catching up at start install at once (:func:`ranker.retrieval.bridge.install_bridge`).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np

from ranker.retrieval.bridge import PROJECT_CHUNK, LearnedBridge
from ranker.retrieval.fusion import Calibration
from ranker.retrieval.index import VectorIndex

log = logging.getLogger(__name__)

INLINE_PICTURES = 2_000  # below this many stored pictures a new head is installed at once (~40 ms)


class BackgroundInstall:
    """One published bridge being installed in ``engine`` by a thread (see the module docstring)."""

    def __init__(self, engine: Any, bridge: LearnedBridge, calibration: Calibration, record: dict[str, Any]):
        self.engine = engine
        self.bridge = bridge
        self.calibration = calibration
        self.record = record
        self.touched: set[int] = set()  # picture keys written since the projection began
        self.cancelled = threading.Event()
        self.done = threading.Event()
        self.seconds = 0.0
        self._thread = threading.Thread(target=self._run, name="bridge-install", daemon=True)

    def start(self) -> BackgroundInstall:
        self._thread.start()
        return self

    def touch(self, keys: np.ndarray) -> None:
        """Picture keys written meanwhile (under the engine lock): projected again at the swap."""
        self.touched.update(int(key) for key in keys)

    def cancel(self) -> None:
        self.cancelled.set()

    def join(self, timeout_s: float | None = None) -> bool:
        return self.done.wait(timeout_s)

    def _run(self) -> None:
        started = time.perf_counter()
        engine = self.engine
        try:
            with engine.lock:
                keys = engine.indexes["image"].keys().copy()
            projected = []
            for start in range(0, len(keys), PROJECT_CHUNK):
                if self.cancelled.is_set():
                    return
                with engine.lock:
                    vectors, _ = engine.indexes["image"].vectors_for(keys[start : start + PROJECT_CHUNK])
                projected.append(self.bridge.project(vectors))
            with engine.lock:
                if self.cancelled.is_set():
                    return
                self._swap(keys, np.concatenate(projected) if projected else np.zeros((0, engine.indexes["image_in_text"].dim), np.float32))
            self.seconds = time.perf_counter() - started
            log.info("bridge %s installed in the background in %.1f s (%d pictures)", self.bridge.info.get("fit_id"), self.seconds, len(keys))
        except Exception:  # noqa: BLE001  (logged; the process keeps serving the bridge it had)
            log.exception("installing the published bridge %s failed; the previous bridge keeps serving", self.bridge.info.get("fit_id"))
        finally:
            self.done.set()

    def _swap(self, keys: np.ndarray, projected: np.ndarray) -> None:
        """Under the engine lock: re-project what was written meanwhile, build the index, swap everything at once."""
        engine = self.engine
        current = engine.indexes["image"].keys()
        keep = np.isin(keys, current) & ~np.isin(keys, np.fromiter(self.touched, dtype=np.int64, count=len(self.touched)))
        redo = np.setdiff1d(current, keys[keep])
        fresh = VectorIndex(engine.indexes["image_in_text"].dim, engine.index_config)
        if len(redo) or keep.any():
            redone = self.bridge.project(engine.indexes["image"].vectors_for(redo)[0]) if len(redo) else projected[:0]
            fresh.add(np.concatenate([keys[keep], redo]), np.concatenate([projected[keep], redone]))
        engine.indexes["image_in_text"] = fresh
        engine.bridge = self.bridge
        engine.calibration = self.calibration
        engine.bridge_record = dict(self.record)
        engine.pairs_changed = len(self.touched)
