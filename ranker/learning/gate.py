"""The gate a candidate passes before it serves, judging it as it would serve.

1. **Off-policy, decides** (:func:`ope_difference`). A doubly-robust estimate, on the rolling hold-out of logged
   rankings (``holdout_window``, about 1,000), of the candidate's value *as serving would sample it*: the scores
   standardised, the entropy-targeted temperature (or the fixed one), the cold-start bonus each ranking was
   logged with, and, with a Bayesian head, its Thompson draws (a policy that draws its parameters once per
   request is a mixture over draws; its DR value is the mean of the draws' DR terms, since DR is linear in them).
   Non-inferiority: the lower bound of the 95% interval of (candidate - logged) must be above ``-ope_tolerance``.
   Below ``ope_min_rankings`` held-out rankings the estimate is not decisive and the candidate is *deferred*:
   nothing is promoted on too little evidence.
2. **Simulator, guards against catastrophe** (:func:`simulator_difference`), only when the network itself
   changed (a PPO fine-tune): paired sessions on the live catalog, served as live. It rejects only a candidate
   that is significantly worse (the interval's upper bound below 0) by more than ``sim_tolerance`` reward per
   session: its shoppers are the project's default population, not the shop's, so it is no judge of small
   differences.

Every rejection records its reasons.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ranker.evaluation.ope import RIDGE, Interval, PerDecisionDR
from ranker.learning.config import LearnerConfig
from ranker.learning.holdout import HeldOut, concatenate, held_out
from ranker.learning.join import Trajectory
from ranker.ranking.objective import ENV_PURCHASE_VALUE
from ranker.ranking.policy import RankingPolicy, normalised_scores, temperature_for_entropy, temperatures_for_entropy


def held_out_inputs(policy: RankingPolicy, holdout: Sequence[Trajectory]) -> HeldOut:
    """:class:`HeldOut` computed afresh (the learner keeps a :class:`~ranker.learning.holdout.HoldoutCache`)."""
    return concatenate(held_out(policy, holdout))


def served_distributions(policy: RankingPolicy, held: HeldOut, config: LearnerConfig, *, draws: int, seed: int) -> list[np.ndarray]:
    """[N, K] per draw: the probability serving would give every candidate at every held-out decision (module
    docstring). ``held`` must have been computed with ``policy``'s network. Without a serving head: one."""
    head = policy.serving_head()
    rng = np.random.default_rng(seed)
    thetas = [None] if head is None else [head.draw(rng) for _ in range(draws)]
    mask = held.mask
    out, previous = [], None
    for theta in thetas:
        scores = held.score_z if head is None else served_scores(head, held, theta)
        z = normalised_scores(scores, mask) if head is not None else held.score_z.astype(np.float64)
        if config.target_entropy:
            temperature = temperatures_for_entropy(z, mask, config.target_entropy, start=previous)
            previous = temperature
        else:
            temperature = np.full(len(z), config.temperature or 1.0)
        logits = np.where(mask, z / temperature[:, None] + held.bonus, -np.inf)
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        out.append(weights / weights.sum(axis=1, keepdims=True))
    return out


def served_scores(head: Any, held: HeldOut, theta: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """[N, K] the head's scores at ``theta`` for every held-out decision (``chunk`` decisions at a time: the hinges of
    every feature of every candidate would not fit at once)."""
    out = np.empty(held.score_z.shape, dtype=np.float64)
    theta32 = theta.astype(np.float32)
    for start in range(0, len(out), chunk):
        rows = slice(start, start + chunk)
        out[rows] = head.scores(held.score_z[rows], held.standardised[rows].astype(np.float32), theta32)
    return out


def reward_model(held: HeldOut) -> np.ndarray:
    """[N, K] ``q(x, a)`` for the doubly-robust estimator: a ridge regression of a position's reward on the shown
    candidate's standardised features (and a bias), predicted for every candidate (0 where masked)."""
    rows = np.arange(len(held.actions))
    shown = np.c_[held.standardised[rows, held.actions].astype(np.float64), np.ones(len(rows))]
    coef = np.linalg.solve(shown.T @ shown + RIDGE * np.eye(shown.shape[1]), shown.T @ held.rewards.astype(np.float64))
    q = np.einsum("nkf,f->nk", held.standardised.astype(np.float32), coef[:-1].astype(np.float32)) + coef[-1]
    return np.where(held.mask, q, 0.0)


def mixture_dr(held: HeldOut, distributions: Sequence[np.ndarray], *, weight_clip: float | None, resamples: int, seed: int) -> tuple[Interval, float]:
    """The DR improvement (candidate - logged, per ranking) of the mixture of ``distributions`` with its paired
    bootstrap 95% interval over rankings, and the mixture's effective sample size in rankings."""
    rows = np.arange(len(held.actions))
    reward = held.rewards.astype(np.float64)
    pscore = np.exp(held.old_log_probs.astype(np.float64))
    q = reward_model(held)
    estimator = PerDecisionDR(weight_clip=weight_clip)
    terms = np.zeros(len(rows))
    whole = np.zeros(held.rankings)
    last = np.r_[np.flatnonzero(np.diff(held.trajectory)), len(rows) - 1] if len(rows) else np.zeros(0, dtype=np.int64)
    for dist in distributions:
        data = estimator._prepare(ranking=held.trajectory, position=held.positions, action=held.actions, reward=reward, pscore=pscore, action_dist=dist)
        terms += data["weights"] * (reward - q[rows, held.actions]) + data["previous"] * (dist * q).sum(axis=1)
        whole += data["weights"][last]
    terms /= len(distributions)
    whole /= len(distributions)
    n = held.rankings

    def improvement(counts: np.ndarray) -> float:
        return float((counts[held.trajectory] * (terms - reward)).sum() / max(counts.sum(), 1e-300))

    rng = np.random.default_rng(seed)
    point = improvement(np.ones(n))
    resampled = [improvement(np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)) for _ in range(resamples)]
    low, high = np.percentile(resampled, [2.5, 97.5]) if resampled else (point, point)
    ess = float(whole.sum() ** 2 / max((whole**2).sum(), 1e-300)) if n else 0.0
    return Interval(point, float(low), float(high)), ess


def ope_difference(
    candidate: RankingPolicy,
    holdout: Sequence[Trajectory],
    *,
    resamples: int,
    seed: int,
    weight_clip: float | None = None,
    config: LearnerConfig | None = None,
    held: HeldOut | None = None,
) -> dict[str, Any]:
    """The candidate's doubly-robust value as served on the held-out rankings minus their logged (on-policy) value,
    with a paired bootstrap 95% interval (:mod:`ranker.evaluation.ope`: one meaning for every figure)."""
    config = config or LearnerConfig()
    held = held or held_out_inputs(candidate, holdout)
    distributions = served_distributions(candidate, held, config, draws=config.gate_draws, seed=seed)
    interval, ess = mixture_dr(held, distributions, weight_clip=weight_clip, resamples=resamples, seed=seed)
    serving = float(held.rewards.sum() / max(held.rankings, 1))  # the logged value: the improvement is measured from it
    return {
        "estimator": "dr",
        "weight_clip": weight_clip,
        "draws": len(distributions),
        "candidate": serving + interval.value,
        "serving": serving,
        "difference": interval.value,
        "ci95": interval.ci,
        "effective_sample_size": ess,
        "rankings": held.rankings,
    }


def non_inferior(low: float, tolerance: float) -> bool:
    """The off-policy rule: the lower bound of the difference's 95% interval is above ``-tolerance``."""
    return low >= -tolerance


def not_catastrophic(mean: float, low: float, high: float, tolerance: float) -> bool:
    """The simulator's rule: a candidate fails only when it is significantly worse (``high < 0``) by more than
    ``tolerance`` reward per session."""
    return not (high < 0.0 and mean < -tolerance)


class Sampled:
    """A policy as it serves, in the simulator: each position sampled from the standardised served scores at
    ``temperature`` (greedy at 0) or at the temperature that gives each position ``target_entropy`` nats, with a
    serving head drawn once per session (Thompson sampling)."""

    def __init__(self, policy: RankingPolicy, temperature: float, seed: int, target_entropy: float | None = None):
        self.policy, self.temperature, self.target_entropy = policy, temperature, target_entropy
        self.rng = np.random.default_rng(seed)
        self.theta: np.ndarray | None = None

    def __call__(self, env: Any, observation: dict[str, np.ndarray]) -> int:
        if not self.temperature and not self.target_entropy:
            return self.policy.act(observation)
        head = self.policy.serving_head()
        if int(observation["position"]) == 0:
            self.theta = head.draw(self.rng) if head is not None else None
        mask = observation["mask"].astype(bool)
        scores = normalised_scores(self.policy.served_scores(observation["features"], observation["context"], observation["mask"], self.theta), mask)
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
    simulate: bool = True,
    held: HeldOut | None = None,
    world: Callable[[], Any] | None = None,
    counters: Callable[[Any], dict[str, float]] | None = None,
) -> dict[str, Any]:
    """Both checks (module docstring); ``passed`` when neither says the candidate is worse, ``deferred`` when the
    hold-out is too small to decide and nothing else rejected it.

    ``simulate``: run the simulator guard (the learner asks for it when the network changed). ``held``: the
    hold-out's inputs for the candidate's network (computed when not given). ``counters`` gives, for a catalog,
    the settings that make its item counters like the live ones; ``world`` gives the simulator's catalog (the
    live one, :class:`ranker.learning.world.LiveCatalog`); where it cannot make one (no items, fewer items than a
    slate), the simulator check is skipped and the verdict says so in ``notes``."""
    from envs.config import ConfigError
    from ranker.learning.world import NoSimulatedWorld

    result: dict[str, Any] = {"passed": True, "deferred": False, "reasons": [], "notes": []}
    if config.gate_env and simulate:
        try:
            catalog = world() if world is not None else None
            live_like = counters(catalog) if counters is not None and catalog is not None else None  # live-like item counters
            sim = simulator_difference(
                candidate,
                serving,
                config,
                temperature=config.temperature,
                catalog=catalog,
                target_entropy=config.target_entropy or None,
                counters=live_like,
            )
            sim["target_entropy"] = config.target_entropy or None
            sim["counters"] = live_like
        except (NoSimulatedWorld, ConfigError) as exc:
            result["simulator"] = {"skipped": str(exc)}
            result["notes"].append(f"simulator: skipped, no simulated world ({exc})")
        else:
            sim["passed"] = not_catastrophic(sim["difference"], *sim["ci95"], config.sim_tolerance)
            result["simulator"] = sim
            if not sim["passed"]:
                result["reasons"].append(
                    f"simulator: {sim['difference']:+.4f} reward/session, 95% CI [{sim['ci95'][0]:+.4f}, {sim['ci95'][1]:+.4f}]: "
                    f"significantly worse by more than {config.sim_tolerance} (catastrophe guard)"
                )
    decisive = len(holdout) >= config.ope_min_rankings
    if holdout:
        ope = ope_difference(candidate, holdout, resamples=config.bootstrap, seed=seed, weight_clip=config.ope_weight_clip, config=config, held=held)
        ope["passed"] = non_inferior(ope["ci95"][0], config.ope_tolerance)
        ope["decisive"] = decisive
        result["off_policy"] = ope
        if decisive and not ope["passed"]:
            result["reasons"].append(
                f"off-policy (DR): {ope['difference']:+.4f} reward/ranking, 95% CI [{ope['ci95'][0]:+.4f}, {ope['ci95'][1]:+.4f}]: "
                f"the lower bound is below -{config.ope_tolerance} (non-inferiority)"
            )
    if not decisive and not result["reasons"]:
        result["deferred"] = True
        result["notes"].append(f"off-policy: {len(holdout)} held-out rankings, fewer than {config.ope_min_rankings}: deferred until the hold-out can decide")
    result["passed"] = not result["reasons"] and not result["deferred"]
    return result
