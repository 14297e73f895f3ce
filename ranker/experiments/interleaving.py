"""Team-draft interleaving: compare two rankers inside one result list.

An A/B test shows each user one ranker and compares outcomes between two
groups of users, so the differences between users (some buy a lot, some
never) are noise the test must average away. Interleaving shows every user
one list built from both rankers and lets the user's clicks say which of the
two they preferred: each user is their own control, and far fewer sessions
reach a verdict (Chapelle, Joachims, Radlinski and Yue 2012, "Large-Scale
Validation and Analysis of Interleaved Search Evaluation", ACM TOIS).

**Team draft** (Radlinski, Kurup and Joachims 2008, "How Does Clickthrough
Data Reflect Retrieval Quality?", CIKM) builds the list like captains picking
teams: in every round a fair coin decides which team picks first, then each
team adds its highest-ranked item that is not in the list yet. A team whose
ranking has nothing left is skipped. Each position remembers the team that
picked it; a click on it is credit for that team.

**Analysis.** Credits are summed per user (the unit of randomisation of an
experiment, and sessions of one user are correlated). A user prefers A when
their clicks on A's items exceed those on B's. Over users with ``wins_a``,
``wins_b`` and ``ties``, the preference is
``delta_ab = (wins_a + ties / 2) / n - 0.5`` (Chapelle et al. 2012), positive
when A wins, with a normal confidence interval over per-user scores (1 for a
win, 1/2 for a tie, 0 for a loss). The test is the two-sided sign test
(binomial, p = 1/2) on wins against losses, ties dropped.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from typing import Any, TypeVar

import numpy as np

from ranker.experiments.stats import checkpoint_times, json_ready
from ranker.lazy import LazyModule

stats = LazyModule("scipy.stats")  # imported when a report is written (ranker.experiments.stats)

T = TypeVar("T", bound=Hashable)
TEAM_A, TEAM_B = 0, 1


def team_draft(a: Sequence[T], b: Sequence[T], length: int, rng: np.random.Generator) -> tuple[list[T], list[int]]:
    """Interleave rankings ``a`` and ``b`` into at most ``length`` items; returns (items, team of each position)."""
    rankings = (a, b)
    cursors = [0, 0]
    items: list[T] = []
    teams: list[int] = []
    placed: set[T] = set()

    def next_pick(team: int) -> T | None:
        """The team's highest-ranked item not placed yet (None when its ranking is exhausted)."""
        ranking = rankings[team]
        while cursors[team] < len(ranking) and ranking[cursors[team]] in placed:
            cursors[team] += 1
        return ranking[cursors[team]] if cursors[team] < len(ranking) else None

    while len(items) < length:
        order = (TEAM_A, TEAM_B) if rng.random() < 0.5 else (TEAM_B, TEAM_A)
        picked = False
        for team in order:
            item = next_pick(team) if len(items) < length else None
            if item is not None:
                items.append(item)
                teams.append(team)
                placed.add(item)
                picked = True
        if not picked:  # both rankings exhausted
            break
    return items, teams


def credit(teams: Sequence[int], clicked_positions: Iterable[int]) -> tuple[int, int]:
    """Clicks credited to A and to B: each click goes to the team that placed the clicked position."""
    counts = [0, 0]
    for position in clicked_positions:
        if not 0 <= position < len(teams):
            raise ValueError(f"clicked_positions: position {position} is outside the interleaved list of {len(teams)}")
        counts[teams[position]] += 1
    return counts[TEAM_A], counts[TEAM_B]


def analyse_interleaving(
    user: np.ndarray,
    credit_a: np.ndarray,
    credit_b: np.ndarray,
    ts: np.ndarray | None = None,
    *,
    alpha: float = 0.05,
    checkpoints: int = 40,
    arm_names: Sequence[str] = ("A", "B"),
) -> dict[str, Any]:
    """The report of an interleaving experiment from per-impression credits; JSON-ready.

    Keys: ``arm_names``, ``alpha``, ``n_impressions``, ``n_users``,
    ``wins_a``, ``wins_b``, ``ties``, ``delta_ab``, ``ci_low``, ``ci_high``,
    ``test``, ``p_value``, ``significant``, ``preferred`` (the arm the users
    significantly prefer, else None) and ``over_time`` (None without ``ts``).
    """
    user = np.asarray(user, dtype=np.int64).reshape(-1)
    columns = {"credit_a": credit_a, "credit_b": credit_b, **({} if ts is None else {"ts": ts})}
    columns = {name: np.asarray(values, dtype=np.float64).reshape(-1) for name, values in columns.items()}
    for name, values in columns.items():
        if len(values) != len(user):
            raise ValueError(f"{name}: {len(values)} entries for {len(user)} impressions")
    credit_a, credit_b = columns["credit_a"], columns["credit_b"]
    report = {"arm_names": list(arm_names), "alpha": alpha, **preference(user, credit_a, credit_b, alpha, arm_names)}
    report["over_time"] = None if ts is None else _over_time(user, credit_a, credit_b, columns["ts"], alpha, checkpoints)
    return json_ready(report)


def preference(user: np.ndarray, credit_a: np.ndarray, credit_b: np.ndarray, alpha: float, arm_names: Sequence[str]) -> dict[str, Any]:
    """Per-user wins, losses and ties, delta_ab with its interval, and the sign test."""
    users, index = np.unique(user, return_inverse=True)
    margin = np.bincount(index, weights=credit_a, minlength=len(users)) - np.bincount(index, weights=credit_b, minlength=len(users))
    wins_a, wins_b = int((margin > 0).sum()), int((margin < 0).sum())
    ties = len(users) - wins_a - wins_b
    scores = np.where(margin > 0, 1.0, np.where(margin < 0, 0.0, 0.5))
    delta = float(scores.mean() - 0.5) if len(scores) else math.nan
    half = stats.norm.ppf(1 - alpha / 2) * scores.std(ddof=1) / math.sqrt(len(scores)) if len(scores) >= 2 else math.nan
    p_value = float(stats.binomtest(wins_a, wins_a + wins_b, 0.5).pvalue) if wins_a + wins_b else math.nan
    significant = bool(p_value < alpha)
    preferred = (arm_names[0] if wins_a > wins_b else arm_names[1]) if significant else None
    return {
        "n_impressions": len(user),
        "n_users": len(users),
        "wins_a": wins_a,
        "wins_b": wins_b,
        "ties": ties,
        "delta_ab": delta,
        "ci_low": delta - half,
        "ci_high": delta + half,
        "test": "sign_test",
        "p_value": p_value,
        "significant": significant,
        "preferred": preferred,
    }


def _over_time(user: np.ndarray, credit_a: np.ndarray, credit_b: np.ndarray, ts: np.ndarray, alpha: float, checkpoints: int) -> dict[str, list[Any]]:
    """delta_ab, its interval and the sign test's p-value on the impressions up to each checkpoint."""
    series: dict[str, list[Any]] = {"ts": [], "n_impressions": [], "delta_ab": [], "ci_low": [], "ci_high": [], "p_value": []}
    for until in checkpoint_times(ts, checkpoints):
        seen = ts <= until
        point = preference(user[seen], credit_a[seen], credit_b[seen], alpha, ("A", "B"))
        series["ts"].append(float(until))
        for key in ("n_impressions", "delta_ab", "ci_low", "ci_high", "p_value"):
            series[key].append(point[key])
    return series
