"""Erasing a user reaches every copy of what they did (``DELETE /v1/users/<user_id>``).

:meth:`ranker.live.state.RedisStateProvider.erase` deletes the user's pseudonym, profile and activity counters; then
:func:`erase_copies` removes, under the pseudonym that no longer leads anywhere:

- their **stream entries**: every ranking they were served (query text, session id, features) and every
  interaction they sent, found through their log index (``{p}:user:<token>:log``, kept by the event log's scripts,
  :mod:`ranker.live.scripts`) without scanning the streams; with them the events' dedup keys;
- their **ranking records** (so feedback for a ranking made before the erasure is refused: 404, and cannot
  recreate the profile) and each ranking's counted-events record;
- their **experiment exposures**, pre-period values and outcomes, in every experiment;
- the learner's **windows** (replay and hold-out) entries that point at their rankings;
- their per-window counter caps, impression marks and feedback rate counters;
- their shown statistics and their search sessions (pages shown, clicks).

A learner may hold some of those rankings in memory when the erasure happens. The pseudonym's hash goes on an
erased list (``{p}:erased``, kept as long as the streams keep entries), which the learner checks before anything
trains (:func:`ranker.learning.reading.erased_users`): those rankings are skipped and counted (``erased``).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

import redis

from ranker.live.backend import as_text, key

if TYPE_CHECKING:
    from ranker.serving import RankingService

LEARNER_GROUP = "learner"
WINDOWS = ("replay", "holdout")


def erased_key(prefix: str) -> str:
    return key(prefix, "erased")


def erased_member(user_key: str) -> str:
    """What the erased list holds for a pseudonym: a hash, so the pseudonym itself is stored nowhere after erasure."""
    return hashlib.sha256(user_key.encode()).hexdigest()[:32]


def erase_user(service: RankingService, user_hash: str) -> str | None:
    """Forget the user with keyed hash ``user_hash`` everywhere; returns the pseudonym erased (None: unknown)."""
    token = service.state.erase(user_hash)
    if token is not None:
        from ranker.config import limit_windows

        config = service.config
        erase_copies(
            service.client,
            config.prefix,
            token,
            experiments=[experiment.experiment_id for experiment in service.experiments.list()],
            counter_window_s=config.counter_window_s,
            limit_windows_s=[seconds for _, seconds in limit_windows(config.feedback_limit_per_user)],
            ranking_ttl_s=config.ranking_ttl_s,
            keep_s=max(config.ranking_ttl_s, config.stream_max_age_s or 0, config.dedup_ttl_s),
        )
    return token


def erase_copies(
    client: redis.Redis,
    prefix: str,
    token: str,
    *,
    experiments: Iterable[str],
    counter_window_s: int,
    limit_windows_s: Iterable[int],
    ranking_ttl_s: float,
    keep_s: float,
) -> None:
    """Remove every copy of what the pseudonym ``token`` did (module docstring)."""
    now = time.time()
    client.zadd(erased_key(prefix), {erased_member(token): now})  # first: a learner holding their rankings skips them
    client.zremrangebyscore(erased_key(prefix), "-inf", now - keep_s)
    log_key = key(prefix, "user", token, "log")
    rankings: dict[str, str] = {}  # stream entry -> ranking id
    interactions: list[str] = []
    for line in (as_text(raw) for raw in client.lrange(log_key, 0, -1)):
        kind, _, rest = line.partition(" ")
        if kind == "r":
            entry_id, _, ranking_id = rest.partition(" ")
            rankings[entry_id] = ranking_id
        elif kind == "i":
            interactions.append(rest)
    rankings_stream, interactions_stream = key(prefix, "rankings"), key(prefix, "interactions")
    dedup: list[str] = []
    if interactions:
        pipe = client.pipeline(transaction=False)
        for entry_id in interactions:
            pipe.xrange(interactions_stream, entry_id, entry_id)
        for found in pipe.execute():
            for _, fields in found:
                event = json.loads(fields[b"event"])
                dedup.append(key(prefix, "event", event["ranking_id"], event["event_id"]))
    pipe = client.pipeline(transaction=False)
    if interactions:
        pipe.xdel(interactions_stream, *interactions)
    if rankings:
        pipe.xdel(rankings_stream, *rankings)
    for ranking_id in rankings.values():
        pipe.delete(key(prefix, "ranking", ranking_id), key(prefix, "ranking", ranking_id, "counted"))
    for name in dedup:
        pipe.delete(name)
    for window in WINDOWS:  # the learner's windows refer to stream entries: drop those of this user
        window_key = key(prefix, "learner", LEARNER_GROUP, window)
        stale = [entry for entry, fields in client.xrange(window_key) if as_text(fields.get(b"entry_id")) in rankings]
        if stale:
            pipe.xdel(window_key, *stale)
    for experiment in experiments:
        _erase_from_experiment(client, pipe, prefix, experiment, token, set(rankings.values()))
    sessions = [as_text(name) for name in client.scan_iter(match=key(prefix, "user", token, "session") + ":*", count=1000)]
    pipe.delete(log_key, key(prefix, "user", token, "shown"), *sessions, *_window_keys(prefix, token, counter_window_s, limit_windows_s, now, ranking_ttl_s))
    pipe.execute()


def _erase_from_experiment(client: redis.Redis, pipe: redis.client.Pipeline, prefix: str, experiment: str, token: str, ranking_ids: set[str]) -> None:
    """Exposures (per session ``<token>:...``, or per ranking when interleaved), the pre-period value and outcomes."""
    pipe.hdel(key(prefix, "exp", experiment, "pre"), token)
    for table in ("exposures", "clicks", "purchases", "revenue"):
        name = key(prefix, "exp", experiment, table)
        fields = [field for field, _ in client.hscan_iter(name, match=f"{token}:*")]
        fields += [as_text(field) for field, _ in client.hscan_iter(name) if as_text(field).partition(":")[0] in ranking_ids] if ranking_ids else []
        if fields:
            pipe.hdel(name, *fields)


def _window_keys(prefix: str, token: str, counter_window_s: int, limit_windows_s: Iterable[int], now: float, ranking_ttl_s: float) -> list[str]:
    """The user's per-window keys that may still exist: impression marks and counter caps (windows of rankings that
    still take feedback), feedback rate counters (the current and the last window of each limit)."""
    names = []
    for window in range(math.floor((now - ranking_ttl_s) / counter_window_s) - 2, math.floor(now / counter_window_s) + 2):
        names += [key(prefix, "user", token, "seen", str(window)), key(prefix, "user", token, "counted", str(window))]
    for seconds in {int(s) for s in limit_windows_s if s}:
        for window in (math.floor(now / seconds) - 1, math.floor(now / seconds), math.floor(now / seconds) + 1):
            names.append(key(prefix, "limits", "feedback", token, str(seconds), str(window)))
    return names
