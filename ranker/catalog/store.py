"""The item store: catalog items by ``item_id``, each with a stable int64 key.

FAISS indexes speak int64; shops speak string ``item_id``s. The store gives
every item a key when it first arrives and keeps it across updates, persists
items in SQLite (one file under the data directory, or in memory), and keeps
per-key arrays of category and price so filters become boolean masks.
"""

from __future__ import annotations

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
        for key, doc in self._db.execute("SELECT key, doc FROM items"):
            self._remember(int(key), Item.model_validate_json(doc))

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._key_of

    def upsert(self, items: Sequence[Item]) -> np.ndarray:
        """Insert or replace ``items``; returns their keys (kept for known ids)."""
        with self._lock, self._db:
            for item in items:
                self._db.execute(
                    "INSERT INTO items (item_id, doc) VALUES (?, ?) ON CONFLICT(item_id) DO UPDATE SET doc = excluded.doc",
                    (item.item_id, json.dumps(item.to_json(), ensure_ascii=False)),
                )
            rows: dict[str, int] = {}
            for start in range(0, len(items), 500):  # SQLite caps the number of bound variables
                chunk = [item.item_id for item in items[start : start + 500]]
                rows.update(self._db.execute(f"SELECT item_id, key FROM items WHERE item_id IN ({','.join('?' * len(chunk))})", chunk))
        keys = np.array([rows[item.item_id] for item in items], dtype=np.int64)
        with self._lock:
            for key, item in zip(keys, items):
                self._remember(int(key), item)
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
                del self._items[key]
                self._category_of_key[key] = -1
                removed.append(key)
        return np.array(removed, dtype=np.int64)

    def clear(self) -> None:
        with self._lock, self._db:
            self._db.execute("DELETE FROM items")
            self._items.clear()
            self._key_of.clear()
            self._category_of_key[:] = -1

    def get(self, item_id: str) -> Item | None:
        key = self._key_of.get(item_id)
        return None if key is None else self._items[key]

    def key_of(self, item_id: str) -> int | None:
        return self._key_of.get(item_id)

    def keys(self) -> np.ndarray:
        return np.fromiter(self._items.keys(), dtype=np.int64, count=len(self._items))

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

    def _remember(self, key: int, item: Item) -> None:
        previous = self._items.get(key)
        if previous is not None and previous.item_id != item.item_id:
            self._key_of.pop(previous.item_id, None)
        self._items[key] = item
        self._key_of[item.item_id] = key
        if key >= len(self._category_of_key):
            size = max(key + 1, 2 * len(self._category_of_key), 1024)
            self._category_of_key = np.concatenate([self._category_of_key, np.full(size - len(self._category_of_key), -1, dtype=np.int32)])
            self._price_of_key = np.concatenate([self._price_of_key, np.zeros(size - len(self._price_of_key))])
        code = self._category_codes.setdefault(item.category.casefold(), len(self._category_codes))
        self._category_names.setdefault(code, item.category)
        self._category_of_key[key] = code
        self._price_of_key[key] = item.price
