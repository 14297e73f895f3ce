"""A tiny shop whose true outcome probabilities are known, for the learning tests.

Each request has K candidates with random features x (4 numbers); a slate has
L positions examined with the position-based model's theta_t; an examined
item is clicked with sigmoid(beta . x), added to the cart after a click with
probability 0.5 and bought after that with sigmoid(gamma . x). So the
expected reward of any slate is known exactly, and so is the best one.
"""

from __future__ import annotations

import numpy as np
import torch

from ranker.evaluation.critic import reward_vector
from ranker.learning.replay import Steps
from ranker.ranking.network import SlateNet
from ranker.ranking.policy import RankingPolicy

K, L, F = 6, 3, 4
THETA = np.array([1.0, 0.6, 0.36])
BETA = np.array([2.0, -1.0, 0.5, 0.0])
GAMMA = np.array([0.0, 1.0, -1.0, 1.5])
CART = 0.5
W = reward_vector()


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def true_probabilities(x: np.ndarray, position: int) -> np.ndarray:
    """[K, 3] P(click), P(cart), P(purchase) of each candidate at ``position``."""
    click = THETA[position] * sigmoid(x @ BETA)
    cart = click * CART
    return np.stack([click, cart, cart * sigmoid(x @ GAMMA)], axis=-1)


def true_value(x: np.ndarray, slate: list[int]) -> float:
    return float(sum(true_probabilities(x, t)[a] @ W for t, a in enumerate(slate)))


def best_value(x: np.ndarray) -> float:
    per_item = (true_probabilities(x, 0) @ W) / THETA[0]  # PBM: the best slate sorts by the item's own value
    order = np.argsort(-per_item)[:L]
    return true_value(x, list(order))


def requests(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, K, F)).astype(np.float32)


def sample_slate(policy: RankingPolicy, x: np.ndarray, temperature: float, rng: np.random.Generator) -> tuple[list[int], list[float]]:
    mask = np.ones(K, dtype=bool)
    scores = policy.scores(x, np.zeros(1, dtype=np.float32), mask.astype(np.float32))
    slate, log_probs = [], []
    for _ in range(L):
        logits = np.where(mask, scores / temperature, -np.inf)
        log_p = logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())
        a = int(rng.choice(K, p=np.exp(log_p)))
        slate.append(a)
        log_probs.append(float(log_p[a]))
        mask[a] = False
    return slate, log_probs


def log_rankings(policy: RankingPolicy, xs: np.ndarray, temperature: float, seed: int, buys: int | None = None) -> Steps:
    """Serve every request with ``policy``, draw the shoppers' outcomes, and log the decisions as the learner replays them.
    ``buys``: a candidate these shoppers click, cart and buy wherever it is shown (and nothing else)."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {name: [] for name in Steps.__dataclass_fields__}
    for index, x in enumerate(xs):
        slate, log_probs = sample_slate(policy, x, temperature, rng)
        mask = np.ones(K, dtype=np.float32)
        outcomes = []
        for t, a in enumerate(slate):
            if buys is not None:
                outcomes.append(np.full(3, float(a == buys), dtype=np.float32))
                continue
            p = true_probabilities(x, t)[a]
            click = rng.random() < p[0]
            cart = click and rng.random() < CART
            purchase = cart and rng.random() < p[2] / max(p[1], 1e-12)
            outcomes.append(np.array([click, cart, purchase], dtype=np.float32))
        rewards = np.array([o @ W for o in outcomes])
        reward_to_go = np.cumsum(rewards[::-1])[::-1]
        for t, a in enumerate(slate):
            rows["features"].append(x)
            rows["mask"].append(mask.copy())
            rows["context"].append(np.zeros(1, dtype=np.float32))
            rows["actions"].append(a)
            rows["old_log_probs"].append(log_probs[t])
            rows["temperatures"].append(temperature)
            rows["returns"].append(reward_to_go[t])
            rows["rewards"].append(rewards[t])
            rows["trajectory"].append(index)
            rows["positions"].append(t)
            rows["outcomes"].append(outcomes[t])
            rows["values"].append(np.ones(K, dtype=np.float32))
            rows["normalised"].append(False)  # raw scores over the temperature, as sample_slate draws them
            rows["bonus"].append(np.zeros(K, dtype=np.float32))
            mask[a] = 0.0
    dtypes = {"actions": np.int64, "trajectory": np.int64, "positions": np.int64, "normalised": bool}
    return Steps(**{name: np.asarray(values, dtype=dtypes.get(name, np.float32)) for name, values in rows.items()})


def policy_value(policy: RankingPolicy, xs: np.ndarray, temperature: float, seed: int = 99) -> float:
    """Expected reward per request of ``policy`` serving at ``temperature`` (exact per slate, sampled slates)."""
    rng = np.random.default_rng(seed)
    return float(np.mean([true_value(x, sample_slate(policy, x, temperature, rng)[0]) for x in xs]))


def bad_policy(seed: int = 0, sign: float = -1.0) -> RankingPolicy:
    """A scorer fitted to rank the items worst first: score = -(expected reward of the item) (``sign=1``: best first)."""
    torch.manual_seed(seed)
    net = SlateNet(n_features=F, n_context=1, hidden=32)
    xs = requests(400, seed=seed + 1)
    target = torch.as_tensor(sign * np.stack([true_probabilities(x, 0) @ W for x in xs]) * 10, dtype=torch.float32)
    features = torch.as_tensor(xs)
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(300):
        scores, _ = net(features, torch.zeros(len(xs), 1), torch.ones(len(xs), K))
        loss = ((scores - target) ** 2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return RankingPolicy(net=net.eval())


def concatenate(*parts: Steps) -> Steps:
    """Several logs as one (ranking indices renumbered)."""
    offset, trajectories = 0, []
    for part in parts:
        trajectories.append(part.trajectory + offset)
        offset += int(part.trajectory.max()) + 1
    joined = {name: np.concatenate([getattr(part, name) for part in parts]) for name in Steps.__dataclass_fields__ if name != "trajectory"}
    return Steps(**joined, trajectory=np.concatenate(trajectories))
