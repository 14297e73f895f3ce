"""FAISS vector indexes keyed by int64 item keys, with deletes, upserts and persistence.

One :class:`VectorIndex` holds the vectors of one modality. Its FAISS index is
chosen by size (``auto``): exact inner product (``flat``) below
``exact_threshold`` vectors (20,000), ``hnsw`` up to ``ivfpq_threshold``
(500,000), and ``ivfpq`` from there on; ``ivf`` on request.

``ivfpq`` is for catalogs past memory: FAISS keeps ``pq_m`` bytes per vector
(product quantisation of the residual to its inverted list's centroid)
instead of the whole vector, and the index keeps its own copy of the vectors
in float16 (half of float32), from which a query's ``ivfpq_rerank`` (12) x k
nearest codes are re-scored exactly. At 1,000,000 384-d vectors that is about
0.9 GB in all where HNSW would hold 3 GB (bench/README.md, "Catalogs past
memory"). HNSW keeps the float32 vectors twice (its graph and this copy).

Rows and keys: FAISS sees rows ``0..n-1`` in insertion order; ``row_keys``
maps a row to the item key it holds. Deleting or replacing an item marks its
row dead instead of removing it (HNSW cannot remove), and every search passes
FAISS a bitmap selector of live rows, so a delete or an upsert is visible to
the very next query. :meth:`VectorIndex.compact` rebuilds from the live rows;
it runs on its own once dead rows pass ``compact_ratio`` of the index.

The arrays going in and out are float32 C-contiguous rows and int64 keys;
FAISS's ``-1`` "not found" results are dropped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import faiss
import numpy as np

IndexType = Literal["auto", "flat", "hnsw", "ivf", "ivfpq"]
INDEX_TYPES = ("auto", "flat", "hnsw", "ivf", "ivfpq")


class VectorIndexError(ValueError):
    """A bad argument to an index (dimension, type, unknown key)."""


@dataclass(frozen=True)
class IndexConfig:
    """How indexes are built. ``auto``: exact search below ``exact_threshold`` vectors, HNSW below
    ``ivfpq_threshold``, IVF-PQ from there on."""

    index_type: IndexType = "auto"
    exact_threshold: int = 20_000
    ivfpq_threshold: int = 500_000
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 160
    ivf_nprobe: int = 32
    pq_m: int = 64  # IVF-PQ: bytes per vector (sub-quantisers); the largest divisor of the dimension up to this
    ivfpq_rerank: int = 12  # IVF-PQ: re-score this many times k candidates exactly before keeping k (bench/README.md)
    # Below this share of live rows a filtered query scans the survivors exactly:
    # graph search with a very selective filter misses results.
    brute_force_fraction: float = 0.05
    compact_ratio: float = 0.25

    def __post_init__(self) -> None:
        if self.index_type not in INDEX_TYPES:
            raise VectorIndexError(f"index_type: unknown value {self.index_type!r}; use one of {', '.join(INDEX_TYPES)}")
        for name in ("exact_threshold", "ivfpq_threshold", "hnsw_m", "hnsw_ef_construction", "hnsw_ef_search", "ivf_nprobe", "pq_m", "ivfpq_rerank"):
            if getattr(self, name) < 1:
                raise VectorIndexError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.compact_ratio <= 1.0:
            raise VectorIndexError(f"compact_ratio: must be in (0, 1], got {self.compact_ratio}")

    def resolve(self, n_vectors: int) -> str:
        if self.index_type != "auto":
            return self.index_type
        if n_vectors < self.exact_threshold:
            return "flat"
        return "hnsw" if n_vectors < self.ivfpq_threshold else "ivfpq"


def as_rows(vectors: np.ndarray, dim: int, name: str = "vectors") -> np.ndarray:
    rows = np.ascontiguousarray(vectors, dtype=np.float32)
    if rows.ndim == 1:
        rows = rows.reshape(1, -1)
    if rows.ndim != 2 or rows.shape[1] != dim:
        raise VectorIndexError(f"{name}: expected shape [n, {dim}], got {list(np.shape(vectors))}")
    return rows


class VectorIndex:
    """Vectors of one modality, searchable by inner product (cosine on unit rows)."""

    def __init__(self, dim: int, config: IndexConfig | None = None):
        if dim < 1:
            raise VectorIndexError(f"dim: must be >= 1, got {dim}")
        self.dim = dim
        self.config = config or IndexConfig()
        self._vectors = np.zeros((0, dim), dtype=np.float32)
        self._row_keys = np.zeros(0, dtype=np.int64)
        self._alive = np.zeros(0, dtype=bool)
        self._row_of_key: dict[int, int] = {}
        self._index: faiss.Index = self._new_index("flat", 0)
        self.kind = "flat"

    # ----------------------------------------------------------------- writes
    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Insert or replace the vectors of ``keys``."""
        keys = np.asarray(keys, dtype=np.int64).reshape(-1)
        rows = as_rows(vectors, self.dim)
        if len(keys) != len(rows):
            raise VectorIndexError(f"keys: {len(keys)} keys for {len(rows)} vectors")
        if len(np.unique(keys)) != len(keys):
            raise VectorIndexError("keys: repeated key in one add")
        if len(keys) == 0:
            return
        self._mark_dead(keys)
        first_row = len(self._row_keys)
        dtype = self._vectors.dtype if first_row else _stored_dtype(self.config.resolve(len(rows)))  # a first IVF-PQ load: float16 at once
        self._vectors = np.concatenate([self._vectors.astype(dtype, copy=False), rows.astype(dtype, copy=False)])
        self._row_keys = np.concatenate([self._row_keys, keys])
        self._alive = np.concatenate([self._alive, np.ones(len(keys), dtype=bool)])
        self._row_of_key.update({int(key): first_row + offset for offset, key in enumerate(keys)})
        if self._index.ntotal == 0 and first_row == 0:
            self._rebuild()
        else:
            self._index.add(rows)
        self._maybe_compact()

    def remove(self, keys: np.ndarray) -> int:
        """Mark the rows of ``keys`` dead; unknown keys are ignored. Returns how many were live.

        Compacts on its own once dead rows pass ``compact_ratio``, as :meth:`add` does."""
        removed = self._mark_dead(keys)
        if removed:
            self._maybe_compact()
        return removed

    def _mark_dead(self, keys: np.ndarray) -> int:
        removed = 0
        for key in np.asarray(keys, dtype=np.int64).reshape(-1):
            row = self._row_of_key.pop(int(key), None)
            if row is not None:
                self._alive[row] = False
                removed += 1
        return removed

    def compact(self) -> None:
        """Rebuild from live rows only (and re-pick the index type for the new size)."""
        live = np.flatnonzero(self._alive)
        self._vectors = np.ascontiguousarray(self._vectors[live])
        self._row_keys = self._row_keys[live]
        self._alive = np.ones(len(live), dtype=bool)
        self._row_of_key = {int(key): row for row, key in enumerate(self._row_keys)}
        self._rebuild()

    # ------------------------------------------------------------------ reads
    def __len__(self) -> int:
        return len(self._row_of_key)

    def __contains__(self, key: int) -> bool:
        return int(key) in self._row_of_key

    @property
    def n_dead(self) -> int:
        return len(self._row_keys) - len(self._row_of_key)

    def keys(self) -> np.ndarray:
        return self._row_keys[self._alive]

    def vectors_for(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(vectors, present): rows for ``keys``; ``present[i]`` is False where a key has no vector."""
        keys = np.asarray(keys, dtype=np.int64).reshape(-1)
        rows = np.array([self._row_of_key.get(int(key), -1) for key in keys], dtype=np.int64)
        present = rows >= 0
        out = np.zeros((len(keys), self.dim), dtype=np.float32)
        out[present] = self._vectors[rows[present]]
        return out, present

    def search(self, queries: np.ndarray, k: int, *, allowed_keys: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` (scores, keys) per query row; ``allowed_keys``: a bool mask indexed by key.

        Rows of fewer than ``k`` results are padded with score ``-inf`` and key ``-1``.
        """
        queries = as_rows(queries, self.dim, "queries")
        if k < 1:
            raise VectorIndexError(f"k: must be >= 1, got {k}")
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        keys = np.full((len(queries), k), -1, dtype=np.int64)
        usable = self._alive
        if allowed_keys is not None:
            in_range = self._row_keys < len(allowed_keys)
            usable = usable & in_range & allowed_keys[np.where(in_range, self._row_keys, 0)]
        n_usable = int(usable.sum())
        if n_usable == 0:
            return scores, keys
        if self.kind != "flat" and n_usable < self.config.brute_force_fraction * len(usable):
            return self._scan(queries, k, np.flatnonzero(usable), scores, keys)
        params = None
        if n_usable < len(usable):
            selector = faiss.IDSelectorBitmap(np.packbits(usable, bitorder="little"))
            params = self._search_parameters(selector)
        if self.kind == "ivfpq":
            found_scores, found_rows = self._rescore(queries, k, *self._index.search(queries, min(k * self.config.ivfpq_rerank, n_usable), params=params))
        else:
            found_scores, found_rows = self._index.search(queries, min(k, n_usable), params=params)
        width = found_rows.shape[1]
        valid = found_rows >= 0
        scores[:, :width] = np.where(valid, found_scores, -np.inf)
        keys[:, :width] = np.where(valid, self._row_keys[np.where(valid, found_rows, 0)], -1)
        return scores, keys

    # --------------------------------------------------------------- storage
    def save(self, path_prefix: Path) -> dict[str, object]:
        """Write ``<prefix>.faiss`` and ``<prefix>.npz``; returns a manifest fragment."""
        path_prefix.parent.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self._index, str(path_prefix.with_suffix(".faiss")))
        with open(path_prefix.with_suffix(".npz"), "wb") as handle:
            np.savez(handle, vectors=self._vectors, row_keys=self._row_keys, alive=self._alive)
        return {"kind": self.kind, "dim": self.dim, "count": len(self), "dead": self.n_dead}

    @classmethod
    def load(cls, path_prefix: Path, config: IndexConfig | None = None) -> VectorIndex:
        stored = faiss.read_index(str(path_prefix.with_suffix(".faiss")))
        with np.load(path_prefix.with_suffix(".npz"), allow_pickle=False) as arrays:
            vectors, row_keys, alive = arrays["vectors"], arrays["row_keys"], arrays["alive"]
        index = cls(int(vectors.shape[1]), config)
        index._vectors = np.ascontiguousarray(vectors, dtype=_stored_dtype(_kind_of(stored)))
        index._row_keys = row_keys.astype(np.int64)
        index._alive = alive.astype(bool)
        index._row_of_key = {int(key): int(row) for row, key in zip(np.flatnonzero(index._alive), index._row_keys[index._alive])}
        index._index = stored
        if index._index.ntotal != len(index._row_keys) or index._index.d != index.dim:
            raise VectorIndexError(
                f"{path_prefix}: FAISS index holds {index._index.ntotal} x {index._index.d}, arrays {len(row_keys)} x {index.dim}; rebuild the index"
            )
        index.kind = _kind_of(index._index)
        index._apply_search_settings()
        return index

    # -------------------------------------------------------------- internals
    def _new_index(self, kind: str, n_vectors: int) -> faiss.Index:
        if kind == "flat":
            return faiss.IndexFlatIP(self.dim)
        if kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, self.config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = self.config.hnsw_ef_construction
            return index
        if kind == "ivf":
            n_lists = max(1, min(int(4 * np.sqrt(max(n_vectors, 1))), max(n_vectors // 39, 1)))
            return faiss.IndexIVFFlat(faiss.IndexFlatIP(self.dim), self.dim, n_lists, faiss.METRIC_INNER_PRODUCT)
        if kind == "ivfpq":
            # about sqrt(n) lists (1,000 at a million), each trained from >= 39 vectors; m sub-quantisers of 2^bits
            # centroids each (8 bits once there are 39 training vectors per centroid, fewer below)
            n_lists = max(1, min(int(np.sqrt(max(n_vectors, 1))), max(n_vectors // 39, 1)))
            m = max(divisor for divisor in range(1, min(self.config.pq_m, self.dim) + 1) if self.dim % divisor == 0)
            bits = int(np.clip(np.floor(np.log2(max(n_vectors, 2) / 39)), 1, 8))
            return faiss.IndexIVFPQ(faiss.IndexFlatIP(self.dim), self.dim, n_lists, m, bits, faiss.METRIC_INNER_PRODUCT)
        raise VectorIndexError(f"index_type: unknown value {kind!r}")

    def _rebuild(self) -> None:
        self.kind = self.config.resolve(len(self._vectors))
        self._vectors = np.ascontiguousarray(self._vectors, dtype=_stored_dtype(self.kind))
        self._index = self._new_index(self.kind, len(self._vectors))
        if self.kind in ("ivf", "ivfpq") and len(self._vectors):
            self._index.train(self._training_rows())
        for start in range(0, len(self._vectors), ADD_CHUNK):  # float32 a chunk at a time: IVF-PQ keeps float16
            self._index.add(np.ascontiguousarray(self._vectors[start : start + ADD_CHUNK], dtype=np.float32))
        self._apply_search_settings()

    def _training_rows(self) -> np.ndarray:
        """What IVF trains on: every vector; IVF-PQ a fixed random sample (64 per list, at least 2^bits), float32."""
        if self.kind == "ivf":
            return self._vectors
        n_rows = len(self._vectors)
        wanted = max(64 * self._index.nlist, 2**self._index.pq.nbits)
        rows = np.sort(np.random.default_rng(0).choice(n_rows, wanted, replace=False)) if n_rows > wanted else np.resize(np.arange(n_rows), wanted)
        return np.ascontiguousarray(self._vectors[rows], dtype=np.float32)

    def _rescore(self, queries: np.ndarray, k: int, _: np.ndarray, found_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """IVF-PQ: the exact inner products (from the stored vectors) of the candidates its codes found; the best ``k``."""
        valid = found_rows >= 0
        candidates = self._vectors[np.where(valid, found_rows, 0)].astype(np.float32)  # [q, k', d]
        scores = np.where(valid, np.einsum("qkd,qd->qk", candidates, queries), -np.inf).astype(np.float32)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        best = np.take_along_axis(scores, order, axis=1)
        return best, np.where(np.isfinite(best), np.take_along_axis(found_rows, order, axis=1), -1)

    def _apply_search_settings(self) -> None:
        if self.kind == "hnsw":
            self._index.hnsw.efSearch = self.config.hnsw_ef_search
        elif self.kind in ("ivf", "ivfpq"):
            self._index.nprobe = self.config.ivf_nprobe

    def _search_parameters(self, selector: faiss.IDSelector) -> faiss.SearchParameters:
        if self.kind == "hnsw":
            return faiss.SearchParametersHNSW(sel=selector, efSearch=self.config.hnsw_ef_search)
        if self.kind in ("ivf", "ivfpq"):
            return faiss.SearchParametersIVF(sel=selector, nprobe=self.config.ivf_nprobe)
        return faiss.SearchParameters(sel=selector)

    def _scan(self, queries: np.ndarray, k: int, rows: np.ndarray, scores: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact search over a few rows (a very selective filter)."""
        similarities = queries @ self._vectors[rows].astype(np.float32).T
        width = min(k, len(rows))
        top = np.argpartition(-similarities, width - 1, axis=1)[:, :width]
        top_scores = np.take_along_axis(similarities, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        scores[:, :width] = np.take_along_axis(top_scores, order, axis=1)
        keys[:, :width] = self._row_keys[rows[np.take_along_axis(top, order, axis=1)]]
        return scores, keys

    def _maybe_compact(self) -> None:
        n_rows = len(self._row_keys)
        if n_rows and self.n_dead / n_rows > self.config.compact_ratio:
            self.compact()
        elif self.config.index_type == "auto" and self.kind in AUTO_ORDER and AUTO_ORDER.index(self.config.resolve(len(self))) > AUTO_ORDER.index(self.kind):
            self._rebuild()  # grown past a threshold: flat to HNSW, HNSW to IVF-PQ (a catalog does not shrink its index type)


AUTO_ORDER = ("flat", "hnsw", "ivfpq")  # what ``auto`` picks as a catalog grows
ADD_CHUNK = 65_536  # rows converted to float32 and added to FAISS at a time


def _stored_dtype(kind: str) -> type:
    """The dtype of the vectors an index keeps beside FAISS: float16 for IVF-PQ (catalogs past memory), else float32."""
    return np.float16 if kind == "ivfpq" else np.float32


def _kind_of(index: faiss.Index) -> str:
    if isinstance(index, faiss.IndexHNSWFlat):
        return "hnsw"
    if isinstance(index, faiss.IndexIVFPQ):
        return "ivfpq"
    if isinstance(index, faiss.IndexIVFFlat):
        return "ivf"
    return "flat"


def write_manifest(path: Path, manifest: dict[str, object]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    tmp.replace(path)
