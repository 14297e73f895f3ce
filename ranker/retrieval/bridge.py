"""The learned text-picture bridge: a projection head fitted on the catalog's own (title, picture) pairs.

The default encoders live in two spaces (MiniLM text, 384-d; EfficientNet-Lite0
pooled features, 1280-d). Out of the box a picture reaches the text space
through its top ImageNet labels (:class:`ranker.retrieval.encoders.LabelBridge`),
which knows nothing of the shop's products. Once the catalog holds
:data:`MIN_PAIRS` items with both a text and a picture, a head is fitted on
them instead:

``head(x) = normalise(W_2 gelu(W_1 x + b_1) + b_2 + P x)``

maps a picture's (unit) pooled features ``x`` into the text space, trained
contrastively (symmetric InfoNCE with in-batch negatives and a learned
temperature, AdamW) so that a picture lands next to its own item's text
embedding. The encoders stay frozen: the head trains on the vectors the index
already stores, so fitting never runs an encoder.

The shared space is the text encoder's own space (the text head is the
identity). That is a choice: with a few hundred pairs a text head fitted on
titles alone would bend the space that short queries and the text channel
live in; keeping it fixed leaves the text channel, the query cache and the
simulator's query bank unchanged, and the picture's bridged vector keeps its
meaning ("the picture in the text space", the ``image_in_text`` index).

The head is stored as safetensors beside the index (``index/bridge.safetensors``)
under the fingerprints of the encoders it was fitted on; heads fitted for
other encoders are refused with a message saying how to refit them.
Inference is numpy (two matrix products), so serving never needs torch for it.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ranker.defaults import MIN_PAIRS  # noqa: F401  (the defaults' one home; importers read them here too)
from ranker.retrieval.fusion import IndexMismatchError

REFIT_SHARE = 0.2  # the bridge is due for a refit once this share of its pairs was added, changed or deleted
CALIBRATION_SHARE = 0.15  # pairs held out of the head's fit to calibrate the channels on
HIDDEN = 512
BRIDGE_FILE = "bridge.safetensors"
HEAD_VERSION = 1
# The fit's matrices are small (batches of 256): on a CPU whose cores are shared, two OpenMP threads stalled at
# their barriers and ran ~25x slower than one (bench/README.md, "Text-picture bridge"); give more with ``threads``.
FIT_THREADS = 1
# A pair teaches the head only when its title says something about its picture (informative_pairs): its nearest
# titles' pictures must look more alike than random pictures by at least this share of what is typical.
TEXT_NEIGHBOURS = 5
INFORMATIVE_SHARE = 0.5
PROJECT_CHUNK = 8192  # pictures projected through a new head at a time (bounds the hidden layer's memory)


def l2_rows(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def _gelu(x: np.ndarray) -> np.ndarray:
    """The tanh form of GELU, as ``torch.nn.GELU(approximate="tanh")`` computes it."""
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


@dataclass
class LearnedBridge:
    """A fitted picture-to-text head and what it was fitted on."""

    weights: dict[str, np.ndarray]  # w1 [h, d_image], b1 [h], w2 [d_text, h], b2 [d_text], skip [d_text, d_image]
    fingerprints: dict[str, str]  # encoder part -> fingerprint the head was fitted for
    info: dict[str, Any]  # pairs, epochs, seconds, temperature, fitted_at, device

    @property
    def image_dim(self) -> int:
        return int(self.weights["w1"].shape[1])

    @property
    def text_dim(self) -> int:
        return int(self.weights["w2"].shape[0])

    def project(self, image_features: np.ndarray) -> np.ndarray:
        """Unit picture features [n, d_image] to unit vectors in the text space [n, d_text]."""
        x = np.asarray(image_features, dtype=np.float32).reshape(-1, self.image_dim)
        w = self.weights
        hidden = _gelu(x @ w["w1"].T + w["b1"])
        return l2_rows(hidden @ w["w2"].T + w["b2"] + x @ w["skip"].T)

    # --------------------------------------------------------------- storage
    def save(self, index_dir: Path) -> Path:
        from safetensors.numpy import save_file

        path = Path(index_dir) / BRIDGE_FILE
        temporary = path.with_suffix(".tmp")
        metadata = {"head_version": str(HEAD_VERSION), "fingerprints": json.dumps(self.fingerprints), "info": json.dumps(self.info)}
        save_file({name: np.ascontiguousarray(value, dtype=np.float32) for name, value in self.weights.items()}, str(temporary), metadata=metadata)
        temporary.replace(path)
        return path

    def to_fields(self) -> dict[str, bytes | str]:
        """The head as catalog stream fields (:mod:`ranker.live.catalog_stream`): safetensors bytes and JSON."""
        from safetensors.numpy import save

        tensors = {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in self.weights.items()}
        return {"head": save(tensors), "fingerprints": json.dumps(self.fingerprints), "info": json.dumps(self.info)}

    @classmethod
    def from_fields(cls, fields: dict[str, bytes], expected: dict[str, str], *, refit_hint: str) -> LearnedBridge:
        """A head from :meth:`to_fields`; :class:`IndexMismatchError` when it was fitted for other encoders."""
        from safetensors.numpy import load

        fingerprints = json.loads(fields["fingerprints"])
        _check_fingerprints("a published bridge head", fingerprints, expected, refit_hint)
        weights = load(bytes(fields["head"]))
        missing = {"w1", "b1", "w2", "b2", "skip"} - set(weights)
        if missing:
            raise ValueError(f"bridge head: tensors {sorted(missing)} are missing")
        return cls(weights=weights, fingerprints=fingerprints, info=json.loads(fields["info"]))

    @classmethod
    def load(cls, index_dir: Path, expected: dict[str, str], *, refit_hint: str) -> LearnedBridge:
        """The head under ``index_dir``; :class:`IndexMismatchError` when it was fitted for other encoders."""
        from safetensors import safe_open

        path = Path(index_dir) / BRIDGE_FILE
        if not path.exists():
            raise IndexMismatchError(f"the index manifest says a learned bridge serves, but {path} is missing; {refit_hint}")
        with safe_open(str(path), framework="numpy") as handle:
            metadata = handle.metadata() or {}
            weights = {name: handle.get_tensor(name) for name in handle.keys()}
        if metadata.get("head_version") != str(HEAD_VERSION):
            raise IndexMismatchError(f"{path}: bridge head version {metadata.get('head_version')!r}, this code reads {HEAD_VERSION}; {refit_hint}")
        fingerprints = json.loads(metadata.get("fingerprints", "{}"))
        _check_fingerprints(str(path), fingerprints, expected, refit_hint)
        return cls(weights=weights, fingerprints=fingerprints, info=json.loads(metadata.get("info", "{}")))


def _check_fingerprints(what: str, fingerprints: dict[str, str], expected: dict[str, str], refit_hint: str) -> None:
    for part, wanted in expected.items():
        if fingerprints.get(part) != wanted:
            raise IndexMismatchError(
                f"{what}: the learned bridge was fitted for the {part} encoder with fingerprint {fingerprints.get(part)}, "
                f"but the loader's {part} encoder has fingerprint {wanted}; heads never transfer between encoders: {refit_hint}"
            )


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch threads (None: as they are), then restore the setting."""
    import torch

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def default_epochs(n_pairs: int, batch_size: int) -> int:
    """Enough passes for ~600 optimiser steps, at least 2 and at most 200 (a small catalog takes more passes).

    100k pairs: 2 passes, 780 steps of 256 pairs (bench/README.md, "Text-picture bridge")."""
    steps_per_epoch = max(1, n_pairs // batch_size)
    return int(min(200, max(2, math.ceil(600 / steps_per_epoch))))


def fit_bridge(
    image_features: np.ndarray,
    text_embeddings: np.ndarray,
    *,
    fingerprints: dict[str, str],
    epochs: int | None = None,
    batch_size: int = 256,
    lr: float = 2e-3,
    weight_decay: float = 0.05,
    hidden: int = HIDDEN,
    seed: int = 0,
    device: str = "auto",
    threads: int | None = FIT_THREADS,
    progress: bool | None = None,
    cpu_share: float | None = None,
) -> LearnedBridge:
    """Fit the head on paired rows (row i of each is one item): symmetric InfoNCE, in-batch negatives.

    The temperature is learned (CLIP's parameterisation, starting at 0.07,
    never below 0.01). Runs on CUDA when ``device`` resolves to it; on the
    CPU with ``threads`` torch threads (None: torch's setting). ``cpu_share``
    (on the CPU): after each step, sleep so that the fit keeps at most this
    share of a core: a fit in the background beside serving processes
    (:mod:`ranker.learning.maintenance`) takes longer and leaves them the cores.
    """
    import torch
    from torch import nn

    from ranker.devices import resolve_device

    image = np.asarray(image_features, dtype=np.float32)
    text = np.asarray(text_embeddings, dtype=np.float32)
    if image.ndim != 2 or text.ndim != 2 or len(image) != len(text):
        raise ValueError(f"pairs: image features {list(image.shape)} and text embeddings {list(text.shape)} must be [n, d] with the same n")
    if len(image) < 2:
        raise ValueError(f"pairs: a contrastive fit needs at least 2 pairs, got {len(image)}")
    started = time.perf_counter()
    target = resolve_device(device)
    with _torch_threads(threads if target.type == "cpu" else None):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        d_image, d_text = image.shape[1], text.shape[1]
        first, second = nn.Linear(d_image, hidden), nn.Linear(hidden, d_text)
        skip = nn.Linear(d_image, d_text, bias=False)
        model = nn.ModuleDict({"first": first, "second": second, "skip": skip}).to(target)
        log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07), device=target))
        optimiser = torch.optim.AdamW([*model.parameters(), log_scale], lr=lr, weight_decay=weight_decay)
        gelu = nn.GELU(approximate="tanh")
        images, texts = torch.from_numpy(image).to(target), torch.from_numpy(l2_rows(text)).to(target)
        n = len(image)
        batch = min(batch_size, n)
        epochs = epochs or default_epochs(n, batch)
        steps = epochs * max(1, n // batch)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps, pct_start=0.1)
        show = n >= 5_000 if progress is None else progress
        losses: list[float] = []
        with tqdm(total=steps, desc="fitting the bridge", unit="step", disable=not show) as bar:
            for _ in range(epochs):
                order = torch.randperm(n, generator=generator).to(target)
                for start in range(0, n - batch + 1, batch):
                    step_started = time.perf_counter()
                    rows = order[start : start + batch]
                    x = images[rows]
                    projected = nn.functional.normalize(second(gelu(first(x))) + skip(x), dim=1)
                    logits = log_scale.exp().clamp(max=100.0) * projected @ texts[rows].T
                    labels = torch.arange(len(rows), device=target)
                    loss = 0.5 * (nn.functional.cross_entropy(logits, labels) + nn.functional.cross_entropy(logits.T, labels))
                    optimiser.zero_grad(set_to_none=True)
                    loss.backward()
                    optimiser.step()
                    schedule.step()
                    losses.append(float(loss.detach()))
                    bar.update(1)
                    if cpu_share and target.type == "cpu":
                        time.sleep((time.perf_counter() - step_started) * (1.0 / cpu_share - 1.0))
        weights = {
            "w1": first.weight.detach().cpu().numpy(),
            "b1": first.bias.detach().cpu().numpy(),
            "w2": second.weight.detach().cpu().numpy(),
            "b2": second.bias.detach().cpu().numpy(),
            "skip": skip.weight.detach().cpu().numpy(),
        }
        info = {
            "pairs": n,
            "epochs": epochs,
            "steps": steps,
            "batch_size": batch,
            "hidden": hidden,
            "seed": seed,
            "temperature": float(1.0 / log_scale.exp().clamp(max=100.0).item()),
            "final_loss": float(np.mean(losses[-10:])),
            "seconds": round(time.perf_counter() - started, 2),
            "device": target.type,
            "threads": torch.get_num_threads() if target.type == "cpu" else None,
            "fitted_at": time.time(),
            "fit_id": uuid.uuid4().hex[:12],  # which fit: a process that already serves it skips a second install
            "cpu_share": cpu_share if target.type == "cpu" else None,
        }
        return LearnedBridge(weights=weights, fingerprints=dict(fingerprints), info=info)


# ------------------------------------------------------------------ the engine's bridge
def refit_hint(data_dir: Path | None) -> str:
    where = f" --data-dir {data_dir}" if data_dir else ""
    return f"refit it with `ranker index bridge{where}` (or rebuild the index with `ranker index build`)"


def learnable(engine: Any) -> bool:
    """Whether the engine's encoders have a label bridge a learned head can replace (CLIP already shares one space)."""
    return str(engine.encoders.describe().get("bridge", {}).get("id", "")).startswith("imagenet-labels")


def bridge_state(engine: Any) -> dict[str, Any]:
    """The manifest's ``bridge`` entry: which bridge serves, why, what it was fitted on, and whether a refit is due."""
    record = dict(engine.bridge_record)
    if not learnable(engine):
        serving, reason = "clip", "the CLIP encoders embed pictures and text in one space"
    elif engine.bridge is not None:
        serving, reason = "learned", record.get("reason", "fitted on the catalog's (text, picture) pairs")
    else:
        serving = "imagenet-labels"
        reason = record.get("reason", f"not fitted yet: `ranker index bridge` fits it once the catalog has {MIN_PAIRS} items with a text and a picture")
    fitted_pairs = int(record.get("fitted_pairs", 0))
    pairs = len(engine.indexes["image"])
    due = serving != "clip" and (
        (serving == "learned" and engine.pairs_changed >= REFIT_SHARE * max(fitted_pairs, 1)) or (serving == "imagenet-labels" and pairs >= MIN_PAIRS)
    )
    record.update(
        {
            "serving": serving,
            "reason": reason,
            "pairs": pairs,
            "min_pairs": MIN_PAIRS,
            "refit_share": REFIT_SHARE,
            "changed_since_fit": int(engine.pairs_changed),
            "due": bool(due),
            "fit": engine.bridge.info if engine.bridge else None,
        }
    )
    return record


def refit_bridge(
    engine: Any,
    *,
    min_pairs: int = MIN_PAIRS,
    epochs: int | None = None,
    seed: int = 0,
    device: str = "auto",
    threads: int | None = FIT_THREADS,
    progress: bool | None = None,
    cpu_share: float | None = None,
) -> dict[str, Any]:
    """Fit the bridge head on the engine's (text, picture) pairs when there are ``min_pairs``, then calibrate the channels.

    A seeded :data:`CALIBRATION_SHARE` of the items is held out of the head's
    fit and serves as calibration queries against the rest. With fewer pairs
    the current bridge stays (the ImageNet-label bridge, or a head fitted
    before on a larger catalog) and the manifest says why. Re-projects every
    stored picture into the text space with the new head. Save the engine
    afterwards to keep the result. Returns :func:`bridge_state`.
    """
    from ranker.retrieval.calibration import Vectors, fit_calibration

    keys = np.sort(engine.store.keys())
    rng = np.random.default_rng(seed)
    held_out = np.zeros(len(keys), dtype=bool)
    held_out[rng.permutation(len(keys))[: int(math.ceil(CALIBRATION_SHARE * len(keys)))]] = True
    image, has_picture = engine.indexes["image"].vectors_for(keys)
    n_pairs = int(has_picture.sum())
    if learnable(engine):
        fitted_pairs = int(engine.bridge_record.get("fitted_pairs", 0))
        train = has_picture & ~held_out
        uninformative = 0
        if n_pairs >= min_pairs:
            informative = informative_pairs(engine.indexes["text"], keys[train], image[train], seed=seed)
            uninformative = int((~informative).sum())
            train[np.flatnonzero(train)[~informative]] = False
        if n_pairs >= min_pairs and train.sum() >= 2:
            text, _ = engine.indexes["text"].vectors_for(keys[train])
            described = engine.encoders.describe()
            fingerprints = {part: str(described[part].get("fingerprint")) for part in ("text", "image")}
            fitted = fit_bridge(
                image[train], text, fingerprints=fingerprints, epochs=epochs, seed=seed, device=device, threads=threads, progress=progress, cpu_share=cpu_share
            )
            install_bridge(engine, fitted)
            fitted_pairs = n_pairs
            reason = (
                f"fitted on {int(train.sum())} of the catalog's {n_pairs} (text, picture) pairs ({CALIBRATION_SHARE:.0%} held out to calibrate, "
                f"{uninformative} left out: their titles say nothing about their pictures)"
            )
        elif engine.bridge is not None:
            reason = f"kept the head fitted before: the catalog now has {n_pairs} (text, picture) pairs, fewer than the {min_pairs} a refit needs"
        else:
            reason = f"the catalog has {n_pairs} (text, picture) pairs, fewer than the {min_pairs} the learned bridge needs"
        engine.bridge_record = {"reason": reason, "fitted_pairs": fitted_pairs}
    labels = _category_codes(engine, keys)
    vectors = {name: engine.indexes[name].vectors_for(keys) for name in ("text", "image", "image_in_text")}
    everything = Vectors(parts={name: v for name, (v, _) in vectors.items()}, present={name: p for name, (_, p) in vectors.items()}, labels=labels)
    engine.calibration = fit_calibration(everything.take(np.flatnonzero(held_out)), everything.take(np.flatnonzero(~held_out)), seed=seed)
    return bridge_state(engine)


def informative_pairs(text_index: Any, keys: np.ndarray, image: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """Which (title, picture) pairs say something about their picture: a mask over ``keys`` (sorted), True to fit on.

    A title that pictures of unalike things share ("Article 0042", "Item", a bare SKU, items filed under a
    catch-all with a neutral name) cannot teach the head where a picture belongs: contrastive training would
    only memorise it, pulling those pictures towards the neutral titles and away from what they show. So for
    each pair, its :data:`TEXT_NEIGHBOURS` nearest titles among the pairs (``text_index``, exact below 20,000
    items) give its *consistency* ``c``: the mean cosine of its picture with their pictures. Pictures of random
    pairs give the baseline ``b`` (2,000 sampled pairs). A pair is kept when ``c - b >= INFORMATIVE_SHARE *
    (median(c) - b)``: its title's neighbours look at least half as much alike as is typical of the catalog.

    On the issue's shop (24 categories, 3 of every 15 items with a neutral title under "General") the kept
    pairs' ``c`` were >= 0.63 and the neutral ones' <= 0.51, with ``b`` = 0.37 and the cut at 0.58.
    """
    n = len(keys)
    if n <= TEXT_NEIGHBOURS + 1:
        return np.ones(n, dtype=bool)
    allowed = np.zeros(int(keys.max()) + 1, dtype=bool)
    allowed[keys] = True
    text, _ = text_index.vectors_for(keys)
    _, found = text_index.search(text, TEXT_NEIGHBOURS + 1, allowed_keys=allowed)
    rows = np.searchsorted(keys, np.where(found >= 0, found, keys[0]))
    others = (found >= 0) & (found != keys[:, None])
    consistency = np.zeros(n)
    for start in range(0, n, 4096):
        chunk = slice(start, start + 4096)
        similarity = np.einsum("nd,nkd->nk", image[chunk], image[rows[chunk]])
        consistency[chunk] = np.where(others[chunk], similarity, 0.0).sum(axis=1) / np.maximum(others[chunk].sum(axis=1), 1)
    rng = np.random.default_rng(seed)
    first, second = rng.integers(0, n, 2000), rng.integers(0, n, 2000)
    distinct = first != second
    baseline = float(np.mean(np.einsum("nd,nd->n", image[first[distinct]], image[second[distinct]])))
    return consistency - baseline >= INFORMATIVE_SHARE * (float(np.median(consistency)) - baseline)


def install_bridge(engine: Any, bridge: LearnedBridge) -> None:
    """Make ``bridge`` serve in ``engine``: every stored picture is projected into the text space with it into a new
    ``image_in_text`` index, swapped in whole, and the pictures written since the last fit count from 0 again.
    The caller holds whatever lock keeps searches out while the bridge, the index and the calibration change."""
    from ranker.retrieval.index import VectorIndex

    keys = engine.indexes["image"].keys()
    fresh = VectorIndex(engine.indexes["image_in_text"].dim, engine.index_config)
    projected = [bridge.project(engine.indexes["image"].vectors_for(keys[start : start + PROJECT_CHUNK])[0]) for start in range(0, len(keys), PROJECT_CHUNK)]
    if len(keys):
        fresh.add(keys, np.concatenate(projected))
    engine.indexes["image_in_text"] = fresh
    engine.bridge = bridge
    engine.pairs_changed = 0


def _category_codes(engine: Any, keys: np.ndarray) -> np.ndarray:
    """Each key's category as a code (case-insensitive), -1 for none."""
    codes: dict[str, int] = {}
    out = np.full(len(keys), -1, dtype=np.int64)
    for row, key in enumerate(keys):
        category = (engine.store.item_for_key(int(key)).category or "").strip().casefold()
        if category:
            out[row] = codes.setdefault(category, len(codes))
    return out
