"""Fitting the channel calibration of :mod:`ranker.retrieval.fusion` from the catalog itself (numpy only).

For each channel, held-out catalog items serve as queries (their text, their
picture, their picture in the text space) against a background sample of
other catalog items:

1. ``mu``, ``sigma``: mean and standard deviation of the channel's cosines over
   all (query, background item) pairs: what the channel says about a random
   item, so ``z = (s - mu) / sigma`` reads "how far above chance";
2. ``a``, ``b``: a one-feature logistic regression of "same category" on ``z``
   over those pairs, so ``a z + b`` is the log-odds of a category match. A
   channel that tells categories apart sharply gets a steep ``a``; a weak
   one (the ImageNet-label bridge on a shop's products) a flat one, so it
   cannot outvote a strong channel.

The slope is the channel's fitted weight: the calibrated fusion takes, per
query part, the best calibrated channel (:func:`ranker.retrieval.fusion.fuse_scores`). A channel without enough data (no pictures in the catalog,
fewer than :data:`MIN_QUERIES` queries with a category, or one category only)
is left uncalibrated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ranker.retrieval.fusion import CHANNELS, Calibration, ChannelCalibration

MIN_QUERIES = 20  # held-out items with a category needed to calibrate a channel
MIN_SLOPE = 0.05  # an uninformative channel still ranks its own items in cosine order
MAX_QUERIES = 400
MAX_BACKGROUND = 2_000


@dataclass
class Vectors:
    """Catalog rows for calibration: ``part -> [n, d]`` with ``present[part]`` masks, and category labels (-1: none)."""

    parts: dict[str, np.ndarray]  # text, image, image_in_text
    present: dict[str, np.ndarray]
    labels: np.ndarray

    def take(self, rows: np.ndarray) -> Vectors:
        return Vectors({k: v[rows] for k, v in self.parts.items()}, {k: v[rows] for k, v in self.present.items()}, self.labels[rows])


def fit_logistic(z: np.ndarray, y: np.ndarray, *, iterations: int = 30, ridge: float = 1e-4) -> tuple[float, float]:
    """(slope, intercept) of ``P(y) = sigmoid(a z + b)`` by Newton's method (a tiny ridge keeps it finite when separable)."""
    design = np.stack([z, np.ones_like(z)], axis=1)
    theta = np.zeros(2)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ theta, -30, 30)))
        gradient = design.T @ (p - y) / len(y) + ridge * theta
        hessian = (design * (p * (1 - p))[:, None]).T @ design / len(y) + ridge * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.abs(step).max() < 1e-8:
            break
    return float(theta[0]), float(theta[1])


def fit_calibration(queries: Vectors, background: Vectors, *, seed: int = 0) -> Calibration:
    """Calibrate every channel that has data (see module docstring); ``queries`` and ``background`` share no item."""
    rng = np.random.default_rng(seed)
    queries = queries.take(_sample(np.flatnonzero(queries.labels >= 0), MAX_QUERIES, rng))
    background = background.take(_sample(np.flatnonzero(background.labels >= 0), MAX_BACKGROUND, rng))
    channels: dict[str, ChannelCalibration] = {}
    counts: dict[str, dict[str, int]] = {}
    for channel, (query_part, item_part) in CHANNELS.items():
        q_rows = np.flatnonzero(queries.present[query_part])
        i_rows = np.flatnonzero(background.present[item_part])
        if len(q_rows) < MIN_QUERIES or len(i_rows) < MIN_QUERIES:
            continue
        scores = (queries.parts[query_part][q_rows] @ background.parts[item_part][i_rows].T).astype(np.float64).ravel()
        same = (queries.labels[q_rows][:, None] == background.labels[i_rows][None, :]).astype(np.float64).ravel()
        if same.min() == same.max():  # one category only, or none shared
            continue
        mu, sigma = float(scores.mean()), float(max(scores.std(), 1e-6))
        slope, intercept = fit_logistic((scores - mu) / sigma, same)
        channels[channel] = ChannelCalibration(mu=mu, sigma=sigma, a=max(slope, MIN_SLOPE), b=intercept, weight=1.0)
        counts[channel] = {"queries": int(len(q_rows)), "background": int(len(i_rows))}
    return Calibration(channels=channels, fitted_on=counts)


def _sample(rows: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(rows, limit, replace=False)) if len(rows) > limit else rows
