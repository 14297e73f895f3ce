"""The PPO update on replayed logged decisions (on CUDA when present)."""

from __future__ import annotations

import numpy as np
import torch

from ranker.devices import resolve_device
from ranker.learning.config import LearnerConfig
from ranker.learning.replay import Steps
from ranker.ranking.policy import RankingPolicy, masked_log_softmax


def ppo_update(policy: RankingPolicy, steps: Steps, config: LearnerConfig, *, seed: int) -> tuple[RankingPolicy, dict[str, float]]:
    """A copy of ``policy`` after PPO epochs on ``steps``; deterministic for a given seed on one device."""
    device = resolve_device(config.device)
    torch.manual_seed(seed)
    net = type(policy.net)(**policy.net.architecture())
    net.load_state_dict(policy.net.state_dict())
    net.to(device).train()
    optimiser = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    tensors = {
        name: torch.as_tensor(getattr(steps, name), device=device)
        for name in ("features", "mask", "context", "actions", "old_log_probs", "temperatures", "returns")
    }
    rng = np.random.default_rng(seed)
    n = len(steps.actions)
    history: dict[str, list[float]] = {"policy_loss": [], "value_loss": [], "clip_fraction": [], "approx_kl": []}
    for _ in range(config.epochs):
        order = rng.permutation(n)
        for start in range(0, n, config.minibatch_steps):
            index = torch.as_tensor(order[start : start + config.minibatch_steps], device=device)
            batch = {name: tensor[index] for name, tensor in tensors.items()}
            scores, values = net(batch["features"], batch["context"], batch["mask"])
            log_p = masked_log_softmax(scores / batch["temperatures"][:, None], batch["mask"])
            chosen = log_p.gather(1, batch["actions"][:, None])[:, 0]
            advantages = batch["returns"] - values.detach()
            if len(advantages) > 1:
                advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
            ratio = torch.exp(chosen - batch["old_log_probs"])
            clipped = torch.clamp(ratio, 1 - config.clip_range, 1 + config.clip_range)
            policy_loss = -torch.min(ratio * advantages, clipped * advantages).mean()
            value_loss = ((values - batch["returns"]) ** 2).mean()
            probabilities = log_p.exp()
            entropy = -(probabilities * log_p.masked_fill(batch["mask"] <= 0, 0.0)).sum(dim=1).mean()
            loss = policy_loss + config.value_coef * value_loss - config.entropy_coef * entropy
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), config.max_grad_norm)
            optimiser.step()
            with torch.no_grad():
                history["policy_loss"].append(float(policy_loss))
                history["value_loss"].append(float(value_loss))
                history["clip_fraction"].append(float(((ratio - 1).abs() > config.clip_range).float().mean()))
                history["approx_kl"].append(float((batch["old_log_probs"] - chosen).mean()))
    net.to("cpu").eval()
    summary = {name: float(np.mean(values)) for name, values in history.items()}
    summary["device"] = str(device)
    return RankingPolicy(net=net, manifest={}), summary
