"""The myopic baselines on the session environment, and the evaluation that pairs them with PPO."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs  # noqa: F401  (registers the environments)
from envs.evaluation import format_paired, paired, paired_table, run_all
from envs.policies import SESSION_CONTEXT, SESSION_FEATURES, RandomPolicy, WithoutSession
from ranker.evaluation.baselines import CriticGreedy, LambdaMART, LinearBandit, collect_logs
from ranker.evaluation.simulation import evaluate_policies, format_ppo_paired
from ranker.ranking.features import CONTEXT_FEATURES, FEATURES
from ranker.ranking.network import SlateNet
from ranker.ranking.policy import RankingPolicy


@pytest.fixture(scope="module")
def session_logs():
    return collect_logs(gym.make("envs/SessionShoppingTiny-v0"), episodes=400, seed=1)


def test_logs_group_rows_by_page_and_keep_positions_and_outcomes(session_logs):
    logs = session_logs
    assert len(logs.x) == len(logs.labels) == len(logs.positions) == len(logs.outcomes) == len(logs.sessions)
    assert logs.group_sizes().sum() == len(logs.x) and logs.group_sizes().max() <= 2  # a page holds L = 2 rows
    assert len(np.unique(logs.sessions % 1_000)) == 2  # sessions of one and of two pages
    clicks, carts, purchases = logs.outcomes.T
    assert (carts <= clicks).all() and (purchases <= carts).all()
    np.testing.assert_array_equal(logs.labels, np.maximum.reduce([clicks, 2 * carts, 3 * purchases]))


def test_the_critic_greedy_ranker_scores_with_the_critics_own_forward_pass(session_logs):
    ranker = CriticGreedy(epochs=2, seed=0).fit(session_logs)
    env = gym.make("envs/SessionShoppingTiny-v0")
    observation, _ = env.reset(seed=3)
    with torch.no_grad():
        probabilities = ranker.critic(
            torch.as_tensor(observation["features"][None]), torch.as_tensor(observation["context"][None]), torch.tensor([observation["position"]])
        )[0].numpy()
    np.testing.assert_allclose(ranker.expected_rewards(observation), probabilities @ ranker.weights, rtol=1e-5, atol=1e-7)
    assert ranker.fit_result.shown == len(session_logs.x)
    torch.rand(7)  # whatever ran before, the same seed fits the same critic
    again = CriticGreedy(epochs=2, seed=0).fit(session_logs)
    np.testing.assert_array_equal(again.expected_rewards(observation), ranker.expected_rewards(observation))


def test_the_learners_beat_random_on_the_same_sessions(sim_catalog):
    env = gym.make("envs/SessionShoppingSmall-v0", catalog=sim_catalog, history_sessions_per_user=0.5)
    train = collect_logs(env, episodes=300, seed=1)
    policies = {
        "random": RandomPolicy(0),
        "lambdamart": LambdaMART(n_estimators=30).fit(train),
        "linear_bandit": LinearBandit().fit(train),
        "critic_greedy": CriticGreedy(max_steps=800, seed=0).fit(train),
    }
    logs = run_all(env, policies, episodes=300, seed=0)
    versus_random = paired_table(logs, "random")
    for name in ("lambdamart", "linear_bandit", "critic_greedy"):
        assert versus_random[name]["rewards"]["difference_ci95"][0] > 0, (name, versus_random[name]["rewards"])
    assert "paired against random" in format_paired(versus_random, "random")


def test_paired_difference_and_ratio_by_hand():
    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 1.0, 2.0, 2.0])
    result = paired(a, b)
    # differences 0, 1, 1, 2: mean 1, sd sqrt(2/3), t(0.975, 3) = 3.182446
    half = 3.182446 * np.sqrt(2 / 3) / 2
    assert result["difference"] == pytest.approx(1.0)
    assert result["difference_ci95"] == pytest.approx([1 - half, 1 + half], rel=1e-5)
    # ratio 10/6; linearised (a - R b) / mean(b) = [-1/3, 1/3, -1/3, 1/3] / 1.5: sd 0.2566, half 3.182446 * sd / 2
    ratio, linearised = 10 / 6, (a - 10 / 6 * b) / 1.5
    half = 3.182446 * linearised.std(ddof=1) / 2
    assert result["ratio"] == pytest.approx(ratio) and result["ratio_ci95"] == pytest.approx([ratio - half, ratio + half], rel=1e-5)
    with pytest.raises(ValueError, match="same sessions"):
        paired(a, b[:3])


def test_without_session_zeroes_exactly_the_session_features():
    seen = {}

    def spy(env, observation):
        seen.update(observation)
        return int(np.argmax(observation["mask"]))

    observation = {
        "features": np.ones((3, len(FEATURES)), dtype=np.float32),
        "context": np.ones(len(CONTEXT_FEATURES), dtype=np.float32),
        "mask": np.ones(3, dtype=np.int8),
        "position": 0,
    }
    WithoutSession(spy)(None, observation)
    zeroed = [FEATURES.index(name) for name in SESSION_FEATURES]
    assert (seen["features"][:, zeroed] == 0).all() and np.delete(seen["features"], zeroed, axis=1).all()
    assert (seen["context"][[CONTEXT_FEATURES.index(name) for name in SESSION_CONTEXT]] == 0).all()
    assert observation["features"].all()  # the caller's observation is untouched


def test_the_session_table_pairs_ppo_with_every_policy():
    torch.manual_seed(0)
    policy = RankingPolicy(SlateNet(hidden=16))
    table = evaluate_policies(gym.make("envs/SessionShoppingTiny-v0"), policy, episodes=60, seed=0, log_episodes=60)
    assert {"ppo", "ppo_without_session", "critic_greedy", "linear_bandit", "lambdamart", "sub_intent_oracle", "oracle"} <= set(table)
    for name, row in table.items():
        assert 1.0 <= row["pages_mean"] <= 2.0 and 0.0 <= row["abandonment"] <= 1.0
        if name != "ppo":
            assert set(row["ppo_vs"]) == {"purchases", "rewards"}
    assert "vs oracle" in format_ppo_paired(table)
