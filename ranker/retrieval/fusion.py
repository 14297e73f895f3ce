"""Score fusion, channel calibration and the index's on-disk manifest: numpy and the standard library only.

The simulator (``envs``) scores its cached embeddings with the same
calibration and fusion as the search engine, and finds a data directory's
index by the same manifest, without loading torch, transformers or faiss.

Each part of a query (text, picture) meets each part of an item on a
*channel*. A channel's cosine similarity ``s`` is first put on the common
scale of :class:`Calibration`: ``l = a (s - mu) / sigma + b``, where ``mu`` and
``sigma`` standardise it against a background sample of the catalog (random
query and item pairs) and ``a``, ``b`` (``a > 0``) are fitted by logistic
regression of "same category" on held-out pairs, so ``l`` reads as the
log-odds that the item is what the query asks for, whichever channel says it.

On that scale the fused score asks, for each part of the query (its text, its
picture), whether *some* part of the item matches it: the best calibrated
score among that query part's channels (text: ``text``, ``text_to_image``;
picture: ``image``, ``image_to_text``), then the mean over the query parts.
So an item with only a picture, or with a picture and a useless title
("Article 0042"), competes with an item that has both on the same scale: a
weak title does not drag a strong picture match down (a mean of channels
would). An uncalibrated index (too few items with categories, or built before
calibration existed) keeps the former fusion: raw cosines, weighted mean of
the channels an item has (``sum w_c s_c / sum w_c``) with
:data:`CHANNEL_WEIGHTS`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ranker.defaults import CATEGORY_BOOST  # noqa: F401  (what a named category adds, in log-odds; its one home)

# Weights of the uncalibrated fusion (raw cosines): cross-modal channels count less, the label bridge being coarse.
CHANNEL_WEIGHTS: dict[str, float] = {"text": 1.0, "text_to_image": 0.3, "image": 1.0, "image_to_text": 0.3}
# the part of the query each channel reads: the calibrated fusion takes the best channel per query part
QUERY_PART: dict[str, str] = {"text": "text", "text_to_image": "text", "image": "picture", "image_to_text": "picture"}
LOGITS_PER_COSINE = 30.0  # the calibrated channels' slope a / sigma on the demo shop (27.9 to 32.2 per unit of cosine)
# channel -> (query vector, index searched)
CHANNELS: dict[str, tuple[str, str]] = {
    "text": ("text", "text"),
    "text_to_image": ("text", "image_in_text"),
    "image": ("image", "image"),
    "image_to_text": ("image_in_text", "text"),
}


@dataclass(frozen=True)
class ChannelCalibration:
    """One channel's map from cosine to the common scale: ``a (s - mu) / sigma + b``, weighted ``weight`` in the mean."""

    mu: float = 0.0
    sigma: float = 1.0
    a: float = 1.0
    b: float = 0.0
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not (self.sigma > 0 and self.a > 0 and self.weight > 0):
            raise ValueError(f"calibration: sigma, a and weight must be > 0, got sigma={self.sigma}, a={self.a}, weight={self.weight}")

    def apply(self, similarity: np.ndarray) -> np.ndarray:
        return self.a * (np.asarray(similarity, dtype=np.float64) - self.mu) / self.sigma + self.b


@dataclass(frozen=True)
class Calibration:
    """Per-channel calibration; a channel it does not name keeps the identity and its :data:`CHANNEL_WEIGHTS` weight."""

    channels: dict[str, ChannelCalibration] = field(default_factory=dict)
    fitted_on: dict[str, Any] = field(default_factory=dict)  # what it was fitted on (counts), for the manifest

    @property
    def fitted(self) -> bool:
        return bool(self.channels)

    def channel(self, name: str) -> ChannelCalibration:
        return self.channels.get(name) or ChannelCalibration(weight=CHANNEL_WEIGHTS[name])

    def weights(self) -> dict[str, float]:
        return {name: self.channel(name).weight for name in CHANNELS}

    def apply(self, per_channel: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Raw cosines per channel (NaN = no vector) to calibrated scores (NaN stays NaN)."""
        return {name: self.channel(name).apply(similarity) for name, similarity in per_channel.items()}

    def to_json(self) -> dict[str, Any]:
        return {"channels": {name: vars(calibration).copy() for name, calibration in self.channels.items()}, "fitted_on": self.fitted_on}

    @classmethod
    def from_json(cls, body: dict[str, Any] | None) -> Calibration:
        if not body:
            return cls()
        channels = {name: ChannelCalibration(**{key: float(value) for key, value in values.items()}) for name, values in body.get("channels", {}).items()}
        unknown = set(channels) - set(CHANNELS)
        if unknown:
            raise ValueError(f"calibration: unknown channels {sorted(unknown)}; known: {sorted(CHANNELS)}")
        return cls(channels=channels, fitted_on=dict(body.get("fitted_on", {})))


UNCALIBRATED = Calibration()


class IndexMismatchError(ValueError):
    """An index (or its learned bridge) on disk that was made with other encoders than the ones loading it."""


def fuse_scores(per_channel: dict[str, np.ndarray], n: int | tuple[int, ...], calibration: Calibration = UNCALIBRATED) -> np.ndarray:
    """The fused score of (already calibrated) channel scores (NaN = the item lacks that part); see the module docstring.

    Calibrated: the mean over query parts of the best channel of each part.
    Uncalibrated: the weighted mean of the channels an item has.
    ``n`` is the shape of every channel array (the number of items, or
    (queries, items) for a batch). Items with no channel at all score
    ``-inf``. The simulator scores its cached embeddings with this same function.
    """
    if calibration.fitted:
        return _best_per_query_part(per_channel, n)
    weighted = np.zeros(n, dtype=np.float64)
    weights = np.zeros(n, dtype=np.float64)
    for channel, score in per_channel.items():
        present = ~np.isnan(score)
        weight = calibration.channel(channel).weight
        weighted += np.where(present, weight * np.nan_to_num(score), 0.0)
        weights += np.where(present, weight, 0.0)
    return np.where(weights > 0, weighted / np.maximum(weights, 1e-12), -np.inf)


def _best_per_query_part(per_channel: dict[str, np.ndarray], n: int | tuple[int, ...]) -> np.ndarray:
    total = np.zeros(n, dtype=np.float64)
    parts = np.zeros(n, dtype=np.float64)
    for query_part in ("text", "picture"):
        best = np.full(n, -np.inf)
        for channel, score in per_channel.items():
            if QUERY_PART[channel] == query_part:
                best = np.fmax(best, np.where(np.isnan(score), -np.inf, score))
        matched = np.isfinite(best)
        total += np.where(matched, best, 0.0)
        parts += matched
    return np.where(parts > 0, total / np.maximum(parts, 1.0), -np.inf)


def manifest_path(data_dir: Path) -> Path:
    """Where the index manifest under ``data_dir`` lives; it exists once an index was saved."""
    return Path(data_dir) / "index" / "manifest.json"


def read_manifest(data_dir: Path) -> dict[str, Any] | None:
    path = manifest_path(data_dir)
    return json.loads(path.read_text()) if path.exists() else None
