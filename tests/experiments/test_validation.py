"""Validation of the A/B harness on simulated shoppers (issue 7), with fixed seeds.

The sessions come from the shopper simulator on the demo shop fixture
(``envs/SlateShopping-v0``, retrieval order). Its users differ in budget,
brand taste, patience and activity, and active users come back, so one
user's sessions are correlated; the tests check the harness handles that.
``bench/ab.py`` prints the same figures with more experiments.
"""

from __future__ import annotations

import statistics

import gymnasium as gym
import numpy as np
import pytest
from scipy import stats

import envs  # noqa: F401  (registers the environments)
from ranker.experiments.stats import ratio_estimate, user_sums
from ranker.experiments.validation import (
    aa_experiments,
    oracle_ranking,
    planned_users,
    power_runs,
    retrieval_ranking,
    sessions_to_significance,
    simulate_pool,
    srm_run,
)

ALPHA = 0.05
POOL_SESSIONS = 4000


@pytest.fixture(scope="module")
def make_env(sim_catalog):
    return lambda: gym.make("envs/SlateShopping-v0", catalog=sim_catalog)


@pytest.fixture(scope="module")
def pool(make_env):
    """4,000 sessions of retrieval order in world 0 (about 1,300 users)."""
    return simulate_pool(make_env(), retrieval_ranking, n_sessions=POOL_SESSIONS, seed=0)


def test_the_pool_has_returning_users_whose_sessions_are_correlated(pool, make_env):
    """The design effect the user-level analysis accounts for: the user-level ratio estimate's variance over the
    independent-sessions one, averaged over three worlds (one pool's estimate is noisy: 1.07 to 1.23 across worlds 0-2)."""
    sessions_per_user = np.bincount(pool.user)[pool.users]
    assert (sessions_per_user > 1).mean() > 0.4
    effects = []
    for world in (
        pool,
        simulate_pool(make_env(), retrieval_ranking, n_sessions=POOL_SESSIONS, seed=1),
        simulate_pool(make_env(), retrieval_ranking, n_sessions=POOL_SESSIONS, seed=2),
    ):
        everyone = world.sessions(np.zeros(world.user.max() + 1, dtype=int))
        estimate = ratio_estimate(user_sums(everyone, np.ones(POOL_SESSIONS, dtype=bool), "purchases_per_session"))
        effects.append(estimate.variance / (world.purchases.var(ddof=1) / POOL_SESSIONS))
    assert np.mean(effects) > 1.1, effects


def test_aa_false_positive_rate_is_within_alpha_and_only_the_always_valid_p_survives_peeking(pool):
    """200 A/A splits of the pool (hash assignment, salt ``aa-<i>``), each read at 20 peeks.

    Measured (seed 0): 9 of 200 fixed-horizon false positives (4.5%), 38 of
    200 (19%) when stopping at the first of 20 peeks with p < 0.05, 0 of 200
    with the mSPRT's always-valid p-value at the same peeks.
    """
    result = aa_experiments(pool, n_experiments=200, peeks=20, alpha=ALPHA)
    rates = result.rates()
    print(f"\nA/A false-positive rates over {result.n_experiments} experiments, {result.peeks} peeks: {rates}")
    low, high = stats.binomtest(result.false_positives_fixed, result.n_experiments).proportion_ci(0.99)
    assert low <= ALPHA <= high, f"fixed-horizon Welch: {rates['fixed_horizon']:.3f}, 99% CI [{low:.3f}, {high:.3f}]"
    above = lambda count: stats.binomtest(count, result.n_experiments, ALPHA, alternative="greater").pvalue  # noqa: E731
    assert above(result.false_positives_msprt) > 0.01, f"mSPRT under peeking: {rates['msprt_peeking']:.3f}"
    # The test can fail: naive peeking at the fixed-horizon p-value is well above alpha.
    assert above(result.false_positives_peeking) < 0.001, f"naive peeking: {rates['naive_peeking']:.3f}"


def test_a_10_percent_lift_is_detected_in_at_least_80_percent_of_runs_at_the_documented_size(pool):
    """A +10% relative lift of the purchase rate, planted in the treatment arm.

    The documented sample size (docs/experiments.md) is
    ``required_users(rate, sd, 0.10, power=0.9)`` users per arm: planned at
    90% so that the 80% the issue asks for holds although the rate and the
    per-user sd are themselves estimates (planned at exactly 80%, the
    measured power was 78.4% of 500 runs, as expected of a coin with p=0.8).
    Each run resamples 2 x n users with their sessions from the pool (with
    replacement) and turns a share of the treatment's sessions without a
    purchase into one, so that its purchase rate is 10% higher.
    """
    rate, sd, n_per_arm = planned_users(pool, 0.10, power=0.9)
    assert 0.3 < rate < 0.45 and 1_300 <= n_per_arm <= 1_900, (rate, sd, n_per_arm)
    result = power_runs(pool, relative_effect=0.10, n_runs=300, alpha=ALPHA, power=0.9, seed=0)
    print(
        f"\npower: {result.detections}/{result.n_runs} = {result.power:.3f} at {result.users_per_arm} users per arm "
        f"(baseline {result.baseline_rate:.3f}, per-user sd {result.sd_per_user:.3f})"
    )
    low, _ = stats.binomtest(result.detections, result.n_runs).proportion_ci(0.95)
    assert result.power >= 0.8 and low >= 0.8, f"power {result.power:.3f}, 95% CI from {low:.3f} at {n_per_arm} users per arm"


def test_srm_flags_a_45_55_split_of_a_50_50_design(pool):
    broken = srm_run(pool, n_users=10_000, actual_weights=[0.45, 0.55], design_weights=[0.5, 0.5])
    healthy = srm_run(pool, n_users=10_000, actual_weights=[0.5, 0.5], design_weights=[0.5, 0.5])
    assert broken["flagged"], broken
    assert not healthy["flagged"], healthy


def test_interleaving_detects_a_better_ranker_with_fewer_sessions_than_an_ab_test(make_env):
    """The oracle's ordering against retrieval order, in 4 simulated worlds.

    Interleaving: team draft of the two rankings, a click credits the team
    that placed the item, sign test over users. A/B: users hashed 50/50,
    Welch's test on the click-through rate (the same signal, clicks). Both
    read every 10 sessions; "needed" is the first reading from which the test
    stays at p < 0.05 up to the budget (400 interleaved, 2,000 A/B sessions).

    Measured on the fixture shop: interleaving 60, 100, 50, 140 sessions;
    A/B 300, 510, 330, 1,060 (medians 80 vs 420, about 5x fewer).
    """
    results = sessions_to_significance(
        make_env, oracle_ranking, retrieval_ranking, seeds=range(4), max_interleaving=400, max_ab=2000, every=10, alpha=ALPHA, metric="click_through"
    )
    table = "\n".join(
        f"seed {r.seed}: interleaving {r.interleaving} (delta_AB {r.delta_ab:+.3f}), A/B {r.ab} (click-through difference {r.ab_difference:+.3f})"
        for r in results
    )
    print(f"\nsessions to a settled p < {ALPHA}, oracle vs retrieval:\n{table}")
    assert all(r.delta_ab > 0 and r.ab_difference < 0 for r in results), table  # both see the oracle as better
    assert all(r.interleaving is not None for r in results), table
    never = 2000 + 10  # an A/B test that did not settle within its budget needed more than the budget
    assert all(r.interleaving < (r.ab or never) for r in results), table
    median_interleaving = statistics.median(r.interleaving for r in results)
    median_ab = statistics.median(r.ab or never for r in results)
    assert 2 * median_interleaving < median_ab, table
