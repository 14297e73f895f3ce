"""Catalog changes shared between server processes: a Redis Stream, ``{p}:catalog``.

Each process holds its own FAISS indexes. A catalog write through the API is
encoded once, by the process that received it, and appended to this stream
with its vectors; every process (the writer included) applies the stream in
order before it answers its next request, so a write is searchable at once
on every worker, and all of them apply the same writes in the same order.

Three kinds of entries:

- ``upsert``: items with their text and picture vectors. A process serving a
  learned bridge projects the pictures into the text space with its own head
  (the writer may have used an older one), so every process's
  ``image_in_text`` index follows the bridge it serves;
- ``delete``: item ids;
- ``bridge``: a newly fitted bridge head and channel calibration, published by
  the maintenance worker (:mod:`ranker.learning.maintenance`) or ``ranker index
  bridge``. Each process installs it in one step under its engine lock, so a
  search sees the old bridge and calibration or the new ones, never a mix;
  processes on other machines get it the same way. In a serving process the
  pictures of a large catalog are projected through the new head by a thread
  first, so requests do not wait (:mod:`ranker.retrieval.bridge_install`).

The stream is not the catalog's only copy: the item store (SQLite under the
data directory) holds every item, and index snapshots record the stream
entry they include. At start a process opens the snapshot, applies the
stream from that entry on (:meth:`CatalogLog.catch_up`), then embeds from
the store whatever the stream no longer holds (a trimmed or lost stream;
:meth:`ranker.retrieval.engine.SearchEngine.reconcile`).

An entry that cannot be applied (malformed, vectors of other encoders, a head
fitted for other encoders) is logged, counted (:attr:`CatalogLog.skipped`
here, ``{p}:catalog:skipped`` in Redis for ``/metrics``, with its reason for
inspection) and skipped; the entries after it are applied, and ranking goes on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import redis

from ranker.catalog.items import Item
from ranker.live.backend import as_text, key
from ranker.retrieval.bridge import LearnedBridge, install_bridge, refit_hint
from ranker.retrieval.bridge_install import INLINE_PICTURES, BackgroundInstall
from ranker.retrieval.engine import EmbeddedItems, SearchEngine, expected_fingerprints
from ranker.retrieval.fusion import Calibration

log = logging.getLogger(__name__)

MAX_CATALOG_LOG = 100_000
READ_BATCH = 64
SKIPPED_KEPT = 10_000  # reasons kept for inspection (the count goes on past it)


def _array_field(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array, dtype=np.float32).tobytes()


def _array(raw: bytes, dim: int, rows: int, name: str) -> np.ndarray:
    array = np.frombuffer(raw, dtype=np.float32)
    if array.size != rows * dim:
        raise ValueError(f"{name}: {array.size} numbers for {rows} rows of {dim}: written with other encoders?")
    return array.reshape(rows, dim)


class CatalogLog:
    """Appends catalog writes and applies everyone's writes to one engine."""

    def __init__(self, client: redis.Redis, *, prefix: str = "ranker", max_len: int = MAX_CATALOG_LOG):
        self.client = client
        self.stream = key(prefix, "catalog")
        self.skipped_key = key(prefix, "catalog", "skipped")
        self.max_len = max_len
        self.last_id = "0-0"  # everything up to here is applied to this process's engine
        self.skipped = 0  # entries this process could not apply
        self.installing: BackgroundInstall | None = None  # a published bridge being installed by a thread

    # ------------------------------------------------------------ writes
    def publish_upsert(self, embedded: EmbeddedItems) -> str:
        fields = {
            "op": "upsert",
            "items": json.dumps([item.to_json() for item in embedded.items], ensure_ascii=False),
            "with_picture": json.dumps(embedded.with_picture),
            "text": _array_field(embedded.text),
            "image": _array_field(embedded.image),
            "image_in_text": _array_field(embedded.image_in_text),
        }
        return as_text(self.client.xadd(self.stream, fields, maxlen=self.max_len, approximate=True))

    def publish_delete(self, item_ids: Sequence[str]) -> str:
        return as_text(self.client.xadd(self.stream, {"op": "delete", "items": json.dumps(list(item_ids))}, maxlen=self.max_len, approximate=True))

    def publish_bridge(self, engine: SearchEngine) -> str:
        """The engine's bridge head (when a learned one serves), calibration and bridge record, for every process."""
        fields: dict[str, Any] = {
            "op": "bridge",
            "calibration": json.dumps(engine.calibration.to_json()),
            "record": json.dumps(engine.bridge_record),
        }
        if engine.bridge is not None:
            fields.update(engine.bridge.to_fields())
        return as_text(self.client.xadd(self.stream, fields, maxlen=self.max_len, approximate=True))

    # ------------------------------------------------------------- reads
    def queue_read(self, pipe: Any) -> None:
        """Add "entries after ``last_id``" to a pipeline (the request's first round trip)."""
        pipe.xrange(self.stream, f"({self.last_id}", "+", count=READ_BATCH)

    def apply(self, engine: SearchEngine, entries: list[tuple[Any, dict[bytes, bytes]]], *, background: bool = True) -> int:
        """Apply entries read after ``last_id`` (and any further ones); returns how many were applied.

        An entry that cannot be applied is skipped (see the module docstring); only Redis errors propagate.
        ``background``: a new bridge head for a large catalog is installed by a thread
        (:mod:`ranker.retrieval.bridge_install`) rather than while the caller holds the engine lock."""
        applied = 0
        while entries:
            for entry_id, fields in entries:
                entry = as_text(entry_id)
                try:
                    self._apply_one(engine, fields, background=background)
                    applied += 1
                except Exception as exc:  # noqa: BLE001  (one bad entry must not stop the catalog, nor ranking)
                    self._skip(entry, fields, exc)
                self.last_id = entry
            if len(entries) < READ_BATCH:
                break
            entries = self.client.xrange(self.stream, f"({self.last_id}", "+", count=READ_BATCH)
        return applied

    def catch_up(self, engine: SearchEngine) -> int:
        """Apply everything not yet applied: at start, from the entry the engine's snapshot includes (the whole
        stream when it has none). A stream that no longer reaches back to that entry (trimmed, or lost with
        Redis's data) is logged; the item store holds what this data directory applied of it."""
        if self.last_id == "0-0" and engine.stream_position:
            self.last_id = engine.stream_position
            first = self.client.xrange(self.stream, "-", "+", count=1)
            if not first or _entry_id(as_text(first[0][0])) > _entry_id(self.last_id):
                log.warning(
                    "the catalog stream %s does not reach back to %s, the last write the index snapshot includes (%s): any writes after it come from the item store",
                    self.stream,
                    self.last_id,
                    "the stream is empty" if not first else f"it starts at {as_text(first[0][0])}",
                )
        return self.apply(engine, self.client.xrange(self.stream, f"({self.last_id}", "+", count=READ_BATCH), background=False)

    def skipped_total(self) -> int:
        """Entries that some process could not apply (each counted once; read by ``/metrics``)."""
        return int(self.client.hlen(self.skipped_key))

    def skipped_entries(self) -> dict[str, dict[str, Any]]:
        """entry id -> ``{op, reason}`` of the entries that could not be applied, for inspection."""
        return {as_text(entry): json.loads(reason) for entry, reason in self.client.hgetall(self.skipped_key).items()}

    # --------------------------------------------------------- internals
    def _skip(self, entry: str, fields: dict[bytes, bytes], exc: Exception) -> None:
        self.skipped += 1
        op = as_text(fields.get(b"op", b"?"))
        reason = f"{type(exc).__name__}: {exc}"[:500]
        log.error("catalog stream entry %s (%s) cannot be applied and is skipped: %s", entry, op, reason)
        try:
            if self.client.hlen(self.skipped_key) < SKIPPED_KEPT:
                self.client.hset(self.skipped_key, entry, json.dumps({"op": op, "reason": reason}))
        except redis.RedisError as error:
            log.warning("could not record the skipped catalog entry %s: %s", entry, error)

    def _apply_one(self, engine: SearchEngine, fields: dict[bytes, bytes], *, background: bool) -> None:
        op = fields.get(b"op")
        if op == b"bridge":
            self._install(engine, fields, background=background)
            return
        items = json.loads(fields[b"items"])
        if op == b"delete":
            if not isinstance(items, list) or not all(isinstance(item_id, str) for item_id in items):
                raise ValueError(f"items: a delete names a list of item ids, got {items!r:.100}")
            engine.delete(items)
            return
        if op != b"upsert":
            raise ValueError(f"op: unknown catalog operation {op!r}")
        text_dim, image_dim = engine.indexes["text"].dim, engine.indexes["image"].dim
        with_picture = json.loads(fields[b"with_picture"])
        parsed = [Item.model_validate(doc) for doc in items]
        image = _array(fields[b"image"], image_dim, len(with_picture), "image")
        if engine.bridge is not None:  # this process's head decides where a picture lies in the text space
            image_in_text = engine.bridge.project(image) if len(image) else np.zeros((0, text_dim), np.float32)
        else:
            image_in_text = _array(fields[b"image_in_text"], text_dim, len(with_picture), "image_in_text")
        keys = engine.insert_embedded(
            EmbeddedItems(
                items=parsed, text=_array(fields[b"text"], text_dim, len(parsed), "text"), with_picture=with_picture, image=image, image_in_text=image_in_text
            )
        )
        if self.installing is not None and not self.installing.done.is_set():
            self.installing.touch(keys[with_picture])

    def _install(self, engine: SearchEngine, fields: dict[bytes, bytes], *, background: bool) -> None:
        """A published bridge and calibration: checked whole first, then installed (the caller holds the engine
        lock). A new head for a large catalog is projected by a thread when ``background`` (serving)."""
        calibration = Calibration.from_json(json.loads(fields[b"calibration"]))
        record = json.loads(fields[b"record"])
        bridge = None
        if b"head" in fields:
            described = {name.decode(): value for name, value in fields.items()}
            bridge = LearnedBridge.from_fields(described, expected_fingerprints(engine.encoders.describe()), refit_hint=refit_hint(engine.data_dir))
        if self.installing is not None:
            self.installing.cancel()  # a newer one supersedes it
            self.installing = None
        fresh = bridge is not None and (engine.bridge is None or engine.bridge.info.get("fit_id") != bridge.info.get("fit_id"))
        if fresh and background and len(engine.indexes["image"]) >= INLINE_PICTURES:
            self.installing = BackgroundInstall(engine, bridge, calibration, record).start()
            return
        if fresh:
            install_bridge(engine, bridge)  # the process that fitted it already serves it
        engine.calibration = calibration
        engine.bridge_record = dict(record)


def catalog_state(engine: SearchEngine, catalog_log: CatalogLog) -> dict[str, Any]:
    """What ``/readyz`` and the console say of a process's catalog: items indexed, which bridge serves and when it
    was fitted, the calibrated channels, the snapshot it started from, and the stream entries it could not apply."""
    bridge = engine.bridge_info()
    return {
        "indexed": len(engine.indexes["text"]),
        "bridge": {
            "serving": bridge["serving"],
            "reason": bridge["reason"],
            "fitted_at": (bridge.get("fit") or {}).get("fitted_at"),
            "fitted_pairs": int(bridge.get("fitted_pairs", 0)),
            "pairs": bridge["pairs"],
            "due": bridge["due"],
            "installing": catalog_log.installing is not None and not catalog_log.installing.done.is_set(),
        },
        "calibrated": sorted(engine.calibration.channels),
        "snapshot": {"saved_at": engine.saved_at, "problem": engine.snapshot_problem},
        "stream_position": catalog_log.last_id,
        "skipped_entries": catalog_log.skipped,
    }


def _entry_id(entry: str) -> tuple[int, int]:
    milliseconds, _, sequence = entry.partition("-")
    return int(milliseconds), int(sequence or 0)
