"""The learner's view of the live catalog: the world its simulator gate runs in.

A shop fills its catalog with ``ranker index build`` or through the items API
(``PUT/POST /v1/items``, ``DELETE /v1/items/<id>``), and the API keeps
changing it while the service runs. The servers hold the catalog as their
engine: the item store and the saved indexes under the data directory, plus
every write since in the catalog stream (:mod:`ranker.live.catalog_stream`). The
learner opens the same engine and applies the same stream, so its simulator
meets the items the shoppers meet, whichever way they came.

:meth:`LiveCatalog.sim_catalog` turns that engine into the simulator's
:class:`envs.catalog.SimCatalog`. It is rebuilt only when the catalog changed
since the last build (a new catalog stream entry, or another item count),
and the query bank's phrases are encoded once each (a bounded cache), so a
rebuild after a few writes costs array copies, not an encoder pass over the
whole catalog.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ranker.live.catalog_stream import CatalogLog

log = logging.getLogger(__name__)


QUERY_CACHE_SIZE = 200_000  # encoded query phrases kept (384 floats each: about 300 MB at the bound)


class NoSimulatedWorld(RuntimeError):
    """The live catalog cannot make a simulated world (no items, or fewer than a slate); the message says why."""


class LiveCatalog:
    """The deployment's catalog (data directory + catalog stream) as the gate's simulator sees it."""

    def __init__(self, client: Any, data_dir: Path, *, prefix: str = "ranker", queries_per_item: int = 2, seed: int = 0, engine: Any = None):
        """``engine``: an already open :class:`ranker.retrieval.engine.SearchEngine` over ``data_dir`` (tests);
        unset, it is opened on first use with the encoders the index was built with."""
        self.client = client
        self.data_dir = Path(data_dir)
        self.queries_per_item = queries_per_item
        self.seed = seed
        self.catalog_log = CatalogLog(client, prefix=prefix)
        self._engine = engine
        self._encoded: OrderedDict[str, np.ndarray] = OrderedDict()
        self._built: tuple[str, int] | None = None
        self._world: Any = None
        self.rebuilds = 0

    @property
    def engine(self) -> Any:
        if self._engine is None:
            from ranker.retrieval.engine import open_engine

            engine = open_engine(self.data_dir, device="cpu", reconcile=False)  # the encoders only embed the query bank
            self.catalog_log.catch_up(engine)  # the stream from the snapshot's entry on, then what it no longer holds
            engine.reconcile()
            self._engine = engine
        return self._engine

    def refresh(self) -> int:
        """Apply the catalog writes made since the last call; returns how many."""
        return self.catalog_log.catch_up(self.engine)

    def sim_catalog(self) -> Any:
        """The current catalog as a :class:`envs.catalog.SimCatalog`; :class:`NoSimulatedWorld` when it has no items."""
        from envs.catalog import build_sim_catalog

        self.refresh()
        stamp = (self.catalog_log.last_id, len(self.engine))
        if self._world is not None and stamp == self._built:
            return self._world
        if len(self.engine) == 0:
            raise NoSimulatedWorld("the catalog has no items")
        self._world = build_sim_catalog(
            self.engine, queries_per_item=self.queries_per_item, seed=self.seed, source=f"live catalog of {self.data_dir}", encode_texts=self._encode
        )
        self._built = stamp
        self.rebuilds += 1
        log.info("simulated world rebuilt from the live catalog: %d items (catalog stream at %s)", len(self.engine), stamp[0])
        return self._world

    def values_of(self, item_ids: Sequence[str], objective: str) -> np.ndarray:
        """Each item's purchase value under ``objective`` (:mod:`ranker.ranking.objective`): its price in the item
        store against the catalog's median price (an item gone from the store is worth the median)."""
        from ranker.ranking.objective import purchase_values

        self.refresh()
        stamp = (self.catalog_log.last_id, len(self.engine))
        if getattr(self, "_prices_stamp", None) != stamp:
            self._prices = {item.item_id: item.price for item in self.engine.store.items()}
            self._median_price = float(np.median(list(self._prices.values()))) if self._prices else 1.0
            self._prices_stamp = stamp
        prices = np.array([self._prices.get(item_id, self._median_price) for item_id in item_ids])
        return purchase_values(objective, prices, self._median_price)

    def _encode(self, texts: list[str]) -> np.ndarray:
        """Query phrases through the engine's text encoder, each phrase encoded once while it stays in the cache."""
        new = sorted({text for text in texts if text not in self._encoded})
        if new:
            vectors = self.engine.encoders.encode_texts(new, progress=len(new) > 2000)
            for text, vector in zip(new, np.asarray(vectors, dtype=np.float32)):
                self._encoded[text] = vector
        out = np.stack([self._encoded[text] for text in texts]) if texts else np.zeros((0, self.engine.encoders.text_dim), np.float32)
        for text in texts:
            self._encoded.move_to_end(text)
        while len(self._encoded) > QUERY_CACHE_SIZE:
            self._encoded.popitem(last=False)
        return out


def shoppers_world(data_dir: Path, redis_url: str | None = None, *, prefix: str = "ranker") -> Any:
    """What simulated shoppers of a running service search (``ranker ab simulate``): ``data_dir`` itself when it
    holds a built index (its cached simulator catalog), else the catalog written through the API, read from the
    catalog stream into an in-memory engine (the service's own files are not touched). ``redis_url`` unset: the
    embedded Redis of the server running on ``data_dir``."""
    from ranker.live.backend import EmbeddedRedis, connect
    from ranker.retrieval.engine import SearchEngine, manifest_path

    if manifest_path(data_dir).exists():
        return Path(data_dir)
    from ranker.retrieval.encoders import load_encoders

    embedded = None if redis_url else EmbeddedRedis(Path(data_dir) / "redis")
    try:
        client = connect(redis_url or embedded.url, socket_timeout=30)
        return LiveCatalog(client, data_dir, prefix=prefix, engine=SearchEngine(load_encoders("default", "cpu"))).sim_catalog()
    finally:
        if embedded is not None:
            embedded.close()  # stops it only where no server owns it


def live_counter_settings(client: Any, prefix: str, item_ids: Sequence[str]) -> dict[str, float]:
    """The simulator settings that make its item counters look like the live ones: the share of ``item_ids`` with
    no live impression yet (``cold_item_share``) and the mean impressions of the others (``history_impressions``)."""
    from ranker.live.state import counter_key

    if not item_ids:
        return {}
    counts = client.hmget(counter_key(prefix, "impressions"), list(item_ids))
    impressions = np.array([float(value) if value is not None else 0.0 for value in counts])
    warm = impressions[impressions > 0]
    return {"cold_item_share": float(1.0 - len(warm) / len(impressions)), "history_impressions": float(warm.mean()) if len(warm) else 0.0}
