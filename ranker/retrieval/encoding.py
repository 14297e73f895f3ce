"""What every encoder shares: the image input type, unit rows, weights fingerprints, batching with progress and
the ImageNet-style picture preprocessing.

The default encoders (:mod:`ranker.retrieval.encoders`) and the CLIP encoder (:mod:`ranker.retrieval.clip`) both
build on these; keeping them here lets ``encoders`` load ``clip`` only when a CLIP checkpoint is asked for, without
``clip`` importing ``encoders`` back.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

# Model hubs are unreachable in production and tests: never let transformers try.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ImageInput = bytes | str | Path | Image.Image
PROGRESS_MIN_ITEMS = 2_000  # show a progress bar only for runs long enough to wait on


def l2_normalise(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.ascontiguousarray(rows / np.maximum(norms, 1e-12), dtype=np.float32)


def file_fingerprint(path: Path, n_bytes: int = 1 << 20) -> str:
    """A cheap identity for a weights file: its size and a hash of its first MiB."""
    digest = hashlib.sha256(str(path.stat().st_size).encode())
    with open(path, "rb") as weights:
        digest.update(weights.read(n_bytes))
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class EncoderInfo:
    """What an index records about the encoder that built it, checked on load."""

    id: str
    dim: int
    fingerprint: str

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "dim": self.dim, "fingerprint": self.fingerprint}


def batches(n_rows: int, batch_size: int, progress: bool | None, description: str) -> Iterable[tuple[int, int]]:
    """[start, stop) row ranges of ``batch_size``, with a progress bar when ``progress`` (None: for long runs)."""
    show = n_rows >= PROGRESS_MIN_ITEMS if progress is None else progress
    starts = range(0, n_rows, batch_size)
    for start in tqdm(starts, desc=description, unit="batch", disable=not show):
        yield start, min(start + batch_size, n_rows)


def preprocess_images(images: Sequence[Image.Image], size: int, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """[n, 3, size, size] float32 pixels: resize the short side to size/0.875, centre-crop ``size``, scale to [0,1], normalise."""
    resize_to = int(round(size / 0.875))
    tensors = []
    for picture in images:
        width, height = picture.size
        scale = resize_to / min(width, height)
        resized = picture.resize((max(size, round(width * scale)), max(size, round(height * scale))), Image.BICUBIC)
        left = (resized.width - size) // 2
        top = (resized.height - size) // 2
        cropped = resized.crop((left, top, left + size, top + size))
        tensors.append(np.asarray(cropped, dtype=np.float32) / 255.0)
    pixels = (np.stack(tensors) - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))
