"""The PPO update on replayed logged decisions (on CUDA when present).

The logged decisions come from several policies (the batch from the serving
one, the replay window from older ones), so the objective is PPO's in its
decoupled form (Hilton et al. 2021): the trust region is around the policy
the update starts from (``policy``, the proximal one), and each decision is
importance-weighted from the policy that logged it to the proximal one,

    L = mean_i  w_i * u_i * min(r_i A_i, clip(r_i, 1 - eps, 1 + eps) A_i)
    r_i = pi_theta(a_i | x_i) / pi_prox(a_i | x_i)
    w_i = min(pi_prox(a_i | x_i) / mu(a_i | x_i), rho)        (:func:`importance_weights`)

with ``mu`` the logged propensity, ``rho`` = ``LearnerConfig.max_importance_weight`` and ``u_i`` the
contribution weight of the decision's user (:func:`ranker.learning.caps.contribution_weights`). For a batch
logged by the policy the update starts from, w = 1 and this is plain PPO.

The probabilities are those of the distribution that serves: the scores standardised over the available
candidates, at the logged temperature (in those units, :func:`ranker.ranking.policy.normalised_scores`). A
rescale of every score changes nothing there, so no step is spent on sharpening that serving's
entropy-targeted temperature would divide away. Epochs stop early once the KL from the proximal policy,
measured *after* the step on the minibatch just used (the exact KL over every candidate, not a sample of it),
passes ``target_kl``. The Adam state is carried from update to update with the
policy line (:func:`save_optimiser`, :func:`load_optimiser`): a version's artifact keeps the state it was
trained with, and its child continues from it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ranker.devices import resolve_device
from ranker.evaluation.critic import OutcomeCritic, critic_advantages, expected_rewards, fit_critic, reward_vector, session_live
from ranker.learning.config import LearnerConfig
from ranker.learning.replay import Steps, action_log_probs
from ranker.ranking.network import logged_log_softmax
from ranker.ranking.policy import RankingPolicy

OPTIMISER_FILE = "optimiser.safetensors"


def importance_weights(new_log_probs: np.ndarray, logged_log_probs: np.ndarray, clip: float) -> np.ndarray:
    """``min(exp(logp_new - logp_logged), clip)`` per decision."""
    return np.minimum(np.exp(np.clip(new_log_probs - logged_log_probs, -30.0, 30.0)), clip)


def ppo_update(
    policy: RankingPolicy,
    steps: Steps,
    config: LearnerConfig,
    *,
    seed: int,
    sample_weight: np.ndarray | None = None,
    optimiser_state: dict[str, torch.Tensor] | None = None,
) -> tuple[RankingPolicy, dict[str, float]]:
    """A copy of ``policy`` after PPO epochs on ``steps``; deterministic for a given seed on one device.
    ``sample_weight`` [N]: each decision's contribution weight (default 1). The returned policy carries its
    optimiser state in ``optimiser_state`` (for :func:`save_optimiser`)."""
    device = resolve_device(config.device)
    torch.manual_seed(seed)
    net = type(policy.net)(**policy.net.architecture())
    net.load_state_dict(policy.net.state_dict())
    net.to(device).train()
    optimiser = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    restored = optimiser_state is not None and _restore(optimiser, net, optimiser_state)
    prox_all = action_log_probs(policy, steps)  # [N, K] the proximal policy at the logged temperatures
    rows = np.arange(len(steps.actions))
    prox_chosen = prox_all[rows, steps.actions]
    ratios = importance_weights(prox_chosen, steps.old_log_probs, np.inf)  # pi_prox / mu, unclipped
    weights = np.minimum(ratios, config.max_importance_weight)
    clipped_share = float((ratios > config.max_importance_weight).mean()) if len(ratios) else 0.0
    if sample_weight is not None:
        weights = weights * sample_weight
    names = ("features", "mask", "context", "actions", "temperatures", "returns", "normalised")
    tensors = {name: torch.as_tensor(getattr(steps, name), device=device) for name in names}
    tensors["prox_log_probs"] = torch.as_tensor(prox_chosen, device=device, dtype=torch.float32)
    tensors["prox_all"] = torch.as_tensor(prox_all, device=device, dtype=torch.float32)
    tensors["weights"] = torch.as_tensor(weights, device=device, dtype=torch.float32)
    critic_report: dict[str, float] = {}
    if config.advantage == "critic":
        advantages, critic_report = outcome_advantages(steps, np.exp(prox_all), config, seed=seed, device=device, sample_weight=sample_weight)
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
            log_p = logged_log_softmax(scores, batch["mask"], batch["temperatures"], batch["normalised"])
            chosen = log_p.gather(1, batch["actions"][:, None])[:, 0]
            if "advantages" in batch:
                advantages = batch["advantages"]
            else:
                advantages = batch["returns"] - values.detach()
                if len(advantages) > 1:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
            ratio = torch.exp(chosen - batch["prox_log_probs"])
            clipped = torch.clamp(ratio, 1 - config.clip_range, 1 + config.clip_range)
            weight = batch["weights"]
            policy_loss = -(weight * torch.min(ratio * advantages, clipped * advantages)).sum() / weight.sum().clamp(min=1e-8)
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
                after, _ = net(batch["features"], batch["context"], batch["mask"])  # the KL of the step just taken
                log_after = logged_log_softmax(after, batch["mask"], batch["temperatures"], batch["normalised"])
                history["approx_kl"].append(float(kl_divergence(batch["prox_all"], log_after, batch["mask"]).mean()))
            if config.target_kl and history["approx_kl"][-1] > config.target_kl:
                stopped_early = True
                break
    net.to("cpu").eval()
    summary = {name: float(np.mean(values)) for name, values in history.items()}
    summary["device"] = str(device)
    summary["gradient_steps"] = len(history["policy_loss"])
    summary["optimiser_state"] = "continued" if restored else "fresh"
    summary["importance_weight_mean"] = float(weights.mean()) if len(weights) else 0.0
    summary["importance_weight_clipped"] = clipped_share
    summary.update(critic_report)
    updated = RankingPolicy(net=net, manifest={})
    updated.optimiser_state = _state_tensors(optimiser, net)
    return updated, summary


def kl_divergence(log_p: torch.Tensor, log_q: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B] ``KL(p || q)`` over the available candidates of each decision, from log-probabilities [B, K]."""
    available = mask > 0
    terms = torch.where(available, log_p.exp() * (log_p - log_q), torch.zeros_like(log_p))
    return terms.sum(dim=-1)


def outcome_advantages(
    steps: Steps, action_dist: np.ndarray, config: LearnerConfig, *, seed: int, device: torch.device, sample_weight: np.ndarray | None = None
) -> tuple[np.ndarray, dict[str, float]]:
    """The outcome critic fitted on the steps' shown items, and the advantages it gives against the policy
    ``action_dist`` (standardised to unit scale, not re-centred: the policy's expected value is their baseline)."""
    critic = OutcomeCritic(steps.features.shape[2], steps.context.shape[1])
    fit = fit_critic(
        critic,
        steps.features,
        steps.context,
        steps.positions,
        steps.actions,
        steps.outcomes,
        sample_weight=sample_weight,
        epochs=config.critic_epochs,
        max_steps=config.critic_max_steps,
        seed=seed,
        device=device,
    )
    q = expected_rewards(critic, steps.features, steps.context, steps.positions, reward_vector(config.reward_weights), values=steps.values)
    live = session_live(steps.trajectory, steps.outcomes)
    advantages = critic_advantages(q, action_dist, steps.actions, steps.rewards, live, correction_clip=config.critic_correction_clip)
    scale = advantages[live].std() if live.sum() > 1 else 1.0
    return (advantages / (scale + 1e-8)).astype(np.float32), {"critic_loss": fit.loss, "critic_steps": fit.steps, "live_steps": int(live.sum())}


# --------------------------------------------------------------- optimiser state
def _state_tensors(optimiser: torch.optim.Adam, net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Adam's moments and step count per parameter, named after the parameter (safetensors, nothing pickled)."""
    out: dict[str, torch.Tensor] = {}
    for name, parameter in net.named_parameters():
        state = optimiser.state.get(parameter)
        if not state:
            continue
        out[f"{name}.exp_avg"] = state["exp_avg"].detach().cpu().contiguous()
        out[f"{name}.exp_avg_sq"] = state["exp_avg_sq"].detach().cpu().contiguous()
        out[f"{name}.step"] = torch.as_tensor(float(state["step"])).reshape(1)
    return out


def _restore(optimiser: torch.optim.Adam, net: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> bool:
    """Load a saved state into ``optimiser``; False (and a fresh state) if it does not fit this network."""
    parameters = dict(net.named_parameters())
    if any(f"{name}.exp_avg" not in tensors or tensors[f"{name}.exp_avg"].shape != p.shape for name, p in parameters.items()):
        return False
    for name, parameter in parameters.items():
        optimiser.state[parameter] = {
            "step": torch.tensor(float(tensors[f"{name}.step"][0])),
            "exp_avg": tensors[f"{name}.exp_avg"].to(parameter.device).clone(),
            "exp_avg_sq": tensors[f"{name}.exp_avg_sq"].to(parameter.device).clone(),
        }
    return True


def save_optimiser(policy: RankingPolicy, directory: Path) -> None:
    state = getattr(policy, "optimiser_state", None)
    if state:
        save_file(state, str(Path(directory) / OPTIMISER_FILE))


def load_optimiser(directory: Path) -> dict[str, torch.Tensor] | None:
    path = Path(directory) / OPTIMISER_FILE
    return load_file(str(path)) if path.exists() else None
