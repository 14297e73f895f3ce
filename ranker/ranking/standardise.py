"""Input standardisation stored with a network: ``(x - mean) / scale`` per column.

Features live on very different scales (a click rate near 0.05, a similarity
near 0.5, a log-price gap of several units), and Adam's steps are the same
size for every weight, so a raw click rate can hardly be re-weighted.
:class:`Standardiser` holds each column's mean and scale as buffers: they are
saved in the network's ``safetensors`` with its weights, fixed once fitted
(online updates keep the parent's statistics, so a feature means the same to
every version descended from one training run), and applied in the forward
pass and in serving's numpy path alike.

Live inputs can leave the training distribution: a column that never varied
in training (every simulated item had a picture) is read as 0 whatever its
value (its scale is stored as infinity), and every standardised value is
clipped to +-:data:`CLIP`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

MIN_SCALE = 1e-2  # a nearly constant column is centred, not blown up
CONSTANT_STD = 1e-6  # a column this constant in the fitting data carried nothing to learn from: it is always read as 0
CLIP = 10.0  # standardised values are clipped to +-CLIP: an input far outside what training saw cannot dominate a score


class Standardiser(nn.Module):
    """Per-column ``(x - mean) / scale``; the identity until :meth:`fit`."""

    mean: torch.Tensor
    scale: torch.Tensor

    def __init__(self, n_columns: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_columns))
        self.register_buffer("scale", torch.ones(n_columns))

    def fit(self, rows: np.ndarray) -> Standardiser:
        """Set the statistics from ``rows`` [N, n_columns] (finite values; at least one row)."""
        values = np.asarray(rows, dtype=np.float64).reshape(-1, len(self.mean))
        if not len(values):
            raise ValueError("rows: no rows to fit the standardisation on")
        if not np.isfinite(values).all():
            raise ValueError("rows: non-finite values; standardisation needs finite features")
        with torch.no_grad():
            self.mean.copy_(torch.as_tensor(values.mean(axis=0)))
            std = values.std(axis=0)
            self.scale.copy_(torch.as_tensor(np.where(std < CONSTANT_STD, np.inf, np.maximum(std, MIN_SCALE))))
        return self

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return ((values - self.mean) / self.scale).clamp(-CLIP, CLIP)

    def numpy(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, 1 / scale) as float32 arrays, for serving's numpy forward pass."""
        return self.mean.detach().cpu().numpy().astype(np.float32), (1.0 / self.scale.detach().cpu().numpy()).astype(np.float32)
