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
attribution window). Impression counters move in the same transaction.

Feedback is idempotent: one Lua script claims each ``event_id`` with
``SET NX`` (kept ``dedup_ttl_s``), and only a first claim appends the event
and bumps the item's click or purchase counter, the user's activity counters
and, for a ranking served inside an experiment (its :class:`Exposure`), the
experiment's outcome counters (:class:`ExperimentKeys`), so a retried request
counts once everywhere. The learner reads the streams through a consumer
group.
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

from ranker.live.backend import as_text, key
from ranker.live.state import PROFILE_TTL_S, activity_key, counter_key
from ranker.ranking.features import examination_prior

EVENT_TYPES = ("click", "add_to_cart", "purchase")
MAX_STREAM_LEN = 250_000  # a ranking with 100 candidates is about 8.3 KB in Redis: about 2 GB at this cap
MAX_STREAM_AGE_S = 30 * 24 * 3600
REWARD_WEIGHTS = {"click": 0.1, "add_to_cart": 0.3, "purchase": 1.0}  # a position's reward (DESIGN.md, the ranking MDP)
SERIES_BUCKET_S = 60
SERIES_TTL_S = 30 * 24 * 3600  # a day's reward series is kept this long after the day ends
RANKING_TTL_S = 24 * 3600  # how long a served ranking takes feedback
DEDUP_TTL_S = 7 * 24 * 3600  # how long an event_id is remembered

# KEYS: interactions stream, clicks hash, purchases hash, the user's activity hash, the experiment's
#       clicks, purchases and revenue hashes, the ranking's day of the reward series, the experiment's exposures
#       hash (its expiry is copied to the outcome hashes), then one dedup key per event.
# ARGV: dedup ttl, stream max length, the ranking's reward series field ('' none), the oldest stream id to keep
#       ('' none), the user data ttl, when the series day expires (unix seconds), then per event: payload,
#       item id, type, experiment field ('' outside experiments), revenue, reward.
# The first write is the dedup SET, which Redis refuses when it is out of memory (maxmemory, noeviction): then
# nothing is written. A first write that frees memory (XTRIM) would let the rest through, so trimming comes last.
_APPEND_INTERACTIONS = """
local flags = {}
for i = 10, #KEYS do
  local base = 7 + (i - 10) * 6
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ARGV[1]) then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'event', ARGV[base])
    if ARGV[3] ~= '' then
      redis.call('HINCRBYFLOAT', KEYS[8], ARGV[3] .. '|reward', ARGV[base + 5])
      redis.call('EXPIREAT', KEYS[8], ARGV[6])
    end
    local kind, outcome = ARGV[base + 2], ARGV[base + 3]
    if kind == 'click' then
      redis.call('HINCRBY', KEYS[2], ARGV[base + 1], 1)
      redis.call('HINCRBY', KEYS[4], 'clicks', 1)
      if outcome ~= '' then redis.call('HINCRBY', KEYS[5], outcome, 1) end
    end
    if kind == 'purchase' then
      redis.call('HINCRBY', KEYS[3], ARGV[base + 1], 1)
      redis.call('HINCRBY', KEYS[4], 'purchases', 1)
      if outcome ~= '' then
        redis.call('HINCRBY', KEYS[6], outcome, 1)
        redis.call('HINCRBYFLOAT', KEYS[7], outcome, ARGV[base + 4])
      end
    end
    redis.call('EXPIRE', KEYS[4], ARGV[5])
    flags[#flags + 1] = 1
  else
    flags[#flags + 1] = 0
  end
end
local ttl = redis.call('PTTL', KEYS[9])
if ttl > 0 then
  for i = 5, 7 do
    if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('PEXPIRE', KEYS[i], ttl) end
  end
end
if ARGV[4] ~= '' then redis.call('XTRIM', KEYS[1], 'MINID', ARGV[4]) end
return flags
"""


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
    teams: list[int] | None = None

    def outcome_field(self, ranking_id: str, position: int) -> str:
        """Where an outcome at ``position`` is counted: per session (A/B) or per ranking and team (interleaving)."""
        if self.teams is not None:
            return f"{ranking_id}:{self.teams[position]}"
        return self.session


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
class RankingRecord:
    """What feedback is checked against: who saw which slate, under which policy."""

    ranking_id: str
    user_key: str
    slate: list[str]
    policy_version: str
    ts: float
    exposure: Exposure | None = None

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
        clock: Callable[[], float] = time.time,
    ):
        """``clock``: the wall clock the age limit and the reward series read (tests inject one)."""
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
        self.interactions_stream = key(prefix, "interactions")
        self._append_interactions = client.register_script(_APPEND_INTERACTIONS)

    def _ranking_key(self, ranking_id: str) -> str:
        return key(self.prefix, "ranking", ranking_id)

    def series_key(self, day: int) -> str:
        """One day's reward series: a hash of ``<minute>|<version>|rankings`` and ``...|reward`` counters."""
        return key(self.prefix, "series", "reward", str(day))

    def series_expiry(self, day: int) -> int:
        """When a day's reward series expires (unix seconds): ``series_ttl_s`` after the day ends."""
        return (day + 1) * 86400 + self.series_ttl_s

    # ------------------------------------------------------------ writes
    def append_ranking(self, event: RankingEvent, exposure: Exposure | None = None, *, also: Callable[[Any], None] | None = None) -> str:
        """Log the slate, remember it for feedback, count its impressions; returns the stream id.

        ``also`` queues more commands in the same transaction (an experiment's exposure log), before the user's
        activity counter moves, so what they read of it is what preceded this ranking.
        """
        record: dict[str, Any] = {"user_key": event.user_key, "slate": event.slate, "policy_version": event.policy_version, "ts": event.ts}
        if exposure is not None:
            record["exposure"] = asdict(exposure)
        pipe = self.client.pipeline(transaction=True)
        pipe.xadd(self.rankings_stream, event.to_fields(), maxlen=self.max_len, approximate=True)
        if self.max_age_s:
            pipe.xtrim(self.rankings_stream, minid=self.oldest_kept(), approximate=False)
        pipe.set(self._ranking_key(event.ranking_id), json.dumps(record), ex=self.ranking_ttl_s)
        impressions, exposure = counter_key(self.prefix, "impressions"), counter_key(self.prefix, "exposure")
        for position, item_id in enumerate(event.slate):
            pipe.hincrby(impressions, item_id, 1)
            pipe.hincrbyfloat(exposure, item_id, float(examination_prior(position)))
        if also is not None:
            also(pipe)
        pipe.hincrby(activity_key(self.prefix, event.user_key), "rankings", 1)
        pipe.expire(activity_key(self.prefix, event.user_key), self.user_data_ttl_s)
        day = series_day(event.ts)
        pipe.hincrby(self.series_key(day), series_field(event.ts, event.policy_version) + "|rankings", 1)
        pipe.expireat(self.series_key(day), self.series_expiry(day))
        return as_text(pipe.execute()[0])

    def append_interactions(
        self,
        events: Sequence[InteractionEvent],
        *,
        user_key: str = "",
        exposure: Exposure | None = None,
        revenue: Sequence[float] | None = None,
        served: tuple[float, str] | None = None,
    ) -> list[bool]:
        """Append the events whose ``event_id`` is new; returns, per event, whether it was accepted.

        A new click or purchase also moves the user's activity counters and, inside an experiment, the
        exposure's outcome counters (``revenue``: per event, what a purchase brought in); every new event adds
        its reward to the ranking's reward series bucket (``served``: when the ranking was served, and by which version).
        """
        if not events:
            return []
        outcomes = ExperimentKeys(self.prefix, exposure.experiment if exposure else "-")
        keys = [
            self.interactions_stream,
            counter_key(self.prefix, "clicks"),
            counter_key(self.prefix, "purchases"),
            activity_key(self.prefix, user_key),
            outcomes.clicks,
            outcomes.purchases,
            outcomes.revenue,
            self.series_key(series_day(served[0]) if served else 0),
            outcomes.exposures,
        ]
        keys += [key(self.prefix, "event", event.event_id) for event in events]
        args: list[Any] = [
            self.dedup_ttl_s,
            self.max_len,
            series_field(*served) if served else "",
            self.oldest_kept() if self.max_age_s else "",
            self.user_data_ttl_s,
            self.series_expiry(series_day(served[0])) if served else 0,
        ]
        for index, event in enumerate(events):
            field_name = exposure.outcome_field(event.ranking_id, event.position) if exposure else ""
            args += [
                event.to_json(),
                event.item_id,
                event.type,
                field_name,
                repr(float(revenue[index])) if revenue is not None else "0",
                repr(REWARD_WEIGHTS.get(event.type, 0.0)),
            ]
        return [bool(flag) for flag in self._append_interactions(keys=keys, args=args)]

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
