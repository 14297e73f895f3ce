"""Live feature state in Redis: item counters and user profiles.

The feature builder reads two kinds of state (:class:`ranker.ranking.features.StateProvider`):

- item counters, four hashes keyed by item id: ``{p}:counts:impressions``,
  ``{p}:counts:clicks``, ``{p}:counts:purchases``, ``{p}:counts:exposure``.
  Impressions and exposure (the examination prior of the position shown,
  :func:`ranker.ranking.features.examination_prior`) move when a slate is
  logged; clicks and purchases when feedback is accepted (in the same script
  that appends the event, so a counter moves exactly once per event);
- user profiles, one hash per pseudonymised user, ``{p}:user:<user_key>``,
  with the JSON scalars of :class:`ranker.ranking.profile.UserProfile` and its
  embedding as float32 bytes. Feedback folds events into it inside its one
  script (``ranker.live.events``: :meth:`ranker.ranking.profile.UserProfile.record`
  in Lua), so concurrent feedback for one user loses nothing. What the user was
  *shown* (brand and colour counts, price levels) is a hash beside it,
  ``{p}:user:<user_key>:shown``, counted by the script that logs a slate.
  Profiles expire after ``profile_ttl_s`` without activity;
- sessions (:class:`ranker.ranking.profile.SessionState`), per user and
  ``session_id`` (hashed), under ``{p}:user:<user_key>:session:<id>:``: the
  items shown per query (``shown:<query hash>``), all items shown
  (``shown``), the queries asked (``queries``) and the items clicked
  (``clicked``, newest last, at most 20), kept ``session_ttl_s`` after the
  session's last request or click.

Who a user is (privacy): the service never stores a user id. It keys the
user by ``HMAC(secret, user_id)`` only to find their *pseudonym*, a random
token in ``{p}:pseudonym:<hmac>`` (:func:`pseudonym_key`); the token is what
profiles, activity counters, the event log and experiments record. Erasing a
user (:meth:`RedisStateProvider.erase`) deletes the token, their profile and
counters; what was logged under the token can no longer be linked to the id,
and the user's next request starts under a new token.

A rank request reads everything it needs in one round trip (:meth:`RedisStateProvider.snapshot`).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import redis

from ranker.defaults import PROFILE_TTL_S, PSEUDONYM_TTL_S, SESSION_TTL_S  # noqa: F401  (the defaults' one home; importers read them here too)
from ranker.live.backend import as_text, key
from ranker.ranking.features import COUNTERS, UserProfile


def user_key_secret(configured: str | None, data_dir: Path) -> bytes:
    """The HMAC key users are keyed by: ``configured`` (``RANKER_USER_KEY_SECRET``), else a random key kept in
    ``data_dir/user_key.secret`` (created once; every process of the deployment, and ``ranker import``, reads it)."""
    if configured:
        return str(configured).encode()
    path = Path(data_dir) / "user_key.secret"
    if not path.exists():  # written whole under a private name, then linked into place: racing workers agree on one key
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        temporary = Path(data_dir) / f".user_key.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    return path.read_text().strip().encode()


def counter_key(prefix: str, counter: str) -> str:
    return key(prefix, "counts", counter)


def pseudonym_key(prefix: str, user_hash: str) -> str:
    """Where the random pseudonym of the user with keyed hash ``user_hash`` is kept."""
    return key(prefix, "pseudonym", user_hash)


def activity_key(prefix: str, user_key: str) -> str:
    """A user's lifetime counts (rankings, clicks, purchases): the pre-period data of experiments (CUPED)."""
    return key(prefix, "user", user_key, "activity")


def profile_key(prefix: str, user_key: str) -> str:
    return key(prefix, "user", user_key)


def shown_key(prefix: str, user_key: str) -> str:
    """What the user was shown: ``n``, ``level`` (the sum of price levels), ``b:<brand>`` and ``c:<colour>`` counts."""
    return key(prefix, "user", user_key, "shown")


def session_key(prefix: str, user_key: str, session_id: str) -> str:
    """The base of a session's keys (the caller's ``session_id`` hashed: any string of up to 256 characters)."""
    return key(prefix, "user", user_key, "session", hashlib.sha256(session_id.encode("utf-8")).hexdigest()[:24]) + ":"


def encode_profile(profile: UserProfile) -> dict[str, bytes | str]:
    scalars = {
        "n_interactions": profile.n_interactions,
        "category_counts": profile.category_counts,
        "brand_counts": profile.brand_counts,
        "log_price_sum": profile.log_price_sum,
        "n_purchases": profile.n_purchases,
        "colour_counts": profile.colour_counts,
        "level_sum": profile.level_sum,
        "n_levels": profile.n_levels,
    }
    fields: dict[str, bytes | str] = {"profile": json.dumps(scalars)}
    if profile.embedding is not None:
        fields["embedding"] = np.asarray(profile.embedding, dtype=np.float32).tobytes()
    return fields


def encode_shown(profile: UserProfile) -> dict[str, str]:
    """The user's shown statistics as the fields of their ``shown`` hash (what the ranking script increments)."""
    fields = {"n": repr(float(profile.shown)), "level": repr(float(profile.shown_level_sum))}
    fields.update({f"b:{brand}": repr(float(count)) for brand, count in profile.shown_brand_counts.items()})
    fields.update({f"c:{colour}": repr(float(count)) for colour, count in profile.shown_colour_counts.items()})
    return fields


def decode_profile(scalars: bytes | None, embedding: bytes | None, shown: dict[bytes, bytes] | None = None) -> UserProfile:
    """A profile from its hash fields and its shown-statistics hash (Lua's cjson writes an empty table as ``{}``)."""
    profile = UserProfile()
    if scalars:
        data = json.loads(scalars)
        profile = UserProfile(
            embedding=np.frombuffer(embedding, dtype=np.float32).copy() if embedding else None,
            n_interactions=int(data["n_interactions"]),
            category_counts=_floats(data["category_counts"]),
            brand_counts=_floats(data["brand_counts"]),
            log_price_sum=float(data["log_price_sum"]),
            n_purchases=int(data["n_purchases"]),
            colour_counts=_floats(data.get("colour_counts")),
            level_sum=float(data.get("level_sum", 0.0)),
            n_levels=int(data.get("n_levels", 0)),
        )
    for field_name, value in (shown or {}).items():
        name, count = as_text(field_name), float(value)
        if name == "n":
            profile.shown = count
        elif name == "level":
            profile.shown_level_sum = count
        elif name.startswith("b:"):
            profile.shown_brand_counts[name[2:]] = count
        elif name.startswith("c:"):
            profile.shown_colour_counts[name[2:]] = count
    return profile


def _floats(counts: Any) -> dict[str, float]:
    return {k: float(v) for k, v in counts.items()} if isinstance(counts, dict) else {}


@dataclass(frozen=True)
class SessionRef:
    """Which session a request belongs to, and its query (what a page of it must not repeat)."""

    key: str  # session_key(...)
    query_hash: str
    page: int = 1


@dataclass
class SessionRead:
    """A session as a request reads it: what its query already showed, everything shown, the queries, the clicks."""

    shown_for_query: set[str] = field(default_factory=set)
    shown: set[str] = field(default_factory=set)
    queries: set[str] = field(default_factory=set)
    clicked: list[str] = field(default_factory=list)


def _counts(rows: Sequence[Sequence[bytes | None]], n: int) -> np.ndarray:
    counts = np.zeros((n, len(COUNTERS)), dtype=np.float64)
    for column, values in enumerate(rows):
        counts[:, column] = [float(value) if value is not None else 0.0 for value in values]
    return counts


class RedisStateProvider:
    """A :class:`ranker.ranking.features.StateProvider` over Redis, shared by every server process."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "ranker",
        profile_decay: float = 0.9,
        profile_ttl_s: int = PROFILE_TTL_S,
        pseudonym_ttl_s: int = PSEUDONYM_TTL_S,
    ):
        self.client = client
        self.prefix = prefix
        self.profile_decay = profile_decay
        self.profile_ttl_s = profile_ttl_s
        self.pseudonym_ttl_s = pseudonym_ttl_s

    # -------------------------------------------------------- pseudonyms
    def queue_pseudonym(self, pipe: Any, user_hash: str) -> None:
        """Queue on ``pipe`` the read of the user's pseudonym, created on their first request and kept
        ``pseudonym_ttl_s`` after their last; the last of the pipeline's replies is the token."""
        name = pseudonym_key(self.prefix, user_hash)
        pipe.set(name, uuid.uuid4().hex, nx=True)
        pipe.expire(name, self.pseudonym_ttl_s)
        pipe.get(name)

    # ------------------------------------------------------------ reads
    def snapshot(self, item_ids: Sequence[str], user_key: str | None) -> tuple[np.ndarray, UserProfile]:
        """Counters for ``item_ids`` ([n, 4], :data:`COUNTERS`) and the user's profile, in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        if item_ids:
            for counter in COUNTERS:
                pipe.hmget(counter_key(self.prefix, counter), list(item_ids))
        if user_key is not None:
            pipe.hmget(profile_key(self.prefix, user_key), ["profile", "embedding"])
            pipe.hgetall(shown_key(self.prefix, user_key))
        replies = pipe.execute() if len(pipe) else []
        counts = _counts(replies[: len(COUNTERS)], len(item_ids)) if item_ids else np.zeros((0, len(COUNTERS)))
        profile = decode_profile(*replies[-2], replies[-1]) if user_key is not None else UserProfile()
        return counts, profile

    def session(self, session: SessionRef) -> SessionRead:
        """What the session holds, in one round trip (the request's second, before retrieval: its pages exclude
        what this query already showed)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.smembers(session.key + "shown:" + session.query_hash)
        pipe.smembers(session.key + "shown")
        pipe.smembers(session.key + "queries")
        pipe.lrange(session.key + "clicked", 0, -1)
        for_query, shown, queries, clicked = pipe.execute()
        return SessionRead(
            shown_for_query={as_text(item) for item in for_query} if session.page > 1 else set(),  # page 1 is a new search of the query
            shown={as_text(item) for item in shown},
            queries={as_text(query) for query in queries},
            clicked=[as_text(item) for item in clicked],
        )

    def item_counts(self, item_ids: Sequence[str]) -> np.ndarray:
        return self.snapshot(item_ids, None)[0]

    def erase(self, user_hash: str) -> str | None:
        """Forget a user: their pseudonym, profile and activity counters; returns the pseudonym erased (None: unknown)."""
        name = pseudonym_key(self.prefix, user_hash)
        with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(name)
                    token = pipe.get(name)
                    if token is None:
                        return None
                    token = token.decode()
                    pipe.multi()
                    pipe.delete(name, profile_key(self.prefix, token), activity_key(self.prefix, token), shown_key(self.prefix, token))
                    pipe.execute()
                    return token
                except redis.WatchError:
                    continue

    def user_profile(self, user_key: str | None) -> UserProfile:
        return self.snapshot([], user_key)[1]


@dataclass
class Interaction:
    """What a profile learns from one event: its kind and the item's attributes (``level``: its price level)."""

    kind: str
    category: str
    brand: str
    price: float
    text_vector: np.ndarray
    colour: str = ""
    level: float | None = None
