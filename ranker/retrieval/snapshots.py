"""Index snapshots: the engine's vectors on disk, written atomically beside the item store.

The data directory is the catalog's home. Under ``DATA_DIR/index``:

- ``items.sqlite``: the item store, every item however it was written (:mod:`ranker.catalog.store`);
- ``snapshots/<name>/``: one complete snapshot of the indexes: ``text``, ``image`` and ``image_in_text``
  (``.faiss`` and ``.npz`` each), the learned bridge head when one serves, and ``catalog.npz``: the item keys it
  embedded with the fingerprints of their documents;
- ``manifest.json``: the commit point. It names the snapshot that serves, with the encoders, counts, the channel
  calibration, the bridge's record and the catalog stream position the snapshot includes.

**Writing** (:func:`write_snapshot`), under an exclusive lock on ``index/.snapshot.lock`` (one writer per data
directory at a time):

1. every file goes into a fresh ``snapshots/<name>.partial/`` and is flushed to disk (fsync);
2. the folder is renamed to ``snapshots/<name>``;
3. the manifest is replaced atomically: written to a temporary file, fsynced, renamed over the old one, and the
   folder fsynced.

A process killed at any step leaves the previous manifest naming the previous complete snapshot; the next write
removes what was left half-written. The newest :data:`KEEP` snapshots stay on disk (a process may still be
reading the one just replaced), older ones are removed.

**Reading** (:func:`read_snapshot`) loads the snapshot the manifest names (or, for an index saved before
snapshots existed, the files directly under ``index/``). Anything that cannot be read (a truncated FAISS file, a
corrupt ``.npz``, a missing bridge head, a manifest that is not JSON) raises :class:`SnapshotUnreadable` naming
the file; the engine then rebuilds its indexes from the item store
(:meth:`ranker.retrieval.engine.SearchEngine.reconcile`). Heads or indexes made by other encoders are not
corruption: they raise :class:`~ranker.retrieval.fusion.IndexMismatchError`, as before.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ranker.retrieval.bridge import BRIDGE_FILE, LearnedBridge
from ranker.retrieval.fusion import IndexMismatchError
from ranker.retrieval.index import IndexConfig, VectorIndex, VectorIndexError

SNAPSHOTS = "snapshots"
CATALOG_FILE = "catalog.npz"
MANIFEST = "manifest.json"
LOCK_FILE = ".snapshot.lock"
KEEP = 2  # snapshots kept on disk: the one serving and the one before it
PARTIAL = ".partial"
LEGACY_FILES = ("text.faiss", "text.npz", "image.faiss", "image.npz", "image_in_text.faiss", "image_in_text.npz", BRIDGE_FILE)


class SnapshotUnreadable(RuntimeError):
    """A snapshot file that cannot be read (truncated, corrupt, missing); the message names it."""


@dataclass
class Snapshot:
    """What a snapshot holds, read back."""

    manifest: dict[str, Any]
    indexes: dict[str, VectorIndex]
    bridge: LearnedBridge | None
    keys: np.ndarray | None  # the item keys embedded (None: saved before fingerprints existed)
    fingerprints: np.ndarray | None  # ... and the fingerprints of the documents they were embedded from
    directory: Path


def write_snapshot(
    index_dir: Path,
    *,
    indexes: dict[str, VectorIndex],
    bridge: LearnedBridge | None,
    manifest: dict[str, Any],
    keys: np.ndarray,
    fingerprints: np.ndarray,
) -> Path:
    """Write one complete snapshot and make the manifest name it (see the module docstring); returns its folder."""
    index_dir = Path(index_dir)
    root = index_dir / SNAPSHOTS
    root.mkdir(parents=True, exist_ok=True)
    with _writer_lock(index_dir):
        _remove_partials(root)
        name = f"{time.time_ns():020d}-{os.getpid()}"
        partial = root / (name + PARTIAL)
        partial.mkdir()
        parts = {index_name: index.save(partial / index_name) for index_name, index in indexes.items()}
        if bridge is not None:
            bridge.save(partial)
        with open(partial / CATALOG_FILE, "wb") as handle:
            np.savez(handle, keys=np.asarray(keys, dtype=np.int64), fingerprints=np.asarray(fingerprints, dtype=np.int64))
        for path in partial.iterdir():
            _fsync_file(path)
        final = root / name
        partial.rename(final)
        _fsync_dir(root)
        body = dict(manifest, indexes=parts, snapshot=f"{SNAPSHOTS}/{name}")
        write_manifest(index_dir / MANIFEST, body)
        _prune(index_dir, keep=final)
    return final


def read_snapshot(index_dir: Path, manifest: dict[str, Any], config: IndexConfig, *, expected: dict[str, str], refit_hint: str) -> Snapshot:
    """The snapshot ``manifest`` names (the legacy layout when it names none); :class:`SnapshotUnreadable` when a file
    cannot be read, :class:`IndexMismatchError` when the bridge head was fitted for other encoders."""
    index_dir = Path(index_dir)
    directory = index_dir / manifest["snapshot"] if manifest.get("snapshot") else index_dir
    reading = directory
    try:
        indexes = {}
        for name in manifest.get("indexes") or ("text", "image", "image_in_text"):
            reading = directory / f"{name}.faiss and .npz"
            indexes[name] = VectorIndex.load(directory / name, config)
        keys = fingerprints = None
        if (directory / CATALOG_FILE).exists() or manifest.get("snapshot"):
            reading = directory / CATALOG_FILE
            with np.load(reading, allow_pickle=False) as arrays:
                keys, fingerprints = arrays["keys"].astype(np.int64), arrays["fingerprints"].astype(np.int64)
        bridge = None
        if (manifest.get("bridge") or {}).get("serving") == "learned":
            reading = directory / BRIDGE_FILE
            bridge = LearnedBridge.load(directory, expected, refit_hint=refit_hint)
    except IndexMismatchError as exc:
        if "is missing" in str(exc):
            raise SnapshotUnreadable(str(exc)) from None
        raise
    except (OSError, RuntimeError, ValueError, KeyError, EOFError, zipfile.BadZipFile, VectorIndexError) as exc:
        # faiss raises RuntimeError on a truncated file; numpy ValueError or BadZipFile on a corrupt archive
        raise SnapshotUnreadable(f"index snapshot file {reading} cannot be read: {type(exc).__name__}: {first_line(exc)}") from None
    if keys is not None and (fingerprints is None or len(keys) != len(fingerprints)):
        raise SnapshotUnreadable(f"index snapshot file {directory / CATALOG_FILE} holds {len(keys)} keys for {len(fingerprints or [])} fingerprints")
    return Snapshot(manifest=manifest, indexes=indexes, bridge=bridge, keys=keys, fingerprints=fingerprints, directory=directory)


def read_manifest_file(index_dir: Path) -> dict[str, Any] | None:
    """The manifest under ``index_dir`` (None when there is none); :class:`SnapshotUnreadable` when it is not JSON."""
    path = Path(index_dir) / MANIFEST
    if not path.exists():
        return None
    try:
        body = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SnapshotUnreadable(f"index manifest {path} cannot be read: {first_line(exc)}") from None
    if not isinstance(body, dict):
        raise SnapshotUnreadable(f"index manifest {path} is not a JSON object")
    return body


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """Replace ``path`` atomically with ``manifest`` (JSON): a temporary file, fsync, rename, fsync the folder."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "w") as handle:
        handle.write(json.dumps(manifest, indent=2, sort_keys=True))
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)
    _fsync_dir(path.parent)


def snapshot_dir(index_dir: Path) -> Path:
    """The folder of the snapshot the manifest names (``index_dir`` itself for the legacy layout)."""
    manifest = read_manifest_file(index_dir) or {}
    return Path(index_dir) / manifest["snapshot"] if manifest.get("snapshot") else Path(index_dir)


def check_encoders(index_dir: Path, manifest: dict[str, Any], expected: dict[str, dict[str, Any]]) -> None:
    """:class:`IndexMismatchError` when the snapshot was made with other encoders than ``expected`` (``describe()``)."""
    for part, info in manifest.get("encoders", {}).items():
        wanted = expected.get(part) or {}
        if wanted != info:
            raise IndexMismatchError(
                f"index at {index_dir} was built with {part} encoder {info.get('id')!r} "
                f"({info.get('dim')}-d, fingerprint {info.get('fingerprint')}), but the loader uses "
                f"{wanted.get('id')!r} ({wanted.get('dim')}-d, fingerprint {wanted.get('fingerprint')}); "
                "rebuild it with `ranker index build`"
            )


class EmbeddedDocuments:
    """By item key, the fingerprint of the stored document its vectors were embedded from (0: none)."""

    def __init__(self) -> None:
        self._by_key = np.zeros(0, dtype=np.int64)

    def set(self, keys: np.ndarray, fingerprints: np.ndarray) -> None:
        keys = np.asarray(keys, dtype=np.int64).reshape(-1)
        if len(keys) == 0:
            return
        if keys.max() >= len(self._by_key):
            grown = np.zeros(max(int(keys.max()) + 1, 2 * len(self._by_key), 1024), dtype=np.int64)
            grown[: len(self._by_key)] = self._by_key
            self._by_key = grown
        self._by_key[keys] = fingerprints

    def of(self, keys: np.ndarray) -> np.ndarray:
        keys = np.asarray(keys, dtype=np.int64).reshape(-1)
        if len(self._by_key) == 0:
            return np.zeros(len(keys), dtype=np.int64)
        inside = keys < len(self._by_key)
        return np.where(inside, self._by_key[np.where(inside, keys, 0)], 0)


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]


# ---------------------------------------------------------------- internals
@contextmanager
def _writer_lock(index_dir: Path) -> Iterator[None]:
    with open(index_dir / LOCK_FILE, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _remove_partials(root: Path) -> None:
    """Folders a killed writer left half-written (the lock is held: no writer is running)."""
    for path in root.glob("*" + PARTIAL):
        shutil.rmtree(path, ignore_errors=True)


def _prune(index_dir: Path, *, keep: Path) -> None:
    """Remove snapshots older than the newest :data:`KEEP`, and the files of the legacy layout."""
    snapshots = sorted((path for path in (index_dir / SNAPSHOTS).iterdir() if path.is_dir() and not path.name.endswith(PARTIAL)), key=lambda p: p.name)
    for path in snapshots[:-KEEP]:
        if path != keep:
            shutil.rmtree(path, ignore_errors=True)
    for name in LEGACY_FILES:
        (index_dir / name).unlink(missing_ok=True)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
