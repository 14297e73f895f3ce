"""The maintenance worker: what a catalog written through the API gets with no command run (the bridge fitted once
the catalog settles and served by every process, snapshots), and a worker that never dies of one bad round.

Writes are published with the vectors the session's demo engine already computed, as a server does after encoding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ranker.learning import maintenance as maintenance_module
from ranker.learning.maintenance import Maintenance, MaintenanceConfig, maintenance_status
from ranker.live.backend import connect
from ranker.retrieval.engine import EmbeddedItems, SearchEngine
from ranker.retrieval.query_intent import QueryParser
from ranker.retrieval.understanding import Understood
from ranker.serving import RankingService, ServiceConfig

PICTURE_ONLY_PER_CATEGORY = 2


def vectors_of(engine: SearchEngine, items: list, *, as_items: list | None = None, encoders=None) -> EmbeddedItems:
    """The demo engine's vectors of ``items``; ``as_items``: written under other fields (their text encoded anew)."""
    keys = np.array([engine.store.key_of(item.item_id) for item in items], dtype=np.int64)
    text, _ = engine.indexes["text"].vectors_for(keys)
    image, present = engine.indexes["image"].vectors_for(keys)
    in_text, _ = engine.indexes["image_in_text"].vectors_for(keys)
    rows = [int(row) for row in np.flatnonzero(present)]
    if as_items is not None:
        text = encoders.encode_texts([item.text_for_embedding() for item in as_items])
    return EmbeddedItems(list(as_items or items), text, rows, image[rows], in_text[rows])


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def service_on(encoders, data_dir: Path, url: str, prefix: str) -> RankingService:
    engine = SearchEngine(encoders, data_dir, reconcile=False)
    return RankingService(engine, connect(url, socket_timeout=10), data_dir / "policies", ServiceConfig(prefix=prefix, seed=0, user_key_secret=b"s"))


def worker_on(encoders, data_dir: Path, url: str, prefix: str, clock=None, **config) -> Maintenance:
    settings = {"prefix": prefix, "device": "cpu", "fit_cpu_share": 1.0} | config
    engine = SearchEngine(encoders, data_dir, reconcile=False)
    return Maintenance(connect(url, socket_timeout=10), data_dir, MaintenanceConfig(**settings), engine=engine, clock=clock or Clock())


def picture_only_share(service: RankingService, picture_only: dict[str, set[str]]) -> float:
    """Per category, the share of its picture-only items ("General", a neutral title) among the top 20 candidates that
    a rank request naming the category retrieves (its parse: the category preferred; the policy orders them after)."""
    shares = []
    for category, item_ids in picture_only.items():
        understood = Understood.of(category.lower(), QueryParser(service.engine.query_vocabulary).parse(category.lower()))
        query = service.engine.embed_query(understood.text)
        top = understood.search(lambda filters, query=query: service.engine.search_vectors(query, k=20, filters=filters), None)
        shares.append(len(item_ids & {candidate.item.item_id for candidate in top}) / len(item_ids))
    return float(np.mean(shares))


def test_an_api_written_catalog_gets_the_bridge_with_no_command_run_and_its_picture_only_items_rank_for_their_category(
    encoders, demo_engine, demo_items, embedded_redis, prefix, tmp_path
):
    """The issue's shop in small: per category, 2 items with a picture and a neutral title filed under "General"."""
    by_category: dict[str, list] = {}
    for item in demo_items:
        by_category.setdefault(item.category, []).append(item)
    hidden = [item for items in by_category.values() for item in items[:PICTURE_ONLY_PER_CATEGORY]]
    neutral = [
        item.model_copy(update={"title": f"Article {index:04d}", "description": "", "category": "General", "brand": "", "attributes": {}})
        for index, item in enumerate(hidden)
    ]
    picture_only = {category: {item.item_id for item in items[:PICTURE_ONLY_PER_CATEGORY]} for category, items in by_category.items()}
    service = service_on(encoders, tmp_path / "server", embedded_redis, prefix)
    titled = [item for item in demo_items if item not in hidden]
    for start in range(0, len(titled), 100):  # as POST /v1/items batches arrive
        service.catalog_log.publish_upsert(vectors_of(demo_engine, titled[start : start + 100]))
    service.catalog_log.publish_upsert(vectors_of(demo_engine, hidden, as_items=neutral, encoders=encoders))
    service.sync()
    before = picture_only_share(service, picture_only)
    clock = Clock()
    worker = worker_on(encoders, tmp_path / "maintenance", embedded_redis, prefix, clock=clock, settle_s=10.0, snapshot_interval_s=60.0)
    assert worker.due() and worker.round().fitted is None  # the catalog has not settled yet: a bulk load is fitted once, at its end
    clock.now += 10.0
    done = worker.round()
    assert done.fitted is not None and done.fitted["serving"] == "learned" and not worker.due()
    assert service.engine.bridge is None  # until its next request ...
    service.sync()  # ... which installs the bridge and the calibration, without a restart
    assert service.engine.bridge_info()["serving"] == "learned" and service.engine.calibration == worker.engine.calibration
    after = picture_only_share(service, picture_only)
    assert after >= 0.7 and after > before, f"picture-only items in the top 20: {before:.2f} before the fit, {after:.2f} after"
    service.engine.category_boost = None  # a deployment that makes a named category a wall (RANKER_CATEGORY_MATCH=filter)
    assert picture_only_share(service, picture_only) == 0.0
    clock.now += 60.0
    assert worker.round().snapshot is not None  # the snapshot falls due on its schedule
    status = maintenance_status(worker.client, prefix)
    assert status["running"] and status["fits"] == 1 and status["snapshots"] == 1 and status["last_fit"]["serving"] == "learned"


def test_a_round_that_raises_is_counted_and_the_worker_goes_on(encoders, demo_engine, demo_items, embedded_redis, prefix, tmp_path, monkeypatch):
    service = service_on(encoders, tmp_path / "server", embedded_redis, prefix)
    service.catalog_log.publish_upsert(vectors_of(demo_engine, demo_items[:30]))
    worker = worker_on(encoders, tmp_path / "maintenance", embedded_redis, prefix, min_pairs=20, settle_s=0.0, interval_s=0.1)
    real = maintenance_module.refit_bridge
    calls = []

    def fails_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("out of memory, say")
        return real(*args, **kwargs)

    monkeypatch.setattr(maintenance_module, "refit_bridge", fails_once)
    rounds = worker.run(until=lambda: worker.engine.bridge is not None, max_rounds=5, sleep=lambda _: None)
    assert rounds == 2 and worker.engine.bridge is not None
    assert maintenance_status(worker.client, prefix)["errors"] == {"RuntimeError": 1}
    assert not worker.client.exists(worker.lock_key)  # the failed fit let go of the lock


def test_a_stopped_worker_leaves_a_snapshot_with_every_write_and_a_second_worker_waits_for_the_fit(
    encoders, demo_engine, demo_items, embedded_redis, prefix, tmp_path
):
    service = service_on(encoders, tmp_path / "server", embedded_redis, prefix)
    service.catalog_log.publish_upsert(vectors_of(demo_engine, demo_items[:24]))
    data_dir = tmp_path / "maintenance"
    worker = worker_on(encoders, data_dir, embedded_redis, prefix, min_pairs=1000, snapshot_interval_s=3600.0)
    worker.round()
    service.catalog_log.publish_upsert(vectors_of(demo_engine, demo_items[24:30]))
    service.catalog_log.publish_delete([demo_items[0].item_id])
    worker.stop()
    reopened = SearchEngine(encoders, data_dir, reconcile=False)
    assert reopened.stream_position == worker.catalog_log.last_id and reopened.reconcile() == 0 and len(reopened.indexes["text"]) == 29
    held = worker.client.lock(worker.lock_key, timeout=60)
    assert held.acquire(blocking=False)  # another worker is fitting: this one does not fit twice
    second = worker_on(encoders, tmp_path / "second", embedded_redis, prefix, min_pairs=20)
    assert second.due() and second.fit() is None and second.engine.bridge is None
    held.release()


@pytest.mark.parametrize("waited", [False, True])
def test_a_due_fit_waits_for_the_catalog_to_settle_but_never_past_the_longest_wait(encoders, demo_engine, demo_items, embedded_redis, prefix, tmp_path, waited):
    service = service_on(encoders, tmp_path / "server", embedded_redis, prefix)
    clock = Clock()
    service.catalog_log.publish_upsert(vectors_of(demo_engine, demo_items[:30]))
    worker = worker_on(encoders, tmp_path / "maintenance", embedded_redis, prefix, clock=clock, min_pairs=20, settle_s=10.0, max_wait_s=30.0)
    for start in range(30, 45, 5):  # a write every 9 s: never quiet for 10 s
        clock.now += 9.0
        service.catalog_log.publish_upsert(vectors_of(demo_engine, demo_items[start : start + 5]))
        assert worker.round().fitted is None
    clock.now += 9.0 if waited else 10.0
    if waited:  # still writing, but the fit has now waited 36 s since it fell due
        service.catalog_log.publish_upsert(vectors_of(demo_engine, demo_items[45:50]))
    clock.now += 0.0 if not waited else 9.0
    assert worker.round().fitted is not None


def test_deleted_and_replaced_rows_are_compacted_away_before_the_snapshot_and_what_remains_still_ranks(
    encoders, demo_engine, demo_items, embedded_redis, prefix, tmp_path
):
    service = service_on(encoders, tmp_path / "server", embedded_redis, prefix)
    service.catalog_log.publish_upsert(vectors_of(demo_engine, demo_items[:40]))
    data_dir = tmp_path / "maintenance"
    worker = worker_on(encoders, data_dir, embedded_redis, prefix, min_pairs=1000, snapshot_interval_s=0.0)
    worker.round()
    gone = [item.item_id for item in demo_items[:4]]
    service.catalog_log.publish_delete(gone)
    service.catalog_log.publish_upsert(vectors_of(demo_engine, demo_items[4:8]))  # written again: their old rows are dead
    done = worker.round()  # 8 dead rows of 44: past compact_share (5%), under the index's own threshold (25%)
    assert done.applied == 2 and done.compacted and done.snapshot is not None
    assert all(index.n_dead == 0 for index in worker.engine.indexes.values())
    reopened = SearchEngine(encoders, data_dir, reconcile=False)
    assert len(reopened.indexes["text"]) == 36 and reopened.indexes["text"].n_dead == 0 and reopened.reconcile() == 0
    for item in demo_items[4:12]:
        assert item.item_id in [candidate.item.item_id for candidate in reopened.search(item.title, k=5)]
    assert not set(gone) & {candidate.item.item_id for candidate in reopened.search(demo_items[0].title, k=40)}
    service.catalog_log.publish_upsert(vectors_of(demo_engine, demo_items[8:9]))
    again = worker.round()  # one dead row of 37: snapshotted, not rebuilt
    assert again.snapshot is not None and not again.compacted and worker.engine.indexes["text"].n_dead == 1
