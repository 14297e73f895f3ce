"""The encoders on ONNX Runtime: quality against fp32 torch, the fingerprinted cache, and the backend choice."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw

from ranker.retrieval import onnx_models
from ranker.retrieval.encoders import DefaultEncoders, ImageEncoder, load_encoders, planned_runtime


def disc(colour: str, size: int = 180) -> Image.Image:
    picture = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(picture).ellipse((30, 30, size - 30, size - 30), fill=colour)
    return picture


@pytest.fixture(scope="module")
def onnx_encoders(tmp_path_factory):
    """The default encoders on ONNX Runtime, exported into a fresh cache (not the suite's shared one)."""
    return DefaultEncoders(device="cpu", backend="onnx", cache_dir=tmp_path_factory.mktemp("models"))


def test_text_runs_int8_and_images_fp32_on_onnx_runtime(onnx_encoders):
    assert onnx_encoders.runtime() == {"text": "onnxruntime-int8", "image": "onnxruntime-fp32"}


def test_int8_text_vectors_keep_cosine_099_to_fp32_torch_on_the_demo_texts(onnx_encoders, encoders, demo_items):
    texts = [item.text_for_embedding() for item in demo_items] + ["red running shoes", "a gift for my mum", "mug"]
    fast, reference = onnx_encoders.encode_texts(texts), encoders.encode_texts(texts)
    assert fast.shape == reference.shape == (len(texts), 384) and fast.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-5)
    assert np.sum(fast * reference, axis=1).min() >= 0.99


def test_onnx_text_vectors_follow_meaning_and_ignore_batching(onnx_encoders):
    query, related, unrelated = onnx_encoders.encode_texts(["running shoes", "lightweight sneakers for jogging", "stainless steel saucepan"])
    assert query @ related > query @ unrelated + 0.2
    texts = ["wool sweater", "a much longer description of a leather office chair with wheels", "tent"]
    together = onnx_encoders.encode_texts(texts)
    alone = np.stack([onnx_encoders.encode_texts([text])[0] for text in texts])
    # int8 activations are scaled per batch (dynamic quantisation), so a batch moves a row a little, never far
    assert np.sum(together * alone, axis=1).min() >= 0.99


def test_onnx_pictures_match_torch(onnx_encoders, encoders):
    pictures = [disc("red"), disc("navy", size=220)]
    fast, reference = onnx_encoders.image.encode(pictures), encoders.image.encode(pictures)
    assert np.sum(fast.features * reference.features, axis=1).min() >= 0.999
    np.testing.assert_allclose(fast.probabilities, reference.probabilities, atol=1e-3)
    in_text = onnx_encoders.encode_pictures(pictures).in_text
    assert np.sum(in_text * encoders.encode_pictures(pictures).in_text, axis=1).min() >= 0.99


def test_the_cache_record_names_the_check_and_index_info_sees_it(onnx_encoders):
    cache_dir = next(iter(_cache_dirs(onnx_encoders)))
    records = {path.name.split("-")[0]: json.loads(path.read_text()) for path in cache_dir.glob("*.json")}
    assert records["text"]["precision"] == "int8" and records["text"]["check"]["min_cosine"] >= 0.99
    assert planned_runtime("default", "cpu", backend="auto", cache_dir=cache_dir) == {"text": "onnxruntime-int8", "image": "onnxruntime-fp32"}
    assert planned_runtime("default", "cpu", backend="torch", cache_dir=cache_dir) == {"text": "torch-cpu", "image": "torch-cpu"}


def _cache_dirs(encoders: DefaultEncoders):
    return {encoders.text.onnx_path.parent, encoders.image.onnx_path.parent}


def test_a_corrupt_or_mismatched_cached_graph_is_rebuilt_never_loaded(onnx_encoders, encoders, tmp_path):
    source = next(iter(_cache_dirs(onnx_encoders)))
    graph = next(source.glob("image-*.onnx"))
    record_path = graph.with_suffix(".json")
    for damage in ("corrupt", "mismatched"):
        cache = tmp_path / damage
        cache.mkdir()
        shutil.copy(graph, cache / graph.name)
        shutil.copy(record_path, cache / record_path.name)
        if damage == "corrupt":  # flipped bytes in the middle of the graph: its sha256 no longer matches the record
            data = bytearray((cache / graph.name).read_bytes())
            data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
            (cache / graph.name).write_bytes(bytes(data))
        else:  # a consistent file and record, but for other weights or settings: the key differs
            record = json.loads(record_path.read_text())
            (cache / record_path.name).write_text(json.dumps(dict(record, key="0" * 64)))
        assert onnx_models.verified_record(cache, "image-efficientnet-lite0", json.loads(record_path.read_text())["key"]) is None
        rebuilt = ImageEncoder(device="cpu", backend="onnx", cache_dir=cache)
        assert (cache / graph.name).read_bytes() == graph.read_bytes()  # exported again (the export is deterministic)
        assert json.loads((cache / record_path.name).read_text())["key"] == json.loads(record_path.read_text())["key"]
        picture = [disc("green")]
        assert float(rebuilt.encode(picture).features[0] @ encoders.image.encode(picture).features[0]) >= 0.999


def test_ensure_cached_exports_once_and_again_only_when_the_check_fails(tmp_path):
    exports = []

    def export(target):
        exports.append(target)
        target.write_bytes(b"graph bytes")
        return {"precision": "fp32"}

    path, record = onnx_models.ensure_cached(tmp_path, "thing", "k" * 64, export)
    assert path.read_bytes() == b"graph bytes" and record["key"] == "k" * 64 and len(exports) == 1
    onnx_models.ensure_cached(tmp_path, "thing", "k" * 64, export)
    assert len(exports) == 1  # verified, reused
    path.write_bytes(b"graph bytez")
    onnx_models.ensure_cached(tmp_path, "thing", "k" * 64, export)
    assert len(exports) == 2 and path.read_bytes() == b"graph bytes"
    path.with_suffix(".json").write_text("{not json")
    onnx_models.ensure_cached(tmp_path, "thing", "k" * 64, export)
    assert len(exports) == 3
    assert not list(tmp_path.glob("*.tmp"))


def test_backend_choices_are_checked(tmp_path):
    with pytest.raises(ValueError, match="'gpu'"):
        load_encoders("default", "cpu", backend="gpu", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="cache directory"):
        load_encoders("default", "cpu", backend="onnx")


def test_without_a_cache_directory_auto_serves_torch(encoders):
    assert encoders.runtime() == {"text": "torch-cpu", "image": "torch-cpu"}
