"""The off-policy estimators on synthetic logs whose true values are known."""

import numpy as np
import pytest

from ranker.evaluation.ope import ESTIMATORS, PerDecisionDR, PerDecisionIPS, PerDecisionSNIPS, effective_sample_size

K, SLOTS = 4, 2
CLICK = np.array([0.5, 0.3, 0.1, 0.05])  # a candidate's reward probability, the same at every position


def sample_slates(probs: np.ndarray, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``n`` slates of two positions sampled without replacement from ``probs`` (renormalised), with rewards."""
    rows: dict[str, list] = {"ranking": [], "position": [], "action": [], "reward": [], "pscore": []}
    for i in range(n):
        available = np.ones(K, dtype=bool)
        for t in range(SLOTS):
            p = np.where(available, probs, 0.0)
            p = p / p.sum()
            a = int(rng.choice(K, p=p))
            rows["ranking"].append(i)
            rows["position"].append(t)
            rows["action"].append(a)
            rows["reward"].append(float(rng.random() < CLICK[a]))
            rows["pscore"].append(p[a])
            available[a] = False
    return {name: np.asarray(values) for name, values in rows.items()}


def distribution(probs: np.ndarray, logged: dict[str, np.ndarray]) -> np.ndarray:
    """[N, K] the evaluated policy's probabilities at each logged decision (the earlier picks removed)."""
    out = np.zeros((len(logged["action"]), K))
    for row, (position, ranking) in enumerate(zip(logged["position"], logged["ranking"], strict=True)):
        taken = logged["action"][(logged["ranking"] == ranking) & (logged["position"] < position)]
        p = probs.copy()
        p[taken] = 0.0
        out[row] = p / p.sum()
    return out


def true_value(probs: np.ndarray) -> float:
    value = 0.0
    for a in range(K):
        for b in range(K):
            if a != b:
                value += probs[a] * probs[b] / (1 - probs[a]) * (CLICK[a] + CLICK[b])
    return value


@pytest.fixture(scope="module")
def logs():
    logging = np.array([0.25, 0.25, 0.25, 0.25])
    logged = sample_slates(logging, 4000, np.random.default_rng(0))
    return logged


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_each_estimator_recovers_a_different_policys_value(logs, name):
    target = np.array([0.7, 0.2, 0.05, 0.05])
    data = dict(logs, action_dist=distribution(target, logs), estimated_rewards_by_reg_model=np.tile(CLICK * 0.8, (len(logs["action"]), 1)))
    interval = ESTIMATORS[name]().estimate_interval(**data, n_bootstrap_samples=200, random_state=1)
    truth = true_value(target)
    assert interval.low <= truth <= interval.high
    assert abs(interval.value - truth) < 0.05
    logging_value = true_value(np.full(K, 0.25))
    assert interval.value > logging_value + 0.1  # the target is measurably better than the uniform logger


def test_the_logging_policy_is_estimated_at_its_logged_value(logs):
    data = dict(logs, action_dist=distribution(np.full(K, 0.25), logs))
    logged = logs["reward"].sum() / 4000
    for estimator in (PerDecisionIPS(), PerDecisionSNIPS()):
        assert estimator.estimate_policy_value(**data) == pytest.approx(logged)
        improvement = estimator.estimate_improvement_interval(**data, n_bootstrap_samples=100)
        assert improvement.value == pytest.approx(0.0, abs=1e-12) and improvement.low <= 0 <= improvement.high
    assert effective_sample_size(data["ranking"], data["position"], data["action"], data["pscore"], data["action_dist"]) == pytest.approx(4000)


def test_snips_counts_short_rankings_at_the_positions_they_lack(logs):
    """A ranking with fewer positions (a filter left fewer candidates) still counts at the later positions, with reward
    0: the logging policy's estimate stays its logged value, and a short ranking does not lift later positions' means."""
    keep = (logs["ranking"] % 3 != 0) | (logs["position"] == 0)  # every third ranking has one position only
    short = {name: values[keep] for name, values in logs.items()}
    data = dict(short, action_dist=distribution(np.full(K, 0.25), short))
    assert PerDecisionSNIPS().estimate_policy_value(**data) == pytest.approx(short["reward"].sum() / 4000)


def test_effective_sample_size_falls_as_the_policies_part(logs):
    ess = [
        effective_sample_size(logs["ranking"], logs["position"], logs["action"], logs["pscore"], distribution(np.array(p), logs))
        for p in ([0.25, 0.25, 0.25, 0.25], [0.4, 0.3, 0.2, 0.1], [0.97, 0.01, 0.01, 0.01])
    ]
    assert ess[0] == pytest.approx(4000) and ess[0] > ess[1] > ess[2] and ess[2] < 4000 / 3


def test_doubly_robust_needs_a_reward_model(logs):
    with pytest.raises(ValueError, match="estimated_rewards_by_reg_model"):
        PerDecisionDR().estimate_policy_value(**logs, action_dist=distribution(np.full(K, 0.25), logs))


def test_clipped_weights_trade_variance_for_bias_toward_the_logger(logs):
    target = np.array([0.97, 0.01, 0.01, 0.01])
    data = dict(logs, action_dist=distribution(target, logs), estimated_rewards_by_reg_model=np.tile(CLICK * 0.8, (len(logs["action"]), 1)))
    plain = PerDecisionIPS().estimate_interval(**data, n_bootstrap_samples=200, random_state=1)
    clipped = PerDecisionIPS(weight_clip=2.0).estimate_interval(**data, n_bootstrap_samples=200, random_state=1)
    assert clipped.high - clipped.low < 0.7 * (plain.high - plain.low)  # narrower ...
    logging_value = true_value(np.full(K, 0.25))
    assert abs(clipped.value - logging_value) < abs(plain.value - logging_value)  # ... and pulled toward the logger
    assert PerDecisionIPS(weight_clip=None).estimate_policy_value(**data) == pytest.approx(plain.value)


def test_a_fitted_reward_model_scores_other_logs_and_refuses_before_fitting():
    from ranker.evaluation.ope import RidgeRewardModel, ridge_reward_model

    rng = np.random.default_rng(0)
    features, mask = rng.normal(size=(200, 6, 3)), np.ones((200, 6))
    mask[:, 5] = 0
    action = rng.integers(0, 5, 200)
    reward = features[np.arange(200), action, 0] * 0.5 + 0.1
    model = RidgeRewardModel().fit(features, action, reward)
    np.testing.assert_array_equal(model.predict(features, mask), ridge_reward_model(features, mask, action, reward))
    other = rng.normal(size=(50, 6, 3))
    np.testing.assert_allclose(model.predict(other, np.ones((50, 6))), other[:, :, 0] * 0.5 + 0.1, atol=0.02)  # it learned the rule
    with pytest.raises(ValueError, match="not fitted"):
        RidgeRewardModel().predict(other, np.ones((50, 6)))
