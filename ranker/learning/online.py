"""Online learning: the Redis event log -> PPO updates -> gated policy versions.

The learner is one process beside the servers (``ranker learn``). Each round:

1. **Read** the rankings and interactions streams through a consumer group
   (``XREADGROUP``); at start it first re-reads its own pending entries, so a
   learner killed at any point resumes with everything it had not committed.
2. **Join** (:class:`Joiner`). A ranking waits ``label_delay_s`` after its
   last activity (the ranking, or an interaction with it) for more feedback,
   then becomes a :class:`Trajectory`: the logged feature snapshot, the slots
   the policy chose, their logged log-probabilities, and per-position rewards
   (click 0.1, add to cart 0.3, purchase 1.0 by default, as in the
   simulator). Interactions must fall inside the attribution window
   (``attribution_window_s`` after the ranking); later ones, ones for unknown
   or expired rankings, repeats of an event id, and ones that arrive after
   their ranking was already used ("late") are skipped and counted. The
   label delay trades completeness for freshness: feedback that comes after
   it still updates live counters and profiles, but not the learner.
3. **Filter**. Rankings served greedily carry no propensities and cannot
   train PPO; rankings whose feature layout is not this code's schema, or
   that hold NaN or infinite values, are skipped; rankings served by a
   version more than ``max_staleness`` promotions behind the serving one are
   dropped. Newer off-policy data is importance-weighted by PPO's own ratio
   against the logged probabilities, clipped at ``1 +- clip_range``.
4. **Update** (:func:`ppo_update`): PPO's clipped objective on every logged
   decision of the batch (the slate features of each step are rebuilt exactly
   from the snapshot), a value baseline on the reward-to-go, a few epochs of
   minibatches, on CUDA when available. Deterministic for a given batch. The
   learner trains its own line of versions (the "working" version: its
   latest candidate), so learning accumulates across batches while the gate
   decides what serves; the line restarts from the serving version when that
   moves under it or after ``reset_after_rejections`` rejections in a row.
5. **Gate** (:func:`gate`): the candidate must not be worse than the serving
   version (a) in the simulator, on the same seeded sessions (paired), and
   (b) by a self-normalised per-decision importance-sampling estimate with a
   bootstrap interval, on held-out logged rankings of the batch. "Not worse":
   the mean difference is above ``-tolerance`` and its 95% interval reaches 0.
6. **Commit**: one Redis transaction acknowledges every entry the batch used,
   records the decision and the working version, folds the batch's rewards
   into per-version reward statistics and, when the gate passed and the
   serving version has not moved meanwhile, moves the policy pointer. Nothing is acknowledged
   before that, so a crash repeats the batch (same entries, same update, same
   version name) and nothing is counted twice.
7. **Guardrail**: once a promoted version has ``guardrail_min_rankings``
   rankings of live reward, a one-sided Welch test against its parent rolls
   it back on a significant drop.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import socket
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import redis
import torch
from scipy import stats

from ranker.live.events import EVENT_TYPES, REWARD_WEIGHTS, EventLog, InteractionEvent, RankingEvent
from ranker.experiments.store import ExperimentStore
from ranker.ranking.features import CONTEXT_FEATURES, FEATURES, STATIC_FEATURES, SlateFeatures
from ranker.ranking.policy import RankingPolicy, masked_log_softmax
from ranker.live.backend import as_text, key
from ranker.live.registry import PolicyRegistry

log = logging.getLogger(__name__)

CRASH_POINTS = ("read", "trained", "committed")


def _crash_point(name: str, counter: dict[str, int]) -> None:
    """Fault injection for the kill test: ``RANKER_LEARN_CRASH_AT=trained:2`` kills -9 at the second "trained" point."""
    spec = os.environ.get("RANKER_LEARN_CRASH_AT")
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point == name:
        counter[name] = counter.get(name, 0) + 1
        if counter[name] == int(nth or 1):
            os.kill(os.getpid(), 9)


SKIP_REASONS = ("no_propensity", "schema_mismatch", "not_finite", "stale", "unknown_ranking", "expired", "late", "duplicate", "bad_event")


@dataclass
class LearnerConfig:
    prefix: str = "ranker"
    group: str = "learner"
    consumer: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    attribution_window_s: float = 30 * 60
    label_delay_s: float = 10.0
    batch_size: int = 256  # trajectories per update
    min_batch: int = 32  # smallest batch the time trigger may use
    update_interval_s: float = 20.0  # the oldest ready trajectory waits at most this long
    max_staleness: int = 3  # promotions the logging version may lag behind the serving one
    holdout_every: int = 5  # every n-th trajectory (by stream id) is held out for the off-policy gate
    reward_weights: dict[str, float] = field(default_factory=lambda: dict(REWARD_WEIGHTS))
    clip_range: float = 0.2
    epochs: int = 4
    minibatch_steps: int = 512
    learning_rate: float = 3e-4
    value_coef: float = 0.5
    entropy_coef: float = 0.0
    max_grad_norm: float = 0.5
    gate_env: str | None = "envs/SlateShopping-v0"  # None: no simulator gate
    gate_env_kwargs: dict[str, Any] = field(default_factory=dict)
    gate_episodes: int = 1000
    gate_seed: int = 20_000
    sim_tolerance: float = 0.02  # reward per session
    ope_tolerance: float = 0.05  # reward per ranking
    bootstrap: int = 500
    reset_after_rejections: int = 5  # the working line goes back to the serving version after this many rejections in a row
    keep_versions: int = 20  # retention: newest versions kept on disk (serving and rollback history always kept)
    guardrail_min_rankings: int = 300
    guardrail_alpha: float = 0.01
    device: str = "auto"
    read_count: int = 1000
    block_ms: int = 1000
    max_attempts: int = 3  # an update that raises is tried this many times in all before its entries are dead-lettered
    retry_backoff_s: float = 2.0  # wait before the n-th retry: retry_backoff_s * 2 ** (n - 1), at most 60 s
    dead_letter_max_len: int = 10_000  # entries kept in the dead-letter stream (oldest trimmed)
    heartbeat_s: float = 5.0  # how often a running learner says so in Redis (the console and /metrics read it)


# ------------------------------------------------------------------ join
@dataclass
class Trajectory:
    """One logged slate with its rewards; ``entry_ids`` are every stream entry it used."""

    entry_id: str
    event: RankingEvent
    rewards: np.ndarray  # [L]
    interaction_entries: list[str]

    @property
    def total_reward(self) -> float:
        return float(self.rewards.sum())


@dataclass
class _Pending:
    entry_id: str
    event: RankingEvent
    last_activity: float
    interactions: list[tuple[str, InteractionEvent]] = field(default_factory=list)


def stream_order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class Joiner:
    """Rankings waiting for feedback; interactions waiting for their ranking."""

    def __init__(self, config: LearnerConfig):
        self.config = config
        self.pending: dict[str, _Pending] = {}
        self.orphans: dict[str, list[tuple[str, InteractionEvent, float]]] = {}  # ranking_id -> (entry, event, seen_at)
        self.emitted: dict[str, float] = {}  # ranking_id -> when it became a trajectory (for "late")
        self.skipped: dict[str, int] = {reason: 0 for reason in SKIP_REASONS}
        self.done_entries: list[tuple[str, str]] = []  # (stream, entry id) to acknowledge without an update

    def skip(self, reason: str, stream: str, entry_id: str) -> None:
        self.skipped[reason] += 1
        self.done_entries.append((stream, entry_id))

    def add_ranking(self, entry_id: str, event: RankingEvent, now: float) -> None:
        self.pending[event.ranking_id] = _Pending(entry_id, event, max(event.ts, min(now, event.ts + self.config.label_delay_s)))
        for interaction_entry, interaction, _ in self.orphans.pop(event.ranking_id, []):
            self._attach(interaction_entry, interaction)

    def add_interaction(self, entry_id: str, event: InteractionEvent, now: float) -> None:
        if event.ranking_id in self.emitted:
            self.skip("late", "interactions", entry_id)
        elif event.ranking_id in self.pending:
            self._attach(entry_id, event)
        else:
            self.orphans.setdefault(event.ranking_id, []).append((entry_id, event, now))

    def _attach(self, entry_id: str, event: InteractionEvent) -> None:
        pending = self.pending[event.ranking_id]
        if event.type not in EVENT_TYPES or not 0 <= event.position < len(pending.event.slate) or pending.event.slate[event.position] != event.item_id:
            self.skip("bad_event", "interactions", entry_id)
        elif event.ts > pending.event.ts + self.config.attribution_window_s:
            self.skip("expired", "interactions", entry_id)
        elif any(other.event_id == event.event_id for _, other in pending.interactions):
            self.skip("duplicate", "interactions", entry_id)
        else:
            pending.interactions.append((entry_id, event))
            pending.last_activity = max(pending.last_activity, min(event.ts, pending.event.ts + self.config.attribution_window_s))

    def ready(self, now: float) -> list[Trajectory]:
        """Trajectories whose label delay (or attribution window) has passed, in stream order."""
        config = self.config
        out = []
        for ranking_id, pending in list(self.pending.items()):
            closes = min(pending.last_activity + config.label_delay_s, pending.event.ts + config.attribution_window_s)
            if now < closes:
                continue
            del self.pending[ranking_id]
            self.emitted[ranking_id] = now
            rewards = np.zeros(len(pending.event.slate), dtype=np.float64)
            for _, interaction in pending.interactions:
                rewards[interaction.position] += config.reward_weights.get(interaction.type, 0.0)
            out.append(Trajectory(pending.entry_id, pending.event, rewards, [entry for entry, _ in pending.interactions]))
        for ranking_id, orphans in list(self.orphans.items()):  # interactions whose ranking never came
            keep = []
            for entry_id, event, seen_at in orphans:
                if now - seen_at > config.label_delay_s + 60:
                    self.skip("unknown_ranking", "interactions", entry_id)
                else:
                    keep.append((entry_id, event, seen_at))
            if keep:
                self.orphans[ranking_id] = keep
            else:
                del self.orphans[ranking_id]
        horizon = now - config.attribution_window_s
        self.emitted = {ranking_id: at for ranking_id, at in self.emitted.items() if at > horizon}
        return sorted(out, key=lambda trajectory: stream_order(trajectory.entry_id))


def replayable(trajectory: Trajectory) -> str | None:
    """Why a logged slate cannot be replayed with its propensities (for PPO or an off-policy estimate), or None."""
    event = trajectory.event
    if not event.log_probs or not event.temperature:
        return "no_propensity"
    if event.features.ndim != 2 or event.features.shape[1] != len(STATIC_FEATURES) or len(event.context) != len(CONTEXT_FEATURES):
        return "schema_mismatch"
    if event.placed_similarity.shape != (len(event.slots), len(event.features)) or len(event.log_probs) != len(event.slots):
        return "schema_mismatch"
    if not (np.isfinite(event.features).all() and np.isfinite(event.context).all() and np.isfinite(event.placed_similarity).all() and np.isfinite(event.log_probs).all()):
        return "not_finite"
    return None


def usable(trajectory: Trajectory, lineage: Sequence[str], max_staleness: int) -> str | None:
    """Why a trajectory cannot train PPO, or None. ``lineage``: serving version first, then its history."""
    problem = replayable(trajectory)
    if problem is None and trajectory.event.policy_version not in lineage[: max_staleness + 1]:
        return "stale"
    return problem


# ---------------------------------------------------------------- replay
class LoggedObservation:
    """The parts of :class:`ranker.ranking.features.Observation` that :class:`SlateFeatures` reads, from a logged event."""

    def __init__(self, event: RankingEvent):
        n = len(event.features)
        self.static = event.features
        self.context = event.context
        self.valid = np.ones(n, dtype=bool)
        self.category_codes = np.asarray(event.category_codes, dtype=np.int64)
        self._rows = {slot: row for row, slot in enumerate(event.slots)}
        self._similarity = event.placed_similarity

    def similarity_to(self, slot: int) -> np.ndarray:
        return self._similarity[self._rows[slot]]


@dataclass
class Steps:
    """Every logged decision of a batch, padded to the largest candidate set."""

    features: np.ndarray  # [N, K, F]
    mask: np.ndarray  # [N, K]
    context: np.ndarray  # [N, C]
    actions: np.ndarray  # [N]
    old_log_probs: np.ndarray  # [N]
    temperatures: np.ndarray  # [N]
    returns: np.ndarray  # [N] reward-to-go
    rewards: np.ndarray  # [N]
    trajectory: np.ndarray  # [N] index of the trajectory


def replay(trajectories: Sequence[Trajectory]) -> Steps:
    """Rebuild the policy's inputs at every position of every logged slate."""
    k = max(len(t.event.features) for t in trajectories)
    rows: dict[str, list[Any]] = {name: [] for name in Steps.__dataclass_fields__}
    for index, trajectory in enumerate(trajectories):
        event = trajectory.event
        observation = LoggedObservation(event)
        slate = SlateFeatures(observation, len(event.slots))
        n = len(event.features)
        reward_to_go = np.cumsum(trajectory.rewards[::-1])[::-1]
        for position, slot in enumerate(event.slots):
            features = np.zeros((k, len(FEATURES)), dtype=np.float32)
            features[:n] = slate.features
            mask = np.zeros(k, dtype=np.float32)
            mask[:n] = slate.available
            rows["features"].append(features)
            rows["mask"].append(mask)
            rows["context"].append(event.context)
            rows["actions"].append(slot)
            rows["old_log_probs"].append(event.log_probs[position])
            rows["temperatures"].append(event.temperature)
            rows["returns"].append(reward_to_go[position])
            rows["rewards"].append(trajectory.rewards[position])
            rows["trajectory"].append(index)
            slate.place(slot)
    return Steps(**{name: np.asarray(values, dtype=np.int64 if name in ("actions", "trajectory") else np.float32) for name, values in rows.items()})


def action_log_probs(policy: RankingPolicy, steps: Steps, device: torch.device | str = "cpu", *, chunk: int = 2048) -> np.ndarray:
    """[N, K] the policy's log-probability of every candidate at every logged step, at the logged temperature
    (``chunk`` steps per forward pass, so memory stays bounded on long logs)."""
    net = policy.net.to(device)
    out = []
    with torch.no_grad():
        for start in range(0, len(steps.actions), chunk):
            rows = slice(start, start + chunk)
            mask = torch.as_tensor(steps.mask[rows], device=device)
            scores, _ = net(torch.as_tensor(steps.features[rows], device=device), torch.as_tensor(steps.context[rows], device=device), mask)
            logits = scores / torch.as_tensor(steps.temperatures[rows], device=device)[:, None]
            out.append(masked_log_softmax(logits, mask).cpu().numpy())
    policy.net.to("cpu")
    return np.concatenate(out) if out else np.zeros((0, steps.mask.shape[1]), dtype=np.float32)


def log_probs_of(policy: RankingPolicy, steps: Steps, device: torch.device | str = "cpu") -> np.ndarray:
    """The policy's log-probability of each logged action, at the logged temperature."""
    return np.take_along_axis(action_log_probs(policy, steps, device), steps.actions[:, None], axis=1)[:, 0]


# ---------------------------------------------------------------- update
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def ppo_update(policy: RankingPolicy, steps: Steps, config: LearnerConfig, *, seed: int) -> tuple[RankingPolicy, dict[str, float]]:
    """A copy of ``policy`` after PPO epochs on ``steps``; deterministic for a given seed on one device."""
    device = resolve_device(config.device)
    torch.manual_seed(seed)
    net = type(policy.net)(**policy.net.architecture())
    net.load_state_dict(policy.net.state_dict())
    net.to(device).train()
    optimiser = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    tensors = {name: torch.as_tensor(getattr(steps, name), device=device) for name in ("features", "mask", "context", "actions", "old_log_probs", "temperatures", "returns")}
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


# ------------------------------------------------------------------ gate
def not_worse(mean: float, low: float, high: float, tolerance: float) -> bool:
    """The gate's rule: the mean difference is above ``-tolerance`` and its interval reaches 0."""
    return mean >= -tolerance and high >= 0.0


def ope_difference(candidate: RankingPolicy, behaviour_steps: Steps, n_trajectories: int, *, resamples: int, seed: int) -> dict[str, float]:
    """SNIPS (per-decision) value of ``candidate`` minus the logged (on-policy) value, with a bootstrap 95% interval."""
    new_log_p = log_probs_of(candidate, behaviour_steps)
    log_ratio = np.clip(new_log_p - behaviour_steps.old_log_probs, -20, 20)
    trajectory = behaviour_steps.trajectory
    # cumulative ratio up to each position within its trajectory (steps are stored trajectory by trajectory, in position order)
    cumulative = np.zeros_like(log_ratio)
    for index in range(n_trajectories):
        rows = np.flatnonzero(trajectory == index)
        cumulative[rows] = np.cumsum(log_ratio[rows])
    weights = np.exp(cumulative)
    position = np.zeros(len(trajectory), dtype=np.int64)
    for index in range(n_trajectories):
        rows = np.flatnonzero(trajectory == index)
        position[rows] = np.arange(len(rows))
    rewards = behaviour_steps.rewards

    def estimate(sample: np.ndarray) -> tuple[float, float]:
        counts = np.bincount(sample, minlength=n_trajectories)
        w = weights * counts[trajectory]
        snips = 0.0
        for t in np.unique(position):
            rows = position == t
            total = w[rows].sum()
            if total > 0:
                snips += float((w[rows] * rewards[rows]).sum() / total)
        logged = float((rewards * counts[trajectory]).sum() / max(counts.sum(), 1))
        return snips, logged

    everyone = np.arange(n_trajectories)
    value, logged = estimate(everyone)
    rng = np.random.default_rng(seed)
    differences = []
    for _ in range(resamples):
        new, old = estimate(rng.choice(everyone, size=n_trajectories, replace=True))
        differences.append(new - old)
    low, high = np.percentile(differences, [2.5, 97.5])
    return {"candidate": value, "serving": logged, "difference": value - logged, "ci95": [float(low), float(high)],
            "effective_sample_size": float(weights.sum() ** 2 / max((weights**2).sum(), 1e-12)), "rankings": n_trajectories}


class Sampled:
    """A policy as it serves: each position sampled from the masked softmax at ``temperature`` (greedy at 0)."""

    def __init__(self, policy: RankingPolicy, temperature: float, seed: int):
        self.policy, self.temperature = policy, temperature
        self.rng = np.random.default_rng(seed)

    def __call__(self, env: Any, observation: dict[str, np.ndarray]) -> int:
        if not self.temperature:
            return self.policy.act(observation)
        mask = observation["mask"].astype(bool)
        logits = np.where(mask, self.policy.scores(observation["features"], observation["context"], observation["mask"]) / self.temperature, -np.inf)
        weights = np.exp(logits - logits.max())
        return int(self.rng.choice(len(weights), p=weights / weights.sum()))


def gate_uses_live_catalog(config: LearnerConfig) -> bool:
    """Whether the gate's simulator runs on the deployment's own catalog (:class:`ranker.learning.world.LiveCatalog`):
    yes, unless ``gate_env_kwargs`` names a catalog or the environment is registered with the synthetic ``tiny`` one."""
    if not config.gate_env or "catalog" in config.gate_env_kwargs:
        return False
    import envs

    return envs.ENV_IDS.get(config.gate_env, {}).get("catalog") != "tiny"


def simulator_difference(candidate: RankingPolicy, serving: RankingPolicy, config: LearnerConfig, temperature: float = 0.0, *, catalog: Any = None) -> dict[str, Any]:
    """Paired per-session reward difference in the simulator: same worlds, sessions and outcome draws, and the
    same sampling seed for both policies, each ranking as it would serve (at ``temperature``).
    ``catalog``: the world's items (a :class:`envs.catalog.SimCatalog`); unset, the environment's own."""
    import gymnasium as gym

    import envs  # noqa: F401  (registers the environments)
    from envs.evaluation import mean_ci95, run_policy

    env = gym.make(config.gate_env, **({"catalog": catalog} if catalog is not None else {}), **config.gate_env_kwargs)
    try:
        new = run_policy(env, Sampled(candidate, temperature, config.gate_seed), episodes=config.gate_episodes, seed=config.gate_seed, name="candidate")
        old = run_policy(env, Sampled(serving, temperature, config.gate_seed), episodes=config.gate_episodes, seed=config.gate_seed, name="serving")
    finally:
        env.close()
    mean, low, high = mean_ci95(new.rewards - old.rewards)
    return {"candidate": float(new.rewards.mean()), "serving": float(old.rewards.mean()), "difference": mean, "ci95": [low, high],
            "sessions": config.gate_episodes, "temperature": temperature}


def gate(candidate: RankingPolicy, serving: RankingPolicy, holdout: Sequence[Trajectory], config: LearnerConfig, *, seed: int,
         world: Callable[[], Any] | None = None) -> dict[str, Any]:
    """Both checks; ``passed`` when neither says the candidate is worse.

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
            sim = simulator_difference(candidate, serving, config, temperature=float(np.median(temperatures)), catalog=catalog)
        except (NoSimulatedWorld, ConfigError) as exc:
            result["simulator"] = {"skipped": str(exc)}
            result["notes"].append(f"simulator: skipped, no simulated world ({exc}); decided on the off-policy estimate alone")
        else:
            sim["passed"] = not_worse(sim["difference"], *sim["ci95"], config.sim_tolerance)
            result["simulator"] = sim
            if not sim["passed"]:
                result["reasons"].append(f"simulator: {sim['difference']:+.4f} reward/session, 95% CI [{sim['ci95'][0]:+.4f}, {sim['ci95'][1]:+.4f}] (tolerance {config.sim_tolerance})")
    if not holdout and "skipped" in result.get("simulator", {}):
        result["reasons"].append("no check could run: no simulated world and no held-out rankings")
    if holdout:
        ope = ope_difference(candidate, replay(holdout), len(holdout), resamples=config.bootstrap, seed=seed)
        ope["passed"] = not_worse(ope["difference"], *ope["ci95"], config.ope_tolerance)
        result["off_policy"] = ope
        if not ope["passed"]:
            result["reasons"].append(f"off-policy (SNIPS): {ope['difference']:+.4f} reward/ranking, 95% CI [{ope['ci95'][0]:+.4f}, {ope['ci95'][1]:+.4f}] (tolerance {config.ope_tolerance})")
    result["passed"] = not result["reasons"]
    return result


# ---------------------------------------------------------------- learner
class LearnerStatus:
    """What a learner group records in Redis, read by the API's ``/metrics`` and the console.

    Keys, all under ``{prefix}:learner:<group>:``: ``skipped`` and ``errors`` (counts by reason and by kind),
    ``decisions`` (one per batch), ``last`` (the last decided update), ``heartbeats`` (one field per running
    consumer), ``dead`` (the dead-letter stream), ``attempts`` (failed tries per ranking entry, cleared when
    the entry is committed or dead-lettered) and ``supervisor`` (restarts of the learner process by
    ``ranker serve``)."""

    ALIVE_AFTER_S = 20.0  # a heartbeat older than this: the consumer is not running

    def __init__(self, client: "redis.Redis", *, prefix: str = "ranker", group: str = "learner"):
        self.client = client
        name = lambda part: key(prefix, "learner", group, part)  # noqa: E731
        self.decisions_key, self.counts_key, self.errors_key = name("decisions"), name("skipped"), name("errors")
        self.last_key, self.heartbeats_key, self.dead_key = name("last"), name("heartbeats"), name("dead")
        self.attempts_key, self.supervisor_key, self.last_promoted_key = name("attempts"), name("supervisor"), name("last_promoted")

    def skipped(self) -> dict[str, int]:
        return {as_text(name): int(value) for name, value in self.client.hgetall(self.counts_key).items()}

    def errors(self) -> dict[str, int]:
        """Updates (and loop rounds) that raised, by kind: the stage they failed in."""
        return {as_text(name): int(value) for name, value in self.client.hgetall(self.errors_key).items()}

    def decisions(self) -> dict[str, dict[str, Any]]:
        return {as_text(name): json.loads(value) for name, value in self.client.hgetall(self.decisions_key).items()}

    def decision_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for decision in self.decisions().values():
            counts[decision["decision"]] = counts.get(decision["decision"], 0) + 1
        return counts

    def last_update(self, *, promoted: bool = False) -> dict[str, Any] | None:
        """The last decided update (``promoted``: the last promoted one), with ``feedback_to_serving_s``: from the
        oldest and the newest feedback it learned from to its promotion, where it was promoted."""
        raw = self.client.get(self.last_promoted_key if promoted else self.last_key)
        if not raw:
            return None
        update = json.loads(raw)
        if update.get("decision") == "promoted" and update.get("feedback"):
            update["feedback_to_serving_s"] = {"oldest": update["at"] - update["feedback"][0], "newest": update["at"] - update["feedback"][1]}
        return update

    def heartbeats(self, now: float | None = None) -> dict[str, dict[str, Any]]:
        """Running consumers: their last heartbeat (pid, host, state, ``age_s``) within ``ALIVE_AFTER_S``."""
        now = time.time() if now is None else now
        alive = {}
        for name, raw in self.client.hgetall(self.heartbeats_key).items():
            beat = json.loads(raw)
            beat["age_s"] = now - beat["at"]
            if beat["age_s"] <= self.ALIVE_AFTER_S:
                alive[as_text(name)] = beat
        return alive

    def dead_letters(self, count: int = 20) -> list[dict[str, str]]:
        """The newest entries of the dead-letter stream, newest first."""
        return [{"id": as_text(entry_id), **{as_text(k): as_text(v) for k, v in fields.items()}}
                for entry_id, fields in self.client.xrevrange(self.dead_key, count=count)]

    def supervisor(self) -> dict[str, Any]:
        raw = {as_text(k): as_text(v) for k, v in self.client.hgetall(self.supervisor_key).items()}
        return {"restarts": int(raw.get("restarts", 0)), "last_exit": raw.get("last_exit"), "last_restart_at": float(raw["last_restart_at"]) if "last_restart_at" in raw else None}

    def summary(self) -> dict[str, Any]:
        """Everything the console shows about the learner, in one dict."""
        return {"running": self.heartbeats(), "last_update": self.last_update(), "last_promoted": self.last_update(promoted=True), "decisions": self.decision_counts(), "errors": self.errors(),
                "skipped": self.skipped(), "dead_letters": int(self.client.xlen(self.dead_key)), **self.supervisor()}


@dataclass
class UpdateReport:
    version: str
    parent: str
    trajectories: int
    decision: str  # promoted | rejected | superseded | replayed
    gate: dict[str, Any]
    training: dict[str, Any]
    seconds: float


class Learner:
    """Reads the event log, updates, gates and commits (module docstring)."""

    def __init__(self, client: "redis.Redis", policies_dir: Path, config: LearnerConfig | None = None, *, clock: Callable[[], float] = time.time,
                 catalog: Any = None):
        """``catalog``: the deployment's :class:`ranker.learning.world.LiveCatalog`, the world of the simulator gate
        (unless the configuration names another, see :func:`gate_uses_live_catalog`)."""
        self.client = client
        self.config = config or LearnerConfig()
        self.clock = clock
        self.catalog = catalog
        self.stage = "idle"  # where the learner is: an update that raises is counted under this kind
        self._retry_at = 0.0
        self.registry = PolicyRegistry(client, policies_dir, prefix=self.config.prefix)
        self.events = EventLog(client, prefix=self.config.prefix)
        self.joiner = Joiner(self.config)
        self.ready: list[Trajectory] = []
        self.status = LearnerStatus(client, prefix=self.config.prefix, group=self.config.group)
        self.decisions_key, self.counts_key = self.status.decisions_key, self.status.counts_key
        self.errors_key, self.attempts_key, self.dead_key = self.status.errors_key, self.status.attempts_key, self.status.dead_key
        self.working_key = key(self.config.prefix, "learner", self.config.group, "working")
        self.updates: list[UpdateReport] = []
        self._read_pending = True
        self._crashes: dict[str, int] = {}
        self._ensure_groups()

    def _streams(self) -> dict[str, str]:
        return {"rankings": self.events.rankings_stream, "interactions": self.events.interactions_stream}

    def _ensure_groups(self) -> None:
        for stream in self._streams().values():
            try:
                self.client.xgroup_create(stream, self.config.group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    # ------------------------------------------------------------- reading
    def poll(self, block_ms: int | None = None) -> int:
        """Read new entries (first: this consumer's pending ones) into the joiner; returns how many."""
        if self._read_pending:
            n = self._read("0", None)
            if n >= self.config.read_count:
                return n
            self._read_pending = False  # this consumer's backlog is in; from now on, new entries
            return n + self._read(">", None)
        return self._read(">", self.config.block_ms if block_ms is None else block_ms)

    def _read(self, start: str, block_ms: int | None) -> int:
        streams = self._streams()
        replies = self.client.xreadgroup(self.config.group, self.config.consumer, {name: start for name in streams.values()},
                                         count=self.config.read_count, block=block_ms)
        now = self.clock()
        n = 0
        by_stream = {as_text(stream): entries for stream, entries in (replies or [])}
        readers = (("rankings", RankingEvent, self.joiner.add_ranking, "schema_mismatch"),
                   ("interactions", InteractionEvent, self.joiner.add_interaction, "bad_event"))
        for name, event_type, add, unreadable in readers:  # rankings first: their interactions then find them
            for entry_id, fields in by_stream.get(streams[name], []):
                n += 1
                entry_id = as_text(entry_id)
                try:
                    add(entry_id, event_type.from_fields(fields), now)
                except (KeyError, ValueError, TypeError):
                    self.joiner.skip(unreadable, name, entry_id)
        return n

    # -------------------------------------------------------------- rounds
    def step(self, *, force: bool = False, block_ms: int | None = None) -> UpdateReport | None:
        """One round: read, join, and update when a batch is due (``force``: whatever is ready, at least one)."""
        self.poll(block_ms)
        _crash_point("read", self._crashes)
        now = self.clock()
        self.ready.extend(self.joiner.ready(now))
        self._flush_skips()
        if not self.ready:
            return None
        if now < self._retry_at:  # the last update failed: wait out its backoff
            return None
        due = len(self.ready) >= self.config.batch_size
        waited = now - self.ready[0].event.ts - self.config.label_delay_s >= self.config.update_interval_s
        if due or force or (waited and len(self.ready) >= self.config.min_batch):
            batch, self.ready = self.ready[: self.config.batch_size], self.ready[self.config.batch_size :]
            try:
                return self.update(batch)
            except redis.RedisError:
                raise  # Redis away: the run loop waits and re-reads everything pending
            except Exception as exc:  # noqa: BLE001  (one bad update must not stop the learner)
                self._update_failed(batch, exc)
                return None
            finally:
                self.stage = "idle"
        return None

    def run(self, *, max_updates: int | None = None, until: Callable[[], bool] | None = None, on_update: Callable[[UpdateReport], None] | None = None) -> None:
        """Rounds until ``max_updates`` updates were made or ``until()`` says stop (checked between rounds: a
        stop never cuts an update short). Nothing stops it but those: Redis away is waited out, and anything
        else that raises is logged, counted by kind and retried after a bounded backoff."""
        heartbeat = threading.Thread(target=self._heartbeat, name="learner-heartbeat", daemon=True)
        self._stopped = threading.Event()
        heartbeat.start()
        failures = 0
        try:
            while (max_updates is None or len(self.updates) < max_updates) and not (until and until()):
                try:
                    report = self.step()
                    self.stage = "guardrail"
                    self.guardrail()
                    self.stage = "idle"
                    failures = 0
                except redis.RedisError as exc:  # a Redis restart: wait, re-read what was pending, go on
                    log.warning("Redis unavailable (%s); retrying in 1 s", exc)
                    time.sleep(1.0)
                    self._restart_reading()
                    continue
                except Exception:  # noqa: BLE001  (outside an update: reading, joining, the guardrail)
                    failures += 1
                    wait_s = min(60.0, self.config.retry_backoff_s * 2 ** (failures - 1))
                    log.exception("learner round failed at %s; retrying in %.0f s", self.stage, wait_s)
                    self._count_error(self.stage)
                    self.stage = "idle"
                    time.sleep(wait_s)
                    self._restart_reading()
                    continue
                if report and on_update:
                    on_update(report)
        finally:
            self._stopped.set()
            heartbeat.join(timeout=5)
            try:
                self.client.hdel(self.status.heartbeats_key, self.config.consumer)
            except redis.RedisError:
                pass

    def _restart_reading(self) -> None:
        """Forget what is in memory and read this consumer's pending entries again (nothing was acknowledged)."""
        self._read_pending = True
        self.ready.clear()
        self.joiner = Joiner(self.config)

    def _heartbeat(self) -> None:
        """Says "running" in Redis every ``heartbeat_s`` from its own thread, also while a long update runs."""
        started = time.time()
        while not self._stopped.is_set():
            beat = {"at": time.time(), "started": started, "pid": os.getpid(), "host": socket.gethostname(), "stage": self.stage,
                    "updates": len(self.updates)}
            try:
                self.client.hset(self.status.heartbeats_key, self.config.consumer, json.dumps(beat))
            except redis.RedisError:
                pass  # the main loop deals with Redis being away
            self._stopped.wait(self.config.heartbeat_s)

    def _count_error(self, kind: str) -> None:
        try:
            self.client.hincrby(self.errors_key, kind, 1)
        except redis.RedisError:
            log.warning("could not count a learner error (%s): Redis unavailable", kind)

    # ------------------------------------------------------ failed updates
    def _update_failed(self, batch: list[Trajectory], exc: Exception) -> None:
        """The rule for entries of an update that raised (README, "Online learning"):

        - the error is logged with its traceback and counted by kind (the stage it failed in);
        - every ranking of the batch is replayed on its own against the serving policy: one that fails alone is a
          poison entry and goes to the dead-letter stream at once, with its own error (a retry cannot help it);
        - the others go back to the front of the queue and the update is tried again after a backoff
          (``retry_backoff_s``, doubling); an entry whose update failed ``max_attempts`` times goes to the
          dead-letter stream with the last error.

        Dead-lettered entries are acknowledged with their interactions: never silently dropped, never trained."""
        kind = self.stage
        log.error("update of %d rankings failed at %s:\n%s", len(batch), kind, "".join(traceback.format_exception(exc)))
        self._count_error(kind)
        with self.client.pipeline(transaction=False) as pipe:
            for trajectory in batch:
                pipe.hincrby(self.attempts_key, trajectory.entry_id, 1)
            attempts = [int(n) for n in pipe.execute()]
        serving = self._serving_policy_or_none()
        error = f"{kind}: {type(exc).__name__}: {exc}"
        dead, retry = [], []
        for trajectory, tries in zip(batch, attempts):
            problem = self._fails_alone(trajectory, serving)
            if problem:
                dead.append((trajectory, f"fails on its own in replay: {problem}", tries))
            elif tries >= self.config.max_attempts:
                dead.append((trajectory, f"update failed {tries} times; last: {error}", tries))
            else:
                retry.append(trajectory)
        if dead:
            self._dead_letter(dead, kind)
        self.ready = retry + self.ready
        if retry:
            self._retry_at = self.clock() + min(60.0, self.config.retry_backoff_s * 2 ** (max(attempts) - 1))

    def _serving_policy_or_none(self) -> RankingPolicy | None:
        try:
            return RankingPolicy.load(self.registry.path_of(self.registry.current() or self.registry.ensure_current()))
        except redis.RedisError:
            raise
        except Exception:  # noqa: BLE001  (then no entry can be blamed alone; the attempt count decides)
            return None

    @staticmethod
    def _fails_alone(trajectory: Trajectory, serving: RankingPolicy | None) -> str | None:
        """What goes wrong when this one ranking is replayed and scored on its own, or None."""
        if serving is None or replayable(trajectory) is not None:
            return None
        try:
            log_probs_of(serving, replay([trajectory]))
        except Exception as exc:  # noqa: BLE001
            return f"{type(exc).__name__}: {exc}"
        return None

    def _dead_letter(self, dead: list[tuple[Trajectory, str, int]], kind: str) -> None:
        streams = self._streams()
        with self.client.pipeline(transaction=True) as pipe:
            for trajectory, reason, tries in dead:
                pipe.xadd(self.dead_key, {"stream": streams["rankings"], "entry_id": trajectory.entry_id, "ranking_id": trajectory.event.ranking_id,
                                          "interactions": json.dumps(trajectory.interaction_entries), "kind": kind, "reason": reason[:2000],
                                          "attempts": tries, "at": self.clock(), "consumer": self.config.consumer},
                          maxlen=self.config.dead_letter_max_len, approximate=True)
                pipe.xack(streams["rankings"], self.config.group, trajectory.entry_id)
                for entry_id in trajectory.interaction_entries:
                    pipe.xack(streams["interactions"], self.config.group, entry_id)
                pipe.hdel(self.attempts_key, trajectory.entry_id)
            pipe.execute()
        for trajectory, reason, _ in dead:
            log.warning("dead-lettered ranking %s (entry %s): %s", trajectory.event.ranking_id, trajectory.entry_id, reason)

    def _flush_skips(self) -> None:
        if not self.joiner.done_entries:
            return
        streams = self._streams()
        pipe = self.client.pipeline(transaction=True)
        for stream, entry_id in self.joiner.done_entries:
            pipe.xack(streams[stream], self.config.group, entry_id)
        for reason, count in self.joiner.skipped.items():
            if count:
                pipe.hincrby(self.counts_key, reason, count)
        pipe.execute()
        self.joiner.done_entries.clear()
        self.joiner.skipped = {reason: 0 for reason in SKIP_REASONS}

    # -------------------------------------------------------------- update
    def update(self, batch: list[Trajectory]) -> UpdateReport | None:
        started = time.perf_counter()
        config = self.config
        batch_key = hashlib.sha256("\n".join(t.entry_id for t in batch).encode()).hexdigest()[:16]
        self.stage = "load"
        known = self.client.hget(self.decisions_key, batch_key)
        if known is not None:  # committed before a crash ate the acknowledgements
            self._commit(batch, batch_key, dict(json.loads(known), decision="replayed"), serving=None, stats=False)
            report = UpdateReport(json.loads(known)["version"], json.loads(known)["parent"], len(batch), "replayed", {}, {}, time.perf_counter() - started)
            self.updates.append(report)
            return report
        serving_version = self.registry.current() or self.registry.ensure_current()
        lineage = [serving_version, *self.registry.history()]
        usable_batch, skipped = [], []
        for trajectory in batch:
            reason = usable(trajectory, lineage, config.max_staleness)
            (skipped if reason else usable_batch).append((trajectory, reason))
        trajectories = [trajectory for trajectory, _ in usable_batch]
        skip_counts: dict[str, int] = {}
        for _, reason in skipped:
            skip_counts[reason] = skip_counts.get(reason, 0) + 1
        held = [bool(config.holdout_every) and index % config.holdout_every == config.holdout_every - 1 for index in range(len(trajectories))]
        holdout = [t for t, out in zip(trajectories, held) if out]
        train = [t for t, out in zip(trajectories, held) if not out]
        working = self.working()
        if len(train) == 0:
            decision = {"version": None, "parent": serving_version, "decision": "nothing_to_learn", "skipped": skip_counts}
            self._commit(batch, batch_key, decision, serving=serving_version, working=working, skip_counts=skip_counts)
            return None
        base_version = self._base(working, serving_version)
        serving = RankingPolicy.load(self.registry.path_of(serving_version))
        base = serving if base_version == serving_version else RankingPolicy.load(self.registry.path_of(base_version))
        seed = int(batch_key[:8], 16)
        self.stage = "replay"
        steps = replay(train)
        self.stage = "train"
        candidate, training = ppo_update(base, steps, config, seed=seed)
        version = f"ol-{batch_key}"
        training.update({"kind": "online-ppo", "trajectories": len(train), "held_out": len(holdout), "skipped": skip_counts,
                         "serving": serving_version, "first_entry": batch[0].entry_id, "last_entry": batch[-1].entry_id, "batch_key": batch_key,
                         "config": {name: value for name, value in asdict(config).items() if name not in ("consumer",)}})
        self.stage = "gate"
        world = self.catalog.sim_catalog if self.catalog is not None and gate_uses_live_catalog(config) else None
        verdict = gate(candidate, serving, holdout, config, seed=seed, world=world)
        self.stage = "save"
        candidate.save(self.registry.path_of(version), version=version, parent=base_version, training=training, evaluation={"gate": verdict})
        _crash_point("trained", self._crashes)
        feedback_ts = [stream_order(entry)[0] / 1000 for t in batch for entry in t.interaction_entries]
        decision = {"version": version, "parent": base_version, "serving": serving_version, "decision": "promoted" if verdict["passed"] else "rejected",
                    "reasons": verdict["reasons"], "notes": verdict.get("notes", []), "at": self.clock(), "batch": len(batch), "trained": len(train),
                    "held_out": len(holdout), "seconds": time.perf_counter() - started,
                    "feedback": [min(feedback_ts), max(feedback_ts)] if feedback_ts else None}
        self.stage = "commit"
        decision["decision"] = self._commit(batch, batch_key, decision, serving=serving_version, working=working, skip_counts=skip_counts)
        _crash_point("committed", self._crashes)
        self.stage = "prune"
        current_working = self.working()
        in_use = ExperimentStore(self.client, prefix=config.prefix).policies_in_use()  # experiments' arms stay on disk
        self.registry.prune(keep=config.keep_versions, also_keep=([current_working["version"]] if current_working else []) + sorted(in_use))
        report = UpdateReport(version, base_version, len(train), decision["decision"], verdict, training, time.perf_counter() - started)
        self.updates.append(report)
        log.info("update %s (parent %s, serving %s, %d trajectories): %s %s", version, base_version, serving_version, len(train), decision["decision"], "; ".join(verdict["reasons"]))
        return report

    def working(self) -> dict[str, Any] | None:
        """The learner's own line of versions: it keeps training its latest candidate while the gate decides what serves."""
        raw = self.client.get(self.working_key)
        return json.loads(raw) if raw else None

    def _base(self, working: dict[str, Any] | None, serving_version: str) -> str:
        """Where the next update starts: the working version, unless the serving one moved under it
        (a rollback, a manual promote) or it was rejected too many times in a row."""
        if not working or working["serving"] != serving_version or working["rejections"] >= self.config.reset_after_rejections:
            return serving_version
        if not (self.registry.path_of(working["version"]) / "manifest.json").exists():
            return serving_version
        return working["version"]

    def _commit(self, batch: Sequence[Trajectory], batch_key: str, decision: dict[str, Any], *, serving: str | None,
                working: dict[str, Any] | None = None, skip_counts: dict[str, int] | None = None, stats: bool = True) -> str:
        """Acknowledge the batch, record the decision, statistics and working line, promote: all or nothing."""
        streams = self._streams()
        with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(self.registry.current_key)
                    current = as_text(pipe.get(self.registry.current_key))
                    outcome = decision["decision"]
                    if outcome in ("promoted", "rejected") and current != serving:
                        outcome = "superseded"  # someone promoted or rolled back meanwhile: the gate compared against another version
                    pipe.multi()
                    if outcome == "promoted":
                        pipe.lpush(self.registry.history_key, serving)
                        pipe.set(self.registry.current_key, decision["version"])
                        pipe.set(self.working_key, json.dumps({"version": decision["version"], "serving": decision["version"], "rejections": 0}))
                    elif outcome == "rejected":
                        rejections = (working or {}).get("rejections", 0) + 1 if (working or {}).get("serving") == serving else 1
                        pipe.set(self.working_key, json.dumps({"version": decision["version"], "serving": serving, "rejections": rejections}))
                    elif outcome == "superseded":
                        pipe.delete(self.working_key)
                    if outcome != "replayed":
                        pipe.hset(self.decisions_key, batch_key, json.dumps(dict(decision, decision=outcome)))
                        if outcome in ("promoted", "rejected", "superseded"):
                            pipe.set(self.status.last_key, json.dumps(dict(decision, decision=outcome, batch_key=batch_key)))
                        if outcome == "promoted":
                            pipe.set(self.status.last_promoted_key, json.dumps(dict(decision, decision=outcome, batch_key=batch_key)))
                    pipe.hdel(self.attempts_key, *[trajectory.entry_id for trajectory in batch])
                    for trajectory in batch:
                        pipe.xack(streams["rankings"], self.config.group, trajectory.entry_id)
                        for entry_id in trajectory.interaction_entries:
                            pipe.xack(streams["interactions"], self.config.group, entry_id)
                        if stats:
                            reward_key = key(self.config.prefix, "learner", "reward", trajectory.event.policy_version)
                            pipe.hincrbyfloat(reward_key, "n", 1)
                            pipe.hincrbyfloat(reward_key, "sum", trajectory.total_reward)
                            pipe.hincrbyfloat(reward_key, "sumsq", trajectory.total_reward**2)
                    for reason, count in (skip_counts or {}).items():
                        pipe.hincrby(self.counts_key, reason, count)
                    pipe.execute()
                    return outcome
                except redis.WatchError:
                    continue

    # ----------------------------------------------------------- guardrail
    def reward_stats(self, version: str) -> tuple[float, float, float]:
        values = self.client.hgetall(key(self.config.prefix, "learner", "reward", version))
        get = lambda name: float(values.get(name.encode(), 0.0))  # noqa: E731
        return get("n"), get("sum"), get("sumsq")

    def guardrail(self) -> str | None:
        """Roll the serving version back when its live reward is significantly below its parent's; returns what happened."""
        current = self.registry.current()
        history = self.registry.history()
        if not current or not history:
            return None
        parent = history[0]
        n_new, s_new, q_new = self.reward_stats(current)
        n_old, s_old, q_old = self.reward_stats(parent)
        minimum = self.config.guardrail_min_rankings
        if n_new < minimum or n_old < minimum:
            return None
        mean_new, mean_old = s_new / n_new, s_old / n_old
        var_new = max(q_new / n_new - mean_new**2, 0.0) * n_new / (n_new - 1)
        var_old = max(q_old / n_old - mean_old**2, 0.0) * n_old / (n_old - 1)
        test = stats.ttest_ind_from_stats(mean_new, math.sqrt(var_new), n_new, mean_old, math.sqrt(var_old), n_old, equal_var=False, alternative="less")
        if test.pvalue < self.config.guardrail_alpha:
            self.registry.rollback()
            message = f"rolled back {current} -> {parent}: live reward {mean_new:.4f} vs {mean_old:.4f} per ranking (Welch p={test.pvalue:.2g}, n={int(n_new)}/{int(n_old)})"
            self.client.hset(key(self.config.prefix, "learner", "rollbacks"), current, message)
            log.warning(message)
            return message
        return None

    def skipped_counts(self) -> dict[str, int]:
        return self.status.skipped()

    def decisions(self) -> dict[str, dict[str, Any]]:
        return self.status.decisions()
