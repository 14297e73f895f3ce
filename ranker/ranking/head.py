"""The Bayesian head: a posterior over a linear correction of the policy's score, drawn once per request.

The network ranks from features that mean the same in every shop, so what it cannot know is this shop's own
shoppers: how much they care about a user's brand history, a price gap, a near-duplicate. That is a contextual
bandit's job, done on top of the network as a "neural-linear" bandit (Riquelme, Tucker and Snoek, ICLR 2018:
the strongest all-round method of their comparison) with Thompson sampling (Agrawal and Goyal, ICML 2013).

**Inputs** of a candidate at a decision, :data:`HEAD_INPUTS` (``phi``):

- ``score_z``: the network's score, standardised over the candidates still available (scores are only
  defined up to a shift and a scale, so only their standardised form compares across requests);
- the network's own standardised features (its stored input standardisation, clipped), static and slate
  features alike: the head can re-weigh a user's brand affinity or the similarity to what is placed above;
- each standardised feature's hinges at :data:`KNOTS` (``max(0, x - k)`` for k = -1, 0, +1 standard
  deviations): the head's correction is piecewise linear in every feature, so it can bend an effect (a
  near-duplicate penalty that starts at a threshold, a price that hurts only above a budget) without a network.
  Measured offline on logs of the starting policy under a shifted population (``bench/README.md``), the hinges
  more than tripled what a linear correction gained (the network's last hidden layer in their place gained half
  as much again as the linear one);
- ``bias``, 1.

**Model.** The reward of the item placed at position ``t`` (click, cart and purchase weighted as the objective
says) has mean ``e_t * theta . phi``: a position-based examination curve ``e`` (``e_0 = 1``) learnt from the
logs, times the item's reward when seen. Gaussian noise of variance ``sigma^2``.

**Prior.** ``theta ~ N(theta_0, sigma^2 Lambda_0^-1)`` with ``theta_0 = (c, 0, ..., 0, b)``: a positive
multiple of ``score_z`` plus a constant, which serves exactly the network's order (serving standardises the
served scores, so scale and shift do not matter). ``c`` and ``b`` are calibrated once from the first rows
(empirical Bayes, :mod:`ranker.learning.head`); until then the head is inactive and serving is the network's.
``Lambda_0`` is diagonal, in rows' worth of evidence.

**Posterior** (closed form, from per-position sufficient statistics ``A_t = sum w phi phi^T``,
``b_t = sum w y phi`` with exponential forgetting): ``P = Lambda_0 + sum_t e_t^2 A_t``,
``mu = P^-1 (Lambda_0 theta_0 + sum_t e_t b_t)``, covariance ``sigma^2 P^-1``; the learner alternates it with
``e_t`` (:mod:`ranker.learning.head`).

**Serving** draws ``theta~ = mu + C eps`` once per request (``C C^T = sigma^2 P^-1``, ``eps ~ N(0, I)``) and
ranks by ``theta~ . phi``; a greedy request ranks by ``mu``. This module is numpy only: the servers import it, the
learner computes the posterior.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ranker.ranking.features import FEATURES

KNOTS: tuple[float, ...] = (-1.0, 0.0, 1.0)  # hinge points of every standardised feature (in standard deviations)
SCORE_INPUT = 0  # the standardised network score is the first input, the bias the last
HEAD_FILE = "head.safetensors"
MAX_POSITIONS = 50  # examination is learnt per position up to here; later positions share the last one's
_ARRAYS = ("prior_mean", "prior_precision", "mean", "draw_factor", "examination", "stats_a", "stats_b", "stats_yy", "stats_n")


class HeadError(ValueError):
    """A head file that does not fit this code (another input layout), or an update that cannot be solved."""


def head_inputs(n_features: int) -> tuple[str, ...]:
    """The input names of a head over a network with ``n_features`` features (:data:`HEAD_INPUTS` for the service's)."""
    names = FEATURES if n_features == len(FEATURES) else tuple(f"feature_{index}" for index in range(n_features))
    return ("score_z", *names, *(f"{name}>{knot:+g}" for knot in KNOTS for name in names), "bias")


def head_dim(n_features: int) -> int:
    return 2 + n_features * (1 + len(KNOTS))


def expand(standardised: np.ndarray) -> np.ndarray:
    """[..., F * (1 + len(KNOTS))] the features and their hinges (the inputs between ``score_z`` and ``bias``)."""
    return np.concatenate([standardised, *(np.maximum(standardised - knot, 0.0) for knot in KNOTS)], axis=-1)


HEAD_INPUTS: tuple[str, ...] = head_inputs(len(FEATURES))  # for a network over the service's features


@dataclass
class BayesianHead:
    """The posterior and the statistics it was solved from (module docstring)."""

    prior_mean: np.ndarray  # [d] theta_0
    prior_precision: np.ndarray  # [d] diagonal of Lambda_0, in rows
    mean: np.ndarray  # [d] mu
    draw_factor: np.ndarray  # [d, d] C with C C^T = sigma^2 P^-1
    examination: np.ndarray  # [MAX_POSITIONS] e_t, e_0 = 1
    stats_a: np.ndarray  # [MAX_POSITIONS, d, d] sum of w phi phi^T per position (forgetting applied)
    stats_b: np.ndarray  # [MAX_POSITIONS, d] sum of w y phi per position
    stats_yy: np.ndarray  # [MAX_POSITIONS] sum of w y^2 per position
    stats_n: np.ndarray  # [MAX_POSITIONS] sum of w per position
    noise_var: float = 0.0  # sigma^2
    calibrated: bool = False  # theta_0 calibrated from rows: the head serves (draws) from now on
    updated_ts: float = 0.0  # the newest event time folded in (forgetting counts from it)
    updates: int = 0
    meta: dict[str, Any] = field(default_factory=dict)  # what the last update did (rows, skipped, solve), for show

    @classmethod
    def fresh(
        cls, n_features: int = len(FEATURES), *, prior_precision: tuple[float, float, float] = (50.0, 500.0, 50.0), examination: np.ndarray | None = None
    ) -> BayesianHead:
        """The uncalibrated prior over a network with ``n_features`` features: ``theta_0 = score_z``;
        ``prior_precision`` for (score_z, each feature, bias)."""
        d = head_dim(n_features)
        prior_mean = np.zeros(d)
        prior_mean[SCORE_INPUT] = 1.0
        precision = np.full(d, prior_precision[1], dtype=np.float64)
        precision[SCORE_INPUT], precision[-1] = prior_precision[0], prior_precision[2]
        curve = 1.0 / (np.arange(MAX_POSITIONS) + 1.0) if examination is None else np.asarray(examination, dtype=np.float64)
        return cls(
            prior_mean=prior_mean,
            prior_precision=precision,
            mean=prior_mean.copy(),
            draw_factor=np.zeros((d, d)),
            examination=curve,
            stats_a=np.zeros((MAX_POSITIONS, d, d)),
            stats_b=np.zeros((MAX_POSITIONS, d)),
            stats_yy=np.zeros(MAX_POSITIONS),
            stats_n=np.zeros(MAX_POSITIONS),
        )

    @property
    def dim(self) -> int:
        return len(self.mean)

    @property
    def n_features(self) -> int:
        return (self.dim - 2) // (1 + len(KNOTS))

    @property
    def inputs(self) -> tuple[str, ...]:
        return head_inputs(self.n_features)

    @property
    def active(self) -> bool:
        """Whether the head changes what serves (calibrated from rows); an inactive head serves the network's order."""
        return self.calibrated

    @property
    def rows(self) -> float:
        """The weighted rows the statistics hold now (after forgetting)."""
        return float(self.stats_n.sum())

    # ------------------------------------------------------------ serving
    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """One Thompson draw of theta (the mean while inactive)."""
        if not self.active:
            return self.mean
        return self.mean + self.draw_factor @ rng.standard_normal(self.dim)

    def scores(self, score_z: np.ndarray, standardised: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """[K] ``theta . phi`` for candidates with standardised network scores ``score_z`` [K] and standardised
        features ``standardised`` [K, F]."""
        n = standardised.shape[-1]
        scores = theta[SCORE_INPUT] * score_z + standardised @ theta[1 : 1 + n] + theta[-1]
        for index, knot in enumerate(KNOTS, start=1):  # the hinges, one at a time: no [K, 4F] copy
            scores = scores + np.maximum(standardised - knot, 0.0) @ theta[1 + index * n : 1 + (index + 1) * n]
        return scores

    # ------------------------------------------------------------ storage
    def save(self, directory: Path) -> dict[str, Any]:
        """Write ``head.safetensors`` into ``directory``; returns the manifest entry (summary and file)."""
        from safetensors.numpy import save_file

        tensors = {name: np.ascontiguousarray(getattr(self, name), dtype=np.float64) for name in _ARRAYS}
        tensors["scalars"] = np.array([self.noise_var, float(self.calibrated), self.updated_ts, float(self.updates)])
        save_file(tensors, str(Path(directory) / HEAD_FILE), metadata={"inputs": ",".join(self.inputs)})
        return {"file": HEAD_FILE, **self.summary()}

    @classmethod
    def load(cls, directory: Path, n_features: int, meta: dict[str, Any] | None = None) -> BayesianHead:
        """The head in ``directory``, for a network with ``n_features`` features (another input layout is refused)."""
        from safetensors import safe_open

        path = Path(directory) / HEAD_FILE
        expected = ",".join(head_inputs(n_features))
        with safe_open(str(path), framework="numpy") as handle:
            inputs = (handle.metadata() or {}).get("inputs", "")
            if inputs != expected:
                raise HeadError(f"head: {path} was built on inputs {inputs!r}, not {expected!r}; reset it with `ranker policy head reset`")
            arrays = {name: handle.get_tensor(name) for name in (*_ARRAYS, "scalars")}
        noise_var, calibrated, updated_ts, updates = arrays.pop("scalars").tolist()
        return cls(**arrays, noise_var=noise_var, calibrated=bool(calibrated), updated_ts=updated_ts, updates=int(updates), meta=dict(meta or {}))

    def summary(self, top: int = 6) -> dict[str, Any]:
        """What ``ranker policy head show`` prints and the manifest records."""
        correction = self.mean - self.prior_mean
        order = np.argsort(-np.abs(correction[1:-1]))[:top] + 1
        scale = max(abs(float(self.mean[SCORE_INPUT])), 1e-12)
        seen = self.stats_n > 0
        last = int(np.flatnonzero(seen).max()) + 1 if seen.any() else 1
        return {
            "inputs": self.dim,
            "calibrated": self.calibrated,
            "updates": self.updates,
            "rows": round(self.rows, 1),
            "noise_sd": round(float(np.sqrt(max(self.noise_var, 0.0))), 6),
            "score_weight": round(float(self.mean[SCORE_INPUT]), 6),
            "examination": [round(float(e), 4) for e in self.examination[: max(last, 1)]],
            # the largest corrections, in units of one standardised score: how far a unit of the feature moves an item
            "largest_corrections": {self.inputs[i]: round(float(correction[i]) / scale, 4) for i in order},
            **self.meta,
        }
