"""The serving pipeline, without HTTP: rank, take feedback, change the catalog.

:class:`RankingService` is what ``api`` calls and what ``bench/serve.py``
calls in-process. One rank request:

1. one Redis round trip reads the policy pointer and any catalog writes other
   processes made (applied before searching, so they are searchable at once);
2. the query is encoded and candidates retrieved (``ranker.retrieval.engine``);
3. one round trip reads the candidates' counters and the user's profile
   (``ranker.live.state``), and the features are built (``ranker.ranking.features``);
4. the current policy composes the slate: sampled with the configured
   temperature (logging each position's log-probability) or greedy;
5. one transaction logs the RankingEvent, remembers the slate for feedback and
   counts impressions (``ranker.live.events``).

When Redis cannot be reached, ranking goes on with empty state and the
current policy; the result says it was not logged. Feedback, which must be
stored to count, raises :class:`Unavailable` instead. Feedback is one round
trip: a script checks the events against the ranking and records them with
everything they move (``ranker.live.events``).

Explanations (``rank(explain=True)``, computed only then): an item's
``score`` is the policy's score for it. It splits into the retrieval score's
text part (the text-query channels' share of the weighted fusion), its image
part (the picture-query channels' share) and the policy adjustment, ``score -
retrieval_score``; the three sum to ``score``. The policy's own score in the
state the item was placed in splits into exact Shapley values over named
feature groups, with up to two reasons (:mod:`ranker.ranking.explain`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import redis

from ranker.catalog.items import Item
from ranker.config import Settings, default, limit_windows
from ranker.errors import FeedbackError, RequestError, Unavailable  # noqa: F401  (re-exported: what the service raises)
from ranker.experiments.arms import Composed, Sampling, compose, retrieval_order, served_by  # noqa: F401  (re-exported)
from ranker.experiments.store import Assignment, ExperimentStore
from ranker.live.catalog_stream import CatalogLog
from ranker.live.events import (
    EventLog,
    Exposure,
    RankingEvent,
    new_ranking_id,
)
from ranker.live.identity import pseudonymise, query_hash
from ranker.live.registry import PolicyCache, PolicyRegistry, install_starting_policy
from ranker.live.state import RedisStateProvider, SessionRead, SessionRef, session_key
from ranker.ranking.explain import Explanation, PlacedSlate, modality_split
from ranker.ranking.features import COUNTERS, NO_SESSION, CandidateSet, FeatureBuilder, Observation, SessionState, UserProfile, price_level
from ranker.ranking.policy import SCORE_SCALE, RankingPolicy, cold_start_bonus
from ranker.retrieval.engine import Candidate, Filters, QueryVectors, SearchEngine
from ranker.retrieval.fusion import fuse_scores
from ranker.retrieval.query_intent import ParsedQuery, QueryParser
from ranker.retrieval.understanding import Understood

log = logging.getLogger(__name__)


@dataclass
class ServiceConfig:
    """What a :class:`RankingService` needs of the settings (:class:`ranker.config.Settings` holds the defaults)."""

    prefix: str = default("prefix")
    temperature: float = default("temperature")  # 0 = greedy
    target_entropy: float = default("target_entropy")  # nats per position when sampling (0: the fixed temperature instead)
    cold_bonus: float = default("cold_bonus")  # logit bonus for an item never shown, while sampling (cold start)
    cold_impressions: int = default("cold_impressions")  # ... fading to 0 at this many impressions
    num_results: int = default("num_results")
    num_candidates: int = default("num_candidates")
    user_key_secret: bytes = b""
    pseudonym_ttl_s: int = default("pseudonym_ttl_s")  # a user's pseudonym lives this long after their last request
    ranking_ttl_s: int = default("ranking_ttl_s")
    dedup_ttl_s: int = default("dedup_ttl_s")
    stream_max_len: int = default("stream_max_len")  # retention of the event log by size ...
    stream_max_age_s: float | None = default("stream_max_age_s") or None  # ... and by age (None: no age limit)
    profile_ttl_s: int = default("profile_ttl_s")  # a user's profile and activity counters expire this long after their last event
    session_ttl_s: int = default("session_ttl_s")  # a search session's pages and clicks are kept this long after its last request
    series_ttl_s: int = default("series_ttl_s")  # a day of the live reward series is kept this long after the day
    experiment_logs_ttl_s: int = default("experiment_logs_ttl_s")  # an experiment's exposure and outcome logs are kept this long after it ends
    redis_replicas: int = default("redis_replicas")  # replicas that confirm feedback before it is acknowledged (WAIT)
    redis_replica_timeout_ms: int = default("redis_replica_timeout_ms")
    seed: int | None = None
    counter_window_s: int = default("counter_window_s")  # one user's share of live counters per window (ranker.live.scripts)
    counter_user_cap: int = default("counter_user_cap")
    feedback_limit_per_user: str = default("feedback_limit_per_user")  # '' or off: no per-user feedback limit
    feedback_ts_past_s: float = default("feedback_ts_past_s")  # bounds of feedback (ranker.feedback)
    feedback_ts_future_s: float = default("feedback_ts_future_s")
    max_event_value: float = default("max_event_value")

    @classmethod
    def from_settings(cls, settings: Settings, *, user_key_secret: bytes) -> ServiceConfig:
        names = (
            "prefix",
            "temperature",
            "target_entropy",
            "cold_bonus",
            "cold_impressions",
            "num_results",
            "num_candidates",
            "pseudonym_ttl_s",
            "ranking_ttl_s",
            "dedup_ttl_s",
            "stream_max_len",
            "profile_ttl_s",
            "session_ttl_s",
            "series_ttl_s",
            "experiment_logs_ttl_s",
            "redis_replicas",
            "redis_replica_timeout_ms",
            "seed",
            "counter_window_s",
            "counter_user_cap",
            "feedback_ts_past_s",
            "feedback_ts_future_s",
            "max_event_value",
        )
        limit = settings.feedback_limit_per_user if settings.rate_limits else ""
        return cls(
            user_key_secret=user_key_secret,
            feedback_limit_per_user=limit,
            stream_max_age_s=settings.stream_max_age_s or None,
            **{name: getattr(settings, name) for name in names},
        )


@dataclass
class RankedItem:
    candidate: Candidate
    position: int
    score: float
    log_prob: float | None
    calibrated: bool = False  # the index fuses calibrated channel scores (ranker.retrieval.fusion)

    def to_json(self, explain: bool, why: Explanation | None = None) -> dict[str, Any]:
        """The item as served; with ``explain``, the modality split of its score and, when the slate was composed by
        one policy, ``why``: the placement-state explanation (:mod:`ranker.ranking.explain`)."""
        item = self.candidate.item
        out: dict[str, Any] = {
            "item_id": item.item_id,
            "position": self.position,
            "score": round(self.score, 6),
            "retrieval_score": round(self.candidate.score, 6),
            "title": item.title,
            "category": item.category,
            "brand": item.brand,
            "price": item.price,
        }
        if explain:
            out["explain"] = modality_split(self.candidate.scores, self.score, calibrated=self.calibrated) | (why.to_json() if why is not None else {})
        return out


@dataclass
class RankResult:
    ranking_id: str
    policy_version: str
    items: list[RankedItem]
    logged: bool
    temperature: float
    n_candidates: int
    timings_ms: dict[str, float] = field(default_factory=dict)
    experiment: dict[str, Any] | None = None  # which experiment and arm served it
    query: dict[str, Any] | None = None  # what was understood of the query (Understood.to_json)
    placed: PlacedSlate | None = None  # what the explanations need: carried only when rank(explain=True)

    def to_json(self, explain: bool = False) -> dict[str, Any]:
        whys: list[Explanation | None] = self.placed.explain() if explain and self.placed is not None else [None] * len(self.items)
        return {
            "ranking_id": self.ranking_id,
            "query": self.query,
            "policy_version": self.policy_version,
            "logged": self.logged,
            "temperature": self.temperature,
            "n_candidates": self.n_candidates,
            "experiment": self.experiment,
            "items": [item.to_json(explain, why) for item, why in zip(self.items, whys)],
        }


class RankingService:
    """Engine + live state + policy + event log, for one server process."""

    def __init__(self, engine: SearchEngine, client: redis.Redis, policies_dir: Path, config: ServiceConfig | None = None):
        self.engine = engine
        self.client = client
        self.config = config = config or ServiceConfig()
        prefix = config.prefix
        self.state = RedisStateProvider(client, prefix=prefix, profile_ttl_s=config.profile_ttl_s, pseudonym_ttl_s=config.pseudonym_ttl_s)
        self.events = EventLog(
            client,
            prefix=prefix,
            max_len=config.stream_max_len,
            max_age_s=config.stream_max_age_s,
            ranking_ttl_s=config.ranking_ttl_s,
            dedup_ttl_s=config.dedup_ttl_s,
            user_data_ttl_s=config.profile_ttl_s,
            series_ttl_s=config.series_ttl_s,
            profile_decay=self.state.profile_decay,
            counter_window_s=config.counter_window_s,
            counter_user_cap=config.counter_user_cap,
            feedback_limits=limit_windows(config.feedback_limit_per_user),
        )
        self.registry = PolicyRegistry(client, policies_dir, prefix=prefix)
        self.catalog_log = CatalogLog(client, prefix=prefix)
        self.experiments = ExperimentStore(client, prefix=prefix, logs_ttl_s=config.experiment_logs_ttl_s)
        self.policies = PolicyCache(policies_dir)
        self._arm_policies: dict[str, RankingPolicy] = {}  # versions experiments serve besides the current one
        self._engine_lock = engine.lock  # shared with a bridge being installed in the background (ranker.retrieval.bridge_install)
        self._rng = np.random.default_rng(self.config.seed)
        self.redis_failures = 0  # requests that went on without Redis (a metric reads it)
        self.parser = QueryParser(engine.query_vocabulary)  # the vocabulary follows every catalog write in place
        # first start: a policy to serve and every catalog write so far
        try:
            self.policies.start(self.registry.ensure_current(), self.registry.history(), install_starting_policy(policies_dir))
            with self._engine_lock:
                self.catalog_log.catch_up(engine)
        except redis.RedisError as exc:  # serve what is on disk; the pointer is read again with every request
            self._redis_failed("start", exc)
            self.policies.get(install_starting_policy(policies_dir))
        with self._engine_lock:  # then what the stream no longer holds, from the item store (ranker.retrieval.engine)
            engine.reconcile()

    # ------------------------------------------------------------ ranking
    def rank(
        self,
        *,
        user_id: str,
        text: str | None = None,
        image: bytes | None = None,
        num_results: int | None = None,
        num_candidates: int | None = None,
        filters: Filters | None = None,
        session_id: str | None = None,
        page: int = 1,
        temperature: float | None = None,
        parse_query: bool = True,
        explain: bool = False,
    ) -> RankResult:
        """A slate for the query. ``parse_query``: read price, brand, colour and category intent from the text
        (:mod:`ranker.retrieval.understanding`); False embeds the text as typed. ``explain`` keeps what
        :meth:`RankResult.to_json` needs to explain it. With ``session_id``, page ``page`` (1-based) of the query
        repeats no item its earlier pages showed in the session, and the features read the session (what was
        clicked in it, the page, the rephrasings: :class:`ranker.ranking.profile.SessionState`)."""
        if page > 1 and not session_id:
            raise RequestError(f"page: {page} needs a session_id (the pages of a query are counted per session)", field="page", value=page)
        watch = Stopwatch()
        num_results = num_results or self.config.num_results
        num_candidates = max(num_candidates or self.config.num_candidates, num_results)
        # the service's own sampling targets an entropy per position; a temperature the caller names (0: greedy) is used as is
        target_entropy = self.config.target_entropy if temperature is None and self.config.temperature else None
        temperature = self.config.temperature if temperature is None else temperature
        redis_ok = True
        pointer, user_key = None, ""
        user_hash = pseudonymise(user_id, self.config.user_key_secret)
        try:
            pointer, user_key = self._sync(user_hash)
        except redis.RedisError as exc:
            redis_ok = self._redis_failed("sync", exc)
        watch.lap("sync")
        understood = Understood.of(text, self._parse(text) if parse_query else None)
        watch.lap("parse")
        session_ref = SessionRef(session_key(self.config.prefix, user_key, session_id), query_hash(text, image), page) if session_id and redis_ok else None
        session_read = SessionRead()
        if session_ref is not None:
            try:
                session_read = self.state.session(session_ref)
            except redis.RedisError as exc:
                redis_ok = self._redis_failed("session", exc)
                session_ref = None
        watch.lap("session")
        query = self.engine.embed_query(understood.text, image)
        watch.lap("encode")
        excluded = session_read.shown_for_query

        def search(applied: Filters | None) -> list[Candidate]:  # the query's earlier pages in this session are left out
            found = self.engine.search_vectors(query, k=num_candidates + len(excluded), filters=applied)
            return [candidate for candidate in found if candidate.item.item_id not in excluded][:num_candidates] if excluded else found

        with self._engine_lock:
            candidates = understood.search(search, filters)
            candidate_set = self._candidate_set(candidates, query)
            session = self._session_state(session_read, session_ref)
        watch.lap("retrieve")
        counts, profile = np.zeros((len(candidates), len(COUNTERS))), UserProfile()
        if redis_ok:
            try:
                counts, profile = self.state.snapshot(candidate_set.item_ids, user_key)
            except redis.RedisError as exc:
                redis_ok = self._redis_failed("state", exc)
        watch.lap("state")
        policy = self.policies.get(pointer)
        ranking_id = new_ranking_id()
        if not candidates:
            return RankResult(ranking_id, self.policies.version or "", [], False, temperature, 0, watch.laps, query=understood.to_json())
        builder = FeatureBuilder(num_candidates, num_results)
        observation = builder.build(
            candidate_set,
            counts=counts,
            profile=profile,
            query_has_text=query.text is not None,
            query_has_image=query.image is not None,
            intent=understood.intent,
            session=session,
        )
        assignment = self.experiments.assign(user_hash, user_key, session_id, ranking_id) if redis_ok else None
        sampling = Sampling(temperature, target_entropy, self._cold_bonus(counts, num_candidates) if target_entropy else None)
        composed = self._compose(observation, candidate_set.retrieval_scores, num_results, sampling, policy, assignment)
        if composed is None:  # an arm's policy cannot be loaded: serve as usual, outside the experiment
            assignment = None
            composed = self._compose(observation, candidate_set.retrieval_scores, num_results, sampling, policy, None)
        ranking = composed.ranking
        watch.lap("policy")  # features and the policy's forward passes
        log_probs = ranking.log_probs or [None] * len(ranking.slots)
        calibrated = self.engine.calibration.fitted
        items = [
            RankedItem(candidates[slot], position, float(ranking.scores[slot]), log_probs[position], calibrated) for position, slot in enumerate(ranking.slots)
        ]
        n = len(candidates)
        event = RankingEvent(
            ranking_id=ranking_id,
            ts=time.time(),
            user_key=user_key,
            session_id=session_id,
            query_text=query_text_of(text),
            query_parsed=understood.to_json() if understood.parsed is not None else None,
            slate_size=num_results,
            page=page if session_ref is not None else None,
            query_has_image=image is not None,
            query_hash=query_hash(text, image),
            policy_version=composed.version,
            candidate_ids=candidate_set.item_ids,
            retrieval_scores=candidate_set.retrieval_scores,
            slate=[item.candidate.item.item_id for item in items],
            slots=[int(slot) for slot in ranking.slots],
            log_probs=ranking.log_probs,
            temperature=float(composed.temperature),
            temperatures=ranking.temperatures,
            category_codes=[int(code) for code in observation.category_codes[:n]],
            features=observation.static[:n],
            context=observation.context,
            placed_similarity=np.stack([observation.similarity_to(slot)[:n] for slot in ranking.slots]),  # exactly the rows the policy used
            experiment=assignment.experiment.experiment_id if assignment else None,
            arm=composed.arm,
            teams=composed.teams,
            score_scale=SCORE_SCALE if ranking.log_probs else None,
            bonus=logged_bonus(sampling.bonus, n) if ranking.log_probs and composed.policy is not None else None,
        )
        exposure = None
        if assignment is not None:
            exposure = Exposure(assignment.experiment.experiment_id, assignment.arm, assignment.session, composed.teams)
        logged = False
        if redis_ok:
            try:
                also = None
                if assignment is not None:
                    also = lambda pipe: self.experiments.queue_exposure(pipe, assignment, user_key=user_key, ranking_id=ranking_id, ts=event.ts)  # noqa: E731
                shown = [
                    (candidate_set.brands[slot], (candidate_set.colours or [""] * n)[slot], float(candidate_set.price_levels[slot])) for slot in ranking.slots
                ]
                self.events.append_ranking(event, exposure, also=also, shown=shown, session=session_ref, session_ttl_s=self.config.session_ttl_s)
                logged = True
            except redis.RedisError as exc:
                self._redis_failed("log", exc)
        watch.lap("log")
        return RankResult(
            ranking_id,
            event.policy_version,
            items,
            logged,
            float(composed.temperature),
            len(candidates),
            watch.total(),
            experiment=served_by(assignment, composed),
            query=understood.to_json(),
            placed=PlacedSlate(composed.policy, observation, ranking.slots, num_results) if explain and composed.policy is not None else None,
        )

    def _compose(
        self,
        observation: Observation,
        retrieval_scores: np.ndarray,
        num_results: int,
        sampling: Sampling,
        policy: RankingPolicy,
        assignment: Assignment | None,
    ) -> Composed | None:
        """The slate: the serving policy's, the assigned arm's, or an interleaving (:func:`ranker.experiments.arms.compose`)."""
        return compose(
            observation,
            retrieval_scores,
            num_results,
            sampling,
            policy,
            assignment,
            serving_version=self.policies.version or "",
            load_policy=self._arm_policy,
            rng=self._rng,
        )

    def _cold_bonus(self, counts: np.ndarray, n_slots: int) -> np.ndarray | None:
        """Cold-start exploration bonuses for the candidates (None when switched off)."""
        if not self.config.cold_bonus:
            return None
        return cold_start_bonus(counts[:, 0], n_slots, bonus=self.config.cold_bonus, impressions_for_warm=self.config.cold_impressions)

    def _arm_policy(self, version: str) -> RankingPolicy | None:
        if version == self.policies.version and self.policies.policy is not None:
            return self.policies.policy
        if version not in self._arm_policies:
            try:
                self._arm_policies[version] = self.registry.load(version)
            except (RequestError, OSError) as exc:
                log.error("experiment arm policy %s cannot be loaded; serving outside the experiment: %s", version, exc)
                return None
        return self._arm_policies[version]

    def sync(self) -> str | None:
        """One round trip: the policy pointer, the experiments' revision, and catalog writes to apply; returns the pointer."""
        return self._sync(None)[0]

    def _sync(self, user_hash: str | None) -> tuple[str | None, str]:
        """:meth:`sync`, and with ``user_hash`` the user's pseudonym (created on their first request) in the same round trip."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self.registry.current_key)
        self.experiments.queue_rev(pipe)
        self.catalog_log.queue_read(pipe)
        if user_hash is not None:
            self.state.queue_pseudonym(pipe, user_hash)
        replies = pipe.execute()
        pointer, experiments_rev, entries = replies[:3]
        self.experiments.refresh(experiments_rev)
        if entries:
            with self._engine_lock:
                self.catalog_log.apply(self.engine, entries)
        return (pointer.decode() if pointer else None), (replies[-1].decode() if user_hash is not None else "")

    def erase_user(self, user_id: str) -> bool:
        """Forget ``user_id`` everywhere (:mod:`ranker.live.erasure`); False when the service knew nothing of them."""
        from ranker.live.erasure import erase_user

        try:
            return erase_user(self, pseudonymise(user_id, self.config.user_key_secret)) is not None
        except redis.RedisError as exc:
            raise Unavailable(f"user state unreachable: {exc}") from None

    def _parse(self, text: str | None) -> ParsedQuery | None:
        """The query's intent, read against the catalog's current vocabulary (None without text)."""
        return self.parser.parse(text) if text and text.strip() else None

    def _candidate_set(self, candidates: list[Candidate], query: QueryVectors) -> CandidateSet:
        keys = np.array([candidate.key for candidate in candidates], dtype=np.int64)
        text_vectors, _ = self.engine.indexes["text"].vectors_for(keys)
        channels = query.channels()
        # the policy reads raw cosines and their uncalibrated fusion, on calibrated and uncalibrated indexes alike
        # (ranker.ranking.features); the candidates' order is the engine's (calibrated) retrieval order
        cosines = {
            channel: np.array([np.nan if candidate.cosines.get(channel) is None else candidate.cosines[channel] for candidate in candidates])
            for channel in channels
        }
        return CandidateSet(
            item_ids=[candidate.item.item_id for candidate in candidates],
            categories=[candidate.item.category for candidate in candidates],
            brands=[candidate.item.brand for candidate in candidates],
            prices=np.array([candidate.item.price for candidate in candidates], dtype=np.float64),
            has_image=np.array([candidate.item.image is not None for candidate in candidates], dtype=bool),
            text_vectors=text_vectors,
            retrieval_scores=fuse_scores(cosines, len(candidates)) if candidates else np.zeros(0),
            channel_scores=cosines,
            colours=[candidate.item.colour for candidate in candidates],
            price_levels=self._price_levels(candidates),
        )

    def _price_levels(self, candidates: list[Candidate]) -> np.ndarray:
        """[n] each candidate's price level: the log of its price over its category's median in the catalog."""
        medians: dict[str, float] = {}
        vocabulary = self.engine.query_vocabulary
        for candidate in candidates:
            category = candidate.item.category
            if category not in medians:
                medians[category] = vocabulary.price_quantile(0.5, [category]) or candidate.item.price
        return price_level(np.array([c.item.price for c in candidates], dtype=np.float64), np.array([medians[c.item.category] for c in candidates]))

    def _session_state(self, read: SessionRead, ref: SessionRef | None) -> SessionState:
        """The session as the features read it: the page, the queries before this one, the clicked items' text vectors
        (those still in the catalog), what was shown in it."""
        if ref is None:
            return NO_SESSION
        clicked = None
        keys = [key for key in (self.engine.store.key_of(item_id) for item_id in read.clicked) if key is not None]
        if keys:
            vectors, present = self.engine.indexes["text"].vectors_for(np.array(keys, dtype=np.int64))
            clicked = vectors[present] if present.any() else None
        return SessionState(page=ref.page, rephrasings=len(read.queries - {ref.query_hash}), clicked=clicked, shown=frozenset(read.shown))

    def _redis_failed(self, stage: str, exc: Exception) -> bool:
        self.redis_failures += 1
        log.warning("Redis failed during %s (%s); going on without it", stage, exc)
        return False

    # ----------------------------------------------------------- feedback
    def feedback(self, ranking_id: str, events: Sequence[dict[str, Any]]) -> tuple[int, int]:
        """Check each event (bounds, the served slate) and record the new ones in one round trip; (accepted,
        duplicates). See :func:`ranker.feedback.take_feedback`."""
        from ranker.feedback import take_feedback

        return take_feedback(self, ranking_id, events)

    # ------------------------------------------------------------ catalog
    def upsert_items(self, items: Sequence[Item]) -> list[Any]:
        """Encode, publish to every process, apply here; returns the items rejected (with why)."""
        embedded, errors = self.engine.embed_items(items)
        if embedded.items:
            try:
                self.catalog_log.publish_upsert(embedded)
                self.sync()
            except redis.RedisError as exc:
                raise Unavailable(f"catalog log unreachable: {exc}") from None
        return errors

    def delete_item(self, item_id: str) -> bool:
        if self.engine.get(item_id) is None:
            return False
        try:
            self.catalog_log.publish_delete([item_id])
            self.sync()
        except redis.RedisError as exc:
            raise Unavailable(f"catalog log unreachable: {exc}") from None
        return True

    def get_item(self, item_id: str) -> Item | None:
        try:
            self.sync()
        except redis.RedisError as exc:
            self._redis_failed("sync", exc)
        return self.engine.get(item_id)


def logged_bonus(bonus: np.ndarray | None, n_candidates: int) -> dict[str, float] | None:
    """The cold-start bonus as the event logs it: the nonzero logits by candidate row (None when there was none)."""
    if bonus is None:
        return None
    rows = np.flatnonzero(bonus[:n_candidates])
    return {str(int(row)): float(bonus[row]) for row in rows} or None


def query_text_of(text: str | None) -> str | None:
    return text.strip() if text and text.strip() else None


class Stopwatch:
    """Milliseconds per stage of a request (``laps``), and their total."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._started = self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.laps[stage] = (now - self._last) * 1000.0
        self._last = now

    def total(self) -> dict[str, float]:
        return dict(self.laps, total=(self._last - self._started) * 1000.0)
