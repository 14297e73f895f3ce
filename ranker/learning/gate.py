"""The gate a candidate passes before it serves: the simulator (paired sessions on the live catalog, served as
live: entropy-targeted exploration) and a doubly-robust off-policy estimate on the rolling hold-out of logged
rankings (``holdout_window``, about 1,000), decided as a non-inferiority test on the lower bound of its 95%
interval once the hold-out has ``ope_min_rankings``. Every rejection records its reasons."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ranker.evaluation.ope import PerDecisionDR, effective_sample_size, ridge_reward_model
from ranker.learning.config import LearnerConfig
from ranker.learning.join import Trajectory
from ranker.learning.replay import logged_data, replay
from ranker.ranking.objective import ENV_PURCHASE_VALUE
from ranker.ranking.policy import RankingPolicy, temperature_for_entropy


def not_worse(mean: float, low: float, high: float, tolerance: float) -> bool:
    """The gate's rule: the mean difference is above ``-tolerance`` and its interval reaches 0."""
    return mean >= -tolerance and high >= 0.0


def ope_difference(candidate: RankingPolicy, holdout: Sequence[Trajectory], *, resamples: int, seed: int, weight_clip: float | None = None) -> dict[str, Any]:
    """Doubly-robust (per-decision) value of ``candidate`` on the held-out rankings minus their logged (on-policy)
    value, with a paired bootstrap 95% interval (:mod:`ranker.evaluation.ope`: one meaning for every figure). The
    reward model is a ridge regression on the hold-out's shown items."""
    steps = replay(holdout)
    data = logged_data(candidate, steps)
    q = ridge_reward_model(steps.features, steps.mask, steps.actions, data["reward"])
    estimator = PerDecisionDR(weight_clip=weight_clip)
    improvement = estimator.estimate_improvement_interval(**data, estimated_rewards_by_reg_model=q, n_bootstrap_samples=resamples, random_state=seed)
    serving = float(data["reward"].sum() / len(holdout))  # the logged value: the improvement is measured from it
    return {
        "estimator": "dr",
        "weight_clip": weight_clip,
        "candidate": serving + improvement.value,
        "serving": serving,
        "difference": improvement.value,
        "ci95": improvement.ci,
        "effective_sample_size": effective_sample_size(data["ranking"], data["position"], data["action"], data["pscore"], data["action_dist"]),
        "rankings": len(holdout),
    }


def non_inferior(low: float, tolerance: float) -> bool:
    """The off-policy rule: the lower bound of the difference's 95% interval is above ``-tolerance``."""
    return low >= -tolerance


class Sampled:
    """A policy as it serves: each position sampled from the masked softmax at ``temperature`` (greedy at 0), or at
    the temperature that gives each position ``target_entropy`` nats."""

    def __init__(self, policy: RankingPolicy, temperature: float, seed: int, target_entropy: float | None = None):
        self.policy, self.temperature, self.target_entropy = policy, temperature, target_entropy
        self.rng = np.random.default_rng(seed)

    def __call__(self, env: Any, observation: dict[str, np.ndarray]) -> int:
        if not self.temperature and not self.target_entropy:
            return self.policy.act(observation)
        mask = observation["mask"].astype(bool)
        scores = self.policy.scores(observation["features"], observation["context"], observation["mask"])
        temperature = temperature_for_entropy(scores, mask, self.target_entropy) if self.target_entropy else self.temperature
        logits = np.where(mask, scores / temperature, -np.inf)
        weights = np.exp(logits - logits.max())
        return int(self.rng.choice(len(weights), p=weights / weights.sum()))


def gate_uses_live_catalog(config: LearnerConfig) -> bool:
    """Whether the gate's simulator runs on the deployment's own catalog (:class:`ranker.learning.world.LiveCatalog`):
    yes, unless ``gate_env_kwargs`` names a catalog or the environment is registered with the synthetic ``tiny`` one."""
    if not config.gate_env or "catalog" in config.gate_env_kwargs:
        return False
    import envs

    return envs.ENV_IDS.get(config.gate_env, {}).get("catalog") != "tiny"


def simulator_difference(
    candidate: RankingPolicy,
    serving: RankingPolicy,
    config: LearnerConfig,
    temperature: float = 0.0,
    *,
    catalog: Any = None,
    target_entropy: float | None = None,
    counters: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Paired per-session reward difference in the simulator: same worlds, sessions and outcome draws, and the
    same sampling seed for both policies, each ranking as it would serve (at ``temperature``).
    ``catalog``: the world's items (a :class:`envs.catalog.SimCatalog`); unset, the environment's own.
    ``counters``: settings that give the simulated items live-like counters
    (:func:`ranker.learning.world.live_counter_settings`)."""
    import gymnasium as gym

    import envs  # noqa: F401  (registers the environments)
    from envs.evaluation import mean_ci95, run_policy

    explicit = {**config.gate_env_kwargs, **config.gate_env_kwargs.get("shopper", {})}
    live_like = {name: value for name, value in (counters or {}).items() if name not in explicit}  # an explicit setting wins
    # judged on the shop's objective, with item counters like the live ones
    settings = {"purchase_value": ENV_PURCHASE_VALUE[config.objective], **config.gate_env_kwargs, **live_like}
    env = gym.make(config.gate_env, **({"catalog": catalog} if catalog is not None else {}), **settings)
    try:
        new = run_policy(
            env, Sampled(candidate, temperature, config.gate_seed, target_entropy), episodes=config.gate_episodes, seed=config.gate_seed, name="candidate"
        )
        old = run_policy(
            env, Sampled(serving, temperature, config.gate_seed, target_entropy), episodes=config.gate_episodes, seed=config.gate_seed, name="serving"
        )
    finally:
        env.close()
    mean, low, high = mean_ci95(new.rewards - old.rewards)
    return {
        "candidate": float(new.rewards.mean()),
        "serving": float(old.rewards.mean()),
        "difference": mean,
        "ci95": [low, high],
        "sessions": config.gate_episodes,
        "temperature": temperature,
    }


def gate(
    candidate: RankingPolicy,
    serving: RankingPolicy,
    holdout: Sequence[Trajectory],
    config: LearnerConfig,
    *,
    seed: int,
    world: Callable[[], Any] | None = None,
    counters: Callable[[Any], dict[str, float]] | None = None,
) -> dict[str, Any]:
    """Both checks; ``passed`` when neither says the candidate is worse.

    ``counters`` gives, for that catalog, the settings that make its item counters like the live ones.
    ``world`` gives the simulator's catalog (the live one, :class:`ranker.learning.world.LiveCatalog`); where it
    cannot make one (no items, fewer items than a slate), the simulator check is skipped, the verdict says so
    in ``notes``, and the off-policy estimate decides alone. With neither check able to run, the candidate is
    rejected: nothing speaks for it."""
    from envs.config import ConfigError
    from ranker.learning.world import NoSimulatedWorld

    result: dict[str, Any] = {"passed": True, "reasons": [], "notes": []}
    if config.gate_env:
        temperatures = [t.event.temperature for t in holdout] or [0.0]
        try:
            catalog = world() if world is not None else None
            targeted = any(t.event.temperatures for t in holdout)  # served with entropy-targeted exploration: simulate it so
            live_like = counters(catalog) if counters is not None and catalog is not None else None  # live-like item counters
            sim = simulator_difference(
                candidate,
                serving,
                config,
                temperature=float(np.median(temperatures)),
                catalog=catalog,
                target_entropy=config.target_entropy if targeted else None,
                counters=live_like,
            )
            sim["target_entropy"] = config.target_entropy if targeted else None
            sim["counters"] = live_like
        except (NoSimulatedWorld, ConfigError) as exc:
            result["simulator"] = {"skipped": str(exc)}
            result["notes"].append(f"simulator: skipped, no simulated world ({exc}); decided on the off-policy estimate alone")
        else:
            sim["passed"] = not_worse(sim["difference"], *sim["ci95"], config.sim_tolerance)
            result["simulator"] = sim
            if not sim["passed"]:
                result["reasons"].append(
                    f"simulator: {sim['difference']:+.4f} reward/session, 95% CI [{sim['ci95'][0]:+.4f}, {sim['ci95'][1]:+.4f}] (tolerance {config.sim_tolerance})"
                )
    decisive = len(holdout) >= config.ope_min_rankings
    if not decisive and "skipped" in result.get("simulator", {}):
        result["reasons"].append(
            f"no check could decide: no simulated world, and {len(holdout)} held-out rankings (the off-policy check needs {config.ope_min_rankings})"
        )
    if holdout:
        ope = ope_difference(candidate, holdout, resamples=config.bootstrap, seed=seed, weight_clip=config.ope_weight_clip)
        ope["passed"] = non_inferior(ope["ci95"][0], config.ope_tolerance)
        ope["decisive"] = decisive
        result["off_policy"] = ope
        if not decisive:
            result["notes"].append(f"off-policy: {len(holdout)} held-out rankings, fewer than {config.ope_min_rankings}: estimated, not decisive")
        elif not ope["passed"]:
            result["reasons"].append(
                f"off-policy (DR): {ope['difference']:+.4f} reward/ranking, 95% CI [{ope['ci95'][0]:+.4f}, {ope['ci95'][1]:+.4f}]: "
                f"the lower bound is below -{config.ope_tolerance} (non-inferiority)"
            )
    result["passed"] = not result["reasons"]
    return result
