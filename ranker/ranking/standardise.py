"""Input standardisation stored with a network: ``(x - mean) / scale`` per column.

Features live on very different scales (a click rate near 0.05, a similarity
near 0.5, a log-price gap of several units), and Adam's steps are the same
size for every weight, so a raw click rate can hardly be re-weighted.
:class:`Standardiser` (a torch module, :mod:`ranker.ranking.network`) holds
each column's mean and scale as buffers: they are saved in the network's
``safetensors`` with its weights, fixed once fitted (online updates keep the
parent's statistics, so a feature means the same to every version descended
from one training run), and applied in the forward pass and in serving's
numpy path alike (:mod:`ranker.ranking.scorer`, which reads them with
:func:`inverse_scales`).

Live inputs can leave the training distribution: a column that never varied
in training (every simulated item had a picture) is read as 0 whatever its
value (its scale is stored as infinity), and every standardised value is
clipped to +-:data:`CLIP`.

This module is numpy only (serving imports it); ``Standardiser`` is
re-exported from :mod:`ranker.ranking.network` on first use.
"""

from __future__ import annotations

import numpy as np

MIN_SCALE = 1e-2  # a nearly constant column is centred, not blown up
CONSTANT_STD = 1e-6  # a column this constant in the fitting data carried nothing to learn from: it is always read as 0
MIN_SCORE_SPREAD = 1e-6  # scores this alike are all "the same": standardised to 0, not blown up
CLIP = 10.0  # standardised values are clipped to +-CLIP: an input far outside what training saw cannot dominate a score


def inverse_scales(scale: np.ndarray) -> np.ndarray:
    """``1 / scale`` as float32 (an infinite scale, a constant column, gives 0): what the numpy forward pass multiplies by."""
    return (1.0 / np.asarray(scale, dtype=np.float32)).astype(np.float32)
