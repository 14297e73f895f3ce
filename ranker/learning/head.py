"""The Bayesian head's update: logged rankings -> rows -> per-position statistics -> the posterior, closed form.

The model and the serving side are in :mod:`ranker.ranking.head`; this is the learner's side, in torch (float64,
on CUDA when present). One update, given the head it starts from and a batch of trajectories:

1. **Rows** (:func:`head_rows`). Every shown item of every logged ranking is a row: its inputs ``phi`` (the
   network's score standardised over the candidates available at that decision, the network's standardised
   features and their hinges, 1), its position and its reward (the objective's weights of click, cart and purchase). Positions
   after a purchase in the same ranking are left out (the shopper was done; nothing there was seen). A row
   weighs its user's contribution weight (:mod:`ranker.learning.caps`). Rows with a non-finite value are
   dropped and counted; the rest go on.
2. **Forgetting**. The statistics are multiplied by ``0.5 ** (dt / half_life_s)``, ``dt`` the time between the
   newest event already folded in and the batch's newest, so old evidence fades as shoppers drift. Event times,
   not the clock: the same batch gives the same head after a crash.
3. **Rows in**: ``A_t += sum w phi phi^T``, ``b_t += sum w y phi``, ``yy_t += sum w y^2``, ``n_t += sum w`` per
   position ``t``.
4. **Calibration, once** (empirical Bayes): when the statistics first hold ``min_rows`` rows, the prior mean
   becomes ``(c, 0, ..., 0, b)`` from the least-squares fit of the reward on ``e_t [score_z, 1]``: the network's
   order in reward units (``c`` kept positive, so the prior still serves the network's order). From then on the
   head serves.
5. **Solve**: three rounds of (posterior given the examination curve; the curve given the posterior mean,
   ``e_t = mu . b_t / mu^T A_t mu``, clipped to [0.01, 2], ``e_0 = 1``, positions with fewer than
   ``min_rows_per_position`` rows keep their value), then the noise variance from the residuals and the draw
   factor ``C = sigma L^-T`` (``P = L L^T``). A matrix that is not positive definite raises
   :class:`~ranker.ranking.head.HeadError`: the caller counts it and keeps the head it had.

Deterministic given (head, batch, settings) on one device.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ranker.devices import resolve_device
from ranker.evaluation.critic import session_live
from ranker.learning.config import HeadSettings  # noqa: F401  (re-exported: the head's hyperparameters)
from ranker.learning.replay import Steps
from ranker.ranking.head import MAX_POSITIONS, SCORE_INPUT, BayesianHead, HeadError, expand
from ranker.ranking.network import normalised_scores_t
from ranker.ranking.policy import RankingPolicy

EXAMINATION_RANGE = (0.01, 2.0)
NOISE_FLOOR = 1e-4  # sigma^2 at least this: a head fitted on a few all-zero rows must not claim certainty
SOLVE_ROUNDS = 3


@dataclass
class HeadRows:
    """The rows of one batch (module docstring, step 1)."""

    phi: np.ndarray  # [R, d]
    reward: np.ndarray  # [R]
    position: np.ndarray  # [R]
    weight: np.ndarray  # [R]
    dropped: int = 0  # rows with a non-finite value


def decision_inputs(policy: RankingPolicy, steps: Steps, *, device: torch.device | str = "cpu", chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """For every candidate of every logged decision: the network's standardised score ``score_z`` [N, K] and its
    standardised features [N, K, F] (float32), the inputs the head reads (``chunk`` decisions per forward pass)."""
    net = policy.net.to(device)
    scores, standardised = [], []
    with torch.no_grad():
        for start in range(0, len(steps.actions), chunk):
            rows = slice(start, start + chunk)
            features = torch.as_tensor(steps.features[rows], device=device)
            mask = torch.as_tensor(steps.mask[rows], device=device)
            raw, _ = net(features, torch.as_tensor(steps.context[rows], device=device), mask)
            scores.append(normalised_scores_t(raw, mask).cpu().numpy().astype(np.float32))
            standardised.append(net.feature_inputs(features).cpu().numpy().astype(np.float32))
    policy.net.to("cpu")
    k, f = steps.features.shape[1:]
    if not scores:
        return np.zeros((0, k), dtype=np.float32), np.zeros((0, k, f), dtype=np.float32)
    return np.concatenate(scores), np.concatenate(standardised)


def head_rows(policy: RankingPolicy, steps: Steps, weight: np.ndarray | None = None, *, device: torch.device | str = "cpu") -> HeadRows:
    """The shown items of ``steps`` as head rows; ``weight`` [N]: each decision's contribution weight (default 1)."""
    rows = np.arange(len(steps.actions))
    score_z, standardised = decision_inputs(policy, steps, device=device)
    shown = expand(standardised[rows, steps.actions])
    phi = np.concatenate([score_z[rows, steps.actions][:, None], shown, np.ones((len(rows), 1), dtype=np.float32)], axis=1)
    live = session_live(steps.trajectory, steps.outcomes)
    weight = np.ones(len(rows)) if weight is None else np.asarray(weight, dtype=np.float64)
    finite = np.isfinite(phi).all(axis=1) & np.isfinite(steps.rewards) & np.isfinite(weight)
    keep = live & finite
    return HeadRows(
        phi=phi[keep].astype(np.float64),
        reward=steps.rewards[keep].astype(np.float64),
        position=np.minimum(steps.positions[keep], MAX_POSITIONS - 1),
        weight=weight[keep],
        dropped=int((live & ~finite).sum()),
    )


def update_head(head: BayesianHead, rows: HeadRows, *, newest_ts: float, settings: HeadSettings) -> BayesianHead:
    """A new head: ``head`` with ``rows`` folded in and the posterior solved (module docstring)."""
    device = resolve_device(settings.device)
    new = copy.deepcopy(head)
    new.meta = {}
    if head.updates and head.updated_ts and settings.half_life_s > 0:
        decay = 0.5 ** (max(newest_ts - head.updated_ts, 0.0) / settings.half_life_s)
        for name in ("stats_a", "stats_b", "stats_yy", "stats_n"):
            setattr(new, name, getattr(new, name) * decay)
    a = torch.as_tensor(new.stats_a, device=device)
    b = torch.as_tensor(new.stats_b, device=device)
    if len(rows.reward):
        phi = torch.as_tensor(rows.phi, device=device)
        y = torch.as_tensor(rows.reward, device=device)
        w = torch.as_tensor(rows.weight, device=device)
        position = torch.as_tensor(rows.position, device=device, dtype=torch.long)
        for t in torch.unique(position).tolist():  # one [d, d] product per position (not an [n, d, d] outer-product tensor)
            at = position == t
            weighted = w[at, None] * phi[at]
            a[t] += weighted.T @ phi[at]
            b[t] += weighted.T @ y[at]
        new.stats_yy = new.stats_yy + np.bincount(rows.position, weights=rows.weight * rows.reward**2, minlength=MAX_POSITIONS)
        new.stats_n = new.stats_n + np.bincount(rows.position, weights=rows.weight, minlength=MAX_POSITIONS)
    new.stats_a, new.stats_b = a.cpu().numpy(), b.cpu().numpy()
    new.updated_ts = max(head.updated_ts, newest_ts)
    new.updates = head.updates + 1
    if not new.calibrated and new.rows >= settings.min_rows:
        _calibrate(new, settings)
    if new.calibrated:
        _solve(new, settings, device)
    new.meta = {"rows_added": int(len(rows.reward)), "skipped": {"not_finite": rows.dropped}} if rows.dropped else {"rows_added": int(len(rows.reward))}
    return new


def _calibrate(head: BayesianHead, settings: HeadSettings) -> None:
    """Step 4: the prior mean from the fit of the reward on ``e_t [score_z, 1]``."""
    pick = [SCORE_INPUT, head.dim - 1]
    e = head.examination
    gram = np.einsum("t,tij->ij", e**2, head.stats_a[:, pick][:, :, pick])
    moment = np.einsum("t,ti->i", e, head.stats_b[:, pick])
    try:
        c, bias = np.linalg.solve(gram + 1e-9 * np.eye(2), moment)
    except np.linalg.LinAlgError as exc:
        raise HeadError(f"head: the calibration is singular ({exc})") from None
    if not np.isfinite([c, bias]).all():
        raise HeadError("head: the calibration is not finite")
    scale = float(np.sqrt(max(head.stats_yy.sum() / max(head.rows, 1e-12), 1e-12)))
    prior = np.zeros(head.dim)
    prior[SCORE_INPUT] = max(float(c), 1e-3 * scale)  # positive: the prior serves the network's order
    prior[-1] = float(bias)
    precision = np.full(head.dim, settings.prior_rows[1])
    precision[SCORE_INPUT], precision[-1] = settings.prior_rows[0], settings.prior_rows[2]
    head.prior_mean, head.prior_precision, head.mean = prior, precision, prior.copy()
    head.calibrated = True


def _solve(head: BayesianHead, settings: HeadSettings, device: torch.device) -> None:
    """Step 5: the posterior, the examination curve, the noise and the draw factor."""
    a = torch.as_tensor(head.stats_a, device=device)
    b = torch.as_tensor(head.stats_b, device=device)
    prior_mean = torch.as_tensor(head.prior_mean, device=device)
    prior_precision = torch.as_tensor(head.prior_precision, device=device)
    e = torch.as_tensor(head.examination, device=device).clone()
    counts = torch.as_tensor(head.stats_n, device=device)
    learnable = counts >= settings.min_rows_per_position
    learnable[0] = False  # e_0 = 1 fixes the scale between the curve and theta
    for _ in range(SOLVE_ROUNDS):
        precision = torch.diag(prior_precision) + torch.einsum("t,tij->ij", e**2, a)
        factor, info = torch.linalg.cholesky_ex(precision)
        if int(info) != 0 or not torch.isfinite(factor).all():
            raise HeadError(f"head: the posterior precision is not positive definite (cholesky info {int(info)})")
        rhs = prior_precision * prior_mean + torch.einsum("t,ti->i", e, b)
        mean = torch.cholesky_solve(rhs[:, None], factor)[:, 0]
        predicted = torch.einsum("i,tij,j->t", mean, a, mean)
        explained = torch.einsum("i,ti->t", mean, b)
        fitted = torch.where(predicted > 1e-12, explained / predicted.clamp(min=1e-12), e)
        e = torch.where(learnable, fitted.clamp(*EXAMINATION_RANGE), e)
    yy = torch.as_tensor(head.stats_yy, device=device)
    residual = (yy - 2 * e * explained + e**2 * predicted).sum() + ((mean - prior_mean) ** 2 * prior_precision).sum()
    noise_var = max(float(residual) / max(float(counts.sum()), 1.0), NOISE_FLOOR)
    identity = torch.eye(len(mean), dtype=factor.dtype, device=device)
    draw_factor = np.sqrt(noise_var) * torch.linalg.solve_triangular(factor.T, identity, upper=True)  # C C^T = sigma^2 P^-1
    if not (torch.isfinite(mean).all() and torch.isfinite(draw_factor).all()):
        raise HeadError("head: the posterior is not finite")
    head.mean, head.draw_factor = mean.cpu().numpy(), draw_factor.cpu().numpy()
    head.examination, head.noise_var = e.cpu().numpy(), noise_var


def fresh_head(policy: RankingPolicy, settings: HeadSettings, examination: Sequence[float] | None = None) -> BayesianHead:
    """An uncalibrated head over ``policy``'s network with the settings' prior (it serves the network's order until calibrated)."""
    curve = None if examination is None else np.asarray(examination)
    return BayesianHead.fresh(policy.net.n_features, prior_precision=settings.prior_rows, examination=curve)
