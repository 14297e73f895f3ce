"""The outcome critic: what each candidate would earn at a position, and the PPO advantages it gives.

:class:`OutcomeCritic` predicts, for every candidate of a logged decision, the
probability of a click, an add-to-cart and a purchase if it were placed at
that position, factorised as in the position-based click model and the
purchase funnel: P(the position is examined) x P(click | examined) x
P(cart | click) x P(purchase | cart). One shared network reads the candidate's
features (which already say how it relates to the items above it) and the
context; the examination probabilities are learnt per position, once for all
items. It is fitted with binary cross-entropy on every *shown* item of every
logged ranking (:func:`fit_critic`): the only items whose outcomes were seen.

Advantages (:func:`critic_advantages`), per logged decision t with logged action a:

    q(x, b)  = sum_k w_k P_k(b | x, t)             expected reward of candidate b at t
    V(x)     = sum_b pi(b | x) q(x, b)             the policy's expected value (its baseline)
    A_t      = q(x, a) - V(x) + clip(r_t - q(x, a), -c, c)

The last term is the doubly-robust correction on the logged action: the
critic's error on what actually happened, clipped to ``c`` reward units
(``LearnerConfig.critic_correction_clip``, default 0.1: a click's worth) so one
surprising purchase cannot dominate an update. Measured on the tiny shop of
``tests/learning/test_critic.py`` (eight updates of 400 rankings from a bad
policy, lr 1e-3, target_kl 0.05): share of the gap to the best slate closed
0.78 at c = 0.1, 0.79 at c = 0, 0.58 at c = 0.3, 0.41 at c = 1; reward-to-go
minus a value head, 0.19. At the learner's defaults (lr 3e-4, target_kl 0.02):
0.50 and 0.27. Positions after a purchase carry no advantage: the shopper was
satisfied and the session over, so nothing placed there could have been seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ranker.interactions import EVENT_TYPES, REWARD_WEIGHTS
from ranker.ranking.network import Standardiser

OUTCOMES = tuple(EVENT_TYPES)  # click, add_to_cart, purchase
MAX_POSITIONS = 50


class OutcomeCritic(nn.Module):
    """P(click), P(add to cart), P(purchase) of every candidate, were it placed at the given position."""

    def __init__(self, n_features: int, n_context: int, hidden: int = 64, max_positions: int = MAX_POSITIONS):
        super().__init__()
        self.max_positions = max_positions
        self.feature_inputs = Standardiser(n_features)  # fitted on the shown items by fit_critic
        self.context_inputs = Standardiser(n_context)
        self.body = nn.Sequential(nn.Linear(n_features + n_context, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.heads = nn.Linear(hidden, len(OUTCOMES))
        self.examination = nn.Embedding(max_positions, 1)  # the logit of P(examined) per position
        nn.init.constant_(self.examination.weight, 4.0)  # start from "every position is seen"

    def forward(self, features: torch.Tensor, context: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """features [B, K, F], context [B, C], position [B] -> probabilities [B, K, 3] of click, cart and purchase:
        P(the position is examined) x the candidate's funnel (click, cart after a click, purchase after a cart)."""
        k = features.shape[1]
        features, context = self.feature_inputs(features), self.context_inputs(context)
        inputs = torch.cat([features, context.unsqueeze(1).expand(-1, k, -1)], dim=-1)
        examined = torch.sigmoid(self.examination(position.clamp(max=self.max_positions - 1))).unsqueeze(1)  # [B, 1, 1]
        funnel = torch.cumprod(torch.sigmoid(self.heads(self.body(inputs))), dim=-1)  # click, cart after a click, purchase after a cart
        return examined * funnel


def reward_vector(weights: dict[str, float] | None = None) -> np.ndarray:
    weights = weights or REWARD_WEIGHTS
    return np.array([weights.get(outcome, 0.0) for outcome in OUTCOMES], dtype=np.float32)


@dataclass
class CriticFit:
    loss: float  # the last epoch's mean binary cross-entropy
    steps: int  # gradient steps taken
    shown: int  # shown items it was fitted on


def fit_critic(
    critic: OutcomeCritic,
    features: np.ndarray,
    context: np.ndarray,
    position: np.ndarray,
    action: np.ndarray,
    outcomes: np.ndarray,
    *,
    sample_weight: np.ndarray | None = None,
    epochs: int = 20,
    max_steps: int | None = None,
    batch_size: int = 256,
    learning_rate: float = 3e-3,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> CriticFit:
    """Binary cross-entropy on the shown items: ``features`` [N, K, F], ``action`` [N] (the shown candidate),
    ``outcomes`` [N, 3] (0/1 click, cart, purchase of it); ``sample_weight`` [N] caps contributions; ``max_steps``
    bounds the gradient steps (fewer epochs on larger data)."""
    torch.manual_seed(seed)
    rows = np.arange(len(action))
    if len(action):
        critic.feature_inputs.fit(features[rows, action])
        critic.context_inputs.fit(context)
    critic.to(device).train()
    optimiser = torch.optim.Adam(critic.parameters(), lr=learning_rate)
    shown = torch.as_tensor(features[rows, action][:, None, :], device=device)  # [N, 1, F]
    tensors = {
        "features": shown,
        "context": torch.as_tensor(context, device=device, dtype=torch.float32),
        "position": torch.as_tensor(position, device=device, dtype=torch.long),
        "outcomes": torch.as_tensor(outcomes, device=device, dtype=torch.float32),
        "weight": torch.as_tensor(np.ones(len(action)) if sample_weight is None else sample_weight, device=device, dtype=torch.float32),
    }
    rng = np.random.default_rng(seed)
    loss_fn = nn.BCELoss(reduction="none")
    steps, last = 0, float("nan")
    batches = -(-len(action) // batch_size)
    if max_steps:  # a large window gets fewer passes: the same number of gradient steps at most
        epochs = max(1, min(epochs, max_steps // max(batches, 1)))
    for _ in range(epochs):
        order = rng.permutation(len(action))
        total, mass = 0.0, 0.0
        for start in range(0, len(order), batch_size):
            index = torch.as_tensor(order[start : start + batch_size], device=device)
            probabilities = critic(tensors["features"][index], tensors["context"][index], tensors["position"][index])[:, 0, :].clamp(1e-6, 1 - 1e-6)
            weight = tensors["weight"][index]
            loss = (loss_fn(probabilities, tensors["outcomes"][index]).sum(dim=1) * weight).sum() / weight.sum().clamp(min=1e-8)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            steps += 1
            total += float(loss.detach()) * float(weight.sum())
            mass += float(weight.sum())
        last = total / max(mass, 1e-8)
    critic.to("cpu").eval()
    return CriticFit(loss=last, steps=steps, shown=len(action))


def expected_rewards(
    critic: OutcomeCritic,
    features: np.ndarray,
    context: np.ndarray,
    position: np.ndarray,
    weights: np.ndarray,
    *,
    values: np.ndarray | None = None,
    chunk: int = 2048,
) -> np.ndarray:
    """[N, K] q(x, b): the expected reward of every candidate at each decision's position; ``values`` [N, K]: each
    candidate's purchase value under the objective (default 1)."""
    out = []
    with torch.no_grad():
        for start in range(0, len(position), chunk):
            rows = slice(start, start + chunk)
            probabilities = critic(
                torch.as_tensor(features[rows]), torch.as_tensor(context[rows], dtype=torch.float32), torch.as_tensor(position[rows], dtype=torch.long)
            )
            p = probabilities.numpy()
            if values is not None:
                p = p.copy()
                p[..., OUTCOMES.index("purchase")] *= values[rows]
            out.append((p * weights).sum(axis=-1))
    return np.concatenate(out) if out else np.zeros(features.shape[:2], dtype=np.float32)


def critic_advantages(
    q: np.ndarray, action_dist: np.ndarray, action: np.ndarray, reward: np.ndarray, live: np.ndarray, *, correction_clip: float = 1.0
) -> np.ndarray:
    """[N] A_t = q(a) - sum_b pi(b) q(b) + clip(r - q(a), -c, c), 0 where the session was over (``live`` False)."""
    rows = np.arange(len(action))
    chosen = q[rows, action]
    baseline = (action_dist * q).sum(axis=1)
    advantage = chosen - baseline + np.clip(reward - chosen, -correction_clip, correction_clip)
    return np.where(live, advantage, 0.0)


def session_live(trajectory: np.ndarray, outcomes: np.ndarray) -> np.ndarray:
    """[N] whether the shopper could still see each position: False after a purchase in the same ranking."""
    purchase = outcomes[:, OUTCOMES.index("purchase")] > 0
    live = np.ones(len(trajectory), dtype=bool)
    for index in range(1, len(trajectory)):
        if trajectory[index] == trajectory[index - 1] and (purchase[index - 1] or not live[index - 1]):
            live[index] = False
    return live
