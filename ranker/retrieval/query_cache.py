"""A bounded per-process cache of query text embeddings (least recently used goes first).

Shoppers repeat queries; a hit skips the text encoder. The key is the query
text normalised the way the tokenizer would see it anyway: surrounding and
repeated whitespace collapsed, and lower-cased when the encoder's tokenizer
is uncased. The cached rows are read-only so no caller can alter them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from ranker.defaults import QUERY_CACHE_SIZE  # noqa: F401  (the default size; its one home)


def normalise_query(text: str, *, lowercase: bool) -> str:
    collapsed = " ".join(text.split())
    return collapsed.lower() if lowercase else collapsed


class QueryCache:
    """``get(text, compute)``: the cached vector of ``text``, else ``compute(text)`` stored. ``size`` 0 stores nothing."""

    def __init__(self, size: int, *, lowercase: bool = False):
        if size < 0:
            raise ValueError(f"query_cache_size: must be >= 0, got {size}")
        self.size = size
        self.lowercase = lowercase
        self.hits = 0
        self.misses = 0
        self._rows: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, text: str, compute: Callable[[str], np.ndarray]) -> np.ndarray:
        key = normalise_query(text, lowercase=self.lowercase)
        with self._lock:
            row = self._rows.get(key)
            if row is not None:
                self._rows.move_to_end(key)
                self.hits += 1
                return row
            self.misses += 1
        row = np.array(compute(key), dtype=np.float32)  # encoded outside the lock: other threads' hits do not wait
        row.flags.writeable = False
        if self.size:
            with self._lock:
                self._rows[key] = row
                self._rows.move_to_end(key)
                while len(self._rows) > self.size:
                    self._rows.popitem(last=False)
        return row

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()
