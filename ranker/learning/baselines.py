"""Baselines a ranking engineer would reach for, fitted on the same simulated data.

Both learn from logged sessions of a stochastic logging policy (retrieval
order with epsilon-random placements, so the logs cover more than the top of
retrieval): each placed item is one row of its step's features and the
session context, labelled with what the user did with it.

- :class:`LambdaMART`: LightGBM ``lambdarank`` on graded labels (purchase 3,
  cart 2, click 1, else 0), one query group per session.
- :class:`LinearBandit`: a linear contextual bandit (LinUCB fitted offline):
  ridge regression of the step's reward on [features, context], acting by
  the upper confidence bound ``theta . x + alpha sqrt(x A^-1 x)``.

Both act greedily per position on the current features (slate features
included), like the PPO policy, and are measured on the same seeded sessions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.policies import best_available

LABELS = {"purchase": 3, "add_to_cart": 2, "click": 1}


@dataclass
class Logs:
    """Rows of logged placements: x = [features, context], graded label, reward, session id."""

    x: np.ndarray
    labels: np.ndarray
    rewards: np.ndarray
    sessions: np.ndarray

    def group_sizes(self) -> np.ndarray:
        _, sizes = np.unique(self.sessions, return_counts=True)
        return sizes


class EpsilonRetrieval:
    """The logging policy: retrieval order, but each position is a random candidate with probability epsilon."""

    name = "logging"

    def __init__(self, epsilon: float = 0.3, seed: int = 0):
        self.epsilon = epsilon
        self.rng = np.random.default_rng(seed)

    def __call__(self, env: Any, observation: dict[str, np.ndarray]) -> int:
        available = np.flatnonzero(observation["mask"])
        if self.rng.random() < self.epsilon:
            return int(self.rng.choice(available))
        return int(available[0])  # slots are in retrieval order


def collect_logs(env: Any, *, episodes: int, seed: int, epsilon: float = 0.3) -> Logs:
    """Log ``episodes`` sessions of the logging policy in a world seeded ``seed``."""
    policy = EpsilonRetrieval(epsilon, seed)
    xs, labels, rewards, sessions = [], [], [], []
    for episode in range(episodes):
        observation, _ = env.reset(seed=seed if episode == 0 else None)
        done = False
        while not done:
            slot = policy(env, observation)
            xs.append(row(observation, slot))
            observation, reward, done, _, info = env.step(slot)
            labels.append(max((grade for kind, grade in LABELS.items() if info[kind]), default=0))
            rewards.append(reward)
            sessions.append(episode)
    return Logs(np.array(xs, dtype=np.float32), np.array(labels), np.array(rewards), np.array(sessions))


def row(observation: dict[str, np.ndarray], slot: int) -> np.ndarray:
    return np.concatenate([observation["features"][slot], observation["context"]])


def rows(observation: dict[str, np.ndarray]) -> np.ndarray:
    features = observation["features"]
    return np.concatenate([features, np.broadcast_to(observation["context"], (len(features), len(observation["context"])))], axis=1)


class LambdaMART:
    """LightGBM lambdarank on the logs; scores every available candidate at each position."""

    name = "lambdamart"

    def __init__(self, *, n_estimators: int = 200, learning_rate: float = 0.05, num_leaves: int = 31, seed: int = 0):
        import lightgbm

        self.model = lightgbm.LGBMRanker(
            objective="lambdarank", n_estimators=n_estimators, learning_rate=learning_rate, num_leaves=num_leaves, random_state=seed, verbose=-1, n_jobs=1
        )

    def fit(self, logs: Logs) -> LambdaMART:
        order = np.argsort(logs.sessions, kind="stable")
        self.model.fit(logs.x[order], logs.labels[order], group=logs.group_sizes())
        return self

    def __call__(self, env: Any, observation: dict[str, np.ndarray]) -> int:
        return best_available(self.model.predict(rows(observation)), observation["mask"])


class LinearBandit:
    """LinUCB fitted offline: ridge regression of the reward on [features, context, 1]."""

    name = "linear_bandit"

    def __init__(self, *, ridge: float = 1.0, alpha: float = 0.1):
        self.ridge, self.alpha = ridge, alpha

    def fit(self, logs: Logs) -> LinearBandit:
        x = np.hstack([logs.x, np.ones((len(logs.x), 1), dtype=np.float32)]).astype(np.float64)
        a = x.T @ x + self.ridge * np.eye(x.shape[1])
        self.a_inverse = np.linalg.inv(a)
        self.theta = self.a_inverse @ (x.T @ logs.rewards)
        return self

    def __call__(self, env: Any, observation: dict[str, np.ndarray]) -> int:
        x = rows(observation).astype(np.float64)
        x = np.hstack([x, np.ones((len(x), 1))])
        bonus = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", x, self.a_inverse, x), 0.0))
        return best_available(x @ self.theta + self.alpha * bonus, observation["mask"])
