"""Baselines a ranking engineer would reach for, fitted on the same simulated data.

They learn from logged sessions of a stochastic logging policy (retrieval
order with epsilon-random placements, so the logs cover more than the top of
retrieval): each placed item is one row of its step's features and the
context, labelled with what the user did with it. The rows carry every
feature the PPO policy reads, the session's included (what was clicked on
earlier pages, the page, the rephrasings), so on the session environment the
baselines use the session as well as it can be used one page at a time.

- :class:`LambdaMART`: LightGBM ``lambdarank`` on graded labels (purchase 3,
  cart 2, click 1, else 0), one query group per page shown.
- :class:`LinearBandit`: a linear contextual bandit (LinUCB fitted offline):
  ridge regression of the step's reward on [features, context], acting by
  the upper confidence bound ``theta . x + alpha sqrt(x A^-1 x)``.
- :class:`CriticGreedy`: the outcome critic of the online learner
  (:class:`ranker.evaluation.critic.OutcomeCritic`: P(click), P(cart),
  P(purchase) per candidate at a position) fitted on the logged rows, acting
  by the highest expected reward ``sum_k w_k P_k``.

All act greedily per position on the current features (slate features
included), like the PPO policy: they are myopic (the best item for this
position, with no thought for the pages after it), and are measured on the
same seeded sessions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.policies import best_available
from ranker.ranking.features import FEATURES

LABELS = {"purchase": 3, "add_to_cart": 2, "click": 1}


@dataclass
class Logs:
    """Rows of logged placements: x = [features, context], graded label, reward, the page each was shown on (a
    query group), the position and the outcomes (click, cart, purchase)."""

    x: np.ndarray
    labels: np.ndarray
    rewards: np.ndarray
    sessions: np.ndarray  # one id per page shown (a SlateShopping session is one page)
    positions: np.ndarray | None = None
    outcomes: np.ndarray | None = None  # [N, 3] 0/1

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
    xs, labels, rewards, pages, positions, outcomes = [], [], [], [], [], []
    for episode in range(episodes):
        observation, _ = env.reset(seed=seed if episode == 0 else None)
        done = False
        while not done:
            slot = policy(env, observation)
            xs.append(row(observation, slot))
            positions.append(int(observation["position"]))
            observation, reward, done, _, info = env.step(slot)
            labels.append(max((grade for kind, grade in LABELS.items() if info[kind]), default=0))
            rewards.append(reward)
            pages.append(episode * 1_000 + info.get("page", 1))
            outcomes.append((info["click"], info["add_to_cart"], info["purchase"]))
    return Logs(np.array(xs, dtype=np.float32), np.array(labels), np.array(rewards), np.array(pages), np.array(positions), np.array(outcomes, dtype=np.float32))


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


class CriticGreedy:
    """The outcome critic fitted on the logs; places the available candidate with the highest expected reward at
    this position (``reward_weights``: the environment's, click, add_to_cart, purchase)."""

    name = "critic_greedy"

    def __init__(self, *, reward_weights: dict[str, float] | None = None, hidden: int = 64, epochs: int = 20, max_steps: int = 4_000, seed: int = 0):
        self.reward_weights, self.hidden, self.epochs, self.max_steps, self.seed = reward_weights, hidden, epochs, max_steps, seed

    def fit(self, logs: Logs) -> CriticGreedy:
        from ranker.evaluation.critic import OutcomeCritic, fit_critic, reward_vector

        if logs.outcomes is None or logs.positions is None:
            raise ValueError("logs: the critic needs positions and outcomes (collect them with collect_logs)")
        import torch

        n_context = logs.x.shape[1] - len(FEATURES)
        features, context = logs.x[:, None, : len(FEATURES)], logs.x[:, len(FEATURES) :]
        with torch.random.fork_rng():  # its initial weights from its own seed, whatever ran before
            torch.manual_seed(self.seed)
            self.critic = OutcomeCritic(len(FEATURES), n_context, hidden=self.hidden)
        self.fit_result = fit_critic(
            self.critic,
            features,
            context,
            logs.positions,
            np.zeros(len(logs.x), dtype=np.int64),
            logs.outcomes,
            epochs=self.epochs,
            max_steps=self.max_steps,
            seed=self.seed,
        )
        self.weights = reward_vector(self.reward_weights)
        critic = self.critic
        self._layers = [
            (layer.weight.detach().numpy().T.copy(), layer.bias.detach().numpy().copy()) for layer in (critic.body[0], critic.body[2], critic.heads)
        ]
        self._inputs = (critic.feature_inputs.numpy(), critic.context_inputs.numpy())
        self._examined = 1.0 / (1.0 + np.exp(-critic.examination.weight.detach().numpy()[:, 0]))
        return self

    def expected_rewards(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        """[K] the critic's expected reward of each candidate at this position: its forward pass, in numpy."""
        from ranker.ranking.standardise import CLIP

        (feature_mean, feature_inverse), (context_mean, context_inverse) = self._inputs
        features = np.clip((observation["features"] - feature_mean) * feature_inverse, -CLIP, CLIP)
        context = np.clip((observation["context"] - context_mean) * context_inverse, -CLIP, CLIP)
        hidden = np.concatenate([features, np.broadcast_to(context, (len(features), len(context)))], axis=1)
        (w1, b1), (w2, b2), (w3, b3) = self._layers
        hidden = np.maximum(np.maximum(hidden @ w1 + b1, 0.0) @ w2 + b2, 0.0)
        funnel = np.cumprod(1.0 / (1.0 + np.exp(-(hidden @ w3 + b3))), axis=1)  # click, cart after a click, purchase after a cart
        examined = self._examined[min(int(observation["position"]), len(self._examined) - 1)]
        return examined * funnel @ self.weights

    def __call__(self, env: Any, observation: dict[str, np.ndarray]) -> int:
        return best_available(self.expected_rewards(observation), observation["mask"])
