"""Contribution caps against a bot, on the tiny shop (``tinyshop``).

A bot (one pseudonym) searches again and again and clicks, carts and buys one poor item wherever it is shown:
1,000 rankings. Honest shoppers (one ranking each) behave as the shop's model says. After three updates with
the learner's caps, the poor item's chance of the first position for honest requests is within 0.01 of what
honest traffic alone gives (measured: 0.0036 against 0.0039); without the cap the bot lifts it to 0.043; and 400
honest users who really buy it still lift it (0.014 -> 0.046).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tinyshop import bad_policy, concatenate, log_rankings, requests

from ranker.learning.caps import capped_holdout, contribution_weights
from ranker.learning.config import LearnerConfig
from ranker.learning.update import importance_weights, ppo_update

POOR = np.array([-2.0, 1.0, 0.0, 0.0], dtype=np.float32)  # clicked with probability sigmoid(-5) = 0.007


def with_poor_item(xs: np.ndarray) -> np.ndarray:
    xs = xs.copy()
    xs[:, 0] = POOR  # candidate 0 of every request is the poor item
    return xs


def first_place_share(policy, xs: np.ndarray) -> float:
    """Mean probability (temperature 1) that the poor item is placed first."""
    shares = []
    for x in xs:
        scores = policy.scores(x, np.zeros(1, dtype=np.float32), np.ones(len(x), dtype=np.float32))
        p = np.exp(scores - scores.max())
        shares.append(p[0] / p.sum())
    return float(np.mean(shares))


def train(honest_buy_poor: bool, bot: bool, cap: float) -> tuple[float, float]:
    config = LearnerConfig(device="cpu", user_cap=cap)
    policy = bad_policy(sign=1.0)  # a good starting policy: it ranks the poor item low
    evaluation = with_poor_item(requests(300, seed=7))
    before = first_place_share(policy, evaluation)
    for update in range(3):
        honest = log_rankings(policy, with_poor_item(requests(400, seed=300 + update)), 1.0, seed=400 + update, buys=0 if honest_buy_poor else None)
        users = [f"user-{update}-{index}" for index in range(400)]
        parts = [honest]
        if bot:
            parts.append(log_rankings(policy, with_poor_item(requests(1000, seed=500 + update)), 1.0, seed=600 + update, buys=0))
            users += ["bot"] * 1000
        steps = concatenate(*parts)
        policy, _ = ppo_update(policy, steps, config, seed=update, sample_weight=contribution_weights(users, config.user_cap)[steps.trajectory])
    return before, first_place_share(policy, evaluation)


def test_a_bot_moves_a_poor_item_no_more_than_a_few_shoppers_would():
    before, capped = train(honest_buy_poor=False, bot=True, cap=LearnerConfig().user_cap)
    _, honest_only = train(honest_buy_poor=False, bot=False, cap=LearnerConfig().user_cap)
    assert abs(capped - honest_only) <= 0.01, (before, capped, honest_only)  # the bot's 1,000 rankings weigh 5
    _, uncapped = train(honest_buy_poor=False, bot=True, cap=float("inf"))
    assert uncapped - honest_only > 0.025, (before, uncapped, honest_only)  # without the cap it would have moved it
    _, honest_buyers = train(honest_buy_poor=True, bot=False, cap=LearnerConfig().user_cap)
    assert honest_buyers - before > 0.02, (before, honest_buyers)  # many real buyers still move it


def test_contribution_weights_cap_each_user():
    weights = contribution_weights(["a"] * 10 + ["b", "c"], cap=5)
    assert weights[:10] == pytest.approx([0.5] * 10) and weights[10:].tolist() == [1.0, 1.0]
    assert weights[:10].sum() == pytest.approx(5.0)


def test_the_holdout_keeps_each_users_newest_rankings():
    class Event:
        def __init__(self, user):
            self.user_key = user

    class T:
        def __init__(self, user, index):
            self.event, self.index = Event(user), index

    rankings = [T("bot", i) for i in range(8)] + [T("u", 8)]
    kept = capped_holdout(rankings, cap=3)
    assert [t.index for t in kept] == [5, 6, 7, 8]


def test_replay_importance_weights_are_the_clipped_probability_ratio():
    new = np.log(np.array([0.5, 0.2, 0.9, 0.01]))
    logged = np.log(np.array([0.5, 0.4, 0.3, 0.02]))
    np.testing.assert_allclose(importance_weights(new, logged, clip=2.0), [1.0, 0.5, 2.0, 0.5])  # 0.9 / 0.3 = 3 is clipped to 2
    np.testing.assert_allclose(importance_weights(new, logged, clip=np.inf), np.exp(new - logged))
    assert torch.isfinite(torch.as_tensor(importance_weights(np.array([0.0]), np.array([-1e6]), clip=2.0))).all()
