"""Score fusion and the index's on-disk manifest: numpy and the standard library only.

The simulator (``envs``) scores its cached embeddings with the same fusion as
the search engine, and finds a data directory's index by the same manifest,
without loading torch, transformers or faiss.

Each part of a query (text, picture) meets each part of an item on a
*channel*; the fused score is the weighted mean of the channel similarities
the item has (``sum w_c s_c / sum w_c``), so an item without a picture is
scored on its text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

CHANNEL_WEIGHTS: dict[str, float] = {"text": 1.0, "text_to_image": 0.3, "image": 1.0, "image_to_text": 0.3}
# channel -> (query vector, index searched)
CHANNELS: dict[str, tuple[str, str]] = {
    "text": ("text", "text"),
    "text_to_image": ("text", "image_in_text"),
    "image": ("image", "image"),
    "image_to_text": ("image_in_text", "text"),
}


def fuse_scores(per_channel: dict[str, np.ndarray], n: int | tuple[int, ...]) -> np.ndarray:
    """The fused score: weighted mean of the channel similarities an item has (NaN = no vector).

    ``n`` is the shape of every channel array (the number of items, or
    (queries, items) for a batch). Items with no channel at all score
    ``-inf``. The simulator scores its cached embeddings with this same function.
    """
    weighted = np.zeros(n, dtype=np.float64)
    weights = np.zeros(n, dtype=np.float64)
    for channel, similarity in per_channel.items():
        present = ~np.isnan(similarity)
        weighted += np.where(present, CHANNEL_WEIGHTS[channel] * np.nan_to_num(similarity), 0.0)
        weights += np.where(present, CHANNEL_WEIGHTS[channel], 0.0)
    return np.where(weights > 0, weighted / np.maximum(weights, 1e-12), -np.inf)


def manifest_path(data_dir: Path) -> Path:
    """Where the index manifest under ``data_dir`` lives; it exists once an index was saved."""
    return Path(data_dir) / "index" / "manifest.json"


def read_manifest(data_dir: Path) -> dict[str, Any] | None:
    path = manifest_path(data_dir)
    return json.loads(path.read_text()) if path.exists() else None
