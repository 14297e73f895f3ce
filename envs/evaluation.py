"""Measure policies on the same seeded sessions: mean reward per session with a 95% interval.

Every policy runs ``episodes`` sessions from ``env.reset(seed=seed)``: the
same world, the same shoppers, the same searches, in the same order (see
:mod:`envs.shopping`). The interval is Student's t over sessions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats
from tqdm.auto import tqdm

from envs.policies import Policy


@dataclass
class SessionLog:
    """Per-session totals of one policy."""

    name: str
    rewards: np.ndarray
    clicks: np.ndarray
    carts: np.ndarray
    purchases: np.ndarray
    seconds: float = 0.0
    revenue: np.ndarray | None = None  # the prices of what was bought

    def summary(self) -> dict[str, Any]:
        mean, low, high = mean_ci95(self.rewards)
        return {
            "reward_mean": mean,
            "reward_ci95": [low, high],
            "clicks_mean": float(self.clicks.mean()),
            "add_to_carts_mean": float(self.carts.mean()),
            "purchases_mean": float(self.purchases.mean()),
            "revenue_mean": float(self.revenue.mean()) if self.revenue is not None else None,
            "sessions_per_second": len(self.rewards) / self.seconds if self.seconds else None,
        }


def mean_ci95(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and its 95% Student-t interval."""
    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    if len(values) < 2 or values.std() == 0:
        return mean, mean, mean
    low, high = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=stats.sem(values))
    return mean, float(low), float(high)


def run_policy(env: Any, policy: Policy, *, episodes: int, seed: int, name: str = "policy", progress: bool = False) -> SessionLog:
    """``episodes`` sessions of ``policy`` from a new world seeded ``seed``."""
    import time

    totals = np.zeros((episodes, 5))
    started = time.perf_counter()
    for episode in tqdm(range(episodes), desc=name, unit="session", disable=not progress, leave=False):
        observation, _ = env.reset(seed=seed if episode == 0 else None)
        done = False
        while not done:
            observation, reward, terminated, truncated, info = env.step(policy(env, observation))
            totals[episode] += (reward, info["click"], info["add_to_cart"], info["purchase"], info.get("revenue", 0.0))
            done = terminated or truncated
    rewards, clicks, carts, purchases, revenue = totals.T.copy()
    return SessionLog(name, rewards, clicks, carts, purchases, seconds=time.perf_counter() - started, revenue=revenue)


def compare(env: Any, policies: Mapping[str, Policy], *, episodes: int, seed: int, progress: bool = False) -> dict[str, dict[str, Any]]:
    """Each policy's summary on the same sessions, with ``oracle_ratio`` (and ``intent_blind_ratio``) when an
    ``oracle`` (an ``intent_blind_oracle``) is among them."""
    logs = {name: run_policy(env, policy, episodes=episodes, seed=seed, name=name, progress=progress) for name, policy in policies.items()}
    table = {name: log.summary() for name, log in logs.items()}
    for reference, field in (("oracle", "oracle_ratio"), ("intent_blind_oracle", "intent_blind_ratio")):
        if reference in logs:
            ceiling = logs[reference].rewards.mean()
            for name in table:
                table[name][field] = float(logs[name].rewards.mean() / ceiling) if ceiling > 0 else None
    return table


def format_table(table: Mapping[str, Mapping[str, Any]]) -> str:
    """A plain-text table of :func:`compare`'s result."""
    lines = [f"{'policy':<20}{'reward/session':>16}{'95% CI':>22}{'clicks':>9}{'carts':>8}{'purchases':>11}{'revenue':>9}{'vs oracle':>11}{'vs blind':>10}"]
    for name, row in table.items():
        low, high = row["reward_ci95"]
        ratio, blind = row.get("oracle_ratio"), row.get("intent_blind_ratio")
        lines.append(
            f"{name:<20}{row['reward_mean']:>16.4f}{f'[{low:.4f}, {high:.4f}]':>22}{row['clicks_mean']:>9.3f}"
            f"{row['add_to_carts_mean']:>8.3f}{row['purchases_mean']:>11.3f}{row.get('revenue_mean') or 0.0:>9.2f}{'' if ratio is None else f'{ratio:.1%}':>11}"
            f"{'' if blind is None else f'{blind:.1%}':>10}"
        )
    return "\n".join(lines)
