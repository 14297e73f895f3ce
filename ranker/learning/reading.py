"""The learner's reading side: every logged entry reaches the joiner, and none twice (exactly-once learning).

:class:`StreamReader` reads the rankings and interactions streams through the learner's consumer group:

- **Its own pending entries first**, in pages of ``read_count`` from where the last page ended (``XREADGROUP``
  from the last id read, not from 0 again, which would return the same first page for ever). A learner
  restarted under its stable consumer name (``ranker serve`` passes one, :mod:`ranker.learning.supervisor`)
  resumes everything it had not committed.
- **Then other consumers' forgotten entries**: every ``claim_every_s`` it claims entries pending with any
  consumer for longer than ``claim_idle_s`` (``XAUTOCLAIM``): a learner that died and never came back under its
  name (an old ``host-pid`` consumer, a machine gone). A live learner keeps what it holds in memory its own
  (:meth:`keep_claimed`, from its heartbeat thread, also while a long update runs), so nothing it still
  holds is ever idle that long.
- **Then new entries**, blocking only when both streams are read to their end.

What it read goes to the joiner, which joins a ranking once however often it is delivered
(:class:`ranker.learning.join.Joiner`). While the interactions stream is not read to its end, the
:meth:`watermark` (the time of the last interaction read) stands in for now, so a ranking read in an early page
waits for feedback that a later page holds instead of training without it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis

from ranker.learning.config import LearnerConfig
from ranker.learning.join import Joiner, stream_order
from ranker.live.backend import as_text
from ranker.live.erasure import erased_key, erased_member
from ranker.live.events import InteractionEvent, RankingEvent

# KEYS[1]: a stream. ARGV: group, consumer, idle (ms), count. Resets the idle time of this consumer's entries idle
# longer than that (XCLAIM to itself, JUSTID: the delivery count stays), so no other learner claims what this one
# still holds. One script: an entry another consumer claimed meanwhile is not taken back.
_KEEP_CLAIMED = """
local owned = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', tonumber(ARGV[3]), '-', '+', tonumber(ARGV[4]), ARGV[2])
if #owned == 0 then return 0 end
local args = {KEYS[1], ARGV[1], ARGV[2], '0'}
for i = 1, #owned do args[#args + 1] = owned[i][1] end
args[#args + 1] = 'JUSTID'
redis.call('XCLAIM', unpack(args))
return #owned
"""


def erased_users(client: redis.Redis, prefix: str, user_keys: set[str]) -> set[str]:
    """The pseudonyms among ``user_keys`` whose user was erased (``DELETE /v1/users/<id>``) since they were logged
    (:mod:`ranker.live.erasure`)."""
    if not user_keys:
        return set()
    ordered = sorted(user_keys)
    scores = client.zmscore(erased_key(prefix), [erased_member(user) for user in ordered])
    return {user for user, score in zip(ordered, scores) if score is not None}


class StreamReader:
    """Reads both streams for one learner (module docstring); ``joiner()`` is the learner's current joiner."""

    def __init__(self, client: redis.Redis, config: LearnerConfig, streams: dict[str, str], joiner: Callable[[], Joiner], clock: Callable[[], float]):
        self.client, self.config, self.streams, self.joiner, self.clock = client, config, streams, joiner, clock
        self._keep = client.register_script(_KEEP_CLAIMED)
        self.restart()

    def restart(self) -> None:
        """Forget the read position: the next poll reads this consumer's pending entries again from the start."""
        self._pending_from: dict[str, str] | None = {name: "0" for name in self.streams}
        self._full: dict[str, bool] = {name: True for name in self.streams}  # the last read of the stream filled a page
        self._last_interaction: str | None = None
        self._claimed_at = float("-inf")
        self.claimed = 0  # entries taken over from other consumers (XAUTOCLAIM), since start

    # ------------------------------------------------------------------ reads
    def poll(self, block_ms: int) -> int:
        if self._pending_from is not None:
            n = self._read(dict(self._pending_from), None, pending=True)
            if self._pending_from:  # a stream's own backlog is not read to its end yet
                return n
            self._pending_from = None  # every own entry is in; from now on, others' forgotten ones and new ones
            self._full = {name: True for name in self.streams}
            return n + self._claim() + self._read({name: ">" for name in self.streams}, None)
        n = self._claim()
        caught_up = not any(self._full.values())
        return n + self._read({name: ">" for name in self.streams}, block_ms if caught_up and not n else None)

    def watermark(self, now: float) -> float:
        """Now, when the interactions stream is read to its end; else the time of the last interaction read."""
        if not self._full["interactions"] or self._last_interaction is None:
            return now
        return stream_order(self._last_interaction)[0] / 1000.0

    def _read(self, start: dict[str, str], block_ms: int | None, *, pending: bool = False) -> int:
        """One XREADGROUP from ``start`` (stream name -> id); the entries go to the joiner."""
        by_name = {self.streams[name]: name for name in start}
        replies = self.client.xreadgroup(
            self.config.group, self.config.consumer, {self.streams[name]: ident for name, ident in start.items()}, count=self.config.read_count, block=block_ms
        )
        entries: dict[str, list[tuple[Any, Any]]] = {name: [] for name in start}
        for stream, found in replies or []:
            entries[by_name[as_text(stream)]] = found
        for name in start:
            full = len(entries[name]) >= self.config.read_count
            self._full[name] = full
            if pending:
                if full:
                    self._pending_from[name] = as_text(entries[name][-1][0])
                else:
                    self._pending_from.pop(name, None)
            if name == "interactions" and entries[name]:
                self._last_interaction = as_text(entries[name][-1][0])
        return self._deliver(entries)

    def _claim(self) -> int:
        """Take over entries idle past ``claim_idle_s`` in any consumer (every ``claim_every_s``)."""
        now = self.clock()
        if now - self._claimed_at < self.config.claim_every_s:
            return 0
        self._claimed_at = now
        idle_ms = int(self.config.claim_idle_s * 1000)
        claimed: dict[str, list[tuple[Any, Any]]] = {}
        for name in ("rankings", "interactions"):  # rankings first: their interactions then find them
            cursor, found = "0-0", []
            while len(found) < self.config.read_count:
                reply = self.client.xautoclaim(
                    self.streams[name], self.config.group, self.config.consumer, idle_ms, start_id=cursor, count=self.config.read_count - len(found)
                )
                cursor, entries = as_text(reply[0]), reply[1]
                found.extend(entries)
                for entry_id in reply[2] if len(reply) > 2 else []:  # Redis 7: entries trimmed from the stream leave the PEL
                    found.append((entry_id, None))
                if cursor == "0-0":
                    break
            claimed[name] = found
        n = self._deliver(claimed)
        self.claimed += n
        return n

    def _deliver(self, entries: dict[str, list[tuple[Any, Any]]]) -> int:
        joiner, now, n = self.joiner(), self.clock(), 0
        readers = (
            ("rankings", RankingEvent, joiner.add_ranking, "schema_mismatch"),
            ("interactions", InteractionEvent, joiner.add_interaction, "bad_event"),
        )
        for name, event_type, add, unreadable in readers:  # rankings first: their interactions then find them
            for entry_id, fields in entries.get(name, []):
                n += 1
                entry_id = as_text(entry_id)
                try:
                    add(entry_id, event_type.from_fields(fields), now)
                except (KeyError, ValueError, TypeError):  # unreadable, or trimmed (erased) from the stream: acknowledged
                    joiner.skip(unreadable, name, entry_id)
        return n

    # --------------------------------------------------------------- claims
    def keep_claimed(self) -> int:
        """Reset the idle time of this consumer's entries before another learner may claim them; returns how many."""
        idle_ms = max(1, int(self.config.claim_idle_s * 1000 / 3))
        kept = 0
        for stream in self.streams.values():
            while True:
                n = int(self._keep(keys=[stream], args=[self.config.group, self.config.consumer, idle_ms, 1000]))
                kept += n
                if n < 1000:
                    break
        return kept
