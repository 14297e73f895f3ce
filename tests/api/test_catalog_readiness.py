"""The catalog's home through HTTP: /readyz and the console say which bridge serves and when it was fitted, a bridge
published by the maintenance worker serves at the next request without a restart, and a catalog stream entry that
cannot be applied is counted in /metrics while ranking answers 200."""

from __future__ import annotations

import numpy as np

from ranker.learning.maintenance import Maintenance, MaintenanceConfig
from ranker.live.backend import connect, key
from ranker.retrieval.engine import SearchEngine


def test_readiness_and_the_console_say_which_bridge_serves_and_when_it_was_fitted(make_app, fresh_engine, embedded_redis, prefix, encoders, tmp_path):
    client = make_app(ENGINE=fresh_engine).test_client()
    ready = client.get("/readyz").get_json()
    assert ready["catalog"]["bridge"]["serving"] == "imagenet-labels" and ready["catalog"]["bridge"]["fitted_at"] is None
    assert ready["catalog"]["indexed"] == ready["items"] == 12
    assert "ImageNet-label bridge (12 of 200 pairs for a learned one)" in client.get("/").get_data(as_text=True)
    # the maintenance worker (another process, its own engine) fits on the catalog it follows and publishes
    worker_engine = SearchEngine(encoders, tmp_path / "maintenance", reconcile=False)
    items = [fresh_engine.store.item_for_key(int(k)) for k in fresh_engine.store.keys()]
    worker_engine.upsert(items)  # the same catalog, as the worker would have applied it from the stream
    worker = Maintenance(
        connect(embedded_redis),
        tmp_path / "maintenance",
        MaintenanceConfig(prefix=prefix, min_pairs=10, settle_s=0.0, device="cpu", fit_cpu_share=1.0),
        engine=worker_engine,
    )
    assert worker.round().fitted["serving"] == "learned"
    ready = client.get("/readyz").get_json()  # no restart: the next request installs it
    bridge = ready["catalog"]["bridge"]
    assert bridge["serving"] == "learned" and bridge["fitted_at"] == worker.engine.bridge.info["fitted_at"] and bridge["fitted_pairs"] == 12
    assert ready["catalog"]["calibrated"] == sorted(worker.engine.calibration.channels)
    page = client.get("/").get_data(as_text=True)
    assert "learned text-picture bridge, fitted" in page and "on 12 pairs" in page and "maintenance running" in page
    metrics = client.get("/metrics").get_data(as_text=True)
    [fitted] = [line.split()[1] for line in metrics.splitlines() if line.startswith("ranker_bridge_fitted_timestamp_seconds ")]
    assert abs(float(fitted) - worker.engine.bridge.info["fitted_at"]) < 1.0


def test_a_catalog_entry_that_cannot_be_applied_is_a_metric_not_a_500(make_app, fresh_engine, embedded_redis, prefix):
    app = make_app(ENGINE=fresh_engine)
    client = app.test_client()
    redis_client = connect(embedded_redis)
    redis_client.xadd(key(prefix, "catalog"), {"op": "upsert", "items": "[{broken"})
    redis_client.xadd(key(prefix, "catalog"), {"op": "upsert", "items": "[]", "with_picture": "[]", "text": np.zeros(3, np.float32).tobytes()})
    for _ in range(3):  # every request, not only the first, goes on
        response = client.post("/v1/rank", json={"user_id": "alice", "query": {"text": "travel bag"}})
        assert response.status_code == 200, response.get_json()
    assert client.put("/v1/items/sku-new", json={"title": "Porcelain dragon figurine", "price": 25.0, "category": "Decor"}).status_code == 200
    assert client.get("/v1/items/sku-new").status_code == 200
    metrics = client.get("/metrics").get_data(as_text=True)
    assert "ranker_catalog_entries_skipped 2.0" in metrics
    assert client.get("/readyz").get_json()["catalog"]["skipped_entries"] == 2
