"""What a learner group records in Redis, for ``/metrics`` and the console."""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from ranker.live.backend import as_text, key


class LearnerStatus:
    """What a learner group records in Redis, read by the API's ``/metrics`` and the console.

    Keys, all under ``{prefix}:learner:<group>:``: ``skipped`` and ``errors`` (counts by reason and by kind),
    ``decisions`` (one per batch), ``last`` (the last decided update), ``heartbeats`` (one field per running
    consumer), ``dead`` (the dead-letter stream), ``attempts`` (failed tries per ranking entry, cleared when
    the entry is committed or dead-lettered) and ``supervisor`` (restarts of the learner process by
    ``ranker serve``)."""

    ALIVE_AFTER_S = 20.0  # a heartbeat older than this: the consumer is not running

    def __init__(self, client: redis.Redis, *, prefix: str = "ranker", group: str = "learner"):
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
        return [
            {"id": as_text(entry_id), **{as_text(k): as_text(v) for k, v in fields.items()}}
            for entry_id, fields in self.client.xrevrange(self.dead_key, count=count)
        ]

    def supervisor(self) -> dict[str, Any]:
        raw = {as_text(k): as_text(v) for k, v in self.client.hgetall(self.supervisor_key).items()}
        return {
            "restarts": int(raw.get("restarts", 0)),
            "last_exit": raw.get("last_exit"),
            "last_restart_at": float(raw["last_restart_at"]) if "last_restart_at" in raw else None,
        }

    def summary(self) -> dict[str, Any]:
        """Everything the console shows about the learner, in one dict."""
        return {
            "running": self.heartbeats(),
            "last_update": self.last_update(),
            "last_promoted": self.last_update(promoted=True),
            "decisions": self.decision_counts(),
            "errors": self.errors(),
            "skipped": self.skipped(),
            "dead_letters": int(self.client.xlen(self.dead_key)),
            **self.supervisor(),
        }
