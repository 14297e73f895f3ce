"""A/B statistics, team-draft interleaving and report plots on synthetic data with known answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportions_ztest

from ranker.experiments.interleaving import analyse_interleaving, credit, team_draft
from ranker.experiments.plots import plot_report
from ranker.experiments.stats import (
    AnalysisError,
    Sessions,
    analyse,
    beta_binomial,
    cuped,
    holm,
    msprt_p_value,
    per_user_sd,
    ratio_estimate,
    required_users,
    srm_check,
    user_sums,
)


def clustered_sessions(seed: int, n_users: int = 2000, *, lift: float = 0.0, with_pre: bool = False) -> Sessions:
    """Users with their own purchase propensity and a geometric number of sessions; arm = user parity.

    ``pre`` (with ``with_pre``) is a noisy reading of the user's propensity,
    unknown for a fifth of the users.
    """
    rng = np.random.default_rng(seed)
    propensity = rng.beta(1.0, 3.0, size=n_users)
    n_sessions = rng.geometric(0.4, size=n_users)
    user = np.repeat(np.arange(n_users), n_sessions)
    arm = user % 2
    purchases = (rng.random(len(user)) < np.clip(propensity[user] * (1 + lift * arm), 0, 1)).astype(float)
    clicks = purchases + (rng.random(len(user)) < 0.4)
    pre = None
    if with_pre:
        pre = propensity + rng.normal(0, 0.05, size=n_users)
        pre[rng.random(n_users) < 0.2] = np.nan
    return Sessions(
        arm=arm,
        user=user,
        ts=rng.permutation(len(user)).astype(float),
        clicks=clicks,
        purchases=purchases,
        revenue=purchases * rng.gamma(2.0, 25.0, size=len(user)),
        pre=pre,
    )


def comparison(report: dict, metric: str, test: str = "welch_t", arm: str = "B") -> dict:
    return next(c for c in report["comparisons"] if c["metric"] == metric and c["test"] == test and c["arm"] == arm)


# ------------------------------------------------------------ estimates
def test_delta_method_variance_matches_a_user_bootstrap_and_exceeds_the_session_level_one():
    sessions = clustered_sessions(seed=1)
    sums = user_sums(sessions, sessions.arm == 0, "purchases_per_session")
    estimate = ratio_estimate(sums)
    rng = np.random.default_rng(2)
    draws = rng.integers(len(sums.user), size=(2000, len(sums.user)))
    bootstrap = sums.numerator[draws].sum(axis=1) / sums.sessions[draws].sum(axis=1)
    assert math.sqrt(estimate.variance) == pytest.approx(bootstrap.std(ddof=1), rel=0.08)
    session_level = sessions.purchases[sessions.arm == 0]
    naive_sd = session_level.std(ddof=1) / math.sqrt(len(session_level))
    assert math.sqrt(estimate.variance) > 1.15 * naive_sd  # sessions of one user are correlated


def test_welch_on_one_session_per_user_is_scipys_welch_test():
    rng = np.random.default_rng(3)
    revenue = np.concatenate([rng.gamma(2.0, 10.0, 300), rng.gamma(2.0, 12.0, 250)])
    arm = np.repeat([0, 1], [300, 250])
    sessions = Sessions(arm=arm, user=np.arange(550), ts=np.arange(550.0), clicks=np.ones(550), purchases=np.ones(550), revenue=revenue)
    entry = comparison(analyse(sessions, ["A", "B"], [0.5, 0.5]), "revenue_per_session")
    expected = stats.ttest_ind(revenue[arm == 1], revenue[arm == 0], equal_var=False)
    interval = expected.confidence_interval(0.95)
    assert entry["p_value"] == pytest.approx(expected.pvalue, rel=1e-9)
    assert (entry["ci_low"], entry["ci_high"]) == pytest.approx((interval.low, interval.high), rel=1e-9)
    assert entry["difference"] == pytest.approx(revenue[arm == 1].mean() - revenue[arm == 0].mean())


def test_two_proportion_z_test_is_statsmodels_on_session_counts():
    sessions = clustered_sessions(seed=4, lift=0.2)
    report = analyse(sessions, ["A", "B"], [0.5, 0.5])
    converted = sessions.purchases > 0
    counts = [int(converted[sessions.arm == arm].sum()) for arm in (1, 0)]
    trials = [int((sessions.arm == arm).sum()) for arm in (1, 0)]
    entry = comparison(report, "purchase_rate", "two_proportion_z")
    assert entry["p_value"] == pytest.approx(proportions_ztest(counts, trials)[1], rel=1e-9)
    assert "independent sessions" in entry["note"]
    # Same difference as the clustered test, but a narrower (overconfident) interval.
    welch_entry = comparison(report, "purchase_rate")
    assert entry["difference"] == pytest.approx(welch_entry["difference"])
    assert entry["ci_high"] - entry["ci_low"] < welch_entry["ci_high"] - welch_entry["ci_low"]


def test_holm_adjustment_is_statsmodels_and_applies_across_treatment_arms():
    assert holm([0.01, 0.04, 0.03], 0.05) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.02, None], 0.05) == [0.02, None]
    sessions = clustered_sessions(seed=5)
    sessions.arm = sessions.user % 3
    report = analyse(sessions, ["A", "B", "C"], [1, 1, 1])
    entries = [comparison(report, "click_through", arm=arm) for arm in ("B", "C")]
    expected = multipletests([entry["p_value"] for entry in entries], method="holm")[1]
    assert [entry["p_value_adjusted"] for entry in entries] == pytest.approx(expected)


def test_required_users_is_the_textbook_normal_formula():
    mean, sd, lift = 0.4, 0.5, 0.1
    expected = 2 * (stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) ** 2 * sd**2 / (lift * mean) ** 2
    assert required_users(mean, sd, lift) == math.ceil(expected)
    assert per_user_sd(np.array([1.0, 0.0, 2.0]), np.array([1.0, 1.0, 2.0])) > 0


# ------------------------------------------------------------------ SRM
def test_srm_flags_a_4500_5500_split_of_a_50_50_design_but_not_5000_5000():
    assert srm_check([4500, 5500], [0.5, 0.5], ["A", "B"])["flagged"]
    balanced = srm_check([5000, 5000], [0.5, 0.5], ["A", "B"])
    assert not balanced["flagged"] and balanced["p_value"] == pytest.approx(1.0)
    assert balanced["expected"] == [5000.0, 5000.0]


def test_srm_in_the_report_counts_users_not_sessions():
    user = np.repeat(np.arange(10_000), 2)
    arm = (user >= 4500).astype(int)
    sessions = Sessions(arm=arm, user=user, ts=np.arange(20_000.0), clicks=np.zeros(20_000), purchases=np.zeros(20_000), revenue=np.zeros(20_000))
    srm = analyse(sessions, ["A", "B"], [0.5, 0.5], checkpoints=2)["srm"]
    assert srm["observed"] == [4500, 5500] and srm["flagged"]


# ------------------------------------------------------------ Bayesian
def test_beta_binomial_probabilities_sum_to_one_and_favour_the_better_arm():
    bayes = beta_binomial([100, 130, 95], [1000, 1000, 1000], ["A", "B", "C"], seed=0)
    best = [arm["prob_best"] for arm in bayes["arms"]]
    assert sum(best) == pytest.approx(1.0)
    assert best[1] > 0.95
    losses = [arm["expected_loss"] for arm in bayes["arms"]]
    assert losses[1] == min(losses) and losses[1] < 0.001


# ---------------------------------------------------------------- CUPED
def test_cuped_reduces_variance_and_keeps_the_estimate_unbiased():
    differences, adjusted_differences, reductions = [], [], []
    for seed in range(40):
        sessions = clustered_sessions(seed=100 + seed, n_users=1000, lift=0.15, with_pre=True)
        sums = [user_sums(sessions, sessions.arm == arm, "purchases_per_session") for arm in (0, 1)]
        result = cuped(sums, sessions.pre, ["A", "B"], alpha=0.05, control=0)["comparisons"][0]
        differences.append(result["unadjusted_difference"])
        adjusted_differences.append(result["difference"])
        reductions.append(result["variance_reduction"])
    assert np.mean(reductions) > 0.15
    assert np.std(adjusted_differences) < 0.9 * np.std(differences)
    # The estimand: the difference of mean per-user purchase rates, E[min(1.15 p, 1)] - E[p] with p ~ Beta(1, 3).
    propensity = np.random.default_rng(0).beta(1.0, 3.0, size=1_000_000)
    truth = np.minimum(1.15 * propensity, 1).mean() - propensity.mean()
    assert abs(np.mean(adjusted_differences) - truth) < 3 * np.std(adjusted_differences) / math.sqrt(40)


def test_cuped_is_none_without_pre_period_data():
    sessions = clustered_sessions(seed=6)
    assert analyse(sessions, ["A", "B"], [0.5, 0.5])["cuped"] is None
    sessions.pre = np.full(sessions.n_users, np.nan)
    assert analyse(sessions, ["A", "B"], [0.5, 0.5])["cuped"] is None


# ----------------------------------------------------------- sequential
def test_msprt_p_value_is_the_hand_computed_mixture_ratio():
    # v = 1, tau = 1, d = 2: Lambda = sqrt(1/2) exp(4 / 4) = 1.922
    assert msprt_p_value(2.0, 1.0, 1.0) == pytest.approx(1 / (math.sqrt(0.5) * math.e))
    assert msprt_p_value(0.0, 1.0, 1.0) == 1.0
    assert math.isnan(msprt_p_value(0.1, 0.0, 1.0))


def test_always_valid_p_value_never_increases_over_checkpoints():
    report = analyse(clustered_sessions(seed=7, lift=0.15), ["A", "B"], [0.5, 0.5], checkpoints=30)
    always_valid = report["over_time"]["p_values"]["B"]["always_valid"]
    assert len(always_valid) == 30
    assert all(later <= earlier for earlier, later in zip(always_valid, always_valid[1:]))
    assert report["sequential"]["arms"][0]["p_value"] == always_valid[-1]
    assert report["sequential"]["tau"] == pytest.approx(0.1 * report["arms"][0]["metrics"]["purchases_per_session"]["value"])


# --------------------------------------------------------- report shape
def test_report_has_every_section_and_is_strict_json():
    report = analyse(clustered_sessions(seed=8, with_pre=True), ["A", "B"], [0.5, 0.5])
    assert {"primary", "alpha", "control", "n_sessions", "n_users", "arms", "comparisons", "srm", "sequential", "cuped", "bayesian", "over_time"} <= set(report)
    assert set(report["arms"][0]["metrics"]) == {"click_through", "purchase_rate", "purchases_per_session", "revenue_per_session"}
    assert len(report["comparisons"]) == 4 + 2  # welch on every metric, z-test on the two proportions
    json.dumps(report, allow_nan=False)


def test_empty_arms_and_no_sessions_do_not_crash():
    sessions = clustered_sessions(seed=9)
    sessions.arm = np.zeros_like(sessions.arm)  # all in control; B and C empty
    report = analyse(sessions, ["A", "B", "C"], [1, 1, 1])
    json.dumps(report, allow_nan=False)
    assert report["arms"][1]["metrics"]["purchase_rate"]["value"] is None
    assert comparison(report, "purchase_rate", "two_proportion_z")["p_value"] is None
    assert not any(c["significant"] for c in report["comparisons"])
    assert report["srm"]["flagged"]  # everyone in one arm of a 1/3 each design
    empty = Sessions(arm=[], user=[], ts=[], clicks=[], purchases=[], revenue=[])
    report = analyse(empty, ["A", "B"], [0.5, 0.5])
    json.dumps(report, allow_nan=False)
    assert report["n_sessions"] == 0 and not report["srm"]["flagged"] and not report["sequential"]["arms"][0]["significant"]


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"weights": [0.5]}, "weights"),
        ({"weights": [0.5, 0.0]}, "weights"),
        ({"primary": "profit"}, "primary"),
        ({"alpha": 1.5}, "alpha"),
        ({"control": 2}, "control"),
        ({"mde": 0.0}, "mde"),
        ({"checkpoints": 0}, "checkpoints"),
    ],
)
def test_bad_arguments_are_refused_naming_the_field(arguments, message):
    sessions = clustered_sessions(seed=10, n_users=20)
    call = {"arm_names": ["A", "B"], "weights": [0.5, 0.5], **arguments}
    with pytest.raises(AnalysisError, match=message):
        analyse(sessions, **call)


def test_sessions_refuse_mismatched_columns():
    with pytest.raises(AnalysisError, match="clicks"):
        Sessions(arm=[0, 1], user=[0, 1], ts=[0.0, 1.0], clicks=[1.0], purchases=[0.0, 0.0], revenue=[0.0, 0.0])
    with pytest.raises(AnalysisError, match="pre"):
        Sessions(arm=[0, 1], user=[0, 3], ts=[0.0, 1.0], clicks=[1.0, 0.0], purchases=[0.0, 0.0], revenue=[0.0, 0.0], pre=[1.0])


# --------------------------------------------------------- interleaving
def is_subsequence(items: list, ranking: list) -> bool:
    position = iter(ranking)
    return all(item in position for item in items)


@pytest.mark.parametrize("seed", range(5))
def test_team_draft_properties(seed):
    rng = np.random.default_rng(seed)
    a = rng.permutation(50).tolist()
    b = rng.permutation(50).tolist()
    items, teams = team_draft(a, b, 20, np.random.default_rng(seed))
    assert len(items) == 20 == len(teams) and len(set(items)) == 20
    assert is_subsequence([item for item, team in zip(items, teams) if team == 0], a)
    assert is_subsequence([item for item, team in zip(items, teams) if team == 1], b)
    assert abs(teams.count(0) - teams.count(1)) <= 1
    assert team_draft(a, b, 20, np.random.default_rng(seed)) == (items, teams)


def test_team_draft_skips_an_exhausted_team_and_stops_when_both_are():
    items, teams = team_draft([1, 2], [3, 4, 5, 6], 10, np.random.default_rng(0))
    assert sorted(items) == [1, 2, 3, 4, 5, 6] and teams.count(0) == 2
    assert items[-2:] == [5, 6] and teams[-2:] == [1, 1]
    items, teams = team_draft([1, 2, 3], [1, 2, 3], 3, np.random.default_rng(0))
    assert items == [1, 2, 3]  # identical rankings give the shared ranking, whoever picks
    assert team_draft([], [], 5, np.random.default_rng(0)) == ([], [])


def test_credit_counts_clicks_per_team():
    assert credit([0, 1, 1, 0, 1], [0, 2, 4]) == (1, 2)
    assert credit([0, 1], []) == (0, 0)
    with pytest.raises(ValueError, match="clicked_positions"):
        credit([0, 1], [2])


def test_interleaving_analysis_aggregates_per_user_and_runs_the_sign_test():
    # User 0 clicks A twice over two impressions, user 1 prefers B, user 2 ties, users 3-9 prefer A.
    user = np.array([0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    credit_a = np.array([1, 1, 0, 1, 1, 2, 1, 1, 1, 3, 1])
    credit_b = np.array([0, 1, 1, 1, 0, 0, 0, 0, 0, 1, 0])
    report = analyse_interleaving(user, credit_a, credit_b, np.arange(11.0), checkpoints=4, arm_names=("new", "old"))
    assert (report["wins_a"], report["wins_b"], report["ties"]) == (8, 1, 1)
    assert report["delta_ab"] == pytest.approx((8 + 0.5) / 10 - 0.5)
    assert report["p_value"] == pytest.approx(stats.binomtest(8, 9, 0.5).pvalue)
    assert report["preferred"] == ("new" if report["p_value"] < 0.05 else None)
    assert len(report["over_time"]["delta_ab"]) == 4
    json.dumps(report, allow_nan=False)
    assert analyse_interleaving(np.array([], dtype=int), np.array([]), np.array([]))["p_value"] is None


# ---------------------------------------------------------------- plots
def test_plot_report_writes_non_empty_pngs(tmp_path):
    report = analyse(clustered_sessions(seed=11, lift=0.2), ["A", "B"], [0.5, 0.5], checkpoints=10)
    paths = plot_report(dict(report, mode="ab"), tmp_path / "ab")
    rng = np.random.default_rng(0)
    interleaving = analyse_interleaving(np.arange(200), rng.poisson(1.2, 200), rng.poisson(1.0, 200), np.arange(200.0), checkpoints=10)
    paths += plot_report({"mode": "interleave", "interleaving": interleaving}, tmp_path / "interleave")
    assert len(paths) == 4
    for path in paths:
        assert path.suffix == ".png" and path.stat().st_size > 5_000
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
