"""The ``ranker`` command line, driven through click's runner with the real engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ranker.cli import main

COMMANDS = [
    [],
    ["demo-catalog"],
    ["index"],
    ["index", "build"],
    ["index", "info"],
    ["index", "bridge"],
    ["index", "compact"],
    ["search"],
    ["serve"],
    ["maintain"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "ranker")
def test_every_command_has_help(command):
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


@pytest.fixture(scope="module")
def built_data_dir(tmp_path_factory, demo_catalog_path, encoders) -> Path:
    data_dir = tmp_path_factory.mktemp("cli-data")
    result = CliRunner().invoke(main, ["index", "build", "--catalog", str(demo_catalog_path), "--data-dir", str(data_dir), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "300 items indexed" in result.output
    assert "bridge: learned (fitted on" in result.output  # 300 demo items have a text and a picture: >= 200 pairs
    return data_dir


def test_search_json_lists_results_with_scores(built_data_dir):
    result = CliRunner().invoke(main, ["search", "coffee mug", "-k", "5", "--data-dir", str(built_data_dir), "--json"])
    assert result.exit_code == 0, result.output
    results = json.loads(result.stdout)
    assert len(results) == 5
    for row in results:
        assert {"item_id", "title", "category", "price", "score", "scores"} <= set(row)
        assert {"text", "text_to_image"} == set(row["scores"])
    assert [row["score"] for row in results] == sorted((row["score"] for row in results), reverse=True)


def test_search_by_image_and_text(built_data_dir, demo_items):
    item = demo_items[0]
    result = CliRunner().invoke(main, ["search", item.category, "--image", item.image, "-k", "3", "--data-dir", str(built_data_dir), "--json"])
    assert result.exit_code == 0, result.output
    top = json.loads(result.stdout)[0]
    assert top["item_id"] == item.item_id and set(top["scores"]) == {"text", "text_to_image", "image", "image_to_text"}


def test_search_plain_output_and_filters(built_data_dir):
    result = CliRunner().invoke(main, ["search", "gift", "--price-max", "30", "--data-dir", str(built_data_dir)])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines and all(float(line.split("[")[1].split(",")[1].rstrip("]").split("]")[0]) <= 30 for line in lines)


def test_index_info_prints_the_manifest(built_data_dir):
    result = CliRunner().invoke(main, ["index", "info", "--data-dir", str(built_data_dir)])
    manifest = json.loads(result.stdout)
    assert manifest["count"] == 300
    assert manifest["encoders"]["text"]["dim"] == 384 and manifest["encoders"]["image"]["dim"] == 1280
    assert manifest["indexes"]["text"]["kind"] == "flat"
    assert manifest["encoder_runtime"] == manifest["serving_runtime"] == {"text": "onnxruntime-int8", "image": "onnxruntime-fp32"}
    assert manifest["bridge"]["serving"] == "learned" and manifest["bridge"]["pairs"] == 300 and not manifest["bridge"]["due"]
    assert set(manifest["calibration"]["channels"]) == {"text", "text_to_image", "image", "image_to_text"}


def test_index_bridge_refits_only_when_due(built_data_dir):
    result = CliRunner().invoke(main, ["index", "bridge", "--data-dir", str(built_data_dir), "--if-due"])
    assert result.exit_code == 0, result.output
    assert "no refit due" in result.output


def test_index_bridge_fits_an_api_written_catalog_and_publishes_it_to_the_servers(demo_engine, demo_items, embedded_redis, prefix, tmp_path):
    """A catalog written only through the API: an item store, writes in the catalog stream, no index on disk."""
    import numpy as np

    from ranker.live.backend import connect, key
    from ranker.retrieval.engine import EmbeddedItems, SearchEngine, manifest_path
    from ranker.serving import RankingService, ServiceConfig

    data_dir = tmp_path / "shop"
    service = RankingService(
        SearchEngine(demo_engine.encoders, data_dir, reconcile=False), connect(embedded_redis), data_dir / "policies", ServiceConfig(prefix=prefix)
    )
    keys = np.array([demo_engine.store.key_of(item.item_id) for item in demo_items[:30]])
    vectors = [demo_engine.indexes[name].vectors_for(keys)[0] for name in ("text", "image", "image_in_text")]
    service.catalog_log.publish_upsert(EmbeddedItems(demo_items[:30], vectors[0], list(range(30)), vectors[1], vectors[2]))
    service.sync()
    assert not manifest_path(data_dir).exists()
    arguments = ["index", "bridge", "--data-dir", str(data_dir), "--redis-url", embedded_redis, "--prefix", prefix, "--min-pairs", "20", "--device", "cpu"]
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 0, result.output
    assert "1 catalog stream entries applied" in result.output and "bridge: learned (fitted on" in result.output and "published" in result.output
    manifest = json.loads(manifest_path(data_dir).read_text())
    assert manifest["bridge"]["serving"] == "learned" and manifest["count"] == 30
    [(_, last)] = connect(embedded_redis).xrevrange(key(prefix, "catalog"), count=1)
    assert last[b"op"] == b"bridge"
    service.sync()  # the running server serves it at its next request
    assert service.engine.bridge_info()["serving"] == "learned"


def test_search_without_index_says_how_to_build(tmp_path):
    result = CliRunner().invoke(main, ["search", "mug", "--data-dir", str(tmp_path)])
    assert result.exit_code != 0 and "ranker index build" in result.output


def test_search_needs_text_or_image(built_data_dir):
    result = CliRunner().invoke(main, ["search", "--data-dir", str(built_data_dir)])
    assert result.exit_code == 2 and "TEXT" in result.output


def test_build_reports_bad_lines_and_indexes_the_rest(tmp_path, encoders):
    catalog = tmp_path / "shop.jsonl"
    catalog.write_text(
        json.dumps({"item_id": "a1", "title": "Red wool scarf", "price": 19.5, "category": "Scarves"})
        + "\n"
        + "{not json\n"
        + json.dumps({"item_id": "a2", "title": "Blue scarf", "price": "cheap", "category": "Scarves"})
        + "\n"
    )
    result = CliRunner().invoke(main, ["index", "build", "--catalog", str(catalog), "--data-dir", str(tmp_path / "d"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "line 2" in result.output and "line 3" in result.output and "'price'" in result.output
    assert "1 items indexed" in result.output
    strict = CliRunner().invoke(main, ["index", "build", "--catalog", str(catalog), "--data-dir", str(tmp_path / "e"), "--strict"])
    assert strict.exit_code == 1 and "line 2" in strict.output


def test_demo_catalog_command_writes_a_shop(tmp_path):
    result = CliRunner().invoke(main, ["demo-catalog", "--out", str(tmp_path / "shop"), "--seed", "3", "--items", "50", "--no-images"])
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "shop" / "catalog.jsonl").read_text().splitlines()) == 50
