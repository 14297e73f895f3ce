"""The data directory as the catalog's home: atomic index snapshots beside the item store, and an index rebuilt from
the store whenever the snapshot is missing, older than the store, half-written or corrupt.

Engines are filled with the vectors the session's demo engine already computed (real encoder outputs), so only
what a rebuild must re-embed runs the encoders.
"""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from ranker.retrieval import snapshots
from ranker.retrieval.engine import EmbeddedItems, SearchEngine
from ranker.retrieval.snapshots import SNAPSHOTS, snapshot_dir

N_ITEMS = 16
QUERIES = ("coffee mug", "leather backpack", "running shoes", "desk lamp")


def vectors_of(engine: SearchEngine, items: list) -> EmbeddedItems:
    keys = np.array([engine.store.key_of(item.item_id) for item in items], dtype=np.int64)
    text, _ = engine.indexes["text"].vectors_for(keys)
    image, present = engine.indexes["image"].vectors_for(keys)
    in_text, _ = engine.indexes["image_in_text"].vectors_for(keys)
    rows = list(np.flatnonzero(present))
    return EmbeddedItems(list(items), text, rows, image[rows], in_text[rows])


@pytest.fixture()
def saved(encoders, demo_engine, demo_items, tmp_path) -> SearchEngine:
    """An engine over 16 demo items with its snapshot written."""
    engine = SearchEngine(encoders, tmp_path)
    engine.insert_embedded(vectors_of(demo_engine, demo_items[:N_ITEMS]))
    engine.save(encoder_spec="default", stream_position="1700000000000-3")
    return engine


def results(engine: SearchEngine) -> list[list[str]]:
    return [[candidate.item.item_id for candidate in engine.search(query, k=5)] for query in QUERIES]


def test_a_snapshot_reopens_as_saved_and_says_which_stream_entry_it_includes(saved, encoders, tmp_path):
    reopened = SearchEngine(encoders, tmp_path)
    assert reopened.stream_position == "1700000000000-3" and reopened.saved_at == saved.saved_at
    assert reopened.reconcile() == 0  # nothing to embed again: the snapshot holds every stored document
    assert len(reopened.indexes["text"]) == N_ITEMS and results(reopened) == results(saved)
    assert snapshot_dir(tmp_path / "index").parent.name == SNAPSHOTS


def test_a_catalog_without_a_snapshot_is_rebuilt_from_the_item_store_with_a_progress_log(encoders, demo_engine, demo_items, tmp_path, caplog):
    """As a catalog written through the API and never snapshotted: the store holds the items, no index does."""
    written = SearchEngine(encoders, tmp_path)
    written.insert_embedded(vectors_of(demo_engine, demo_items[:N_ITEMS]))
    with caplog.at_level(logging.WARNING, logger="ranker.retrieval.engine"):
        reopened = SearchEngine(encoders, tmp_path)
    assert len(reopened) == len(reopened.indexes["text"]) == N_ITEMS
    assert len(reopened.indexes["image"]) == N_ITEMS  # pictures embedded again too
    assert f"the index lacks {N_ITEMS} of the item store's {N_ITEMS} items (no index snapshot)" in caplog.text
    assert f"rebuilding the index from the item store: {N_ITEMS} of {N_ITEMS} items (100%)" in caplog.text
    assert results(reopened) == results(written)


@pytest.mark.parametrize(
    "damage",
    ["truncated text.faiss", "garbage image.npz", "missing image_in_text.faiss", "garbage catalog.npz", "manifest not JSON"],
)
def test_a_corrupt_snapshot_file_means_a_rebuild_from_the_item_store_never_an_empty_or_wrong_catalog(saved, encoders, tmp_path, damage, caplog):
    before = results(saved)
    what, name = damage.split(" ", 1) if not damage.startswith("manifest") else ("garbage", "manifest.json")
    path = (tmp_path / "index" / name) if name == "manifest.json" else snapshot_dir(tmp_path / "index") / name
    if what == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif what == "missing":
        path.unlink()
    else:
        path.write_bytes(b"not what was saved")
    with caplog.at_level(logging.ERROR, logger="ranker.retrieval.engine"):
        reopened = SearchEngine(encoders, tmp_path)
    assert reopened.snapshot_problem is not None and "rebuilding the index from the item store" in caplog.text
    assert f"{name.split('.')[0]}." in reopened.snapshot_problem
    assert len(reopened) == len(reopened.indexes["text"]) == N_ITEMS
    assert results(reopened) == before
    reopened.save()  # the next snapshot is whole again
    assert SearchEngine(encoders, tmp_path).snapshot_problem is None


def test_items_written_since_the_snapshot_by_any_process_are_embedded_again_and_only_they(saved, encoders, demo_engine, demo_items, tmp_path):
    other = SearchEngine(encoders, tmp_path, reconcile=False)  # another process sharing the data directory
    renamed = demo_items[0].model_copy(update={"title": "Porcelain dragon figurine"})
    other.insert_embedded(vectors_of(demo_engine, [demo_items[N_ITEMS]]))  # a new item
    other.upsert([renamed])  # a changed one
    other.delete([demo_items[1].item_id])  # a deleted one
    reopened = SearchEngine(encoders, tmp_path, reconcile=False)
    assert reopened.reconcile() == 2
    assert len(reopened) == len(reopened.indexes["text"]) == N_ITEMS
    assert reopened.search("porcelain dragon figurine", k=1)[0].item.item_id == demo_items[0].item_id
    assert demo_items[1].item_id not in {c.item.item_id for c in reopened.search(demo_items[1].title, k=N_ITEMS)}


def test_a_writer_killed_mid_snapshot_leaves_the_previous_one_serving(saved, encoders, tmp_path, monkeypatch):
    serving = snapshot_dir(tmp_path / "index")
    saved.delete([saved.store.items()[0].item_id])

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed before the manifest was replaced")

    monkeypatch.setattr(snapshots, "write_manifest", killed)
    with pytest.raises(KeyboardInterrupt):
        saved.save()
    monkeypatch.undo()
    reopened = SearchEngine(encoders, tmp_path, reconcile=False)
    assert snapshot_dir(tmp_path / "index") == serving and len(reopened.indexes["text"]) == N_ITEMS
    assert reopened.reconcile() == 0 and len(reopened.indexes["text"]) == N_ITEMS - 1  # the deleted item leaves with the store
    half = tmp_path / "index" / SNAPSHOTS / "99999999999999999999-1.partial"
    half.mkdir()
    reopened.save()
    reopened.save()
    reopened.save()
    kept = sorted(path.name for path in (tmp_path / "index" / SNAPSHOTS).iterdir())
    assert len(kept) == snapshots.KEEP and not half.exists() and snapshot_dir(tmp_path / "index").name == kept[-1]


def test_an_index_saved_before_snapshots_existed_still_opens(saved, encoders, tmp_path):
    """The legacy layout: index files directly under index/, a manifest naming no snapshot."""
    import json

    before = results(saved)
    folder = snapshot_dir(tmp_path / "index")
    for path in folder.iterdir():
        if path.name != snapshots.CATALOG_FILE:
            shutil.move(str(path), tmp_path / "index" / path.name)
    manifest_file = tmp_path / "index" / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    del manifest["snapshot"]
    manifest_file.write_text(json.dumps(manifest))
    shutil.rmtree(tmp_path / "index" / SNAPSHOTS)
    reopened = SearchEngine(encoders, tmp_path)
    assert reopened.snapshot_problem is None and reopened.reconcile() == 0 and results(reopened) == before
    reopened.save()  # the next save moves it to the snapshot layout
    assert not (tmp_path / "index" / "text.faiss").exists() and snapshot_dir(tmp_path / "index").parent.name == SNAPSHOTS
