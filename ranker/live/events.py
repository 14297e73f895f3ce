"""The event log: rankings and interactions in Redis Streams (DESIGN.md, "Events").

Two streams, both capped by size (approximately ``max_len`` entries) and,
when ``max_age_s`` is set, by age (entries older than that are trimmed as new
ones arrive):

- ``{p}:rankings``: one :class:`RankingEvent` per served slate, with the
  feature snapshot the policy saw and the per-position log-probabilities;
- ``{p}:interactions``: one :class:`InteractionEvent` per accepted click,
  add-to-cart or purchase.

Besides the stream entry, a served ranking leaves a small lookup record,
``{p}:ranking:<ranking_id>`` (user, slate, policy version), that feedback is
checked against; it expires after ``ranking_ttl_s`` (longer than the
attribution window). Impression counters move in the same transaction, once
per user, item and ``counter_window_s``.

Feedback takes one round trip (:meth:`EventLog.record_feedback`): one Lua
script (:mod:`ranker.live.scripts`) reads the ranking's lookup record, checks
every event's item against the slate, counts the user's feedback rate,
claims each ``(ranking_id, event_id)`` with ``SET NX`` (kept ``dedup_ttl_s``),
and only a first claim appends the event; the first event of its type at its
position then moves the item's click or purchase counter (within the user's
cap), the user's activity counters, the ranking's reward series bucket, the
user's profile (``ranker.live.state``) and, for a ranking served inside an
experiment (its :class:`Exposure`), the experiment's outcome counters
(:class:`ExperimentKeys`). A retried request counts once everywhere, and the
profile, read and written inside the script, stays exact under concurrent
feedback for one user. The learner reads the streams through a consumer group.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import redis

from ranker.defaults import DEDUP_TTL_S, MAX_STREAM_AGE_S, MAX_STREAM_LEN, RANKING_TTL_S, SERIES_TTL_S  # noqa: F401  (the defaults' one home; importers read them here too)
from ranker.interactions import EVENT_TYPES, REWARD_WEIGHTS  # noqa: F401  (re-exported: the event log speaks them)
from ranker.live import scripts
from ranker.live.backend import as_text, key, queue_script
from ranker.live.state import PROFILE_TTL_S, SESSION_TTL_S, Interaction, SessionRef, activity_key
from ranker.ranking.features import examination_prior

SERIES_BUCKET_S = 60


@dataclass(frozen=True)
class ExperimentKeys:
    """The Redis keys of one experiment's logs (``ranker.experiments.store`` writes the exposures, feedback the outcomes)."""

    prefix: str
    experiment: str

    def _key(self, name: str) -> str:
        return key(self.prefix, "exp", self.experiment, name)

    @property
    def exposures(self) -> str:  # session -> {user, arm, ts} (A/B), or ranking -> {user, ts} (interleaving)
        return self._key("exposures")

    @property
    def pre(self) -> str:  # user -> the pre-period covariate (purchases per ranking before the first exposure)
        return self._key("pre")

    @property
    def clicks(self) -> str:
        return self._key("clicks")

    @property
    def purchases(self) -> str:
        return self._key("purchases")

    @property
    def revenue(self) -> str:
        return self._key("revenue")

    def all(self) -> list[str]:
        return [self.exposures, self.pre, self.clicks, self.purchases, self.revenue]


def now() -> float:
    return time.time()


def new_ranking_id() -> str:
    return "r_" + uuid.uuid4().hex


# The binary fields of a logged ranking and the dtype each is written as. Features and similarities are
# float16 because serving rounds them so (ranker.ranking.features.snapshot_precision): storing them is lossless.
# A reader takes the dtype from the byte count, so entries written as float32 before this still read.
ARRAY_FIELDS: dict[str, type] = {"features": np.float16, "placed_similarity": np.float16, "context": np.float32, "retrieval_scores": np.float32}


def series_field(ts: float, policy_version: str) -> str:
    """The reward series bucket of a ranking served at ``ts``: its minute and its policy version."""
    return f"{int(ts // SERIES_BUCKET_S) * SERIES_BUCKET_S}|{policy_version}"


def series_day(ts: float) -> int:
    """The day (days since the epoch, UTC) whose reward series hash holds a ranking served at ``ts``."""
    return int(ts // 86400)


@dataclass
class RankingEvent:
    """One served slate (DESIGN.md "Events"), with what a learner needs to replay the policy's decisions.

    ``features`` is the [n, F_static] snapshot in candidate order; ``slots`` are
    the slate's rows in it, in display order; ``category_codes`` and
    ``placed_similarity`` ([L, n]: each placed item's text cosine to every
    candidate) rebuild the slate features of every step exactly. About 8.3 KB in
    Redis for 100 candidates and a slate of 10 (bench/README.md, "Soak").
    """

    ranking_id: str
    ts: float
    user_key: str
    session_id: str | None
    query_text: str | None
    query_has_image: bool
    query_hash: str
    policy_version: str
    candidate_ids: list[str]
    retrieval_scores: np.ndarray = field(repr=False)  # [n] in candidate order
    slate: list[str]
    slots: list[int]
    log_probs: list[float] | None
    temperature: float
    category_codes: list[int]
    features: np.ndarray = field(repr=False)
    context: np.ndarray = field(repr=False)
    placed_similarity: np.ndarray = field(repr=False)
    experiment: str | None = None
    arm: str | None = None
    teams: list[int] | None = None  # interleaving: the team (0 = arm A, 1 = arm B) of each slate position
    temperatures: list[float] | None = None  # each position's sampling temperature (entropy-targeted); None: ``temperature`` throughout
    slate_size: int | None = None  # the slate length asked for (the position feature's scale); None: len(slots), as logged before it
    query_parsed: dict[str, Any] | None = None  # what the parser read and what was relaxed (ranker.retrieval.understanding.Understood.to_json)
    page: int | None = None  # the page of the query in its session (1-based); None: outside a session
    score_scale: str | None = None  # "z": the temperatures are in units of standardised scores (ranker.ranking.policy); None: raw scores
    bonus: dict[str, float] | None = None  # the cold-start bonus added to each candidate's logit while sampling, by candidate row (nonzero only)

    def to_fields(self) -> dict[str, bytes | str]:
        meta = {name: getattr(self, name) for name in self.__dataclass_fields__ if name not in ARRAY_FIELDS}  # no deep copy of the arrays
        fields: dict[str, bytes | str] = {"event": json.dumps(meta)}
        for name, dtype in ARRAY_FIELDS.items():
            array = np.ascontiguousarray(getattr(self, name), dtype=dtype)
            fields[name] = array.tobytes()
            fields[name + "_shape"] = ",".join(str(n) for n in array.shape)
        return fields

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes]) -> RankingEvent:
        meta = json.loads(fields[b"event"])
        arrays = {}
        for name in ARRAY_FIELDS:
            if name in meta:  # written before the field was binary
                arrays[name] = np.asarray(meta.pop(name), dtype=np.float32)
                continue
            shape = tuple(int(n) for n in fields[(name + "_shape").encode()].split(b",") if n)
            data = fields[name.encode()]
            dtype = np.float16 if len(data) == 2 * math.prod(shape) else np.float32
            arrays[name] = np.frombuffer(data, dtype=dtype).reshape(shape).astype(np.float32)
        return cls(**meta, **arrays)


@dataclass
class Exposure:
    """A ranking served inside an experiment: what feedback needs to credit the right arm."""

    experiment: str
    arm: int | None  # the arm's index (None: interleaved, see ``teams``)
    session: str  # the analysis session: "<user_key>:<session_id or ranking_id>"
    teams: list[int] | None = None  # interleaving: outcomes count per "<ranking_id>:<team of the position>", else per session


@dataclass
class InteractionEvent:
    """A click, add_to_cart or purchase of a slate's item (DESIGN.md "Events")."""

    event_id: str
    ranking_id: str
    item_id: str
    position: int
    type: str
    value: float | None
    ts: float

    def to_json(self) -> str:
        return json.dumps({name: getattr(self, name) for name in self.__dataclass_fields__})

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes]) -> InteractionEvent:
        return cls(**json.loads(fields[b"event"]))


@dataclass
class Feedback:
    """One reported event, with what the feedback script needs besides the ranking's record."""

    event_id: str
    item_id: str
    type: str
    value: float | None
    ts: float
    revenue: float = 0.0  # what a purchase brought in (an experiment's revenue outcome)
    profile: Interaction | None = None  # what the user's profile learns from it (None: the item left the catalog)

    def json_head(self, ranking_id: str) -> str:
        """The :class:`InteractionEvent` JSON without its position and closing brace: the script adds them."""
        return json.dumps(
            {"event_id": self.event_id, "ranking_id": ranking_id, "item_id": self.item_id, "type": self.type, "value": self.value, "ts": self.ts}
        )[:-1]


class FeedbackRateLimited(RuntimeError):
    """The ranking's user sent more feedback than a limit allows; nothing was stored. Retry after ``retry_after_s``."""

    def __init__(self, ranking_id: str, retry_after_s: int):
        super().__init__(f"{ranking_id}: over the feedback limit of its user")
        self.retry_after_s = retry_after_s


class FeedbackRefused(LookupError):
    """The ranking is unknown (``index`` None) or the event at ``index`` names an item outside its slate."""

    def __init__(self, ranking_id: str, index: int | None = None):
        super().__init__(ranking_id if index is None else f"{ranking_id}: event {index}")
        self.ranking_id = ranking_id
        self.index = index


@dataclass
class RankingRecord:
    """What feedback is checked against: who saw which slate, under which policy."""

    ranking_id: str
    user_key: str
    slate: list[str]
    policy_version: str
    ts: float
    exposure: Exposure | None = None
    session: str | None = None  # the session's key base (ranker.live.state.session_key), when it had one
    session_ttl: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.exposure, dict):
            self.exposure = Exposure(**self.exposure)

    def position_of(self, item_id: str) -> int | None:
        try:
            return self.slate.index(item_id)
        except ValueError:
            return None


class EventLog:
    """Appends and reads the two streams; every write is a single round trip."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "ranker",
        max_len: int = MAX_STREAM_LEN,
        max_age_s: float | None = MAX_STREAM_AGE_S,
        ranking_ttl_s: int = RANKING_TTL_S,
        dedup_ttl_s: int = DEDUP_TTL_S,
        user_data_ttl_s: int = PROFILE_TTL_S,
        series_ttl_s: int = SERIES_TTL_S,
        profile_decay: float = 0.9,
        clock: Callable[[], float] = time.time,
        counter_window_s: int = 3600,
        counter_user_cap: int = 1,
        feedback_limits: Sequence[tuple[int, int]] = (),
    ):
        """``clock``: the wall clock the age limit and the reward series read (tests inject one); ``profile_decay``: the
        weight of the user's past in their profile embedding (:meth:`ranker.ranking.features.UserProfile.record`);
        ``counter_window_s`` and ``counter_user_cap``: what one user adds to an item's live counters per window;
        ``feedback_limits``: (requests, seconds) each user may send (:mod:`ranker.live.scripts`)."""
        self.counter_window_s = int(counter_window_s)
        self.counter_user_cap = int(counter_user_cap)
        self.feedback_limits = " ".join(f"{int(count)} {int(seconds)}" for count, seconds in feedback_limits)
        self.client = client
        self.clock = clock
        self.prefix = prefix
        self.max_len = max_len
        self.max_age_s = max_age_s
        self.user_data_ttl_s = user_data_ttl_s
        self.ranking_ttl_s = ranking_ttl_s
        self.dedup_ttl_s = dedup_ttl_s
        self.rankings_stream = key(prefix, "rankings")
        self.series_ttl_s = series_ttl_s
        self.profile_decay = profile_decay
        self.interactions_stream = key(prefix, "interactions")
        self._feedback = client.register_script(scripts.FEEDBACK)
        self._log_ranking = client.register_script(scripts.LOG_RANKING)

    def _ranking_key(self, ranking_id: str) -> str:
        return key(self.prefix, "ranking", ranking_id)

    def series_key(self, day: int) -> str:
        """One day's reward series: a hash of ``<minute>|<version>|rankings`` and ``...|reward`` counters."""
        return key(self.prefix, "series", "reward", str(day))

    def series_expiry(self, day: int) -> int:
        """When a day's reward series expires (unix seconds): ``series_ttl_s`` after the day ends."""
        return (day + 1) * 86400 + self.series_ttl_s

    # ------------------------------------------------------------ writes
    def append_ranking(
        self,
        event: RankingEvent,
        exposure: Exposure | None = None,
        *,
        also: Callable[[Any], None] | None = None,
        shown: Sequence[tuple[str, str, float]] = (),
        session: SessionRef | None = None,
        session_ttl_s: int = SESSION_TTL_S,
    ) -> str:
        """Log the slate, remember it for feedback, count its impressions; returns the stream id.

        ``also`` queues more commands in the same transaction (an experiment's exposure log), before the user's
        activity counter moves, so what they read of it is what preceded this ranking. ``shown``: each slate item's
        (brand, colour, price level), for the user's shown statistics. ``session``: the session it belongs to (its
        items join the session's shown sets; a click on it joins the session's clicks).
        """
        record: dict[str, Any] = {"user_key": event.user_key, "slate": event.slate, "policy_version": event.policy_version, "ts": event.ts}
        if exposure is not None:
            record["exposure"] = asdict(exposure)
        if session is not None:
            record["session"], record["session_ttl"] = session.key, session_ttl_s
        described = list(shown) or [("", "", 0.0)] * len(event.slate)
        pipe = self.client.pipeline(transaction=True)
        items = [
            value
            for position, (item_id, (brand, colour, level)) in enumerate(zip(event.slate, described, strict=True))
            for value in (item_id, repr(float(examination_prior(position))), brand, colour, repr(float(level)))
        ]
        fields = [value for pair in event.to_fields().items() for value in pair]
        window = int(event.ts // self.counter_window_s)
        args = [key(self.prefix, ""), event.user_key, window, self.counter_window_s, self.user_data_ttl_s, self.max_len, len(event.slate)]
        args += [session.key if session else "", session_ttl_s, session.query_hash if session else "", *items]
        queue_script(pipe, self._log_ranking, keys=[self.rankings_stream], args=[*args, event.ranking_id, *fields])
        if self.max_len:
            pipe.xtrim(self.rankings_stream, maxlen=self.max_len, approximate=True)
        if self.max_age_s:
            pipe.xtrim(self.rankings_stream, minid=self.oldest_kept(), approximate=False)
        pipe.set(self._ranking_key(event.ranking_id), json.dumps(record), ex=self.ranking_ttl_s)
        if also is not None:
            also(pipe)
        pipe.hincrby(activity_key(self.prefix, event.user_key), "rankings", 1)
        pipe.expire(activity_key(self.prefix, event.user_key), self.user_data_ttl_s)
        day = series_day(event.ts)
        pipe.hincrby(self.series_key(day), series_field(event.ts, event.policy_version) + "|rankings", 1)
        pipe.expireat(self.series_key(day), self.series_expiry(day))
        return as_text(pipe.execute()[0])

    def record_feedback(self, ranking_id: str, events: Sequence[Feedback]) -> list[bool]:
        """Check ``events`` against the served ranking and record the new ones, in one round trip; per event, whether
        it was accepted (False: a duplicate ``event_id``).

        Raises :class:`FeedbackRefused` (and writes nothing) when the ranking is unknown or expired, or an event's
        item is not in its slate. Everything else an accepted event moves is listed in the module docstring.
        """
        if not events:
            return []
        reply = self._feedback(keys=[self._ranking_key(ranking_id)], args=self._feedback_args(ranking_id, events))
        return self._feedback_flags(ranking_id, reply)

    def record_feedback_many(self, batches: Sequence[tuple[str, Sequence[Feedback]]]) -> list[list[bool] | FeedbackRefused | FeedbackRateLimited]:
        """:meth:`record_feedback` for many rankings in one round trip (a pipeline of the same script, each ranking
        atomic on its own); per ranking, its flags or the refusal it met (the others are recorded all the same).
        A Redis error raises: then some rankings may be recorded and others not (a retry with the same event ids
        counts each event once)."""
        queued = [(ranking_id, events) for ranking_id, events in batches if events]
        replies = iter(self._run_feedback([(self._ranking_key(ranking_id), self._feedback_args(ranking_id, events)) for ranking_id, events in queued]))
        out: list[list[bool] | FeedbackRefused | FeedbackRateLimited] = []
        for ranking_id, events in batches:
            if not events:
                out.append([])
                continue
            try:
                out.append(self._feedback_flags(ranking_id, next(replies)))
            except (FeedbackRefused, FeedbackRateLimited) as refused:
                out.append(refused)
        return out

    def _run_feedback(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        """The feedback script once per (record key, ARGV), pipelined: one round trip. By its sha (EVALSHA), so no
        SCRIPT EXISTS goes first; a call that finds the script gone from Redis (a restart, SCRIPT FLUSH) failed
        before it ran, and goes again once the script is loaded. A cluster pipeline sends the script's text (EVAL)."""
        from redis.cluster import ClusterPipeline
        from redis.exceptions import NoScriptError

        pipe = self.client.pipeline(transaction=False)
        if isinstance(pipe, ClusterPipeline):
            for record_key, args in calls:
                queue_script(pipe, self._feedback, keys=[record_key], args=args)
            return pipe.execute() if calls else []
        replies: list[Any] = [NoScriptError()] * len(calls)
        for attempt in range(2):
            missing = [index for index, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if not missing:
                break
            if attempt:
                self.client.script_load(self._feedback.script)
            for index in missing:
                record_key, args = calls[index]
                pipe.evalsha(self._feedback.sha, 1, record_key, *args)
            for index, reply in zip(missing, pipe.execute(raise_on_error=False)):
                replies[index] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    def _feedback_args(self, ranking_id: str, events: Sequence[Feedback]) -> list[Any]:
        """The feedback script's ARGV (:data:`ranker.live.scripts.FEEDBACK`)."""
        args: list[Any] = [
            key(self.prefix, ""),
            self.dedup_ttl_s,
            self.max_len,
            self.oldest_kept() if self.max_age_s else "",
            self.user_data_ttl_s,
            self.series_ttl_s,
            repr(float(self.profile_decay)),
            ranking_id,
            self.feedback_limits,
            repr(float(self.clock())),
            self.counter_window_s,
            self.counter_user_cap,
            len(events),
        ]
        for event in events:
            learned = event.profile
            args += [
                event.event_id,
                event.item_id,
                event.type,
                event.json_head(ranking_id),
                repr(float(event.revenue)),
                repr(REWARD_WEIGHTS.get(event.type, 0.0)),
                learned.category if learned else "",
                learned.brand if learned else "",
                learned.colour if learned else "",
                repr(float(learned.level)) if learned is not None and learned.level is not None and np.isfinite(learned.level) else "",
                repr(float(learned.price)) if learned else "0",
                np.ascontiguousarray(learned.text_vector, dtype="<f4").tobytes() if learned else b"",
            ]
        return args

    @staticmethod
    def _feedback_flags(ranking_id: str, reply: Sequence[Any]) -> list[bool]:
        status, *flags = reply
        if status == 0:
            raise FeedbackRefused(ranking_id)
        if status == -2:
            raise FeedbackRateLimited(ranking_id, int(flags[0]))
        if status < 0:
            raise FeedbackRefused(ranking_id, int(flags[0]))
        return [bool(flag) for flag in flags]

    def oldest_kept(self) -> str:
        """The smallest stream id the age limit keeps (ids start with their time in milliseconds)."""
        return f"{int((self.clock() - float(self.max_age_s or 0)) * 1000)}-0"

    # ------------------------------------------------------------- reads
    def ranking(self, ranking_id: str) -> RankingRecord | None:
        raw = self.client.get(self._ranking_key(ranking_id))
        if raw is None:
            return None
        data = json.loads(raw)
        return RankingRecord(ranking_id=ranking_id, **data)

    def rankings(self, start: str = "-", end: str = "+", count: int | None = None) -> list[tuple[str, RankingEvent]]:
        return [(as_text(entry_id), RankingEvent.from_fields(fields)) for entry_id, fields in self.client.xrange(self.rankings_stream, start, end, count=count)]

    def interactions(self, start: str = "-", end: str = "+", count: int | None = None) -> list[tuple[str, InteractionEvent]]:
        return [
            (as_text(entry_id), InteractionEvent.from_fields(fields))
            for entry_id, fields in self.client.xrange(self.interactions_stream, start, end, count=count)
        ]

    def reward_series(self, since: float | None = None) -> dict[str, list[tuple[float, int, float]]]:
        """Per policy version, (bucket start, rankings served, reward their feedback earned) per minute, in time order,
        from ``since`` (default: a day ago) to now."""
        now = self.clock()
        since = now - 86400 if since is None else since
        pipe = self.client.pipeline(transaction=False)
        for day in range(series_day(since), series_day(now) + 1):
            pipe.hgetall(self.series_key(day))
        table: dict[tuple[str, float], list[float]] = {}
        for raw_field, value in (item for day in pipe.execute() for item in day.items()):
            minute, version, what = as_text(raw_field).rsplit("|", 2)
            if float(minute) + SERIES_BUCKET_S <= since:
                continue
            cell = table.setdefault((version, float(minute)), [0.0, 0.0])
            cell[0 if what == "rankings" else 1] += float(value)
        series: dict[str, list[tuple[float, int, float]]] = {}
        for (version, minute), (rankings, reward) in sorted(table.items(), key=lambda item: item[0][1]):
            series.setdefault(version, []).append((minute, int(rankings), reward))
        return series

    def lengths(self) -> dict[str, int]:
        pipe = self.client.pipeline(transaction=False)
        pipe.xlen(self.rankings_stream)
        pipe.xlen(self.interactions_stream)
        rankings, interactions = pipe.execute()
        return {"rankings": int(rankings), "interactions": int(interactions)}
