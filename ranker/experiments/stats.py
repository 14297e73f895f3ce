"""Analysis of an A/B experiment: per-arm metrics, tests, sample-ratio check, sequential test, CUPED, Bayes.

The unit of randomisation is the user, and one user's sessions are
correlated (a keen buyer buys in many of them). Every metric here is a ratio
of sums over sessions, e.g. purchases / sessions, so the analysis is done on
per-user aggregates: for each user the sum of the numerator and the number
of sessions.

Methods, and where they come from:

- **Metrics and confidence intervals: the delta method** (Deng, Knoblich and
  Lu 2018, "Applying the Delta Method in Metric Analytics", KDD). For the
  ratio ``r = sum(Y_u) / sum(N_u)`` over users ``u``, the first-order Taylor
  expansion gives ``var(r) = var(Y_u - r N_u) / (n mean(N_u)^2)``: the
  variance of each user's *linearised* contribution, which accounts for the
  clustering of sessions within users. Treating sessions as independent
  instead understates the variance and inflates false positives.
- **Comparisons: Welch's t-test** on the difference of two such ratios, with
  the delta-method variances and the Welch-Satterthwaite degrees of freedom.
  For the two proportion metrics the textbook two-proportion z-test
  (sessions as independent trials) is reported beside it, for reference.
  Holm's step-down correction (Holm 1979) controls the family-wise error
  across the treatment arms of each metric.
- **Sample-ratio mismatch**: a chi-square test of users per arm against the
  configured weights. A mismatch means the assignment or the logging is
  broken, and no other figure of the report can be trusted.
- **Sequential test: mSPRT** (Johari, Pekelis and Walsh 2017, "Always Valid
  Inference: Bringing Sequential Analysis to A/B Testing"; Johari et al.
  2022, Operations Research). With the estimated difference ``d`` and its
  variance ``v``, a normal mixture ``N(0, tau^2)`` over the true difference
  gives the likelihood ratio
  ``Lambda = sqrt(v / (v + tau^2)) exp(d^2 tau^2 / (2 v (v + tau^2)))``.
  Under the null it is a nonnegative martingale, so by Ville's inequality
  ``P(sup Lambda >= 1/alpha) <= alpha``: the running minimum of
  ``min(1, 1/Lambda)`` is a p-value that stays valid however often the
  report is read and whenever the experiment is stopped. Reading the
  fixed-horizon p-value repeatedly, and stopping at the first p < alpha,
  does not keep that promise. ``tau`` is the effect size the mixture is
  tuned for: ``mde`` (relative, default 10%) times the control's value of
  the metric at the time of reading.
- **CUPED** (Deng, Xu, Kohavi and Walker 2013, "Improving the Sensitivity of
  Online Controlled Experiments by Utilizing Pre-Experiment Data", WSDM):
  regress each user's metric on a pre-experiment covariate and compare the
  residuals. Randomisation makes the covariate independent of the arm, so
  the adjusted difference is unbiased and its variance shrinks by the
  squared correlation. Its estimand is the mean of *per-user values*
  (each user's numerator / sessions), which weighs every user equally; it is
  not the ratio of sums that the rest of the report estimates.
- **Bayesian view**: a beta-binomial model of the purchase rate, sessions as
  trials with a Beta(1, 1) prior, gives the probability that each arm is the
  best and the expected loss of choosing it. Like the z-test it treats
  sessions as independent, so it is overconfident when users have many
  sessions; it is a reading aid, not the decision rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ranker.lazy import LazyModule

# scipy and statsmodels (with pandas) hold ~100 MB; a serving process imports them when it first writes a report
stats = LazyModule("scipy.stats")
_multitest = LazyModule("statsmodels.stats.multitest")
_power = LazyModule("statsmodels.stats.power")
_proportion = LazyModule("statsmodels.stats.proportion")


def multipletests(*args: Any, **kwargs: Any) -> Any:
    return _multitest.multipletests(*args, **kwargs)


def NormalIndPower() -> Any:  # noqa: N802 (statsmodels' name)
    return _power.NormalIndPower()


def confint_proportions_2indep(*args: Any, **kwargs: Any) -> Any:
    return _proportion.confint_proportions_2indep(*args, **kwargs)


def proportions_ztest(*args: Any, **kwargs: Any) -> Any:
    return _proportion.proportions_ztest(*args, **kwargs)


METRICS = ("click_through", "purchase_rate", "purchases_per_session", "revenue_per_session")
PROPORTION_METRICS = ("click_through", "purchase_rate")
SRM_THRESHOLD = 0.001
BAYES_DRAWS = 20_000
Z_TEST_NOTE = "assumes independent sessions; understates the variance when users return, see the welch_t entry"


class AnalysisError(ValueError):
    """Input the analysis cannot use; the message names the field and the bad value."""


@dataclass
class Sessions:
    """The sessions of one experiment, one entry per session (``pre`` is per user)."""

    arm: np.ndarray  # int arm index per session
    user: np.ndarray  # int user index per session (0..n_users-1)
    ts: np.ndarray  # float, time of the session's first exposure
    clicks: np.ndarray  # float, clicks in the session
    purchases: np.ndarray  # float, purchases in the session
    revenue: np.ndarray  # float, revenue in the session
    pre: np.ndarray | None = None  # float per *user*: a pre-period covariate, NaN where unknown

    def __post_init__(self) -> None:
        self.arm = np.asarray(self.arm, dtype=np.int64).reshape(-1)
        self.user = np.asarray(self.user, dtype=np.int64).reshape(-1)
        for name in ("ts", "clicks", "purchases", "revenue"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.float64).reshape(-1))
        n = len(self.arm)
        for name in ("user", "ts", "clicks", "purchases", "revenue"):
            if len(getattr(self, name)) != n:
                raise AnalysisError(f"{name}: {len(getattr(self, name))} entries for {n} sessions")
        for name in ("arm", "user"):
            if n and getattr(self, name).min() < 0:
                raise AnalysisError(f"{name}: indexes must be >= 0, got {getattr(self, name).min()}")
        if self.pre is not None:
            self.pre = np.asarray(self.pre, dtype=np.float64).reshape(-1)
            if n and len(self.pre) <= self.user.max():
                raise AnalysisError(f"pre: {len(self.pre)} users, but user indexes go up to {self.user.max()}")

    @property
    def n_users(self) -> int:
        """Users indexed (at least every user with a session)."""
        seen = int(self.user.max()) + 1 if len(self.user) else 0
        return max(seen, len(self.pre) if self.pre is not None else 0)

    def outcome(self, metric: str) -> np.ndarray:
        """The numerator of ``metric`` per session (the denominator is always one session)."""
        if metric == "click_through":
            return (self.clicks > 0).astype(np.float64)
        if metric == "purchase_rate":
            return (self.purchases > 0).astype(np.float64)
        if metric == "purchases_per_session":
            return self.purchases
        if metric == "revenue_per_session":
            return self.revenue
        raise AnalysisError(f"metric: {metric!r} is not one of {', '.join(METRICS)}")


@dataclass(frozen=True)
class UserSums:
    """Per-user aggregates of one metric in one arm: users with at least one session."""

    user: np.ndarray  # user indexes
    numerator: np.ndarray  # the metric's numerator summed over the user's sessions
    sessions: np.ndarray  # the user's number of sessions (the denominator)


@dataclass(frozen=True)
class RatioEstimate:
    """``sum(numerator) / sum(sessions)`` over users, with its delta-method variance (NaN when undefined)."""

    value: float
    variance: float
    n_users: int


@dataclass(frozen=True)
class Difference:
    """A treatment-minus-control difference with its confidence interval and two-sided p-value."""

    difference: float
    ci_low: float
    ci_high: float
    p_value: float


# ------------------------------------------------------------- estimates
def user_sums(sessions: Sessions, mask: np.ndarray, metric: str) -> UserSums:
    """Sum ``metric``'s numerator and the sessions per user over the sessions selected by ``mask``."""
    users = sessions.user[mask]
    minlength = sessions.n_users
    numerator = np.bincount(users, weights=sessions.outcome(metric)[mask], minlength=minlength)
    count = np.bincount(users, minlength=minlength).astype(np.float64)
    present = np.flatnonzero(count > 0)
    return UserSums(present, numerator[present], count[present])


def linearised(sums: UserSums) -> np.ndarray:
    """Each user's delta-method contribution ``(Y_u - r N_u) / mean(N)`` to the ratio ``r`` (Deng et al. 2018)."""
    ratio = sums.numerator.sum() / sums.sessions.sum()
    return (sums.numerator - ratio * sums.sessions) / sums.sessions.mean()


def ratio_estimate(sums: UserSums) -> RatioEstimate:
    """The ratio of sums and its delta-method variance; the variance needs two users."""
    n = len(sums.user)
    if n == 0:
        return RatioEstimate(math.nan, math.nan, 0)
    value = float(sums.numerator.sum() / sums.sessions.sum())
    variance = float(linearised(sums).var(ddof=1) / n) if n >= 2 else math.nan
    return RatioEstimate(value, variance, n)


def per_user_sd(numerator: np.ndarray, sessions: np.ndarray) -> float:
    """The standard deviation of a user's linearised contribution to a ratio metric: the one to plan sample sizes with."""
    sums = UserSums(np.arange(len(numerator)), np.asarray(numerator, dtype=np.float64), np.asarray(sessions, dtype=np.float64))
    return float(linearised(sums).std(ddof=1))


def normal_interval(estimate: RatioEstimate, alpha: float) -> tuple[float, float]:
    """``value -/+ z_(1-alpha/2) sqrt(variance)``."""
    half = stats.norm.ppf(1 - alpha / 2) * math.sqrt(estimate.variance) if estimate.variance >= 0 else math.nan
    return estimate.value - half, estimate.value + half


def welch(treatment: RatioEstimate, control: RatioEstimate, alpha: float) -> Difference:
    """Welch's t-test of ``treatment - control`` from delta-method variances, Welch-Satterthwaite degrees of freedom."""
    difference = treatment.value - control.value
    variance = treatment.variance + control.variance
    if not variance > 0:  # also NaN: an arm with fewer than two users
        return Difference(difference, math.nan, math.nan, math.nan)
    df = variance**2 / (treatment.variance**2 / (treatment.n_users - 1) + control.variance**2 / (control.n_users - 1))
    se = math.sqrt(variance)
    half = stats.t.ppf(1 - alpha / 2, df) * se
    p_value = float(2 * stats.t.sf(abs(difference) / se, df))
    return Difference(difference, difference - half, difference + half, p_value)


def two_proportion_z(successes: tuple[int, int], trials: tuple[int, int], alpha: float) -> Difference:
    """The textbook z-test of two proportions (treatment, control), sessions as independent trials."""
    difference = successes[0] / trials[0] - successes[1] / trials[1]
    p_pooled = sum(successes) / sum(trials)
    if p_pooled in (0.0, 1.0):  # no variation at all: nothing to test
        return Difference(difference, math.nan, math.nan, math.nan)
    _, p_value = proportions_ztest(list(successes), list(trials))
    low, high = confint_proportions_2indep(successes[0], trials[0], successes[1], trials[1], method="wald", alpha=alpha)
    return Difference(difference, float(low), float(high), float(p_value))


def holm(p_values: Sequence[float | None], alpha: float) -> list[float | None]:
    """Holm-adjusted p-values (statsmodels ``multipletests``); None and NaN become None."""
    present = [i for i, p in enumerate(p_values) if p is not None and not math.isnan(p)]
    adjusted: list[float | None] = [None] * len(p_values)
    if len(present) == 1:  # Holm over one test is that test; multipletests would also run a full gc.collect()
        adjusted[present[0]] = float(p_values[present[0]])  # type: ignore[arg-type]
    elif present:
        _, corrected, _, _ = multipletests([p_values[i] for i in present], alpha=alpha, method="holm")
        for i, p in zip(present, corrected):
            adjusted[i] = float(p)
    return adjusted


# ------------------------------------------------------------ sequential
def msprt_p_value(difference: float, variance: float, tau: float) -> float:
    """One reading of the mSPRT: ``min(1, 1/Lambda)`` for a normal mixture N(0, tau^2) (Johari et al. 2017).

    NaN when it cannot be computed (no variance yet, or no scale for tau).
    """
    if not (variance > 0 and tau > 0) or math.isnan(difference):
        return math.nan
    spread = variance + tau**2
    log_lambda = 0.5 * math.log(variance / spread) + difference**2 * tau**2 / (2 * variance * spread)
    return math.exp(-log_lambda) if log_lambda > 0 else 1.0


def always_valid(readings: Sequence[float]) -> list[float]:
    """Running minimum of mSPRT readings; a reading that could not be made counts as no evidence (1)."""
    running, out = 1.0, []
    for reading in readings:
        if not math.isnan(reading):
            running = min(running, reading)
        out.append(running)
    return out


# --------------------------------------------------------------- planning
def required_users(baseline_mean: float, baseline_sd_per_user: float, relative_effect: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Users per arm to detect ``relative_effect`` x ``baseline_mean`` with a two-sided test (normal approximation).

    ``baseline_sd_per_user`` is the standard deviation of one user's
    contribution; for a ratio metric that is :func:`per_user_sd`, so the
    answer matches the delta-method test of this module.
    """
    effect_size = relative_effect * baseline_mean / baseline_sd_per_user
    n = NormalIndPower().solve_power(effect_size=effect_size, alpha=alpha, power=power, ratio=1.0, alternative="two-sided")
    return int(math.ceil(n))


# -------------------------------------------------------------- analysis
def checkpoint_times(ts: np.ndarray, checkpoints: int) -> np.ndarray:
    """``checkpoints`` reading times at equally spaced quantiles of ``ts`` (the last one sees every session)."""
    if len(ts) == 0:
        return np.empty(0)
    levels = np.arange(1, checkpoints + 1) / checkpoints
    return np.unique(np.quantile(ts, levels, method="inverted_cdf"))


def analyse(
    sessions: Sessions,
    arm_names: list[str],
    weights: list[float],
    *,
    primary: str = "purchases_per_session",
    alpha: float = 0.05,
    control: int = 0,
    mde: float = 0.10,
    checkpoints: int = 40,
    seed: int = 0,
) -> dict[str, Any]:
    """The report of an A/B experiment as plain JSON-ready data (see the module docstring for the methods).

    Keys: ``primary``, ``alpha``, ``control``, ``n_sessions``, ``n_users``,
    ``arms``, ``comparisons``, ``srm``, ``sequential``, ``cuped``,
    ``bayesian``, ``over_time``. Undefined numbers (an empty arm) are None.
    """
    _validate(sessions, arm_names, weights, primary=primary, alpha=alpha, control=control, mde=mde, checkpoints=checkpoints)
    sums = {metric: [user_sums(sessions, sessions.arm == arm, metric) for arm in range(len(arm_names))] for metric in METRICS}
    estimates = {metric: [ratio_estimate(arm_sums) for arm_sums in sums[metric]] for metric in METRICS}
    over_time = _over_time(sessions, arm_names, primary=primary, alpha=alpha, control=control, mde=mde, checkpoints=checkpoints)
    report = {
        "primary": primary,
        "alpha": alpha,
        "control": arm_names[control],
        "n_sessions": len(sessions.arm),
        "n_users": int(len(np.unique(sessions.user))),
        "arms": _arms(sessions, arm_names, weights, estimates, alpha),
        "comparisons": _comparisons(sessions, arm_names, estimates, alpha=alpha, control=control),
        "srm": srm_check([len(arm_sums.user) for arm_sums in sums[primary]], weights, arm_names),
        "sequential": _sequential(over_time, arm_names, alpha=alpha, control=control),
        "cuped": cuped(sums[primary], sessions.pre, arm_names, alpha=alpha, control=control),
        "bayesian": beta_binomial(
            [int(arm_sums.numerator.sum()) for arm_sums in sums["purchase_rate"]],
            [int(arm_sums.sessions.sum()) for arm_sums in sums["purchase_rate"]],
            arm_names,
            seed=seed,
        ),
        "over_time": over_time,
    }
    return json_ready(report)


def _validate(
    sessions: Sessions, arm_names: list[str], weights: list[float], *, primary: str, alpha: float, control: int, mde: float, checkpoints: int
) -> None:
    if len(arm_names) < 2:
        raise AnalysisError(f"arm_names: an experiment needs at least 2 arms, got {len(arm_names)}")
    if len(weights) != len(arm_names) or any(not w > 0 for w in weights):
        raise AnalysisError(f"weights: one positive weight per arm ({len(arm_names)}), got {list(weights)}")
    if primary not in METRICS:
        raise AnalysisError(f"primary: {primary!r} is not one of {', '.join(METRICS)}")
    if not 0 < alpha < 1:
        raise AnalysisError(f"alpha: must be in (0, 1), got {alpha}")
    if not 0 <= control < len(arm_names):
        raise AnalysisError(f"control: must index an arm in [0, {len(arm_names)}), got {control}")
    if not mde > 0:
        raise AnalysisError(f"mde: must be > 0, got {mde}")
    if checkpoints < 1:
        raise AnalysisError(f"checkpoints: must be >= 1, got {checkpoints}")
    if len(sessions.arm) and sessions.arm.max() >= len(arm_names):
        raise AnalysisError(f"arm: index {sessions.arm.max()} but only {len(arm_names)} arm_names")


def _arms(sessions: Sessions, arm_names: list[str], weights: list[float], estimates: dict[str, list[RatioEstimate]], alpha: float) -> list[dict[str, Any]]:
    arms = []
    for arm, name in enumerate(arm_names):
        metrics = {}
        for metric in METRICS:
            estimate = estimates[metric][arm]
            low, high = normal_interval(estimate, alpha)
            metrics[metric] = {"value": estimate.value, "ci_low": low, "ci_high": high}
        arms.append(
            {
                "name": name,
                "weight": weights[arm],
                "users": estimates[METRICS[0]][arm].n_users,
                "sessions": int((sessions.arm == arm).sum()),
                "metrics": metrics,
            }
        )
    return arms


def _comparisons(sessions: Sessions, arm_names: list[str], estimates: dict[str, list[RatioEstimate]], *, alpha: float, control: int) -> list[dict[str, Any]]:
    """Every treatment arm against control on every metric; Holm across the treatment arms of each (metric, test)."""
    treatments = [arm for arm in range(len(arm_names)) if arm != control]
    trials = [int((sessions.arm == arm).sum()) for arm in range(len(arm_names))]
    comparisons = []
    for metric in METRICS:
        tests = {"welch_t": [welch(estimates[metric][arm], estimates[metric][control], alpha) for arm in treatments]}
        if metric in PROPORTION_METRICS:
            successes = [int(sessions.outcome(metric)[sessions.arm == arm].sum()) for arm in range(len(arm_names))]
            tests["two_proportion_z"] = [
                two_proportion_z((successes[arm], successes[control]), (trials[arm], trials[control]), alpha)
                if trials[arm] and trials[control]
                else Difference(math.nan, math.nan, math.nan, math.nan)
                for arm in treatments
            ]
        for test, results in tests.items():
            adjusted = holm([result.p_value for result in results], alpha)
            for arm, result, p_adjusted in zip(treatments, results, adjusted):
                baseline = estimates[metric][control].value
                entry = {
                    "arm": arm_names[arm],
                    "metric": metric,
                    "test": test,
                    "difference": result.difference,
                    "relative_difference": result.difference / baseline if baseline else math.nan,
                    "ci_low": result.ci_low,
                    "ci_high": result.ci_high,
                    "p_value": result.p_value,
                    "p_value_adjusted": p_adjusted,
                    "significant": p_adjusted is not None and p_adjusted < alpha,
                }
                if test == "two_proportion_z":
                    entry["note"] = Z_TEST_NOTE
                comparisons.append(entry)
    return comparisons


def srm_check(users_per_arm: Sequence[int], weights: Sequence[float], arm_names: Sequence[str]) -> dict[str, Any]:
    """Chi-square of users per arm against the design's weights; ``flagged`` when p < 0.001."""
    observed = np.asarray(users_per_arm, dtype=np.float64)
    total = observed.sum()
    expected = total * np.asarray(weights, dtype=np.float64) / float(sum(weights))
    p_value = float(stats.chisquare(observed, expected).pvalue) if total > 0 else math.nan
    return {
        "arms": list(arm_names),
        "observed": observed.astype(int).tolist(),
        "expected": expected.tolist(),
        "p_value": p_value,
        "threshold": SRM_THRESHOLD,
        "flagged": bool(p_value < SRM_THRESHOLD),
    }


def _over_time(sessions: Sessions, arm_names: list[str], *, primary: str, alpha: float, control: int, mde: float, checkpoints: int) -> dict[str, Any]:
    """The primary metric per arm, the Welch p-value and the mSPRT reading, on the sessions up to each checkpoint."""
    times = checkpoint_times(sessions.ts, checkpoints)
    arms = {name: {"value": [], "ci_low": [], "ci_high": []} for name in arm_names}
    fixed = {name: [] for i, name in enumerate(arm_names) if i != control}
    readings = {name: [] for name in fixed}
    taus: list[float] = []
    n_sessions = []
    for until in times:
        seen = sessions.ts <= until
        n_sessions.append(int(seen.sum()))
        estimates = [ratio_estimate(user_sums(sessions, seen & (sessions.arm == arm), primary)) for arm in range(len(arm_names))]
        for name, estimate in zip(arm_names, estimates):
            low, high = normal_interval(estimate, alpha)
            arms[name]["value"].append(estimate.value)
            arms[name]["ci_low"].append(low)
            arms[name]["ci_high"].append(high)
        tau = mde * abs(estimates[control].value)
        taus.append(tau)
        for arm, name in enumerate(arm_names):
            if name in fixed:
                difference = welch(estimates[arm], estimates[control], alpha)
                fixed[name].append(difference.p_value)
                readings[name].append(msprt_p_value(difference.difference, estimates[arm].variance + estimates[control].variance, tau))
    return {
        "ts": times.tolist(),
        "n_sessions": n_sessions,
        "tau": taus,
        "arms": arms,
        "p_values": {name: {"fixed_horizon": fixed[name], "always_valid": always_valid(readings[name])} for name in fixed},
    }


def _sequential(over_time: dict[str, Any], arm_names: list[str], *, alpha: float, control: int) -> dict[str, Any]:
    """The mSPRT's always-valid p-value at the last checkpoint, per treatment arm."""
    taus = over_time["tau"]
    arms = []
    for name, p_values in over_time["p_values"].items():
        p_value = p_values["always_valid"][-1] if p_values["always_valid"] else 1.0
        arms.append({"arm": name, "p_value": p_value, "significant": p_value <= alpha})
    return {
        "method": "mSPRT, normal mixture (Johari et al. 2017)",
        "control": arm_names[control],
        "tau": taus[-1] if taus else math.nan,
        "checkpoints": len(taus),
        "arms": arms,
    }


def cuped(sums: list[UserSums], pre: np.ndarray | None, arm_names: list[str], *, alpha: float, control: int) -> dict[str, Any] | None:
    """CUPED on per-user values of a metric, covariate ``pre`` per user (Deng et al. 2013); None without pre data.

    ``Y`` is each user's numerator / sessions, ``X`` their pre-period value.
    ``theta = cov(X, Y) / var(X)`` over users with a known ``X``, pooled over
    arms; users with unknown ``X`` get the mean of the known ones (so no
    adjustment). ``Y' = Y - theta (X - mean X)``. The estimand is the
    difference of mean per-user values, not of ratios of sums.
    """
    if pre is None or not np.isfinite(pre).any():
        return None
    values = [arm_sums.numerator / arm_sums.sessions for arm_sums in sums]
    covariates = [pre[arm_sums.user] for arm_sums in sums]
    y, x = np.concatenate(values), np.concatenate(covariates)
    known = np.isfinite(x)
    x_mean = float(x[known].mean())
    theta = float(np.cov(x[known], y[known])[0, 1] / x[known].var(ddof=1)) if known.sum() >= 2 and x[known].var() > 0 else 0.0
    adjusted = [value - theta * (np.where(np.isfinite(covariate), covariate, x_mean) - x_mean) for value, covariate in zip(values, covariates)]
    comparisons = []
    for arm, name in enumerate(arm_names):
        if arm == control:
            continue
        comparisons.append({"arm": name, **_cuped_comparison(values[arm], values[control], adjusted[arm], adjusted[control], alpha)})
    return {
        "metric_estimand": "mean of per-user values",
        "theta": theta,
        "covariate_coverage": float(known.mean()) if len(x) else math.nan,
        "comparisons": comparisons,
    }


def _cuped_comparison(
    y_treatment: np.ndarray, y_control: np.ndarray, adjusted_treatment: np.ndarray, adjusted_control: np.ndarray, alpha: float
) -> dict[str, Any]:
    unadjusted = float(y_treatment.mean() - y_control.mean()) if len(y_treatment) and len(y_control) else math.nan
    if min(len(adjusted_treatment), len(adjusted_control)) < 2:
        return {
            "difference": math.nan,
            "unadjusted_difference": unadjusted,
            "ci_low": math.nan,
            "ci_high": math.nan,
            "p_value": math.nan,
            "variance_reduction": math.nan,
        }
    test = stats.ttest_ind(adjusted_treatment, adjusted_control, equal_var=False)
    interval = test.confidence_interval(1 - alpha)
    variance = np.concatenate([y_treatment, y_control]).var(ddof=1)
    variance_adjusted = np.concatenate([adjusted_treatment, adjusted_control]).var(ddof=1)
    return {
        "difference": float(adjusted_treatment.mean() - adjusted_control.mean()),
        "unadjusted_difference": unadjusted,
        "ci_low": float(interval.low),
        "ci_high": float(interval.high),
        "p_value": float(test.pvalue),
        "variance_reduction": float(1 - variance_adjusted / variance) if variance > 0 else math.nan,
    }


def beta_binomial(successes: Sequence[int], trials: Sequence[int], arm_names: Sequence[str], *, draws: int = BAYES_DRAWS, seed: int = 0) -> dict[str, Any]:
    """Beta(1, 1)-binomial posteriors per arm, by Monte Carlo: P(arm is best) and E[max_j p_j - p_arm]."""
    rng = np.random.default_rng(seed)
    samples = np.stack([rng.beta(1 + s, 1 + n - s, size=draws) for s, n in zip(successes, trials)], axis=1)
    best = np.bincount(samples.argmax(axis=1), minlength=len(arm_names)) / draws
    loss = (samples.max(axis=1, keepdims=True) - samples).mean(axis=0)
    arms = [
        {"arm": name, "posterior_mean": (1 + s) / (2 + n), "prob_best": float(best[i]), "expected_loss": float(loss[i])}
        for i, (name, s, n) in enumerate(zip(arm_names, successes, trials))
    ]
    return {"metric": "purchase_rate", "prior": "Beta(1, 1)", "draws": draws, "arms": arms}


def json_ready(value: Any) -> Any:
    """Plain Python data for ``json.dumps``: numpy scalars to Python numbers, NaN and infinities to None."""
    if isinstance(value, dict):
        return {str(key): json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_ready(item) for item in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value
