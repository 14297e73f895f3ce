"""Validation of the A/B harness on simulated shoppers: false positives, power, sample ratio, interleaving.

The statistics of :mod:`ranker.experiments.stats` and :mod:`ranker.experiments.interleaving` are
checked against sessions played in the shopper simulator (``envs``), whose
users differ in budget, brand taste, patience and activity, so one user's
sessions are correlated, as in a real shop.

- :func:`simulate_pool`: sessions of one ranker, with the simulated user of
  each. Experiments are then built from the pool by assigning its users to
  arms (``ranker.experiments.assignment``, a new salt per experiment), so every
  experiment is a re-randomisation of the same users.
- :func:`aa_experiments`: A/A experiments (no difference between the arms).
  The share declared significant is the false-positive rate: at one final
  look (Welch), when peeking at the fixed-horizon p-value after every batch
  and stopping at the first p < alpha (naive peeking), and with the mSPRT's
  always-valid p-value read at the same peeks.
- :func:`power_runs`: a planted lift of the purchase rate in the treatment
  arm, at the sample size :func:`ranker.experiments.stats.required_users` gives.
- :func:`srm_run`: users split 45/55 by a broken assignment but analysed as
  50/50.
- :func:`sessions_to_significance`: the same planted preference (two rankers
  of different quality: the oracle's ordering against retrieval order, or
  retrieval order against itself with the top shuffled) measured by
  team-draft interleaving and by an A/B test: how many sessions each needs
  before its test says so for good.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ranker.experiments.assignment import arm_of
from ranker.experiments.interleaving import credit, preference, team_draft
from ranker.experiments.stats import Difference, Sessions, analyse, per_user_sd, ratio_estimate, required_users, user_sums, welch
from ranker.ranking.features import FEATURES

Ranker = Callable[[Any, dict[str, np.ndarray]], list[int]]  # (env, observation) -> available slots, best first
RETRIEVAL_RANK = FEATURES.index("retrieval_rank")


@dataclass(frozen=True)
class SessionPool:
    """Per-session outcomes of simulated sessions, in the order they were played (``ts``)."""

    user: np.ndarray
    ts: np.ndarray
    clicks: np.ndarray
    purchases: np.ndarray
    revenue: np.ndarray

    @property
    def users(self) -> np.ndarray:
        """The distinct users of the pool."""
        return np.unique(self.user)

    def sessions(self, arm_of_user: dict[int, int] | np.ndarray) -> Sessions:
        """The pool as an experiment's :class:`~ranker.experiments.stats.Sessions`, each session in its user's arm."""
        arm = np.array([arm_of_user[int(user)] for user in self.user], dtype=np.int64)
        return Sessions(arm=arm, user=self.user, ts=self.ts, clicks=self.clicks, purchases=self.purchases, revenue=self.revenue)


# ---------------------------------------------------------------- rankers
def retrieval_ranking(env: Any, observation: dict[str, np.ndarray]) -> list[int]:
    """The available candidates in retrieval order (what the service shows without a policy)."""
    available = np.flatnonzero(observation["mask"])
    return available[np.argsort(observation["features"][available, RETRIEVAL_RANK], kind="stable")].tolist()


def oracle_ranking(env: Any, observation: dict[str, np.ndarray]) -> list[int]:
    """The available candidates by the oracle's index ``r / (1 - c)`` on the true probabilities (``envs.policies``).

    Computed once for the whole slate, so unlike ``OraclePolicy`` it ignores
    the near-duplicate discount; still far better than retrieval order.
    """
    reward, continuation = env.unwrapped.expected_rewards()
    index = reward / np.maximum(1.0 - continuation, 1e-9)
    available = np.flatnonzero(observation["mask"])
    return available[np.argsort(-index[available], kind="stable")].tolist()


def shuffled_top(ranker: Ranker, k: int, seed: int) -> Ranker:
    """``ranker`` with its first ``k`` candidates in random order: a slightly worse ranker, for a subtle planted preference."""
    rng = np.random.default_rng(seed)

    def shuffled(env: Any, observation: dict[str, np.ndarray]) -> list[int]:
        ranking = ranker(env, observation)
        return rng.permutation(ranking[:k]).tolist() + ranking[k:]

    return shuffled


# ------------------------------------------------------------- simulation
@dataclass(frozen=True)
class SlateOutcome:
    """What the shopper did with one slate."""

    clicked_positions: list[int]
    purchases: int
    revenue: float


def play_slate(env: Any, slots: Sequence[int]) -> SlateOutcome:
    """Show ``slots`` in order to the current session's shopper; revenue is the price of what they bought."""
    simulator = env.unwrapped
    clicked, purchases, revenue = [], 0, 0.0
    for position, slot in enumerate(slots):
        _, _, _, _, info = env.step(int(slot))
        if info["click"]:
            clicked.append(position)
        if info["purchase"]:
            purchases += 1
            revenue += float(simulator.catalog.prices[simulator.rows[slot]])
    return SlateOutcome(clicked, purchases, revenue)


def simulate_pool(env: Any, ranker: Ranker, *, n_sessions: int, seed: int) -> SessionPool:
    """``n_sessions`` sessions of a new world seeded ``seed``, each shown ``ranker``'s slate."""
    length = env.unwrapped.config.slate_size
    columns = np.zeros((4, n_sessions))
    for index in range(n_sessions):
        observation, info = env.reset(seed=seed if index == 0 else None)
        outcome = play_slate(env, ranker(env, observation)[:length])
        columns[:, index] = (info["user"], len(outcome.clicked_positions), outcome.purchases, outcome.revenue)
    user, clicks, purchases, revenue = columns
    return SessionPool(user=user.astype(np.int64), ts=np.arange(n_sessions, dtype=np.float64), clicks=clicks, purchases=purchases, revenue=revenue)


# ------------------------------------------------------------------ A/A
@dataclass(frozen=True)
class AAResult:
    """False-positive rates of A/A experiments on one pool."""

    n_experiments: int
    peeks: int
    false_positives_fixed: int  # the Welch test at the end
    false_positives_peeking: int  # the Welch test at any peek (naive peeking)
    false_positives_msprt: int  # the always-valid p-value at any peek

    def rates(self) -> dict[str, float]:
        return {
            name: count / self.n_experiments
            for name, count in (
                ("fixed_horizon", self.false_positives_fixed),
                ("naive_peeking", self.false_positives_peeking),
                ("msprt_peeking", self.false_positives_msprt),
            )
        }


def assign(users: np.ndarray, salt: str, weights: Sequence[float]) -> dict[int, int]:
    """Each user's arm by the service's hash assignment."""
    return {int(user): arm_of(salt, str(int(user)), weights) for user in users}


def aa_experiments(pool: SessionPool, *, n_experiments: int, peeks: int = 20, alpha: float = 0.05, primary: str = "purchases_per_session") -> AAResult:
    """``n_experiments`` A/A splits of the pool's users (salt ``aa-<i>``), each read at ``peeks`` times."""
    fixed = peeking = msprt = 0
    for experiment in range(n_experiments):
        arms = assign(pool.users, f"aa-{experiment}", [0.5, 0.5])
        report = analyse(pool.sessions(arms), ["A", "A'"], [0.5, 0.5], primary=primary, alpha=alpha, checkpoints=peeks)
        final = next(c for c in report["comparisons"] if c["metric"] == primary and c["test"] == "welch_t")
        readings = report["over_time"]["p_values"]["A'"]["fixed_horizon"]
        fixed += final["p_value"] is not None and final["p_value"] < alpha
        peeking += any(p is not None and p < alpha for p in readings)
        msprt += report["sequential"]["arms"][0]["significant"]
    return AAResult(n_experiments, peeks, fixed, peeking, msprt)


# ---------------------------------------------------------------- power
@dataclass(frozen=True)
class PowerResult:
    """Detection rate of a planted lift at the planned sample size."""

    baseline_rate: float
    sd_per_user: float
    relative_effect: float
    users_per_arm: int
    n_runs: int
    detections: int

    @property
    def power(self) -> float:
        return self.detections / self.n_runs


def resample_users(pool: SessionPool, n_users: int, rng: np.random.Generator) -> SessionPool:
    """``n_users`` users drawn from the pool with replacement, each with all their sessions, renumbered 0..n_users-1."""
    order = np.argsort(pool.user, kind="stable")
    users, starts, counts = np.unique(pool.user[order], return_index=True, return_counts=True)
    drawn = rng.integers(len(users), size=n_users)
    new_user = np.repeat(np.arange(n_users), counts[drawn])
    offsets = np.arange(len(new_user)) - np.repeat(np.cumsum(counts[drawn]) - counts[drawn], counts[drawn])
    rows = order[np.repeat(starts[drawn], counts[drawn]) + offsets]
    return SessionPool(user=new_user, ts=pool.ts[rows], clicks=pool.clicks[rows], purchases=pool.purchases[rows], revenue=pool.revenue[rows])


def plant_purchase_lift(pool: SessionPool, treated: np.ndarray, relative_effect: float, baseline_rate: float, rng: np.random.Generator) -> SessionPool:
    """Turn a share of the treated sessions without a purchase into one purchase, so the purchase rate rises by ``relative_effect``.

    The share ``s`` solves ``p + s (1 - p) = p (1 + relative_effect)``; a
    converted session gets a click and the pool's mean order value.
    """
    share = relative_effect * baseline_rate / (1 - baseline_rate)
    converted = treated & (pool.purchases == 0) & (rng.random(len(pool.user)) < share)
    order_value = pool.revenue.sum() / max(pool.purchases.sum(), 1.0)
    return SessionPool(
        user=pool.user,
        ts=pool.ts,
        clicks=np.where(converted, np.maximum(pool.clicks, 1), pool.clicks),
        purchases=np.where(converted, 1.0, pool.purchases),
        revenue=pool.revenue + converted * order_value,
    )


def planned_users(pool: SessionPool, relative_effect: float, *, alpha: float = 0.05, power: float = 0.8) -> tuple[float, float, int]:
    """(baseline purchase rate, per-user sd, users per arm) for detecting ``relative_effect`` on the purchase rate."""
    everyone = Sessions(arm=np.zeros(len(pool.user)), user=pool.user, ts=pool.ts, clicks=pool.clicks, purchases=pool.purchases, revenue=pool.revenue)
    sums = user_sums(everyone, np.ones(len(pool.user), dtype=bool), "purchase_rate")
    rate = ratio_estimate(sums).value
    sd = per_user_sd(sums.numerator, sums.sessions)
    return rate, sd, required_users(rate, sd, relative_effect, alpha=alpha, power=power)


def power_runs(pool: SessionPool, *, relative_effect: float = 0.10, n_runs: int = 100, alpha: float = 0.05, power: float = 0.8, seed: int = 0) -> PowerResult:
    """Experiments of ``required_users`` users per arm resampled from the pool, the lift planted in arm 1."""
    rate, sd, n_per_arm = planned_users(pool, relative_effect, alpha=alpha, power=power)
    rng = np.random.default_rng(seed)
    detections = 0
    for _ in range(n_runs):
        sample = resample_users(pool, 2 * n_per_arm, rng)
        arm = (sample.user >= n_per_arm).astype(np.int64)  # the draw is random, so halves are a random split
        sample = plant_purchase_lift(sample, arm == 1, relative_effect, rate, rng)
        sessions = Sessions(arm=arm, user=sample.user, ts=sample.ts, clicks=sample.clicks, purchases=sample.purchases, revenue=sample.revenue)
        control, treatment = (ratio_estimate(user_sums(sessions, arm == a, "purchase_rate")) for a in (0, 1))
        detections += welch(treatment, control, alpha).p_value < alpha
    return PowerResult(rate, sd, relative_effect, n_per_arm, n_runs, detections)


# ------------------------------------------------------------------ SRM
def srm_run(
    pool: SessionPool, *, n_users: int, actual_weights: Sequence[float], design_weights: Sequence[float], salt: str = "srm", seed: int = 0
) -> dict[str, Any]:
    """The SRM check of ``n_users`` resampled users assigned with ``actual_weights`` but analysed against ``design_weights``."""
    sample = resample_users(pool, n_users, np.random.default_rng(seed))
    arms = assign(np.arange(n_users), salt, actual_weights)
    report = analyse(sample.sessions(arms), [f"arm{i}" for i in range(len(design_weights))], list(design_weights), checkpoints=1)
    return report["srm"]


# --------------------------------------------------- interleaving vs A/B
@dataclass(frozen=True)
class SessionsNeeded:
    """Sessions each method needed until its test settled at p < alpha, in one simulated world (None: not within the budget)."""

    seed: int
    interleaving: int | None
    ab: int | None
    delta_ab: float  # interleaving's preference for A at its budget (> 0: A preferred)
    ab_difference: float  # the A/B metric of arm 1 minus arm 0 at its budget


def interleaving_log(env: Any, ranker_a: Ranker, ranker_b: Ranker, *, n_sessions: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, credit to A, credit to B) per session of team-draft interleaved slates."""
    length = env.unwrapped.config.slate_size
    rng = np.random.default_rng([seed, 2])
    log = np.zeros((3, n_sessions))
    for index in range(n_sessions):
        observation, info = env.reset(seed=seed if index == 0 else None)
        slots, teams = team_draft(ranker_a(env, observation), ranker_b(env, observation), length, rng)
        outcome = play_slate(env, slots)
        log[:, index] = (info["user"], *credit(teams, outcome.clicked_positions))
    return log[0].astype(np.int64), log[1], log[2]


def ab_log(env: Any, ranker_a: Ranker, ranker_b: Ranker, *, n_sessions: int, seed: int) -> Sessions:
    """Sessions of an A/B test: each user sees the ranker of their arm (hash assignment, 50/50)."""
    length = env.unwrapped.config.slate_size
    rankers = (ranker_a, ranker_b)
    salt = f"ab-{seed}"
    columns = np.zeros((5, n_sessions))
    for index in range(n_sessions):
        observation, info = env.reset(seed=seed if index == 0 else None)
        arm = arm_of(salt, str(info["user"]), [0.5, 0.5])
        outcome = play_slate(env, rankers[arm](env, observation)[:length])
        columns[:, index] = (arm, info["user"], len(outcome.clicked_positions), outcome.purchases, outcome.revenue)
    arm, user, clicks, purchases, revenue = columns
    return Sessions(arm=arm, user=user, ts=np.arange(n_sessions, dtype=np.float64), clicks=clicks, purchases=purchases, revenue=revenue)


def settled_at(n_values: Sequence[int], p_values: Sequence[float], alpha: float) -> int | None:
    """The first ``n`` from which every reading is significant up to the last one (None: not significant at the end).

    Unlike the first ``n`` with p < alpha, a chance dip below alpha that
    comes back up does not count.
    """
    settled = None
    for n, p_value in zip(reversed(n_values), reversed(p_values)):
        if not p_value < alpha:
            break
        settled = n
    return settled


def sessions_to_significance(
    make_env: Callable[[], Any],
    ranker_a: Ranker,
    ranker_b: Ranker,
    *,
    seeds: Sequence[int],
    max_interleaving: int,
    max_ab: int,
    every: int = 10,
    alpha: float = 0.05,
    metric: str = "click_through",
) -> list[SessionsNeeded]:
    """Per world seed: sessions until interleaving's sign test, and an A/B Welch test on ``metric``, settle at p < alpha.

    Both methods meet the same shoppers with the same searches (a fresh env
    per method, same seed), and both are read every ``every`` sessions up
    to their budget (``max_interleaving``, ``max_ab`` sessions).
    """
    results = []
    for seed in seeds:
        user, credit_a, credit_b = interleaving_log(make_env(), ranker_a, ranker_b, n_sessions=max_interleaving, seed=seed)
        sessions = ab_log(make_env(), ranker_a, ranker_b, n_sessions=max_ab, seed=seed)
        interleaving_n = list(range(every, max_interleaving + 1, every))
        interleaving_p = [preference(user[:n], credit_a[:n], credit_b[:n], alpha, ("A", "B"))["p_value"] for n in interleaving_n]
        ab_n = list(range(every, max_ab + 1, every))
        ab_p = [_ab_test(sessions, n, metric, alpha).p_value for n in ab_n]
        results.append(
            SessionsNeeded(
                seed,
                settled_at(interleaving_n, interleaving_p, alpha),
                settled_at(ab_n, ab_p, alpha),
                delta_ab=preference(user, credit_a, credit_b, alpha, ("A", "B"))["delta_ab"],
                ab_difference=_ab_test(sessions, max_ab, metric, alpha).difference,
            )
        )
    return results


def _ab_test(sessions: Sessions, n: int, metric: str, alpha: float) -> Difference:
    """Welch's test of arm 1 against arm 0 on the first ``n`` sessions."""
    first = sessions.ts < n
    control, treatment = (ratio_estimate(user_sums(sessions, first & (sessions.arm == arm), metric)) for arm in (0, 1))
    return welch(treatment, control, alpha)
