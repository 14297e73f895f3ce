"""The packaged encoders on ONNX Runtime: exported at first use, cached under the data directory by fingerprint.

Nothing is downloaded: the graphs are exported (``torch.onnx.export``) from
the same packaged weights the torch encoders load. Each cached graph lives in
``<cache_dir>/<name>-<key>.onnx`` with a ``.json`` record beside it. The
*key* is a sha256 over the weight files' bytes and the export settings
(recipe version, opset, quantisation, the onnxruntime version), so new
weights or a new recipe get a new file. The key is computed without torch (a
serving process finds its graph without importing it); the torch version
that exported a graph is kept in its record. The record holds the key and the
sha256 of the ``.onnx`` bytes: a file whose bytes or key do not match its
record (corrupt, truncated, copied from other weights) is rebuilt, never
loaded. Exports run under a file lock, so the workers of one server export
once.

The text graph is MiniLM with the mean pooling inside it (the tokenizer and
the L2 normalisation stay in Python, identical to the torch path). It is
quantised to int8 (dynamic, per-channel, MatMuls with constant weights)
except the feed-forward output projections of the first three layers, which
lose the most when quantised. At export the int8 graph is checked against
fp32 torch on a fixed set of demo texts; if any text falls below
:data:`MIN_COSINE`, the fp32 graph is cached instead and the record says why.
The image graph (EfficientNet-Lite0: pooled features and class
probabilities) stays fp32.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

Tokenize = Callable[[Sequence[str]], tuple[np.ndarray, np.ndarray]]

RECIPE_VERSION = 2  # bump when the export or the quantisation below changes: old cache files stop matching
OPSET = 17
MIN_COSINE = 0.99  # the int8 text graph is kept only when every check text is at least this close to fp32 torch
KEEP_FP32_NODES = re.compile(r"layer\.[012]/output/dense/MatMul")  # the most quantisation-sensitive projections


class OnnxCacheError(RuntimeError):
    """An ONNX graph could not be exported or loaded."""


def sha256_of(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def cache_key(weights: Sequence[Path], settings: dict[str, Any]) -> str:
    """The identity of an export: the weights' bytes and every setting that shapes the graph."""
    recipe = dict(settings, recipe=RECIPE_VERSION, opset=OPSET, onnxruntime=importlib.metadata.version("onnxruntime"))
    digest = hashlib.sha256(sha256_of(weights).encode())
    digest.update(json.dumps(recipe, sort_keys=True).encode())
    return digest.hexdigest()


def cached_paths(cache_dir: Path, name: str, key: str) -> tuple[Path, Path]:
    stem = f"{name}-{key[:16]}"
    return cache_dir / f"{stem}.onnx", cache_dir / f"{stem}.json"


def verified_record(cache_dir: Path, name: str, key: str) -> dict[str, Any] | None:
    """The record of a cached graph whose key and bytes match it; None when absent, corrupt or mismatched."""
    graph, record_path = cached_paths(cache_dir, name, key)
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("key") != key or not graph.is_file():
        return None
    if sha256_of([graph]) != record.get("sha256"):
        return None
    return record


def _exporter_versions() -> dict[str, str]:
    versions = {}
    for package in ("torch", "transformers", "onnx", "onnxruntime"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


@contextmanager
def _locked(path: Path):
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_cached(cache_dir: Path, name: str, key: str, export: Callable[[Path], dict[str, Any]]) -> tuple[Path, dict[str, Any]]:
    """The cached graph for ``key``, exported by ``export(path) -> record`` when missing or failing its check."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    graph, record_path = cached_paths(cache_dir, name, key)
    with _locked(cache_dir / f".{name}.lock"):
        record = verified_record(cache_dir, name, key)
        if record is not None:
            return graph, record
        if graph.exists() or record_path.exists():
            log.warning("%s: cached ONNX graph does not match its fingerprint; exporting it again", graph)
        temporary = cache_dir / f".{graph.name}.{os.getpid()}.tmp"
        try:
            record = dict(export(temporary), key=key, sha256=sha256_of([temporary]), exported_with=_exporter_versions())
            os.replace(temporary, graph)
        finally:
            temporary.unlink(missing_ok=True)
        record_temporary = cache_dir / f".{record_path.name}.{os.getpid()}.tmp"
        record_temporary.write_text(json.dumps(record, indent=2))
        os.replace(record_temporary, record_path)
        return graph, record


def default_threads() -> int:
    """Intra-op threads for a session: torch's setting when torch is loaded (a benchmark's ``torch.set_num_threads``),
    else ``OMP_NUM_THREADS``, else every core."""
    if "torch" in sys.modules:
        return int(sys.modules["torch"].get_num_threads())
    configured = os.environ.get("OMP_NUM_THREADS", "")
    return int(configured) if configured.isdigit() and int(configured) > 0 else os.cpu_count() or 1


def session(path: Path, threads: int):
    """An ONNX Runtime CPU session with ``threads`` intra-op threads that do not spin (the cores are shared)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise OnnxCacheError(f"{path}: onnxruntime cannot load it: {exc}") from exc


def _export(module: Any, example: tuple, path: Path, input_names: list[str], output_names: list[str], dynamic_axes: dict) -> None:
    import torch

    module.eval()  # the exporter restores the wrapper's mode afterwards: an un-evaluated wrapper would leave dropout on
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            example,
            str(path),
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            dynamo=False,
        )


# ------------------------------------------------------------------ text
def text_settings(quantise: bool) -> dict[str, Any]:
    return {"graph": "minilm-mean-pooled", "quantise": "int8-dynamic-per-channel" if quantise else "none", "keep_fp32": KEEP_FP32_NODES.pattern}


def check_texts() -> list[str]:
    """The demo texts the int8 graph must agree on with fp32 torch: demo item texts and typical queries (never blank: a blank query is refused before encoding)."""
    from ranker.catalog.demo import generate_items

    queries = ["red running shoes", "wireless headphones under 50", "a gift for my mum", "mug", "Blue WOOL sweater, size M"]
    return [item.text_for_embedding() for item in generate_items(240, seed=0)] + queries


def export_text(model: Any, tokenize: Tokenize, path: Path, *, quantise: bool, reference: Callable[[list[str]], np.ndarray]) -> dict[str, Any]:
    """Export MiniLM with mean pooling to ``path``; int8 when it holds :data:`MIN_COSINE` against ``reference``
    (``tokenize``: texts -> (ids, mask), int64 arrays, as :meth:`ranker.retrieval.encoders.TextEncoder.tokenize`)."""
    import torch

    class _Pooled(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)

    ids, mask = tokenize(["a short query", "and a somewhat longer one for the export"])
    fp32 = path.with_name(path.name + ".fp32")
    try:
        _export(
            _Pooled(model),
            (torch.from_numpy(ids), torch.from_numpy(mask)),
            fp32,
            ["input_ids", "attention_mask"],
            ["pooled"],
            {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}, "pooled": {0: "batch"}},
        )
        record: dict[str, Any] = {"model": "text", "precision": "fp32", "settings": text_settings(quantise)}
        if not quantise:
            os.replace(fp32, path)
            return record
        _quantise(fp32, path)
        texts = check_texts()
        check = session(path, 1)
        cosines = np.concatenate(
            [np.sum(encode_text(check, tokenize, texts[i : i + 32]) * reference(texts[i : i + 32]), axis=1) for i in range(0, len(texts), 32)]
        )
        record["check"] = {"texts": len(texts), "min_cosine": float(cosines.min()), "mean_cosine": float(cosines.mean()), "threshold": MIN_COSINE}
        if cosines.min() >= MIN_COSINE:
            record["precision"] = "int8"
        else:
            log.warning("int8 MiniLM falls to cosine %.4f of fp32 on a check text (< %.2f): caching the fp32 graph", cosines.min(), MIN_COSINE)
            os.replace(fp32, path)
        return record
    finally:
        fp32.unlink(missing_ok=True)


def _quantise(source: Path, target: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    keep = [node.name for node in onnx.load(str(source), load_external_data=False).graph.node if KEEP_FP32_NODES.search(node.name)]
    logging.getLogger().disabled, was = True, logging.getLogger().disabled  # onnxruntime warns about pre-processing on the root logger
    try:
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=keep,
            extra_options={"MatMulConstBOnly": True},
        )
    finally:
        logging.getLogger().disabled = was


def encode_text(runner: Any, tokenize: Tokenize, texts: Sequence[str]) -> np.ndarray:
    """Mean-pooled, L2-normalised float32 rows from the text graph, tokenised to the ids the torch path uses."""
    ids, mask = tokenize(texts)
    pooled = runner.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


# ----------------------------------------------------------------- image
IMAGE_SETTINGS = {"graph": "efficientnet-lite0-pooled-and-probabilities", "quantise": "none"}


def export_image(model: Any, image_size: int, path: Path) -> dict[str, Any]:
    """Export EfficientNet-Lite0 to ``path``: pixels [n, 3, s, s] -> pooled features [n, 1280], probabilities [n, 1000]."""
    import torch

    class _Heads(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            pooled = self.inner.extract_features(pixels).mean(dim=(2, 3))
            return pooled, torch.softmax(self.inner._fc(pooled), dim=1)

    example = torch.zeros(2, 3, image_size, image_size)
    _export(
        _Heads(model).float().to("cpu"),
        (example,),
        path,
        ["pixels"],
        ["features", "probabilities"],
        {"pixels": {0: "batch"}, "features": {0: "batch"}, "probabilities": {0: "batch"}},
    )
    return {"model": "image", "precision": "fp32", "settings": IMAGE_SETTINGS}
