"""The shop's objective: one definition of a purchase's value, read by the simulator and the learner alike."""

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers the environments)
from envs.evaluation import compare
from envs.policies import OraclePolicy
from ranker.learning.join import position_rewards
from ranker.live.events import REWARD_WEIGHTS
from ranker.ranking.objective import ENV_PURCHASE_VALUE, OBJECTIVES, objective_of_purchase_value, purchase_values


def test_purchase_values_per_objective():
    prices = np.array([10.0, 20.0, 40.0])
    assert purchase_values("purchases", prices, 20.0).tolist() == [1.0, 1.0, 1.0]
    assert purchase_values("revenue", prices, 20.0).tolist() == [0.5, 1.0, 2.0]
    assert purchase_values("mix", prices, 20.0).tolist() == [0.75, 1.0, 1.5]
    with pytest.raises(ValueError, match="objective"):
        purchase_values("clicks", prices, 20.0)
    assert [objective_of_purchase_value(ENV_PURCHASE_VALUE[name]) for name in OBJECTIVES] == list(OBJECTIVES)


def test_a_positions_reward_weighs_the_purchase_by_its_value():
    outcomes = np.array([[1, 0, 0], [1, 1, 1], [1, 1, 1]], dtype=np.float32)
    rewards = position_rewards(outcomes, np.array([3.0, 1.0, 2.0]), REWARD_WEIGHTS)
    np.testing.assert_allclose(rewards, [0.1, 0.1 + 0.3 + 1.0, 0.1 + 0.3 + 2.0])


def test_the_simulator_pays_what_the_objective_says(sim_catalog):
    table = {}
    for objective in OBJECTIVES:
        env = gym.make("envs/SlateShopping-v0", catalog=sim_catalog, purchase_value=ENV_PURCHASE_VALUE[objective])
        table[objective] = compare(env, {"oracle": OraclePolicy()}, episodes=200, seed=0)["oracle"]
    # the same shoppers: revenue counts the prices of what was bought, whatever the objective
    assert all(row["revenue_mean"] > 0 for row in table.values())
    rewards = [table[name]["reward_mean"] for name in OBJECTIVES]
    assert len(set(np.round(rewards, 6))) == 3  # each objective rewards the same sessions differently
