"""The PPO update on replayed logged decisions (on CUDA when present)."""

from __future__ import annotations

import numpy as np
import torch

from ranker.devices import resolve_device
from ranker.learning.config import LearnerConfig
from ranker.learning.critic import OutcomeCritic, critic_advantages, expected_rewards, fit_critic, reward_vector, session_live
from ranker.learning.replay import Steps, action_log_probs
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
    critic_report: dict[str, float] = {}
    if config.advantage == "critic":
        advantages, critic_report = outcome_advantages(policy, steps, config, seed=seed, device=device)
        tensors["advantages"] = torch.as_tensor(advantages, device=device, dtype=torch.float32)
    rng = np.random.default_rng(seed)
    n = len(steps.actions)
    history: dict[str, list[float]] = {"policy_loss": [], "value_loss": [], "clip_fraction": [], "approx_kl": []}
    stopped_early = False
    for _ in range(config.epochs):
        if stopped_early:
            break
        order = rng.permutation(n)
        for start in range(0, n, config.minibatch_steps):
            index = torch.as_tensor(order[start : start + config.minibatch_steps], device=device)
            batch = {name: tensor[index] for name, tensor in tensors.items()}
            scores, values = net(batch["features"], batch["context"], batch["mask"])
            log_p = masked_log_softmax(scores / batch["temperatures"][:, None], batch["mask"])
            chosen = log_p.gather(1, batch["actions"][:, None])[:, 0]
            if "advantages" in batch:
                advantages = batch["advantages"]
            else:
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
            if config.target_kl and history["approx_kl"][-1] > config.target_kl:
                stopped_early = True
                break
    net.to("cpu").eval()
    summary = {name: float(np.mean(values)) for name, values in history.items()}
    summary["device"] = str(device)
    summary["gradient_steps"] = len(history["policy_loss"])
    summary.update(critic_report)
    return RankingPolicy(net=net, manifest={}), summary


def outcome_advantages(policy: RankingPolicy, steps: Steps, config: LearnerConfig, *, seed: int, device: torch.device) -> tuple[np.ndarray, dict[str, float]]:
    """The outcome critic fitted on the batch's shown items, and the advantages it gives (standardised to unit
    scale, not re-centred: the policy's expected value is already their baseline)."""
    critic = OutcomeCritic(steps.features.shape[2], steps.context.shape[1])
    fit = fit_critic(
        critic, steps.features, steps.context, steps.positions, steps.actions, steps.outcomes, epochs=config.critic_epochs, seed=seed, device=device
    )
    weights = reward_vector(config.reward_weights)
    q = expected_rewards(critic, steps.features, steps.context, steps.positions, weights)
    action_dist = np.exp(action_log_probs(policy, steps))
    live = session_live(steps.trajectory, steps.outcomes)
    advantages = critic_advantages(q, action_dist, steps.actions, steps.rewards, live, correction_clip=config.critic_correction_clip)
    scale = advantages[live].std() if live.sum() > 1 else 1.0
    return (advantages / (scale + 1e-8)).astype(np.float32), {"critic_loss": fit.loss, "critic_steps": fit.steps, "live_steps": int(live.sum())}
