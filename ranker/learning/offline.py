"""Offline PPO training of the ranking policy in the shopper simulator.

stable-baselines3 meets the policy through its extension points, not a fork:
sb3-contrib's ``MaskablePPO`` with :class:`SlatePolicy`, a
``MaskableActorCriticPolicy`` whose actor is :class:`ranker.ranking.network.SlateNet`
(its scores are the logits of the masked categorical, so one PPO step is one
Plackett-Luce position) and whose critic is the net's pooled value head.

:func:`train` runs PPO with seeding, a progress bar, TensorBoard logs,
periodic evaluation on held-out worlds and checkpoints saved as policy
artifacts. The device is chosen automatically (CUDA when present). Before the
first step, the net's input standardisation is fitted on observations of a
uniformly random ranker in the training worlds (:func:`input_sample`); a run
from a parent keeps the parent's statistics.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from sb3_contrib import MaskablePPO
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import DummyVecEnv
from torch import nn
from tqdm.auto import tqdm

from ranker.devices import resolve_device
from ranker.ranking.network import SlateNet
from ranker.ranking.objective import objective_of_purchase_value
from ranker.ranking.policy import RankingPolicy


class SlateObservation(BaseFeaturesExtractor):
    """Flattens the env's Dict observation to [features (K*F) | context (C) | mask (K)]."""

    def __init__(self, observation_space: spaces.Dict):
        k, f = observation_space["features"].shape
        c = observation_space["context"].shape[0]
        super().__init__(observation_space, features_dim=k * f + c + k)
        self.k, self.f, self.c = k, f, c

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([observations["features"].flatten(1), observations["context"], observations["mask"].float()], dim=1)


class _SlateHeads(nn.Module):
    """SB3's "mlp_extractor" slot: latent_pi = the K scores, latent_vf = the value."""

    def __init__(self, net: SlateNet, k: int, f: int, c: int):
        super().__init__()
        self.net, self.k, self.f, self.c = net, k, f, c
        self.latent_dim_pi, self.latent_dim_vf = k, 1

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kf = self.k * self.f
        features = x[:, :kf].reshape(-1, self.k, self.f)
        scores, values = self.net(features, x[:, kf : kf + self.c], x[:, kf + self.c :])
        return scores, values.unsqueeze(-1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._run(x)

    def forward_actor(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x)[0]

    def forward_critic(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x)[1]


class SlatePolicy(MaskableActorCriticPolicy):
    """MaskablePPO policy whose actor and critic are one :class:`SlateNet`."""

    def __init__(self, *args: Any, hidden: int = 128, **kwargs: Any):
        self.hidden = hidden
        kwargs.setdefault("features_extractor_class", SlateObservation)
        kwargs["ortho_init"] = False  # SlateNet initialises itself (near-uniform scores)
        super().__init__(*args, **kwargs)

    def _build_mlp_extractor(self) -> None:
        extractor = self.features_extractor
        assert isinstance(extractor, SlateObservation)
        self.mlp_extractor = _SlateHeads(SlateNet(extractor.f, extractor.c, self.hidden), extractor.k, extractor.f, extractor.c)

    def _build(self, lr_schedule: Callable[[float], float]) -> None:
        self._build_mlp_extractor()
        self.action_net = nn.Identity()  # the scores are the logits
        self.value_net = nn.Identity()  # the net's value head
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]

    @property
    def slate_net(self) -> SlateNet:
        return self.mlp_extractor.net  # type: ignore[return-value]


@dataclass
class TrainConfig:
    """Everything a training run depends on; recorded in the artifact's manifest."""

    env_id: str = "envs/SlateShopping-v0"
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    timesteps: int = 200_000
    seed: int = 0
    n_envs: int = 16  # many cheap envs per vector step: SB3's per-step overhead dominates otherwise
    n_steps: int = 64
    batch_size: int = 512
    n_epochs: int = 4
    learning_rate: float = 1e-3
    learning_rate_schedule: str = "linear"  # "linear": decays to 0 at the last step (stable final policy); "constant"
    gamma: float = 1.0  # one slate is a short, finite episode: no discounting
    gae_lambda: float = 0.95
    ent_coef: float = 0.01
    clip_range: float = 0.2
    hidden: int = 128
    eval_every: int = 20_000
    eval_episodes: int = 300
    eval_seed: int = 10_000  # held-out worlds: never a training seed
    device: str = "auto"
    standardise_steps: int = 3_000  # random-ranker steps whose observations fit the input standardisation


def learning_rate_schedule(config: TrainConfig) -> float | Callable[[float], float]:
    """What SB3 takes as the learning rate: a constant, or a function of the progress remaining (1 -> 0)."""
    if config.learning_rate_schedule == "constant":
        return config.learning_rate
    if config.learning_rate_schedule == "linear":
        start = config.learning_rate
        return lambda remaining: start * remaining
    raise ValueError(f"learning_rate_schedule: {config.learning_rate_schedule!r}; use linear or constant")


def input_sample(config: TrainConfig, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Feature rows of the candidates still available [N, F] and contexts [M, C], seen over ``steps`` decisions of a
    uniformly random ranker in the training worlds (their own seed stream): what the standardisation is fitted on."""
    env = make_env(config.env_id, **config.env_kwargs)
    rng = np.random.default_rng([config.seed, 7])
    features, contexts = [], []
    observation, _ = env.reset(seed=config.seed + 7_777)
    for _ in range(steps):
        mask = observation["mask"].astype(bool)
        features.append(observation["features"][mask])
        contexts.append(observation["context"])
        observation, _, terminated, truncated, _ = env.step(int(rng.choice(np.flatnonzero(mask))))
        if terminated or truncated:
            observation, _ = env.reset()
    env.close()
    return np.concatenate(features), np.stack(contexts)


def make_env(env_id: str, **kwargs: Any) -> gym.Env:
    import envs  # noqa: F401  (registers the ids)

    return gym.make(env_id, **kwargs)


class _Progress(BaseCallback):
    """A tqdm bar over timesteps, and periodic held-out evaluation with checkpoints."""

    def __init__(self, config: TrainConfig, out_dir: Path, evaluate: Callable[[RankingPolicy], dict[str, Any]], progress: bool):
        super().__init__()
        self.config, self.out_dir, self.evaluate, self.show = config, out_dir, evaluate, progress
        self.curve: list[dict[str, Any]] = []
        self.next_eval = config.eval_every
        self.started = time.perf_counter()

    def _on_training_start(self) -> None:
        self.bar = tqdm(total=self.config.timesteps, desc="training", unit="step", disable=not self.show)

    def _on_step(self) -> bool:
        self.bar.update(self.training_env.num_envs)
        if self.num_timesteps >= self.next_eval:
            self.next_eval += self.config.eval_every
            self.checkpoint()
        return True

    def checkpoint(self) -> dict[str, Any]:
        policy = snapshot(self.model)
        result = self.evaluate(policy)
        point = {"timesteps": int(self.num_timesteps), "seconds": round(time.perf_counter() - self.started, 2), **result}
        self.curve.append(point)
        self.logger.record("eval/reward_mean", result["reward_mean"])
        self.logger.record("eval/purchases_mean", result["purchases_mean"])
        self.logger.dump(self.num_timesteps)
        policy.save(self.out_dir / "checkpoints" / f"step-{self.num_timesteps:09d}", training={"timesteps": int(self.num_timesteps)}, evaluation=result)
        self.bar.set_postfix(reward=f"{result['reward_mean']:.3f}")
        return point

    def _on_training_end(self) -> None:
        self.bar.close()


def snapshot(model: MaskablePPO) -> RankingPolicy:
    """A :class:`RankingPolicy` with a CPU copy of the model's current weights."""
    source: SlateNet = model.policy.slate_net  # type: ignore[attr-defined]
    net = SlateNet(**source.architecture())
    net.load_state_dict({name: tensor.detach().cpu() for name, tensor in source.state_dict().items()})
    return RankingPolicy(net)


def held_out_evaluation(config: TrainConfig) -> Callable[[RankingPolicy], dict[str, Any]]:
    from envs.evaluation import run_policy

    env = make_env(config.env_id, **config.env_kwargs)

    def evaluate(policy: RankingPolicy) -> dict[str, Any]:
        return run_policy(env, policy, episodes=config.eval_episodes, seed=config.eval_seed, name="eval").summary()

    return evaluate


def train(config: TrainConfig, out_dir: Path, *, progress: bool = True, parent: RankingPolicy | None = None) -> RankingPolicy:
    """Train a policy with PPO and save it (with checkpoints, TensorBoard logs and the learning curve) under ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = str(resolve_device(config.device))
    torch.manual_seed(config.seed)
    vec_env = DummyVecEnv([lambda: make_env(config.env_id, **config.env_kwargs) for _ in range(config.n_envs)])
    vec_env.seed(config.seed)
    model = MaskablePPO(
        SlatePolicy,
        vec_env,
        n_steps=config.n_steps,
        batch_size=config.batch_size,
        n_epochs=config.n_epochs,
        learning_rate=learning_rate_schedule(config),
        gamma=config.gamma,
        gae_lambda=config.gae_lambda,
        ent_coef=config.ent_coef,
        clip_range=config.clip_range,
        seed=config.seed,
        device=device,
        tensorboard_log=str(out_dir / "tensorboard"),
        policy_kwargs={"hidden": config.hidden},
        verbose=0,
    )
    net: SlateNet = model.policy.slate_net  # type: ignore[attr-defined]
    if parent is not None:
        net.load_state_dict(parent.net.state_dict())
    elif config.standardise_steps:
        features, contexts = input_sample(config, config.standardise_steps)
        net.feature_inputs.fit(features)
        net.context_inputs.fit(contexts)
    callback = _Progress(config, out_dir, held_out_evaluation(config), progress)
    started = time.perf_counter()
    model.learn(total_timesteps=config.timesteps, callback=callback, tb_log_name="ppo")
    seconds = time.perf_counter() - started
    final = callback.checkpoint() if not callback.curve or callback.curve[-1]["timesteps"] != model.num_timesteps else callback.curve[-1]
    write_curve(out_dir / "learning_curve.csv", callback.curve)
    policy = snapshot(model)
    policy.save(
        out_dir,
        objective=objective_of_purchase_value(config.env_kwargs.get("purchase_value", "flat")),
        parent=parent.version if parent is not None else None,
        training={
            **asdict(config),
            "device": device,
            "seconds": round(seconds, 1),
            "steps_per_second": round(model.num_timesteps / seconds, 1),
            "timesteps_done": int(model.num_timesteps),
            "learning_curve": callback.curve,
            "algorithm": "MaskablePPO (sb3-contrib)",
        },
        evaluation={"held_out": final},
    )
    vec_env.close()
    return policy


def write_curve(path: Path, curve: list[dict[str, Any]]) -> None:
    columns = ["timesteps", "seconds", "reward_mean", "reward_ci95_low", "reward_ci95_high", "clicks_mean", "purchases_mean"]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for point in curve:
            low, high = point["reward_ci95"]
            writer.writerow([point["timesteps"], point["seconds"], point["reward_mean"], low, high, point["clicks_mean"], point["purchases_mean"]])


def learning_curve(policy: RankingPolicy) -> list[dict[str, Any]]:
    return list(policy.manifest.get("training", {}).get("learning_curve", []))


__all__ = ["SlatePolicy", "SlateObservation", "TrainConfig", "train", "snapshot", "learning_curve"]
