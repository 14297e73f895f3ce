"""Off-policy estimators: a candidate policy's value per ranking, estimated from rankings another policy logged.

One interface, after Open Bandit Pipeline's estimators: every estimator has
``estimate_policy_value(...)`` (a point estimate) and ``estimate_interval(...)``
(a bootstrap interval), and takes the logged data by name, one row per
*decision* (a position of a logged ranking), rows of a ranking in position
order:

- ``ranking``: which logged ranking the decision belongs to (0..n-1);
- ``position``: the decision's position in its ranking (0 first);
- ``action``: the candidate the logging policy placed there (index into the row of ``action_dist``);
- ``reward``: that position's reward (click 0.1, cart 0.3, purchase 1.0 by default);
- ``pscore``: the logging policy's probability of ``action`` (the logged propensity);
- ``action_dist``: [N, K] the evaluated policy's probabilities of every candidate at that decision;
- ``estimated_rewards_by_reg_model``: [N, K] a reward model's prediction for every candidate (DR only).

A slate is sampled position by position, so the per-decision importance weight
of position t of ranking i is ``w[i,t] = prod_{s<=t} pi(a_s|x_s) / mu(a_s|x_s)``
(Precup et al. 2000), and the value of a policy is the expected sum of the
positions' rewards:

- :class:`PerDecisionIPS`: ``1/n sum_i sum_t w[i,t] r[i,t]``: unbiased, high variance;
- :class:`PerDecisionSNIPS`: per position the weighted mean ``sum_i w[i,t] r[i,t] / sum_i w[i,t]``, summed
  over positions: slightly biased, far steadier; a ranking shorter than position t (fewer candidates) counts
  there with reward 0 and its last weight;
- :class:`PerDecisionDR` (Jiang and Li 2016): ``1/n sum_i sum_t [w[i,t] (r - q(x_t, a_t)) + w[i,t-1] sum_a pi(a|x_t) q(x_t, a)]``:
  unbiased when either the weights or the reward model are right.

Every figure has one meaning across the product (the gate and the preview both use this module):

- *value*: the estimate above, reward per ranking;
- *improvement*: value minus the logged (on-policy) value on the same rankings, its interval from the same
  bootstrap resamples (paired);
- *effective sample size* (:func:`effective_sample_size`): ``(sum_i W_i)^2 / sum_i W_i^2`` over the rankings'
  whole-slate weights ``W_i = w[i, last]``, in rankings. Equal to n when the candidate acts like the logging
  policy, far below it when the logs can say little about the candidate.

Intervals are 95% (``alpha=0.05``) percentile bootstraps over rankings. This module is numpy alone: it knows
nothing of where the logged data come from (``ranker.learning.preview`` rebuilds them from the event log).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LOG_RATIO_CLIP = 20.0  # a log importance ratio is clipped to +-20 before it is exponentiated
RIDGE = 1.0


@dataclass(frozen=True)
class Interval:
    value: float  # the point estimate on all the rankings
    low: float
    high: float

    @property
    def ci(self) -> list[float]:
        return [self.low, self.high]


def decision_weights(
    ranking: np.ndarray, position: np.ndarray, action: np.ndarray, pscore: np.ndarray, action_dist: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``w[i,t]`` and ``w[i,t-1]`` (1 at a ranking's first position) for every decision."""
    rows = np.arange(len(action))
    log_ratio = np.clip(np.log(np.maximum(action_dist[rows, action], 1e-300)) - np.log(np.maximum(pscore, 1e-300)), -LOG_RATIO_CLIP, LOG_RATIO_CLIP)
    running = np.cumsum(log_ratio)
    first = rows - position  # the row of the ranking's first decision
    within = running - (running[first] - log_ratio[first])
    return np.exp(within), np.exp(within - log_ratio)


def effective_sample_size(ranking: np.ndarray, position: np.ndarray, action: np.ndarray, pscore: np.ndarray, action_dist: np.ndarray) -> float:
    """``(sum W)^2 / sum W^2`` over the rankings' whole-slate weights, in rankings."""
    weights, _ = decision_weights(ranking, position, action, pscore, action_dist)
    last = np.r_[np.flatnonzero(np.diff(ranking)), len(ranking) - 1] if len(ranking) else np.zeros(0, dtype=np.int64)
    whole = weights[last]
    return float(whole.sum() ** 2 / max((whole**2).sum(), 1e-300)) if len(whole) else 0.0


class RidgeRewardModel:
    """``q(x, a)``: ridge regression of a position's reward on the chosen candidate's features (and a bias).

    ``fit`` on logged decisions, ``predict`` for every candidate of any decisions (0 where masked): a model fitted
    on one set of logs can score another (a policy learned from it, or cross-fitting)."""

    def __init__(self, ridge: float = RIDGE):
        self.ridge = ridge
        self.coef: np.ndarray | None = None

    def fit(self, features: np.ndarray, action: np.ndarray, reward: np.ndarray) -> RidgeRewardModel:
        """``features`` [N, K, F] of every candidate, ``action`` [N] the logged choice, ``reward`` [N]."""
        rows = np.arange(len(action))
        x = np.c_[features[rows, action], np.ones(len(action))]
        self.coef = np.linalg.solve(x.T @ x + self.ridge * np.eye(x.shape[1]), x.T @ np.asarray(reward, dtype=np.float64))
        return self

    def predict(self, features: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """[N, K] the predicted reward of every candidate, 0 where ``mask`` is 0."""
        if self.coef is None:
            raise ValueError("the reward model is not fitted: call fit() first")
        n, k, f = features.shape
        q = (np.c_[features.reshape(-1, f), np.ones(n * k)] @ self.coef).reshape(n, k)
        return np.where(mask > 0, q, 0.0)


def ridge_reward_model(features: np.ndarray, mask: np.ndarray, action: np.ndarray, reward: np.ndarray) -> np.ndarray:
    """[N, K] ``q(x, a)`` of :class:`RidgeRewardModel` fitted on these decisions, predicted for every candidate
    (0 where masked)."""
    return RidgeRewardModel().fit(features, action, reward).predict(features, mask)


class PerDecisionEstimator:
    """The shared machinery: weights once, then a statistic of per-ranking resample counts.

    ``weight_clip``: cap every ``w[i,t]`` (and ``w[i,t-1]``) at this value (truncated importance sampling, Ionides
    2008): less variance for some bias toward the logging policy (and, in DR, toward the reward model). None: no cap.
    """

    name = ""

    def __init__(self, weight_clip: float | None = None):
        self.weight_clip = weight_clip

    def _statistic(self, counts: np.ndarray, data: dict[str, np.ndarray]) -> float:
        raise NotImplementedError

    def _prepare(
        self,
        *,
        ranking: np.ndarray,
        position: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        pscore: np.ndarray,
        action_dist: np.ndarray,
        estimated_rewards_by_reg_model: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        ranking = np.asarray(ranking, dtype=np.int64)
        position = np.asarray(position, dtype=np.int64)
        weights, previous = decision_weights(ranking, position, np.asarray(action, dtype=np.int64), np.asarray(pscore, dtype=np.float64), action_dist)
        if self.weight_clip is not None:
            weights, previous = np.minimum(weights, self.weight_clip), np.minimum(previous, self.weight_clip)
        data = {
            "ranking": ranking,
            "position": position,
            "action": np.asarray(action, dtype=np.int64),
            "reward": np.asarray(reward, dtype=np.float64),
            "action_dist": np.asarray(action_dist, dtype=np.float64),
            "weights": weights,
            "previous": previous,
            "n": np.int64(ranking.max() + 1 if len(ranking) else 0),
        }
        if estimated_rewards_by_reg_model is not None:
            data["q"] = np.asarray(estimated_rewards_by_reg_model, dtype=np.float64)
        return data

    def estimate_policy_value(self, **logged: np.ndarray) -> float:
        """The candidate's value per ranking on all the logged rankings."""
        data = self._prepare(**logged)
        return self._statistic(np.ones(int(data["n"])), data)

    def _bootstrap(self, data: dict[str, np.ndarray], statistic, n_bootstrap_samples: int, random_state: int, alpha: float) -> Interval:
        n = int(data["n"])
        point = statistic(np.ones(n), data)
        rng = np.random.default_rng(random_state)
        draws = [statistic(np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64), data) for _ in range(n_bootstrap_samples)]
        low, high = np.percentile(draws, [100 * alpha / 2, 100 * (1 - alpha / 2)])
        return Interval(float(point), float(low), float(high))

    def estimate_interval(self, *, alpha: float = 0.05, n_bootstrap_samples: int = 500, random_state: int = 0, **logged: np.ndarray) -> Interval:
        """The value with a percentile bootstrap interval over rankings."""
        return self._bootstrap(self._prepare(**logged), self._statistic, n_bootstrap_samples, random_state, alpha)

    def estimate_improvement_interval(self, *, alpha: float = 0.05, n_bootstrap_samples: int = 500, random_state: int = 0, **logged: np.ndarray) -> Interval:
        """The value minus the logged value of the same rankings, with a paired bootstrap interval."""

        def improvement(counts: np.ndarray, data: dict[str, np.ndarray]) -> float:
            return self._statistic(counts, data) - logged_value(counts, data)

        return self._bootstrap(self._prepare(**logged), improvement, n_bootstrap_samples, random_state, alpha)


def logged_value(counts: np.ndarray, data: dict[str, np.ndarray]) -> float:
    """The logging policy's own value per ranking (on a resample: ``counts[i]`` copies of ranking i)."""
    return float((counts[data["ranking"]] * data["reward"]).sum() / max(counts.sum(), 1e-300))


class PerDecisionIPS(PerDecisionEstimator):
    name = "ips"

    def _statistic(self, counts: np.ndarray, data: dict[str, np.ndarray]) -> float:
        c = counts[data["ranking"]]
        return float((c * data["weights"] * data["reward"]).sum() / max(counts.sum(), 1e-300))


class PerDecisionSNIPS(PerDecisionEstimator):
    name = "snips"

    def _statistic(self, counts: np.ndarray, data: dict[str, np.ndarray]) -> float:
        ranking, position = data["ranking"], data["position"]
        c = counts[ranking] * data["weights"]
        positions = int(position.max()) + 1 if len(c) else 0
        mass = np.bincount(position, weights=c, minlength=positions)
        gained = np.bincount(position, weights=c * data["reward"], minlength=positions)
        # a ranking shorter than others (fewer candidates than positions) still counts at the positions it lacks, with
        # reward 0 and its last weight: otherwise a short ranking would raise the later positions' means
        last = np.full(int(data["n"]), -1, dtype=np.int64)
        np.maximum.at(last, ranking, position)
        final = position == last[ranking]
        ended = np.bincount(last[ranking[final]] + 1, weights=c[final], minlength=positions + 1)[:positions]
        mass = mass + np.cumsum(ended)
        return float((gained[mass > 0] / mass[mass > 0]).sum())


class PerDecisionDR(PerDecisionEstimator):
    name = "dr"

    def _statistic(self, counts: np.ndarray, data: dict[str, np.ndarray]) -> float:
        if "q" not in data:
            raise ValueError("estimated_rewards_by_reg_model is required by the doubly robust estimator")
        rows = np.arange(len(data["action"]))
        q = data["q"]
        terms = data["weights"] * (data["reward"] - q[rows, data["action"]]) + data["previous"] * (data["action_dist"] * q).sum(axis=1)
        return float((counts[data["ranking"]] * terms).sum() / max(counts.sum(), 1e-300))


ESTIMATORS: dict[str, type[PerDecisionEstimator]] = {cls.name: cls for cls in (PerDecisionIPS, PerDecisionSNIPS, PerDecisionDR)}
