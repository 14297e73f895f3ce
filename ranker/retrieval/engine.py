"""Candidate retrieval: the search engine over the item store and per-modality indexes.

Three indexes, one per kind of item vector:

- ``text``: the item's text, in the text space;
- ``image``: the item's picture, in the image space;
- ``image_in_text``: the item's picture mapped into the text space (the
  ImageNet-label bridge; with CLIP, the same vector as ``image``).

A query may carry text, a picture, or both. Each (query part, item part) pair
is a *channel* with its own cosine similarity:

=================  ================  ========================
channel            query vector      item vector
=================  ================  ========================
``text``           text              text
``text_to_image``  text              picture in text space
``image``          picture           picture
``image_to_text``  picture in text   text
=================  ================  ========================

**The bridge.** "Picture in text space" is the ImageNet-label bridge until
the catalog's own (text, picture) pairs have fitted a learned head
(:mod:`ranker.retrieval.bridge`, ``ranker index bridge``); the manifest's
``bridge`` entry says which serves.

**Fusion.** Each active channel retrieves its top ``n_probe`` keys (filters
applied inside FAISS); the union is rescored exactly on every active channel;
each channel's cosine is put on one calibrated scale (log-odds of a category
match, :mod:`ranker.retrieval.fusion`), and the fused score is, averaged over
the query's parts (text, picture), the best calibrated channel of that part.
An item without a picture (or with a picture and no useful title) is scored
on the channels it has, on the same scale. :attr:`Candidate.scores` carry the calibrated channel scores; an
index without calibration uses raw cosines and the fixed
:data:`~ranker.retrieval.fusion.CHANNEL_WEIGHTS` (cross-modal 0.3).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ranker.catalog.images import decode_image
from ranker.catalog.items import CatalogError, Item
from ranker.catalog.store import ItemStore
from ranker.retrieval.bridge import LearnedBridge, bridge_state, refit_hint
from ranker.retrieval.encoders import EncoderSet, ImageInput
from ranker.retrieval.fusion import (
    CATEGORY_BOOST,
    CHANNEL_WEIGHTS,  # noqa: F401  (re-exported: the uncalibrated weights)
    CHANNELS,
    LOGITS_PER_COSINE,
    UNCALIBRATED,
    Calibration,
    IndexMismatchError,  # noqa: F401  (re-exported)
    fuse_scores,
    manifest_path,  # noqa: F401  (re-exported: where the manifest of a data directory lives)
    read_manifest,  # noqa: F401  (re-exported)
)
from ranker.retrieval.index import IndexConfig, VectorIndex
from ranker.retrieval.query_cache import QUERY_CACHE_SIZE, QueryCache
from ranker.retrieval.query_vocabulary import QueryVocabulary
from ranker.retrieval.snapshots import EmbeddedDocuments, SnapshotUnreadable, check_encoders, read_manifest_file, read_snapshot, write_snapshot

INDEX_NAMES = ("text", "image", "image_in_text")
MANIFEST_VERSION = 1
BUILD_CHUNK = 1024
RECONCILE_CHUNK = 256  # items embedded from the store between two progress lines

log = logging.getLogger(__name__)


class QueryError(ValueError):
    """A search request that cannot run; the message names the field."""

    def __init__(self, message: str, *, field: str, value: Any = None):
        super().__init__(message)
        self.field = field
        self.value = value


@dataclass(frozen=True)
class Filters:
    """Candidate filters: categories (any of, case-insensitive) and a price range; and preferred categories.

    ``prefer_categories`` is soft: their items get :attr:`SearchEngine.category_boost` added to their fused score,
    and items of other categories still rank when their text or picture matches better (a shop's taxonomy is
    never perfect). An engine whose ``category_boost`` is None treats them as a filter."""

    categories: tuple[str, ...] | None = None
    price_min: float | None = None
    price_max: float | None = None
    prefer_categories: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("price_min", "price_max"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0):
                raise QueryError(f"filters.{name}: must be a finite number >= 0, got {value!r}", field=f"filters.{name}", value=value)
        if self.price_min is not None and self.price_max is not None and self.price_min > self.price_max:
            raise QueryError(f"filters.price_min: {self.price_min} is above price_max {self.price_max}", field="filters.price_min", value=self.price_min)
        for name in ("categories", "prefer_categories"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, str) or not all(isinstance(c, str) for c in value)):
                raise QueryError(f"filters.{name}: must be a list of names, got {value!r}", field=f"filters.{name}", value=value)

    @property
    def active(self) -> bool:
        """Whether a hard constraint applies (a preference is not one)."""
        return self.categories is not None or self.price_min is not None or self.price_max is not None

    def any(self) -> bool:
        return self.active or bool(self.prefer_categories)


@dataclass
class QueryVectors:
    """A query embedded: any of text (text space), image (image space), image_in_text."""

    text: np.ndarray | None = None
    image: np.ndarray | None = None
    image_in_text: np.ndarray | None = None

    def channels(self) -> list[str]:
        return [name for name, (part, _) in CHANNELS.items() if getattr(self, part) is not None]


@dataclass
class Candidate:
    """A retrieved item with its fused score and per-channel similarities (None: item lacks that part)."""

    key: int
    item: Item
    score: float
    scores: dict[str, float | None]  # per channel, on the fusion's scale (calibrated when the index is)
    cosines: dict[str, float | None] = field(default_factory=dict)  # per channel, the raw cosine (what the policy's features read)

    def to_json(self) -> dict[str, Any]:
        item = self.item
        return {
            "item_id": item.item_id,
            "title": item.title,
            "category": item.category,
            "brand": item.brand,
            "price": item.price,
            "score": round(self.score, 6),
            "scores": {name: None if value is None else round(value, 6) for name, value in self.scores.items()},
        }


@dataclass
class EmbeddedItems:
    """Items with their vectors, ready to insert: ``image`` rows follow ``with_picture``."""

    items: list[Item]
    text: np.ndarray  # [n, d_text]
    with_picture: list[int]  # rows of ``items`` that have a picture
    image: np.ndarray  # [len(with_picture), d_image]
    image_in_text: np.ndarray  # [len(with_picture), d_text]


@dataclass
class BuildReport:
    """What a build or upsert did, including every item it rejected and why."""

    n_indexed: int = 0
    n_with_image: int = 0
    errors: list[CatalogError] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        return f"{self.n_indexed} items indexed ({self.n_with_image} with a picture), {len(self.errors)} rejected, in {self.seconds:.1f}s"


class SearchEngine:
    """Items, their vectors and candidate retrieval, persisted under ``data_dir/index``."""

    def __init__(
        self,
        encoders: EncoderSet,
        data_dir: Path | None = None,
        *,
        index_config: IndexConfig | None = None,
        query_cache_size: int = QUERY_CACHE_SIZE,
        reconcile: bool = True,
    ):
        """``reconcile``: bring the indexes in line with the item store at once (:meth:`reconcile`); a process that
        follows the catalog stream applies it first and reconciles after."""
        self.encoders = encoders
        self.lock = threading.RLock()  # held by whoever searches or writes from several threads (ranker.serving)
        self.query_cache = QueryCache(query_cache_size, lowercase=bool(getattr(encoders, "lowercases", False)))
        self.data_dir = Path(data_dir) if data_dir else None
        self.index_config = index_config or IndexConfig()
        index_dir = self._index_dir()
        if index_dir:
            index_dir.mkdir(parents=True, exist_ok=True)
        self.store = ItemStore(index_dir / "items.sqlite" if index_dir else None)
        dims = {"text": encoders.text_dim, "image": encoders.image_dim, "image_in_text": encoders.text_dim}
        self.indexes = {name: VectorIndex(dims[name], self.index_config) for name in INDEX_NAMES}
        self.built_at: float | None = None
        self.encoder_spec: str | None = None
        self.query_vocabulary = QueryVocabulary()  # the names a query parser understands; follows every write
        # the picture-to-text bridge and the channel calibration (ranker.retrieval.bridge, .fusion)
        self.bridge: LearnedBridge | None = None
        self.calibration: Calibration = UNCALIBRATED
        self.bridge_record: dict[str, Any] = {}
        self.pairs_changed = 0  # pictured items written or deleted since the bridge was last fitted
        self.category_boost: float | None = CATEGORY_BOOST  # what a preferred category adds (log-odds); None: it is a filter
        self.saved_at: float | None = None  # when the snapshot this engine opened was written (None: none)
        self.stream_position: str | None = None  # the catalog stream entry that snapshot includes (ranker.live.catalog_stream)
        self.snapshot_problem: str | None = None  # why the snapshot could not be read (then rebuilt from the store)
        self.embedded = EmbeddedDocuments()  # by key: the fingerprint of the document its vectors came from
        if index_dir:
            self._load(index_dir)
        self.query_vocabulary.clear()
        self.query_vocabulary.add(self.store.items())
        if reconcile:
            self.reconcile()

    # ---------------------------------------------------------------- writes
    def build(self, items: Sequence[Item], *, progress: bool | None = None) -> BuildReport:
        """Replace the whole catalog with ``items`` and index them."""
        self.store.clear()
        self.query_vocabulary.clear()
        dims = {name: index.dim for name, index in self.indexes.items()}
        self.indexes = {name: VectorIndex(dims[name], self.index_config) for name in INDEX_NAMES}
        self.embedded = EmbeddedDocuments()
        report = self.upsert(items, progress=progress)
        self.built_at = time.time()
        return report

    def upsert(self, items: Sequence[Item], *, progress: bool | None = None) -> BuildReport:
        """Insert or replace items; searchable as soon as this returns.

        Pictures are decoded first: an item whose picture cannot be used is
        rejected whole (reported in the result) and nothing else changes for it.
        """
        started = time.perf_counter()
        report = BuildReport()
        show = len(items) >= 2_000 if progress is None else progress
        with tqdm(total=len(items), desc="indexing", unit="item", disable=not show) as bar:
            for start in range(0, len(items), BUILD_CHUNK):
                chunk = items[start : start + BUILD_CHUNK]
                self._upsert_chunk(chunk, report)
                bar.update(len(chunk))
        report.seconds = time.perf_counter() - started
        return report

    def delete(self, item_ids: Iterable[str]) -> int:
        """Delete items by id; unknown ids are ignored. Returns how many were deleted."""
        stored = {item.item_id: item for item in map(self.store.get, item_ids) if item is not None}
        keys = self.store.delete(list(stored))
        self.query_vocabulary.remove(stored.values())
        self.pairs_changed += sum(int(key) in self.indexes["image"] for key in keys)
        for index in self.indexes.values():
            index.remove(keys)
        self.embedded.set(keys, np.zeros(len(keys), dtype=np.int64))
        return len(keys)

    def compact(self) -> None:
        """Rebuild indexes without their dead rows (deleted and replaced vectors)."""
        for index in self.indexes.values():
            index.compact()

    def save(self, *, encoder_spec: str | None = None, stream_position: str | None = None) -> Path:
        """Write a snapshot of the indexes atomically and make the manifest name it (:mod:`ranker.retrieval.snapshots`);
        the item store is already on disk. Returns the snapshot's folder.

        ``encoder_spec`` (as given to :func:`ranker.retrieval.encoders.load_encoders`) lets :func:`open_engine` load
        the same encoders later; ``stream_position``: the last catalog stream entry the indexes include."""
        index_dir = self._index_dir()
        if index_dir is None:
            raise ValueError("data_dir: this engine was created without a data directory, so it cannot be saved")
        if stream_position is not None:
            self.stream_position = stream_position
        keys = self.indexes["text"].keys()
        saved_at = time.time()
        folder = write_snapshot(
            index_dir,
            indexes=self.indexes,
            bridge=self.bridge,
            keys=keys,
            fingerprints=self.embedded.of(keys),
            manifest={
                "manifest_version": MANIFEST_VERSION,
                "encoders": self.encoders.describe(),
                "count": len(self.store),
                "built_at": self.built_at or saved_at,
                "saved_at": saved_at,
                "fusion_weights": self.calibration.weights(),
                "calibration": self.calibration.to_json(),
                "bridge": self.bridge_info(),
                "encoder_spec": encoder_spec or self.encoder_spec,
                "encoder_runtime": self.encoders.runtime(),
                "catalog_stream": {"last_id": self.stream_position},
            },
        )
        self.saved_at, self.snapshot_problem = saved_at, None
        return folder

    def bridge_info(self) -> dict[str, Any]:
        """Which bridge serves, why, and whether a refit is due (the manifest's ``bridge`` entry)."""
        return bridge_state(self)

    # ----------------------------------------------------------------- reads
    def __len__(self) -> int:
        return len(self.store)

    def get(self, item_id: str) -> Item | None:
        return self.store.get(item_id)

    def embed_query(self, text: str | None = None, image: ImageInput | None = None) -> QueryVectors:
        """Encode a query's text and/or picture. A blank text with no picture is an error."""
        if text is not None and not isinstance(text, str):
            raise QueryError(f"query.text: must be a string, got {type(text).__name__}", field="query.text", value=text)
        text = text.strip() if text else None
        if not text and image is None:
            raise QueryError("query: give a text, an image, or both", field="query")
        vectors = QueryVectors()
        if text:
            vectors.text = self.query_cache.get(text, lambda key: self.encoders.encode_texts([key], progress=False)[0])
        if image is not None:
            picture = decode_image(image, field="query.image")
            embedded = self.encoders.encode_pictures([picture], progress=False)
            vectors.image, vectors.image_in_text = embedded.image[0], embedded.in_text[0]
            if self.bridge is not None:
                vectors.image_in_text = self.bridge.project(embedded.image)[0]
        return vectors

    def search(
        self,
        text: str | None = None,
        image: ImageInput | None = None,
        *,
        k: int = 10,
        filters: Filters | None = None,
        n_probe: int | None = None,
    ) -> list[Candidate]:
        """Encode the query and return the top ``k`` candidates (see module docstring)."""
        return self.search_vectors(self.embed_query(text, image), k=k, filters=filters, n_probe=n_probe)

    def search_vectors(self, query: QueryVectors, *, k: int = 10, filters: Filters | None = None, n_probe: int | None = None) -> list[Candidate]:
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise QueryError(f"k: must be a whole number >= 1, got {k!r}", field="k", value=k)
        channels = query.channels()
        if not channels:
            raise QueryError("query: give a text, an image, or both", field="query")
        filters = filters or Filters()
        preferred = filters.prefer_categories or None
        if preferred is not None and self.category_boost is None:  # this deployment makes a named category a wall
            filters = Filters(categories=filters.categories or preferred, price_min=filters.price_min, price_max=filters.price_max)
            preferred = None
        allowed = self.store.filter_mask(filters.categories, filters.price_min, filters.price_max) if filters.active else None
        # a preference retrieves each channel's best among the preferred categories as well as its best overall
        masks = [allowed] if preferred is None else [allowed, self._preferred_mask(preferred, allowed)]
        n_probe = max(n_probe or 2 * k, k)
        found: list[np.ndarray] = []
        for channel in channels:
            part, index_name = CHANNELS[channel]
            for mask in masks:
                _, keys = self.indexes[index_name].search(getattr(query, part), n_probe, allowed_keys=mask)
                found.append(keys[0][keys[0] >= 0])
        keys = np.unique(np.concatenate(found)) if found else np.zeros(0, dtype=np.int64)
        if len(keys) == 0:
            return []
        fused, per_channel, raw = self._rescore(query, channels, keys)
        if preferred is not None:
            fused = fused + self._boost() * self._preferred_mask(preferred, None)[keys]
        top = np.argsort(-fused, kind="stable")[:k]
        return [
            Candidate(
                key=int(keys[row]),
                item=self.store.item_for_key(int(keys[row])),
                score=float(fused[row]),
                scores={channel: (None if np.isnan(per_channel[channel][row]) else float(per_channel[channel][row])) for channel in channels},
                cosines={channel: (None if np.isnan(raw[channel][row]) else float(raw[channel][row])) for channel in channels},
            )
            for row in top
        ]

    def _preferred_mask(self, categories: tuple[str, ...], allowed: np.ndarray | None) -> np.ndarray:
        """Keys in ``categories`` (and ``allowed``), as a mask indexed by key."""
        mask = self.store.filter_mask(categories)
        return mask if allowed is None else mask & allowed

    def _boost(self) -> float:
        """:attr:`category_boost` on the fused score's scale: log-odds when calibrated, else raw cosines."""
        boost = float(self.category_boost or 0.0)
        return boost if self.calibration.fitted else boost / LOGITS_PER_COSINE

    # ------------------------------------------------------------- internals
    def _rescore(self, query: QueryVectors, channels: list[str], keys: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The fused scores, the channel scores on the fusion's scale, and the raw cosines."""
        per_channel: dict[str, np.ndarray] = {}
        for channel in channels:
            part, index_name = CHANNELS[channel]
            vectors, present = self.indexes[index_name].vectors_for(keys)
            per_channel[channel] = np.where(present, vectors @ getattr(query, part), np.nan)
        calibrated = self.calibration.apply(per_channel)
        return fuse_scores(calibrated, len(keys), self.calibration), calibrated, per_channel

    def embed_items(self, items: Sequence[Item]) -> tuple[EmbeddedItems, list[CatalogError]]:
        """Encode ``items`` without storing them; an item whose picture cannot be used is rejected whole."""
        accepted: list[Item] = []
        pictures: list[Any] = []
        errors: list[CatalogError] = []
        for item in items:
            if item.image is None:
                accepted.append(item)
                continue
            try:
                pictures.append(decode_image(item.image))
            except CatalogError as exc:
                errors.append(CatalogError(f"item {item.item_id!r}: {exc}", field="image", value=item.item_id))
                continue
            accepted.append(item)
        text_dim, image_dim = self.indexes["text"].dim, self.indexes["image"].dim
        if not accepted:
            return EmbeddedItems([], np.zeros((0, text_dim), np.float32), [], np.zeros((0, image_dim), np.float32), np.zeros((0, text_dim), np.float32)), errors
        text_vectors = self._encode_unique_texts([item.text_for_embedding() for item in accepted])
        with_picture = [row for row, item in enumerate(accepted) if item.image is not None]
        if pictures:
            embedded = self.encoders.encode_pictures(pictures, progress=False)
            image, in_text = embedded.image, embedded.in_text
            if self.bridge is not None:
                in_text = self.bridge.project(image)
        else:
            image, in_text = np.zeros((0, image_dim), np.float32), np.zeros((0, text_dim), np.float32)
        return EmbeddedItems(accepted, text_vectors, with_picture, image, in_text), errors

    def insert_embedded(self, embedded: EmbeddedItems) -> np.ndarray:
        """Store items whose vectors are already computed (by :meth:`embed_items`, here or in another process)."""
        if not embedded.items:
            return np.zeros(0, dtype=np.int64)
        latest = {item.item_id: item for item in embedded.items}  # an id twice in a batch: the last one stays
        replaced = [item for item in map(self.store.get, latest) if item is not None]
        earlier = {item_id: self.store.key_of(item_id) for item_id in latest}
        keys = self.store.upsert(embedded.items)
        self.query_vocabulary.remove(replaced)
        self.query_vocabulary.add(latest.values())
        # another process sharing the store deleted and re-added an item: it has a new key, the old one's vectors go
        moved = np.array([key for item_id, key in earlier.items() if key is not None and key != self.store.key_of(item_id)], dtype=np.int64)
        for index in self.indexes.values():
            index.remove(moved)
        self.embedded.set(moved, np.zeros(len(moved), dtype=np.int64))
        self.embedded.set(keys, self.store.fingerprints(keys))
        self.indexes["text"].add(keys, embedded.text)
        picture_keys = keys[embedded.with_picture]
        self.pairs_changed += len(picture_keys)
        if len(picture_keys):
            self.indexes["image"].add(picture_keys, embedded.image)
            self.indexes["image_in_text"].add(picture_keys, embedded.image_in_text)
        without_picture = np.setdiff1d(keys, picture_keys)
        for name in ("image", "image_in_text"):
            self.indexes[name].remove(without_picture)  # an update may drop the picture
        return keys

    def _upsert_chunk(self, chunk: Sequence[Item], report: BuildReport) -> None:
        embedded, errors = self.embed_items(chunk)
        report.errors.extend(errors)
        self.insert_embedded(embedded)
        report.n_indexed += len(embedded.items)
        report.n_with_image += len(embedded.with_picture)

    def _encode_unique_texts(self, texts: list[str]) -> np.ndarray:
        """Identical texts (product variants) are encoded once."""
        unique, inverse = np.unique(np.array(texts, dtype=object), return_inverse=True)
        return self.encoders.encode_texts(list(unique), progress=False)[inverse.reshape(-1)]

    def _index_dir(self) -> Path | None:
        return self.data_dir / "index" if self.data_dir else None

    def _load(self, index_dir: Path) -> None:
        """Open the snapshot the manifest names. One that cannot be read is logged and left out: the indexes start
        empty and :meth:`reconcile` rebuilds them from the item store (a learned bridge is then refitted when due)."""
        try:
            manifest = read_manifest_file(index_dir)
            if manifest is None:
                return
            check_encoders(index_dir, manifest, self.encoders.describe())
            snapshot = read_snapshot(
                index_dir, manifest, self.index_config, expected=expected_fingerprints(self.encoders.describe()), refit_hint=refit_hint(self.data_dir)
            )
        except SnapshotUnreadable as exc:
            self.snapshot_problem = str(exc)
            self.bridge_record = {"reason": f"the index snapshot could not be read ({exc}); rebuilt from the item store, refitted when due"}
            log.error("%s: rebuilding the index from the item store", exc)
            return
        self.indexes = {name: snapshot.indexes.get(name) or VectorIndex(index.dim, self.index_config) for name, index in self.indexes.items()}
        self.built_at = manifest.get("built_at")
        self.saved_at = manifest.get("saved_at")
        self.encoder_spec = manifest.get("encoder_spec")
        self.stream_position = (manifest.get("catalog_stream") or {}).get("last_id")
        self.calibration = Calibration.from_json(manifest.get("calibration"))
        self.bridge_record = dict(manifest.get("bridge") or {})
        self.pairs_changed = int(self.bridge_record.get("changed_since_fit", 0))
        self.bridge = snapshot.bridge
        if snapshot.keys is None:  # saved before fingerprints existed: what it indexed is taken as the store's current documents
            keys = self.indexes["text"].keys()
            self.embedded.set(keys, self.store.fingerprints(keys))
        else:
            self.embedded.set(snapshot.keys, snapshot.fingerprints)

    def reconcile(self) -> int:
        """Bring the indexes in line with the item store; returns how many items were embedded from it.

        The store commits every write at once (from this process or any other sharing it); the indexes reach
        disk only with a snapshot. Items the indexes lack, or hold from an older document than the store's (by
        fingerprint), are embedded from the store, with a progress log; vectors of items the store no longer
        has are dropped. So a lost or trimmed catalog stream, a missing or corrupt snapshot, or a stop between
        a write and a snapshot never leaves a stored item out. Processes that follow the catalog stream apply it
        first and reconcile after, so only what the stream no longer holds is encoded again.
        """
        stored = self.store.keys()
        indexed = self.indexes["text"].keys()
        orphans = np.setdiff1d(indexed, stored)
        for index in self.indexes.values():
            index.remove(orphans)
        self.embedded.set(orphans, np.zeros(len(orphans), dtype=np.int64))
        stale = stored[self.store.fingerprints(stored) != self.embedded.of(stored)]
        if len(stale) == 0:
            return 0
        why = self.snapshot_problem or ("no index snapshot" if self.saved_at is None else "written since the index snapshot")
        log.warning("the index lacks %d of the item store's %d items (%s): embedding them from the store", len(stale), len(stored), why)
        changed = self.pairs_changed
        done = 0
        for start in range(0, len(stale), RECONCILE_CHUNK):
            chunk = [self.store.item_for_key(int(key)) for key in stale[start : start + RECONCILE_CHUNK]]
            report = self.upsert(chunk, progress=False)
            for error in report.errors:  # a picture that went bad on disk since: drop that item
                log.error("item store: %s; the item is dropped", error)
                self.store.delete([str(error.value)])
            done += len(chunk)
            log.warning("rebuilding the index from the item store: %d of %d items (%.0f%%)", done, len(stale), 100.0 * done / len(stale))
        if self.snapshot_problem is not None or self.saved_at is None:
            self.pairs_changed = changed  # re-embedding what a lost snapshot held is not a catalog change
        return done


def expected_fingerprints(described: dict[str, dict[str, object]]) -> dict[str, str]:
    """The encoder fingerprints a learned bridge must have been fitted for."""
    return {part: str(described[part].get("fingerprint")) for part in ("text", "image")}


def saved_encoder_spec(data_dir: Path) -> str | None:
    """The encoder spec an index under ``data_dir`` was saved with, if any (None too when the manifest is unreadable)."""
    try:
        manifest = read_manifest_file(Path(data_dir) / "index")
    except SnapshotUnreadable:
        return None
    return manifest.get("encoder_spec") if manifest else None


def open_engine(
    data_dir: Path,
    *,
    encoder_spec: str | None = None,
    device: str = "auto",
    index_config: IndexConfig | None = None,
    encoder_backend: str = "auto",
    query_cache_size: int = QUERY_CACHE_SIZE,
    reconcile: bool = True,
) -> SearchEngine:
    """The engine under ``data_dir``, with the encoders its index was built with (or ``default``).

    The encoders run on ONNX Runtime on the CPU unless ``encoder_backend`` says ``torch`` (or CUDA is used);
    their exported graphs are cached in ``data_dir/models``. ``reconcile=False`` leaves :meth:`SearchEngine.reconcile`
    to the caller (a process that applies the catalog stream first)."""
    from ranker.retrieval.encoders import load_encoders, models_dir

    spec = encoder_spec or saved_encoder_spec(data_dir) or "default"
    encoders = load_encoders(spec, device, backend=encoder_backend, cache_dir=models_dir(data_dir))
    engine = SearchEngine(encoders, data_dir, index_config=index_config, query_cache_size=query_cache_size, reconcile=reconcile)
    engine.encoder_spec = spec
    return engine
