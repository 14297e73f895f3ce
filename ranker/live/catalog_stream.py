"""Catalog changes shared between server processes: a Redis Stream, ``{p}:catalog``.

Each process holds its own FAISS indexes. A catalog write through the API is
encoded once, by the process that received it, and appended to this stream
with its vectors; every process (the writer included) applies the stream in
order before it answers its next request, so a write is searchable at once
on every worker, and all of them apply the same writes in the same order.

The item store (SQLite under the data directory) keeps items across
restarts; at start a process replays the stream (upserts and deletes are
idempotent), so writes since the last index snapshot are back too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import redis

from ranker.catalog.items import Item
from ranker.live.backend import as_text, key
from ranker.retrieval.engine import EmbeddedItems, SearchEngine

MAX_CATALOG_LOG = 100_000
READ_BATCH = 64


def _array_field(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array, dtype=np.float32).tobytes()


def _array(raw: bytes, dim: int) -> np.ndarray:
    return np.frombuffer(raw, dtype=np.float32).reshape(-1, dim)


class CatalogLog:
    """Appends catalog writes and applies everyone's writes to one engine."""

    def __init__(self, client: redis.Redis, *, prefix: str = "ranker", max_len: int = MAX_CATALOG_LOG):
        self.client = client
        self.stream = key(prefix, "catalog")
        self.max_len = max_len
        self.last_id = "0-0"  # everything up to here is applied to this process's engine

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

    # ------------------------------------------------------------- reads
    def queue_read(self, pipe: Any) -> None:
        """Add "entries after ``last_id``" to a pipeline (the request's first round trip)."""
        pipe.xrange(self.stream, f"({self.last_id}", "+", count=READ_BATCH)

    def apply(self, engine: SearchEngine, entries: list[tuple[Any, dict[bytes, bytes]]]) -> int:
        """Apply entries read after ``last_id`` (and any further ones); returns how many were applied."""
        applied = 0
        while entries:
            for entry_id, fields in entries:
                self._apply_one(engine, fields)
                self.last_id = as_text(entry_id)
                applied += 1
            if len(entries) < READ_BATCH:
                break
            entries = self.client.xrange(self.stream, f"({self.last_id}", "+", count=READ_BATCH)
        return applied

    def catch_up(self, engine: SearchEngine) -> int:
        """Apply everything not yet applied (at start: the whole stream)."""
        return self.apply(engine, self.client.xrange(self.stream, f"({self.last_id}", "+", count=READ_BATCH))

    @staticmethod
    def _apply_one(engine: SearchEngine, fields: dict[bytes, bytes]) -> None:
        items = json.loads(fields[b"items"])
        if fields[b"op"] == b"delete":
            engine.delete(items)
            return
        text_dim, image_dim = engine.indexes["text"].dim, engine.indexes["image"].dim
        engine.insert_embedded(
            EmbeddedItems(
                items=[Item.model_validate(doc) for doc in items],
                text=_array(fields[b"text"], text_dim),
                with_picture=json.loads(fields[b"with_picture"]),
                image=_array(fields[b"image"], image_dim),
                image_in_text=_array(fields[b"image_in_text"], text_dim),
            )
        )
