"""Rolling windows of past trajectories in Redis: the replay window the update reuses, and the gate's hold-out.

A window is a capped Redis stream whose entries *refer* to logged rankings: the
ranking's id in the rankings stream, its per-position rewards and outcomes and
its interactions' ids. The ranking itself (features, propensities, user, the
version that served it) is read back from the event log, so a window entry is
a few hundred bytes; a learner decodes each ranking once and keeps it while it
stays in the window. Entries are appended in the same transaction
that commits an update (:meth:`TrajectoryWindow.queue`), so a learner killed
before its commit finds the window as it was and repeats the same update.

- **Replay window** (``replay_window`` rankings, default 2,000; about eight
  batches): reused by every update until it falls out, so each logged ranking
  trains several times. A ranking older than ``replay_max_age_s`` (default one
  hour) is left out. What remains is importance-weighted against its logged
  propensities, clipped (:func:`ranker.learning.update.importance_weights`).
- **Hold-out** (``holdout_window`` rankings, default 1,000): every
  ``holdout_every``-th ranking of each batch goes here instead of training; the
  gate's off-policy estimate runs on the whole window, not on one batch's share.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import redis

from ranker.learning.join import Trajectory
from ranker.live.backend import as_text
from ranker.live.events import EventLog, RankingEvent


class TrajectoryWindow:
    def __init__(self, client: redis.Redis, key: str, max_len: int):
        self.client, self.key, self.max_len = client, key, max_len
        self._events: dict[str, RankingEvent] = {}  # decoded rankings of the window, by their stream entry

    def queue(self, pipe: redis.client.Pipeline, trajectories: Sequence[Trajectory]) -> None:
        """Append ``trajectories`` (inside the caller's transaction), keeping the newest ``max_len``."""
        for trajectory in trajectories:
            pipe.xadd(
                self.key,
                {
                    "entry_id": trajectory.entry_id,
                    "rewards": json.dumps([round(float(r), 6) for r in trajectory.rewards]),
                    "outcomes": json.dumps(trajectory.outcome_table().astype(int).tolist()),
                    "interactions": json.dumps(trajectory.interaction_entries),
                },
                maxlen=self.max_len,
                approximate=False,
            )

    def entry_ids(self) -> list[str]:
        return [as_text(fields[b"entry_id"]) for _, fields in self.client.xrange(self.key)]

    def load(self, events: EventLog, *, exclude: set[str] = frozenset()) -> list[Trajectory]:
        """The window's trajectories in window order, rebuilt from the event log (rankings trimmed from the log since
        are left out), without those whose ranking entry is in ``exclude``."""
        entries = [(fields, as_text(fields[b"entry_id"])) for _, fields in self.client.xrange(self.key)]
        in_window = {entry_id for _, entry_id in entries}
        self._events = {entry_id: event for entry_id, event in self._events.items() if entry_id in in_window}
        entries = [(fields, entry_id) for fields, entry_id in entries if entry_id not in exclude]
        missing = [entry_id for _, entry_id in entries if entry_id not in self._events]
        if missing:  # read and decode only the rankings that came in since the last load
            pipe = self.client.pipeline(transaction=False)
            for entry_id in missing:
                pipe.xrange(events.rankings_stream, entry_id, entry_id)
            for entry_id, found in zip(missing, pipe.execute(), strict=True):
                try:
                    if found:
                        self._events[entry_id] = RankingEvent.from_fields(found[0][1])
                except (KeyError, ValueError, TypeError):
                    continue
        out = []
        for fields, entry_id in entries:
            event = self._events.get(entry_id)
            if event is None:  # trimmed from the event log, or unreadable
                continue
            rewards = np.asarray(json.loads(fields[b"rewards"]), dtype=np.float64)
            outcomes = np.asarray(json.loads(fields[b"outcomes"]), dtype=np.float32).reshape(len(rewards), -1)
            out.append(Trajectory(entry_id, event, rewards, json.loads(fields[b"interactions"]), outcomes))
        return out
