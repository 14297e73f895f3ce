"""The item store: catalog items by ``item_id``, each with a stable int64 key.

FAISS indexes speak int64; shops speak string ``item_id``s. The store gives
every item a key when it first arrives and keeps it across updates, persists
items in SQLite (one file under the data directory, or in memory), and keeps
per-key arrays of category and price so filters become boolean masks.

Each item also has a *fingerprint*: a 64-bit hash of its stored document. An
index snapshot records the fingerprints of the documents it embedded, so a
process that opens the snapshot later finds the items written since (by it or
by any other process sharing the store) and embeds them again
(:meth:`ranker.retrieval.engine.SearchEngine.reconcile`).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ranker.catalog.items import Item

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    key INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id TEXT NOT NULL UNIQUE,
    doc TEXT NOT NULL
);
"""


class ItemStore:
    """Items with stable keys, in SQLite; ``path=None`` keeps them in memory only."""

    def __init__(self, path: Path | None = None):
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(path) if path else ":memory:", check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL" if path else "PRAGMA journal_mode=MEMORY")
        self._db.executescript(_SCHEMA)
        self._items: dict[int, Item] = {}
        self._key_of: dict[str, int] = {}
        self._category_codes: dict[str, int] = {}  # casefolded name -> code
        self._category_names: dict[int, str] = {}  # code -> name as first seen
        self._category_of_key = np.full(0, -1, dtype=np.int32)
        self._price_of_key = np.zeros(0, dtype=np.float64)
        self._fingerprint_of_key = np.zeros(0, dtype=np.int64)
        for key, doc in self._db.execute("SELECT key, doc FROM items"):
            self._remember(int(key), Item.model_validate_json(doc), fingerprint(doc))

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._key_of

    def upsert(self, items: Sequence[Item]) -> np.ndarray:
        """Insert or replace ``items``; returns their keys (kept for known ids)."""
        docs = [json.dumps(item.to_json(), ensure_ascii=False) for item in items]
        with self._lock, self._db:
            for item, doc in zip(items, docs):
                self._db.execute("INSERT INTO items (item_id, doc) VALUES (?, ?) ON CONFLICT(item_id) DO UPDATE SET doc = excluded.doc", (item.item_id, doc))
            rows: dict[str, int] = {}
            for start in range(0, len(items), 500):  # SQLite caps the number of bound variables
                chunk = [item.item_id for item in items[start : start + 500]]
                rows.update(self._db.execute(f"SELECT item_id, key FROM items WHERE item_id IN ({','.join('?' * len(chunk))})", chunk))
        keys = np.array([rows[item.item_id] for item in items], dtype=np.int64)
        with self._lock:
            for key, item, doc in zip(keys, items, docs):
                self._remember(int(key), item, fingerprint(doc))
        return keys

    def delete(self, item_ids: Iterable[str]) -> np.ndarray:
        """Remove items; returns the keys that were present (unknown ids are skipped)."""
        removed = []
        with self._lock, self._db:
            for item_id in item_ids:
                key = self._key_of.pop(item_id, None)
                if key is None:
                    continue
                self._db.execute("DELETE FROM items WHERE key = ?", (key,))
                self._forget(key)
                removed.append(key)
        return np.array(removed, dtype=np.int64)

    def clear(self) -> None:
        with self._lock, self._db:
            self._db.execute("DELETE FROM items")
            self._items.clear()
            self._key_of.clear()
            self._category_of_key[:] = -1
            self._fingerprint_of_key[:] = 0

    def get(self, item_id: str) -> Item | None:
        key = self._key_of.get(item_id)
        return None if key is None else self._items[key]

    def key_of(self, item_id: str) -> int | None:
        return self._key_of.get(item_id)

    def keys(self) -> np.ndarray:
        return np.fromiter(self._items.keys(), dtype=np.int64, count=len(self._items))

    def fingerprints(self, keys: np.ndarray) -> np.ndarray:
        """The fingerprint of each key's stored document (0 where the key holds no item)."""
        keys = np.asarray(keys, dtype=np.int64).reshape(-1)
        if len(self._fingerprint_of_key) == 0:
            return np.zeros(len(keys), dtype=np.int64)
        inside = (keys >= 0) & (keys < len(self._fingerprint_of_key))
        return np.where(inside, self._fingerprint_of_key[np.where(inside, keys, 0)], 0)

    def item_for_key(self, key: int) -> Item:
        return self._items[int(key)]

    def items(self) -> list[Item]:
        return list(self._items.values())

    def categories(self) -> list[str]:
        present = set(self._category_of_key[self._category_of_key >= 0].tolist())
        return sorted(self._category_names[code] for code in present)

    def filter_mask(self, categories: Sequence[str] | None = None, price_min: float | None = None, price_max: float | None = None) -> np.ndarray:
        """A boolean mask indexed by key: True where the item passes every filter."""
        mask = self._category_of_key >= 0
        if categories is not None:
            wanted = [self._category_codes[name.casefold()] for name in categories if name.casefold() in self._category_codes]
            mask &= np.isin(self._category_of_key, wanted)
        if price_min is not None:
            mask &= self._price_of_key >= price_min
        if price_max is not None:
            mask &= self._price_of_key <= price_max
        return mask

    def close(self) -> None:
        self._db.close()

    def _remember(self, key: int, item: Item, doc_fingerprint: int) -> None:
        previous = self._items.get(key)
        if previous is not None and previous.item_id != item.item_id:
            self._key_of.pop(previous.item_id, None)
        earlier = self._key_of.get(item.item_id)
        if earlier is not None and earlier != key:  # another process deleted and re-added it: the old key is gone
            self._forget(earlier)
        self._items[key] = item
        self._key_of[item.item_id] = key
        if key >= len(self._category_of_key):
            size = max(key + 1, 2 * len(self._category_of_key), 1024)
            self._category_of_key = np.concatenate([self._category_of_key, np.full(size - len(self._category_of_key), -1, dtype=np.int32)])
            self._price_of_key = np.concatenate([self._price_of_key, np.zeros(size - len(self._price_of_key))])
            self._fingerprint_of_key = np.concatenate([self._fingerprint_of_key, np.zeros(size - len(self._fingerprint_of_key), dtype=np.int64)])
        code = self._category_codes.setdefault(item.category.casefold(), len(self._category_codes))
        self._category_names.setdefault(code, item.category)
        self._category_of_key[key] = code
        self._price_of_key[key] = item.price
        self._fingerprint_of_key[key] = doc_fingerprint

    def _forget(self, key: int) -> None:
        self._items.pop(key, None)
        self._category_of_key[key] = -1
        self._fingerprint_of_key[key] = 0


def fingerprint(doc: str) -> int:
    """A stored document's 64-bit fingerprint, never 0 (0 marks "no item")."""
    value = int.from_bytes(hashlib.blake2b(doc.encode("utf-8"), digest_size=8).digest(), "little", signed=True)
    return value or 1
