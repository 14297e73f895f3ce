"""The guardrail: a promoted version whose live reward is significantly below its parent's is rolled back.

Every committed batch folds its rankings' rewards into per-version statistics (``{prefix}:learner:reward:<version>``:
n, sum, sum of squares). Once both the serving version and its parent have ``guardrail_min_rankings`` rankings,
a one-sided Welch test at ``guardrail_alpha`` decides.
"""

from __future__ import annotations

import logging
import math

import redis
from scipy import stats

from ranker.learning.config import LearnerConfig
from ranker.live.backend import key
from ranker.live.registry import PolicyRegistry

log = logging.getLogger(__name__)


def reward_stats(client: redis.Redis, prefix: str, version: str) -> tuple[float, float, float]:
    """(n, sum, sum of squares) of the live reward per ranking of ``version``."""
    values = client.hgetall(key(prefix, "learner", "reward", version))
    get = lambda name: float(values.get(name.encode(), 0.0))  # noqa: E731
    return get("n"), get("sum"), get("sumsq")


def guardrail(client: redis.Redis, registry: PolicyRegistry, config: LearnerConfig) -> str | None:
    """Roll back when the serving version's live reward is significantly below its parent's; returns what happened."""
    current = registry.current()
    history = registry.history()
    if not current or not history:
        return None
    parent = history[0]
    n_new, s_new, q_new = reward_stats(client, config.prefix, current)
    n_old, s_old, q_old = reward_stats(client, config.prefix, parent)
    minimum = config.guardrail_min_rankings
    if n_new < minimum or n_old < minimum:
        return None
    mean_new, mean_old = s_new / n_new, s_old / n_old
    var_new = max(q_new / n_new - mean_new**2, 0.0) * n_new / (n_new - 1)
    var_old = max(q_old / n_old - mean_old**2, 0.0) * n_old / (n_old - 1)
    test = stats.ttest_ind_from_stats(mean_new, math.sqrt(var_new), n_new, mean_old, math.sqrt(var_old), n_old, equal_var=False, alternative="less")
    if test.pvalue < config.guardrail_alpha:
        registry.rollback()
        message = f"rolled back {current} -> {parent}: live reward {mean_new:.4f} vs {mean_old:.4f} per ranking (Welch p={test.pvalue:.2g}, n={int(n_new)}/{int(n_old)})"
        client.hset(key(config.prefix, "learner", "rollbacks"), current, message)
        log.warning(message)
        return message
    return None
