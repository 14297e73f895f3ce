"""What the learner does when an update fails, and the fault injection its kill tests use.

:class:`FailedUpdates` holds the rule for the entries of an update that raised (docs/learning.md): log and
count the error, replay each ranking alone to find poison entries, dead-letter those and the ones that failed
``max_attempts`` times, retry the rest after a backoff. :class:`ranker.learning.loop.Learner` inherits it; the
methods read the learner's Redis client, keys, config and queue.
"""

from __future__ import annotations

import json
import logging
import os
import traceback
from collections.abc import Callable

import redis

from ranker.learning.config import LearnerConfig
from ranker.learning.join import Trajectory
from ranker.ranking.policy import RankingPolicy

log = logging.getLogger("ranker.learning.loop")  # the learner's log, as before the split

CRASH_POINTS = ("read", "trained", "committed")


def _crash_point(name: str, counter: dict[str, int]) -> None:
    """Fault injection for the kill tests: ``RANKER_LEARN_CRASH_AT=trained:2`` kills -9 at the second "trained" point
    (several, comma-separated). With ``RANKER_LEARN_CRASH_ONCE=<path>`` each kill happens once across restarts (a
    marker file ``<path>.<point>-<n>`` remembers it), so a learner restarted by the supervisor goes on."""
    spec = os.environ.get("RANKER_LEARN_CRASH_AT")
    if not spec:
        return
    counter[name] = counter.get(name, 0) + 1
    for point, _, nth in (part.partition(":") for part in spec.split(",")):
        if point != name or counter[name] != int(nth or 1):
            continue
        once = os.environ.get("RANKER_LEARN_CRASH_ONCE")
        if once:
            try:
                os.close(os.open(f"{once}.{point}-{nth or 1}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                continue
        os.kill(os.getpid(), 9)


class FailedUpdates:
    """The learner's failed-update handling (a mixin of :class:`ranker.learning.loop.Learner`)."""

    client: redis.Redis
    config: LearnerConfig
    clock: Callable[[], float]
    stage: str
    ready: list[Trajectory]
    errors_key: str
    attempts_key: str
    dead_key: str
    _retry_at: float

    def _streams(self) -> dict[str, str]:
        raise NotImplementedError

    def _serving_policy_or_none(self) -> RankingPolicy | None:
        raise NotImplementedError

    def _fails_alone(self, trajectory: Trajectory, serving: RankingPolicy | None) -> str | None:
        raise NotImplementedError  # the learner's: it replays with the loop's ``replay`` (tests break that one)

    def _count_error(self, kind: str) -> None:
        try:
            self.client.hincrby(self.errors_key, kind, 1)
        except redis.RedisError:
            log.warning("could not count a learner error (%s): Redis unavailable", kind)

    def _update_failed(self, batch: list[Trajectory], exc: Exception) -> None:
        """The rule for entries of an update that raised (docs/learning.md):

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

    def _dead_letter(self, dead: list[tuple[Trajectory, str, int]], kind: str) -> None:
        streams = self._streams()
        with self.client.pipeline(transaction=True) as pipe:
            for trajectory, reason, tries in dead:
                pipe.xadd(
                    self.dead_key,
                    {
                        "stream": streams["rankings"],
                        "entry_id": trajectory.entry_id,
                        "ranking_id": trajectory.event.ranking_id,
                        "interactions": json.dumps(trajectory.interaction_entries),
                        "kind": kind,
                        "reason": reason[:2000],
                        "attempts": tries,
                        "at": self.clock(),
                        "consumer": self.config.consumer,
                    },
                    maxlen=self.config.dead_letter_max_len,
                    approximate=True,
                )
                pipe.xack(streams["rankings"], self.config.group, trajectory.entry_id)
                for entry_id in trajectory.interaction_entries:
                    pipe.xack(streams["interactions"], self.config.group, entry_id)
                pipe.hdel(self.attempts_key, trajectory.entry_id)
            pipe.execute()
        for trajectory, reason, _ in dead:
            log.warning("dead-lettered ranking %s (entry %s): %s", trajectory.event.ranking_id, trajectory.entry_id, reason)
