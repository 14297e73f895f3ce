"""The guardrail: a promoted version whose live reward is significantly below its parent's is rolled back.

Every committed batch folds its rankings' rewards into per-version statistics (:func:`queue_reward`):
``{prefix}:learner:reward:<version>`` (n, sum, sum of squares of every ranking) and the *capped* statistics
``...:<version>:capped``, where each user counts with at most ``user_cap`` rankings per version (the first ones;
``...:<version>:users`` counts them), so a bot sending thousands of rankings without feedback cannot drag a
version's mean down and force a rollback. The guardrail reads the capped statistics: once both the serving
version and its parent have ``guardrail_min_rankings`` rankings there, a one-sided Welch test at
``guardrail_alpha`` decides.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import redis
from scipy import stats

from ranker.learning.config import LearnerConfig
from ranker.live.backend import key, queue_script
from ranker.live.registry import PolicyRegistry

log = logging.getLogger(__name__)


# KEYS: the version's per-user counts, its capped statistics. ARGV: user, cap, reward, reward squared.
_CAPPED_REWARD = """
if redis.call('HINCRBY', KEYS[1], ARGV[1], 1) <= tonumber(ARGV[2]) then
  redis.call('HINCRBYFLOAT', KEYS[2], 'n', 1)
  redis.call('HINCRBYFLOAT', KEYS[2], 'sum', ARGV[3])
  redis.call('HINCRBYFLOAT', KEYS[2], 'sumsq', ARGV[4])
end
return 1
"""


def queue_reward(pipe: Any, client: redis.Redis, prefix: str, version: str, user_key: str, reward: float, user_cap: float) -> None:
    """Queue on ``pipe`` (the commit's transaction) one ranking's reward into ``version``'s statistics, plain and capped."""
    reward_key = key(prefix, "learner", "reward", version)
    pipe.hincrbyfloat(reward_key, "n", 1)
    pipe.hincrbyfloat(reward_key, "sum", reward)
    pipe.hincrbyfloat(reward_key, "sumsq", reward**2)
    script = client.register_script(_CAPPED_REWARD)  # a Script object only (its sha): the pipeline loads it once
    keys = [key(prefix, "learner", "reward", version, "users"), key(prefix, "learner", "reward", version, "capped")]
    queue_script(pipe, script, keys=keys, args=[user_key, int(user_cap), repr(float(reward)), repr(float(reward) ** 2)])


def reward_stats(client: redis.Redis, prefix: str, version: str, *, capped: bool = False) -> tuple[float, float, float]:
    """(n, sum, sum of squares) of the live reward per ranking of ``version`` (``capped``: each user's first
    ``user_cap`` rankings only)."""
    values = client.hgetall(key(prefix, "learner", "reward", version, *(("capped",) if capped else ())))
    get = lambda name: float(values.get(name.encode(), 0.0))  # noqa: E731
    return get("n"), get("sum"), get("sumsq")


def guardrail(client: redis.Redis, registry: PolicyRegistry, config: LearnerConfig) -> str | None:
    """Roll back when the serving version's live reward is significantly below its parent's; returns what happened."""
    current = registry.current()
    history = registry.history()
    if not current or not history:
        return None
    parent = history[0]
    n_new, s_new, q_new = reward_stats(client, config.prefix, current, capped=True)
    n_old, s_old, q_old = reward_stats(client, config.prefix, parent, capped=True)
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
