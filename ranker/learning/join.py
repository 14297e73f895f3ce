"""The attribution join: logged rankings and their interactions become training trajectories (:class:`Joiner`),
and the rule for which trajectories can train (:func:`replayable`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ranker.interactions import EVENT_TYPES
from ranker.learning.config import LearnerConfig
from ranker.live.events import InteractionEvent, RankingEvent
from ranker.ranking.features import CONTEXT_FEATURES, STATIC_FEATURES

SKIP_REASONS = ("no_propensity", "schema_mismatch", "not_finite", "unknown_ranking", "expired", "late", "duplicate", "bad_event", "spam", "erased")


@dataclass
class Trajectory:
    """One logged slate with its rewards; ``entry_ids`` are every stream entry it used."""

    entry_id: str
    event: RankingEvent
    rewards: np.ndarray  # [L]
    interaction_entries: list[str]
    outcomes: np.ndarray | None = None  # [L, 3] 0/1: click, add to cart, purchase at each position

    def outcome_table(self) -> np.ndarray:
        return self.outcomes if self.outcomes is not None else np.zeros((len(self.rewards), len(EVENT_TYPES)), dtype=np.float32)

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

    def __init__(self, config: LearnerConfig, values_of: Callable[[Sequence[str]], np.ndarray] | None = None):
        """``values_of``: each item's purchase value under the objective (:mod:`ranker.ranking.objective`); unset, 1."""
        self.config = config
        self.values_of = values_of
        self.pending: dict[str, _Pending] = {}
        self.orphans: dict[str, list[tuple[str, InteractionEvent, float]]] = {}  # ranking_id -> (entry, event, seen_at)
        self.emitted: dict[str, float] = {}  # ranking_id -> when it became a trajectory (for "late")
        # every interaction entry held (attached, orphaned, or in an emitted trajectory), by ranking: a ranking or an
        # interaction delivered again (a re-read, a claim) is joined once, never twice (loop.Learner.poll)
        self.taken: dict[str, set[str]] = {}
        self.skipped: dict[str, int] = {reason: 0 for reason in SKIP_REASONS}
        self.done_entries: list[tuple[str, str]] = []  # (stream, entry id) to acknowledge without an update

    def skip(self, reason: str, stream: str, entry_id: str) -> None:
        self.skipped[reason] += 1
        self.done_entries.append((stream, entry_id))

    def add_ranking(self, entry_id: str, event: RankingEvent, now: float) -> None:
        if event.ranking_id in self.pending or event.ranking_id in self.emitted:
            return  # delivered again: it is joined already (and stays pending until the update that uses it commits)
        self.pending[event.ranking_id] = _Pending(entry_id, event, max(event.ts, min(now, event.ts + self.config.label_delay_s)))
        for interaction_entry, interaction, _ in self.orphans.pop(event.ranking_id, []):
            self._attach(interaction_entry, interaction)

    def add_interaction(self, entry_id: str, event: InteractionEvent, now: float) -> None:
        taken = self.taken.setdefault(event.ranking_id, set())
        if entry_id in taken:
            return  # delivered again: already attached, waiting for its ranking, or part of a trajectory
        taken.add(entry_id)
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
            counts = np.zeros((len(pending.event.slate), len(EVENT_TYPES)), dtype=np.int64)
            for _, interaction in pending.interactions:
                counts[interaction.position, EVENT_TYPES.index(interaction.type)] += 1
            if counts.max(initial=0) > config.max_events_per_position:  # more than a shopper could send: learned from never
                self.skipped["spam"] += 1
                self.done_entries.append(("rankings", pending.entry_id))
                self.done_entries.extend(("interactions", entry) for entry, _ in pending.interactions)
                continue
            outcomes = (counts > 0).astype(np.float32)  # each outcome type counts once per position (ranker.learning.caps)
            values = np.ones(len(pending.event.slate)) if self.values_of is None else self.values_of(pending.event.slate)
            rewards = position_rewards(outcomes, values, config.reward_weights)
            out.append(Trajectory(pending.entry_id, pending.event, rewards, [entry for entry, _ in pending.interactions], outcomes))
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
                if ranking_id not in self.pending and ranking_id not in self.emitted:
                    self.taken.pop(ranking_id, None)
        horizon = now - config.attribution_window_s
        self.emitted = {ranking_id: at for ranking_id, at in self.emitted.items() if at > horizon}
        for ranking_id in [ranking_id for ranking_id in self.taken if ranking_id not in self.emitted and ranking_id not in self.pending]:
            if ranking_id not in self.orphans:
                del self.taken[ranking_id]
        return sorted(out, key=lambda trajectory: stream_order(trajectory.entry_id))


def position_rewards(outcomes: np.ndarray, values: np.ndarray, weights: dict[str, float]) -> np.ndarray:
    """[L] ``w_click [click] + w_cart [cart] + w_purchase [purchase] * value`` per position."""
    w = np.array([weights.get(kind, 0.0) for kind in EVENT_TYPES])
    purchase = EVENT_TYPES.index("purchase")
    scaled = outcomes.astype(np.float64).copy()
    scaled[:, purchase] *= np.asarray(values, dtype=np.float64)
    return scaled @ w


def replayable(trajectory: Trajectory) -> str | None:
    """Why a logged slate cannot be replayed with its propensities (for PPO or an off-policy estimate), or None."""
    event = trajectory.event
    if not event.log_probs or not event.temperature:
        return "no_propensity"
    if event.features.ndim != 2 or event.features.shape[1] != len(STATIC_FEATURES) or len(event.context) != len(CONTEXT_FEATURES):
        return "schema_mismatch"
    if event.placed_similarity.shape != (len(event.slots), len(event.features)) or len(event.log_probs) != len(event.slots):
        return "schema_mismatch"
    if event.temperatures is not None and (len(event.temperatures) != len(event.slots) or not all(np.isfinite(t) and t > 0 for t in event.temperatures)):
        return "schema_mismatch"
    if not (
        np.isfinite(event.features).all()
        and np.isfinite(event.context).all()
        and np.isfinite(event.placed_similarity).all()
        and np.isfinite(event.log_probs).all()
    ):
        return "not_finite"
    return None
