"""Measure policies on the same seeded sessions: means per session with 95% intervals, and paired comparisons.

Every policy runs ``episodes`` sessions from ``env.reset(seed=seed)``: the
same world, the same shoppers, the same searches, in the same order (see
:mod:`envs.shopping`; :mod:`envs.session` also fixes each session's page
decisions and outcome draws). A policy's interval is Student's t over
sessions. Two policies are compared *paired*, session by session
(:func:`paired`): the difference of their means with the t interval of the
per-session differences, and the ratio of their means with the delta-method
interval of the linearised per-session values, ``(a_i - R b_i) / mean(b)``.
Per session: reward, clicks, carts, purchases, revenue, pages shown and
whether it ended without a purchase (abandonment).
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
    pages: np.ndarray | None = None  # pages shown per session (1 in SlateShopping)
    first_page_rewards: np.ndarray | None = None  # the reward earned on each session's first page

    @property
    def later_page_rewards(self) -> np.ndarray | None:
        """The reward earned after each session's first page."""
        return None if self.first_page_rewards is None else self.rewards - self.first_page_rewards

    @property
    def abandoned(self) -> np.ndarray:
        """1.0 for a session that ended without a purchase."""
        return (self.purchases == 0).astype(np.float64)

    def metric(self, name: str) -> np.ndarray:
        """Per-session values of ``name``: rewards, first_page_rewards, later_page_rewards, clicks, carts, purchases,
        revenue, pages or abandoned."""
        values = getattr(self, name)
        if values is None:
            raise ValueError(f"metric: {name!r} was not recorded")
        return np.asarray(values, dtype=np.float64)

    def summary(self) -> dict[str, Any]:
        mean, low, high = mean_ci95(self.rewards)
        purchases, purchases_low, purchases_high = mean_ci95(self.purchases)
        return {
            "reward_mean": mean,
            "reward_ci95": [low, high],
            "clicks_mean": float(self.clicks.mean()),
            "add_to_carts_mean": float(self.carts.mean()),
            "purchases_mean": purchases,
            "purchases_ci95": [purchases_low, purchases_high],
            "revenue_mean": float(self.revenue.mean()) if self.revenue is not None else None,
            "pages_mean": float(self.pages.mean()) if self.pages is not None else 1.0,
            "abandonment": float(self.abandoned.mean()),
            "sessions": len(self.rewards),
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

    totals = np.zeros((episodes, 7))
    started = time.perf_counter()
    for episode in tqdm(range(episodes), desc=name, unit="session", disable=not progress, leave=False):
        observation, _ = env.reset(seed=seed if episode == 0 else None)
        done = False
        while not done:
            observation, reward, terminated, truncated, info = env.step(policy(env, observation))
            totals[episode, :5] += (reward, info["click"], info["add_to_cart"], info["purchase"], info.get("revenue", 0.0))
            if info.get("page", 1) == 1:
                totals[episode, 6] += reward
            done = terminated or truncated
        totals[episode, 5] = info.get("pages", 1)
    rewards, clicks, carts, purchases, revenue, pages, first = totals.T.copy()
    return SessionLog(name, rewards, clicks, carts, purchases, seconds=time.perf_counter() - started, revenue=revenue, pages=pages, first_page_rewards=first)


def paired(treatment: np.ndarray, control: np.ndarray) -> dict[str, Any]:
    """``treatment`` against ``control``, per-session values of the same sessions: the mean difference with its 95%
    t interval, and the ratio of the means with its 95% delta-method interval (None when the control's mean is 0)."""
    a, b = np.asarray(treatment, dtype=np.float64), np.asarray(control, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired: {a.shape} sessions against {b.shape}; compare the same sessions")
    difference, low, high = mean_ci95(a - b)
    result: dict[str, Any] = {"difference": difference, "difference_ci95": [low, high], "ratio": None, "ratio_ci95": None}
    if b.mean() != 0:
        ratio = float(a.mean() / b.mean())
        linearised = (a - ratio * b) / b.mean()
        _, r_low, r_high = mean_ci95(linearised)
        result.update(ratio=ratio, ratio_ci95=[ratio + r_low, ratio + r_high])
    return result


def run_all(env: Any, policies: Mapping[str, Policy], *, episodes: int, seed: int, progress: bool = False) -> dict[str, SessionLog]:
    """Each policy's :class:`SessionLog` on the same sessions."""
    return {name: run_policy(env, policy, episodes=episodes, seed=seed, name=name, progress=progress) for name, policy in policies.items()}


def paired_table(
    logs: Mapping[str, SessionLog], reference: str, metrics: tuple[str, ...] = ("purchases", "rewards", "pages", "abandoned")
) -> dict[str, dict[str, Any]]:
    """{policy: {metric: :func:`paired` against ``reference``}} for every other policy."""
    base = logs[reference]
    return {name: {metric: paired(log.metric(metric), base.metric(metric)) for metric in metrics} for name, log in logs.items() if name != reference}


def compare(env: Any, policies: Mapping[str, Policy], *, episodes: int, seed: int, progress: bool = False) -> dict[str, dict[str, Any]]:
    """Each policy's summary on the same sessions, with ``oracle_ratio`` (and ``intent_blind_ratio``) when an
    ``oracle`` (an ``intent_blind_oracle``) is among them."""
    return summarise(run_all(env, policies, episodes=episodes, seed=seed, progress=progress))


def summarise(logs: Mapping[str, SessionLog]) -> dict[str, dict[str, Any]]:
    """:func:`compare`'s table from logs of the same sessions."""
    table = {name: log.summary() for name, log in logs.items()}
    for reference, field in (("oracle", "oracle_ratio"), ("intent_blind_oracle", "intent_blind_ratio")):
        if reference in logs:
            ceiling = logs[reference].rewards.mean()
            for name in table:
                table[name][field] = float(logs[name].rewards.mean() / ceiling) if ceiling > 0 else None
    return table


def format_table(table: Mapping[str, Mapping[str, Any]]) -> str:
    """A plain-text table of :func:`compare`'s result (pages and abandonment per session when a session has more
    than one page)."""
    sessions = any(row.get("pages_mean", 1.0) != 1.0 for row in table.values())
    extra = f"{'pages':>7}{'abandon':>9}" if sessions else ""
    lines = [
        f"{'policy':<20}{'reward/session':>16}{'95% CI':>22}{'clicks':>9}{'carts':>8}{'purchases':>11}{'revenue':>9}{extra}{'vs oracle':>11}{'vs blind':>10}"
    ]
    for name, row in table.items():
        low, high = row["reward_ci95"]
        ratio, blind = row.get("oracle_ratio"), row.get("intent_blind_ratio")
        pages = f"{row.get('pages_mean', 1.0):>7.2f}{row.get('abandonment', 0.0):>9.1%}" if sessions else ""
        lines.append(
            f"{name:<20}{row['reward_mean']:>16.4f}{f'[{low:.4f}, {high:.4f}]':>22}{row['clicks_mean']:>9.3f}"
            f"{row['add_to_carts_mean']:>8.3f}{row['purchases_mean']:>11.3f}{row.get('revenue_mean') or 0.0:>9.2f}{pages}"
            f"{'' if ratio is None else f'{ratio:.1%}':>11}{'' if blind is None else f'{blind:.1%}':>10}"
        )
    return "\n".join(lines)


def format_paired(paired_rows: Mapping[str, Mapping[str, Any]], reference: str) -> str:
    """A plain-text table of :func:`paired_table`: each policy against ``reference`` on the same sessions."""
    lines = [
        f"paired against {reference} (same sessions, 95% intervals)",
        f"{'policy':<20}{'purchases: difference':>30}{'ratio':>26}{'pages':>30}{'abandonment':>30}",
    ]
    for name, row in paired_rows.items():
        cells = []
        for metric in ("purchases", "pages", "abandoned"):
            value = row[metric]
            low, high = value["difference_ci95"]
            cells.append(f"{value['difference']:+.4f} [{low:+.4f}, {high:+.4f}]")
            if metric == "purchases":
                ratio = value["ratio"]
                cells.append("" if ratio is None else f"{ratio:.3f}x [{value['ratio_ci95'][0]:.3f}, {value['ratio_ci95'][1]:.3f}]")
        lines.append(f"{name:<20}{cells[0]:>30}{cells[1]:>26}{cells[2]:>30}{cells[3]:>30}")
    return "\n".join(lines)
