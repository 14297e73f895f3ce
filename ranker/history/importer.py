"""``ranker import events``: a shop's logged history into the live state and the event log.

What an import does, in order (:meth:`HistoryImporter.run`):

1. **Read** the file (:mod:`ranker.history.formats`); a line that cannot be read is counted and skipped.
2. **Items.** The ``item`` events of each item, later fields over earlier, are merged over the catalog's copy; a new or changed item
   goes through the same path as ``PUT /v1/items`` (encoded once, published on the catalog stream, so running
   servers see it). An item the catalog already has, unchanged, is left alone.
3. **Claim.** Rankings and interactions already imported are skipped (``already_imported``): two Redis sets,
   ``{p}:import:rankings`` and ``{p}:import:interactions``, hold every id an import wrote, and each batch adds its
   ids in the same transaction as its writes, so a re-run, or a run after a crash, counts nothing twice.
4. **Replay** the new events in time order, as the service would have lived them. A ranking gets its feature
   snapshot from :class:`ranker.ranking.features.FeatureBuilder` (the serving code) over the item counters and the
   user's profile and search session *as they stood at that moment* (Metarank's rule: train on what was known
   then), its query parsed and embedded as serving does (each distinct query once); then its impressions count
   and the slate joins the user's shown statistics. A session (``session_id``) is replayed as serving keeps one:
   a query's n-th ranking in it is its page n, and a click joins the clicks the next page reads. An interaction
   moves the click or purchase counter, the user's activity counts and profile (every kind folds into it, as
   feedback does), and is written to the interactions stream with its position in its ranking.
5. **Write** each batch in one transaction: the ledger ids, the rankings and interactions streams, counter
   increments (``HINCRBY``: live traffic meanwhile is kept), activity counts and the profiles (with their shown
   statistics) touched.

Users are keyed as the service keys them (their pseudonym, created here when the user is new), so their first
live request finds the profile the history built. Rankings carry ``policy_version`` ``"imported"``; with logged
propensities (an OBP table) they are replayable by the off-policy estimators, and every imported ranking with
its outcomes is a training row for the outcome critic (:func:`ranker.evaluation.critic.fit_critic`). PPO leaves
them out (no propensities of one of its versions: ``no_propensity`` / ``stale`` in the learner's counts).

One import at a time (a lock key). Profiles are written whole per batch: feedback that arrives for the same user
during an import may be overwritten, so import before the shop's traffic, or while it is quiet.
"""

from __future__ import annotations

import math
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import redis

from ranker.catalog.items import CatalogError, Item, item_from_mapping
from ranker.history.formats import ITEM_FIELDS, History, LoggedInteraction, LoggedItem, LoggedRanking, Skips, read_history
from ranker.live.backend import key, queue_script
from ranker.live.catalog_stream import CatalogLog
from ranker.live.events import InteractionEvent, RankingEvent
from ranker.live.state import PROFILE_TTL_S, activity_key, counter_key, decode_profile, encode_profile, encode_shown, profile_key, pseudonym_key, shown_key
from ranker.ranking.features import (
    COUNTERS,
    NO_INTENT,
    NO_SESSION,
    CandidateSet,
    FeatureBuilder,
    SessionState,
    UserProfile,
    examination_prior,
    price_level,
    snapshot_precision,
)
from ranker.retrieval.engine import SearchEngine
from ranker.retrieval.fusion import fuse_scores
from ranker.retrieval.query_intent import QueryParser
from ranker.retrieval.understanding import Understood

IMPORTED_POLICY = "imported"  # the policy_version of an imported ranking
BATCH_RANKINGS = 2000  # rankings per write transaction (an item's counter moves once per batch)
LOCK_TTL_S = 600
# One counter hash's increments for a batch in one command (ARGV: 1 for float increments, then field, amount pairs):
# a batch moves thousands of items' counters, and one HINCRBY each costs more to send than to apply.
_INCREMENT = """
local by_float = ARGV[1] == '1'
for i = 2, #ARGV, 2 do
  if by_float then redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1]) else redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
return 1
"""
READ_CHUNK = 5000  # ids per SMISMEMBER / HMGET round trip


@dataclass
class ImportReport:
    """What an import did; ``skips`` says what it left out and why."""

    events: int = 0  # events read (lines of JSON, rows of a table)
    items_added: int = 0
    items_updated: int = 0
    items_unchanged: int = 0
    rankings: int = 0  # written to the rankings stream
    interactions: int = 0  # written to the interactions stream
    counted_only: int = 0  # interactions without a known ranking: counters and profile only
    users: int = 0
    skips: Skips = field(default_factory=Skips)
    seconds: float = 0.0

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        out = [
            f"read {self.events} events in {self.seconds:.1f} s ({self.events_per_s:,.0f} events/s)",
            f"items: {self.items_added} added, {self.items_updated} updated, {self.items_unchanged} already in the catalog",
            f"rankings: {self.rankings} imported; interactions: {self.interactions} imported, {self.counted_only} counted without a ranking",
            f"users: {self.users} with history",
        ]
        if self.skips.total:
            out.append(f"skipped {self.skips.total}:")
            for reason, count in sorted(self.skips.counts.items(), key=lambda item: -item[1]):
                out.append(f"  {reason}: {count} (e.g. {'; '.join(self.skips.examples.get(reason, []))})")
        return out


class ImportLocked(RuntimeError):
    """Another import holds the lock."""


@dataclass
class _Catalog:
    """The catalog's items an import refers to, as arrays (row i is one item)."""

    row_of: dict[str, int]
    categories: list[str]
    brands: list[str]
    colours: list[str]
    prices: np.ndarray
    levels: np.ndarray  # [m] each price's level in its category (ranker.ranking.profile.price_level), as serving computes it
    has_image: np.ndarray
    text: np.ndarray  # [m, d]
    image_in_text: np.ndarray  # [m, d], NaN rows where the item has no picture


@dataclass
class _Session:
    """One logged search session as serving would have kept it (``ranker.live.state``'s session keys): a query's
    page is the count of its rankings so far in the session, since logs carry no page number."""

    pages: Counter = field(default_factory=Counter)  # query hash -> rankings of it so far
    shown: set[str] = field(default_factory=set)
    clicked: list[np.ndarray] = field(default_factory=list)

    def state(self, query_hash: str) -> SessionState:
        """The features' view of the session for the next ranking of ``query_hash``; counts that ranking."""
        self.pages[query_hash] += 1
        rephrasings = len(self.pages) - 1
        clicked = np.stack(self.clicked) if self.clicked else None
        return SessionState(page=self.pages[query_hash], rephrasings=rephrasings, clicked=clicked, shown=frozenset(self.shown))


class HistoryImporter:
    """Imports history files into one deployment's Redis (``prefix``) against the catalog of ``engine``."""

    def __init__(
        self,
        engine: SearchEngine,
        client: redis.Redis,
        *,
        user_key_secret: bytes,
        prefix: str = "ranker",
        stream_max_len: int = 250_000,
        profile_decay: float = 0.9,
        profile_ttl_s: int = PROFILE_TTL_S,
        batch_rankings: int = BATCH_RANKINGS,
    ):
        self.engine = engine
        self.client = client
        self.prefix = prefix
        self.secret = user_key_secret
        self.stream_max_len = stream_max_len
        self.profile_decay = profile_decay
        self.profile_ttl_s = profile_ttl_s
        self.batch_rankings = batch_rankings
        self.catalog_log = CatalogLog(client, prefix=prefix)
        self._increment = client.register_script(_INCREMENT)
        self.ledger = {"rankings": key(prefix, "import", "rankings"), "interactions": key(prefix, "import", "interactions")}
        self.lock_key = key(prefix, "import", "lock")
        self._builders: dict[int, FeatureBuilder] = {}
        self._prior_cache: dict[int, np.ndarray] = {}
        self.timings: dict[str, float] = {}  # seconds per phase of the last run (bench/import_events.py prints them)

    # ---------------------------------------------------------------- run
    def run(self, path: Path, fmt: str = "auto", *, progress: bool = False, log: Callable[[str], None] = lambda line: None) -> ImportReport:
        started = time.perf_counter()
        token = uuid.uuid4().hex
        if not self.client.set(self.lock_key, token, nx=True, ex=LOCK_TTL_S):
            raise ImportLocked(f"another import is running against prefix {self.prefix!r} (lock {self.lock_key}); wait for it, or delete the key if it died")
        self.timings = {name: 0.0 for name in ("read", "items", "state", "queries", "replay", "write")}
        try:
            history = self._read(Path(path), fmt, progress)
            report = ImportReport(events=history.lines, skips=history.skips)
            self._lap("read", started)
            lap = time.perf_counter()
            self.catalog_log.catch_up(self.engine)  # catalog writes made through the API since the last snapshot
            self._import_items(history.items, report, log)
            self._lap("items", lap)
            self._replay(history, report, progress)
        finally:
            if self.client.get(self.lock_key) == token.encode():
                self.client.delete(self.lock_key)
        report.seconds = time.perf_counter() - started
        return report

    def _priors(self, n: int) -> np.ndarray:
        """The examination prior of positions 0..n-1 (what each impression adds to an item's exposure)."""
        if n not in self._prior_cache:
            self._prior_cache[n] = np.asarray(examination_prior(np.arange(n)), dtype=np.float64)
        return self._prior_cache[n]

    def _lap(self, phase: str, since: float) -> float:
        now = time.perf_counter()
        self.timings[phase] += now - since
        return now

    def _read(self, path: Path, fmt: str, progress: bool) -> History:
        from tqdm import tqdm

        with tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc="reading", disable=not progress) as bar:
            return read_history(path, fmt, progress=bar)

    # -------------------------------------------------------------- items
    def _import_items(self, logged: Sequence[LoggedItem], report: ImportReport, log: Callable[[str], None]) -> None:
        merged: dict[str, tuple[dict[str, Any], LoggedItem]] = {}  # an item's events in time order, later fields over earlier
        for event in sorted(logged, key=lambda event: (event.ts, event.line)):
            fields, _ = merged.get(event.item_id, ({}, event))
            merged[event.item_id] = ({**fields, **event.fields}, event)
        changed: list[Item] = []
        for item_id, (fields, event) in merged.items():
            current = self.engine.get(item_id)
            stored = current.to_json() if current is not None else {}
            update = _item_fields(fields)
            record = {**stored, "item_id": item_id, **update, "attributes": {**stored.get("attributes", {}), **update.get("attributes", {})}}
            try:
                item = item_from_mapping(record, line=event.line)
            except CatalogError as exc:
                report.skips.add("bad_item", str(exc))
                continue
            if current is not None and item == current:
                report.items_unchanged += 1
                continue
            changed.append(item)
            report.items_added += current is None
            report.items_updated += current is not None
        if changed:
            log(f"encoding {len(changed)} new or changed items")
            embedded, errors = self.engine.embed_items(changed)
            for error in errors:
                report.skips.add("bad_item", str(error))
            if embedded.items:
                self.catalog_log.publish_upsert(embedded)
                self.catalog_log.catch_up(self.engine)

    def _catalog(self, item_ids: set[str]) -> _Catalog:
        keys = {item_id: self.engine.store.key_of(item_id) for item_id in item_ids}
        known = sorted(item_id for item_id, found in keys.items() if found is not None)
        items = [self.engine.store.item_for_key(int(keys[item_id])) for item_id in known]  # type: ignore[arg-type]
        key_array = np.array([keys[item_id] for item_id in known], dtype=np.int64)
        text, _ = self.engine.indexes["text"].vectors_for(key_array)
        bridge, pictured = self.engine.indexes["image_in_text"].vectors_for(key_array)
        bridge[~pictured] = np.nan
        prices = np.array([item.price for item in items], dtype=np.float64)
        medians = {category: self.engine.query_vocabulary.price_quantile(0.5, [category]) for category in {item.category for item in items}}
        return _Catalog(
            row_of={item_id: row for row, item_id in enumerate(known)},
            categories=[item.category for item in items],
            brands=[item.brand for item in items],
            colours=[item.colour for item in items],
            prices=prices,
            levels=price_level(prices, np.array([medians[item.category] or item.price for item in items], dtype=np.float64)),
            has_image=np.array([item.image is not None for item in items], dtype=bool),
            text=text,
            image_in_text=bridge,
        )

    # ------------------------------------------------------------- replay
    def _replay(self, history: History, report: ImportReport, progress: bool) -> None:
        from tqdm import tqdm

        skips = report.skips
        lap = time.perf_counter()
        done_rankings = self._members(self.ledger["rankings"], [ranking.ranking_id for ranking in history.rankings])
        done_interactions = self._members(self.ledger["interactions"], [interaction.event_id for interaction in history.interactions])
        catalog = self._catalog({item for ranking in history.rankings for item in ranking.items} | {i.item_id for i in history.interactions})
        slates: dict[str, LoggedRanking] = {}
        rankings: list[LoggedRanking] = []
        for ranking in history.rankings:
            unknown = [item for item in ranking.items if item not in catalog.row_of]
            if unknown:
                skips.add("unknown_item", f"line {ranking.line}: ranking {ranking.ranking_id} lists {', '.join(unknown[:3])}, not in the catalog")
            elif len(set(ranking.items)) != len(ranking.items):
                skips.add("bad_event", f"line {ranking.line}: ranking {ranking.ranking_id} lists an item twice")
            elif ranking.ranking_id in slates:
                skips.add("duplicate", f"line {ranking.line}: ranking {ranking.ranking_id} appears twice in the file")
            else:
                slates[ranking.ranking_id] = ranking  # interactions with an imported ranking still find its slate
                if ranking.ranking_id in done_rankings:
                    skips.add("already_imported", f"line {ranking.line}: ranking {ranking.ranking_id}")
                else:
                    rankings.append(ranking)
        interactions: list[LoggedInteraction] = []
        seen: set[str] = set()
        for interaction in history.interactions:
            where = f"line {interaction.line}: interaction {interaction.event_id}"
            if interaction.event_id in done_interactions:
                skips.add("already_imported", where)
            elif interaction.event_id in seen:
                skips.add("duplicate", f"{where} appears twice in the file")
            elif interaction.item_id not in catalog.row_of:
                skips.add("unknown_item", f"{where}: item {interaction.item_id} is not in the catalog")
            elif interaction.ranking_id in slates and interaction.item_id not in slates[interaction.ranking_id].items:
                skips.add("not_in_ranking", f"{where}: item {interaction.item_id} is not in ranking {interaction.ranking_id}")
            else:
                seen.add(interaction.event_id)
                interactions.append(interaction)
        users = self._pseudonyms({event.user_id for event in [*rankings, *interactions]})
        report.users = len(users)
        counts = self._counts(catalog)
        profiles = self._profiles(users.values())
        lap = self._lap("state", lap)
        queries = self._queries({ranking.query for ranking in rankings if ranking.query})
        lap = self._lap("queries", lap)
        timeline = sorted([(r.ts, 0, r.line, r) for r in rankings] + [(i.ts, 1, i.line, i) for i in interactions], key=lambda entry: entry[:3])
        sessions: dict[tuple[str, str], _Session] = {}  # (user key, session id) -> the session replayed so far
        batch = _Batch()
        with tqdm(total=len(timeline), unit="event", desc="importing", disable=not progress) as bar:
            for _, _, _, event in timeline:
                if isinstance(event, LoggedRanking):
                    user = users[event.user_id]
                    session = sessions.setdefault((user, event.session_id), _Session()) if event.session_id else None
                    batch.rankings.append(self._ranking_event(event, catalog, counts, profiles[user], user, queries, session))
                    batch.users.add(user)
                    batch.ledger_rankings.append(event.ranking_id)
                    rows, priors = [catalog.row_of[item] for item in event.items], self._priors(len(event.items))
                    counts[rows, 0] += 1
                    counts[rows, 3] += priors
                    batch.impressions.update(event.items)
                    for item, prior in zip(event.items, priors.tolist()):
                        batch.exposure[item] += prior
                    batch.activity[(users[event.user_id], "rankings")] += 1
                else:
                    self._interaction(event, slates, catalog, counts, profiles, users, sessions, batch, report)
                bar.update(1)
                if len(batch.rankings) >= self.batch_rankings:
                    lap = self._lap("replay", lap)
                    self._write(batch, profiles, report)
                    lap = self._lap("write", lap)
                    batch = _Batch()
            lap = self._lap("replay", lap)
            self._write(batch, profiles, report)
            self._lap("write", lap)

    def _interaction(
        self,
        event: LoggedInteraction,
        slates: dict[str, LoggedRanking],
        catalog: _Catalog,
        counts: np.ndarray,
        profiles: dict[str, UserProfile],
        users: dict[str, str],
        sessions: dict[tuple[str, str], _Session],
        batch: _Batch,
        report: ImportReport,
    ) -> None:
        row, user = catalog.row_of[event.item_id], users[event.user_id]
        ranking = slates.get(event.ranking_id or "")
        session = sessions.get((user, ranking.session_id)) if ranking is not None and ranking.session_id else None
        if session is not None and event.type == "click":  # the session's next page reads what was clicked
            session.clicked.append(catalog.text[row])
        if ranking is not None:
            batch.interactions.append(
                InteractionEvent(event.event_id, ranking.ranking_id, event.item_id, ranking.items.index(event.item_id), event.type, None, event.ts).to_json()
            )
        else:  # no ranking id, or its ranking is not in this file (or was skipped): it still warms counters and profile
            report.counted_only += 1
        batch.ledger_interactions.append(event.event_id)
        column = {"click": 1, "purchase": 2}.get(event.type)
        if column is not None:
            counts[row, column] += 1
            (batch.clicks if column == 1 else batch.purchases)[event.item_id] += 1
            batch.activity[(user, "clicks" if column == 1 else "purchases")] += 1
        profiles[user].record(
            kind=event.type,
            category=catalog.categories[row],
            brand=catalog.brands[row],
            price=float(catalog.prices[row]),
            text_vector=catalog.text[row],
            decay=self.profile_decay,
            colour=catalog.colours[row],
            level=float(catalog.levels[row]),
        )
        batch.users.add(user)

    def _ranking_event(
        self,
        ranking: LoggedRanking,
        catalog: _Catalog,
        counts: np.ndarray,
        profile: UserProfile,
        user_key: str,
        queries: dict[str, tuple[Understood, np.ndarray]],
        session: _Session | None = None,
    ) -> RankingEvent:
        """The RankingEvent serving would have logged: the feature snapshot over the counters, profile and session
        of then; the slate then joins the user's shown statistics and the session's shown items."""
        rows = np.array([catalog.row_of[item] for item in ranking.items], dtype=np.int64)
        n = len(rows)
        vectors = catalog.text[rows]
        understood, query_vector = queries.get(ranking.query, (None, None)) if ranking.query else (None, None)
        channels: dict[str, np.ndarray] = {}
        if query_vector is not None:
            channels = {"text": vectors @ query_vector, "text_to_image": catalog.image_in_text[rows] @ query_vector}
        candidates = CandidateSet(
            item_ids=list(ranking.items),
            categories=[catalog.categories[row] for row in rows],
            brands=[catalog.brands[row] for row in rows],
            prices=catalog.prices[rows],
            has_image=catalog.has_image[rows],
            text_vectors=vectors,
            retrieval_scores=fuse_scores(channels, n) if channels else np.zeros(n),
            channel_scores=channels,
            colours=[catalog.colours[row] for row in rows],
            price_levels=catalog.levels[rows],
        )
        asked = _query_hash(ranking.query)
        state = session.state(asked) if session is not None else NO_SESSION
        builder = self._builders.get(n) or self._builders.setdefault(n, FeatureBuilder(n, n))
        observation = builder.build(
            candidates,
            counts=counts[rows],
            profile=profile,
            query_has_text=query_vector is not None,
            query_has_image=False,
            intent=understood.intent if understood is not None else NO_INTENT,
            session=state,
        )
        profile.record_shown(candidates.brands, candidates.colours or [], catalog.levels[rows])
        if session is not None:
            session.shown.update(ranking.items)
        propensities = ranking.propensities
        return RankingEvent(
            ranking_id=ranking.ranking_id,
            ts=ranking.ts,
            user_key=user_key,
            session_id=ranking.session_id,
            query_text=ranking.query,
            query_has_image=False,
            query_hash=asked,
            policy_version=IMPORTED_POLICY,
            candidate_ids=list(ranking.items),
            retrieval_scores=candidates.retrieval_scores,
            slate=list(ranking.items),
            slots=list(range(n)),
            log_probs=[math.log(p) for p in propensities] if propensities else None,
            temperature=1.0 if propensities else 0.0,
            category_codes=[int(code) for code in observation.category_codes[:n]],
            features=observation.static[:n],
            context=observation.context,
            placed_similarity=snapshot_precision(vectors @ vectors.T),  # row t: every candidate's cosine to the item at t
            slate_size=n,
            query_parsed=understood.to_json() if understood is not None and understood.parsed is not None else None,
            page=state.page if session is not None else None,
        )

    # ----------------------------------------------------------- state io
    def _members(self, ledger: str, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), READ_CHUNK):
            chunk = unique[start : start + READ_CHUNK]
            found.update(item for item, member in zip(chunk, self.client.smismember(ledger, chunk)) if member)
        return found

    def _pseudonyms(self, user_ids: set[str]) -> dict[str, str]:
        """user id -> the pseudonym the service keys them by (created for a user it has not seen), as serving does."""
        from ranker.live.identity import pseudonymise

        ordered = sorted(user_ids)
        out: dict[str, str] = {}
        for start in range(0, len(ordered), READ_CHUNK):
            chunk = ordered[start : start + READ_CHUNK]
            pipe = self.client.pipeline(transaction=False)
            for user_id in chunk:
                name = pseudonym_key(self.prefix, pseudonymise(user_id, self.secret))
                pipe.set(name, uuid.uuid4().hex, nx=True)
                pipe.get(name)
            replies = pipe.execute()
            out.update({user_id: replies[2 * index + 1].decode() for index, user_id in enumerate(chunk)})
        return out

    def _counts(self, catalog: _Catalog) -> np.ndarray:
        """[m, 4] the live counters of the catalog rows, as they stand before the import."""
        items = sorted(catalog.row_of, key=catalog.row_of.__getitem__)
        counts = np.zeros((len(items), len(COUNTERS)))
        for start in range(0, len(items), READ_CHUNK):
            chunk = items[start : start + READ_CHUNK]
            pipe = self.client.pipeline(transaction=False)
            for counter in COUNTERS:
                pipe.hmget(counter_key(self.prefix, counter), chunk)
            for column, values in enumerate(pipe.execute()):
                counts[start : start + len(chunk), column] = [float(value) if value is not None else 0.0 for value in values]
        return counts

    def _profiles(self, user_keys: Iterable[str]) -> dict[str, UserProfile]:
        ordered = sorted(set(user_keys))
        profiles: dict[str, UserProfile] = {}
        for start in range(0, len(ordered), READ_CHUNK):
            chunk = ordered[start : start + READ_CHUNK]
            pipe = self.client.pipeline(transaction=False)
            for user_key in chunk:
                pipe.hmget(profile_key(self.prefix, user_key), ["profile", "embedding"])
                pipe.hgetall(shown_key(self.prefix, user_key))
            replies = pipe.execute()
            profiles.update({user_key: decode_profile(*replies[2 * index], replies[2 * index + 1]) for index, user_key in enumerate(chunk)})
        return profiles

    def _queries(self, texts: set[str]) -> dict[str, tuple[Understood, np.ndarray]]:
        """Each distinct query parsed and embedded once, as serving does (the rest of the text after its intent)."""
        parser = QueryParser(self.engine.query_vocabulary)
        understood = {text: Understood.of(text, parser.parse(text)) for text in sorted(texts)}
        embed = sorted({u.text or text for text, u in understood.items()})
        vectors = self.engine.encoders.encode_texts(embed, progress=len(embed) > 2000) if embed else np.zeros((0, 1))
        vector_of = dict(zip(embed, np.asarray(vectors, dtype=np.float32)))
        return {text: (u, vector_of[u.text or text]) for text, u in understood.items()}

    def _write(self, batch: _Batch, profiles: dict[str, UserProfile], report: ImportReport) -> None:
        """One transaction: the ledger, the streams, counter increments, activity counts and the profiles touched."""
        if not (batch.ledger_rankings or batch.ledger_interactions):
            return
        pipe = self.client.pipeline(transaction=True)
        if batch.ledger_rankings:
            pipe.sadd(self.ledger["rankings"], *batch.ledger_rankings)
        if batch.ledger_interactions:
            pipe.sadd(self.ledger["interactions"], *batch.ledger_interactions)
        rankings_stream, interactions_stream = key(self.prefix, "rankings"), key(self.prefix, "interactions")
        for event in batch.rankings:
            pipe.xadd(rankings_stream, event.to_fields(), maxlen=self.stream_max_len, approximate=True)
        for payload in batch.interactions:
            pipe.xadd(interactions_stream, {"event": payload}, maxlen=self.stream_max_len, approximate=True)
        for counter, increments in (("impressions", batch.impressions), ("clicks", batch.clicks), ("purchases", batch.purchases), ("exposure", batch.exposure)):
            if increments:
                pairs = [value for item, amount in increments.items() for value in (item, repr(amount))]
                queue_script(pipe, self._increment, keys=[counter_key(self.prefix, counter)], args=["1" if counter == "exposure" else "0", *pairs])
        for (user, what), n in batch.activity.items():
            pipe.hincrby(activity_key(self.prefix, user), what, n)
            pipe.expire(activity_key(self.prefix, user), self.profile_ttl_s)
        for user in batch.users:
            pipe.hset(profile_key(self.prefix, user), mapping=encode_profile(profiles[user]))
            pipe.expire(profile_key(self.prefix, user), self.profile_ttl_s)
            if profiles[user].shown:
                pipe.hset(shown_key(self.prefix, user), mapping=encode_shown(profiles[user]))
                pipe.expire(shown_key(self.prefix, user), self.profile_ttl_s)
        pipe.execute()
        report.rankings += len(batch.rankings)
        report.interactions += len(batch.interactions)


@dataclass
class _Batch:
    rankings: list[RankingEvent] = field(default_factory=list)
    interactions: list[str] = field(default_factory=list)  # InteractionEvent JSON, as the feedback script writes it
    ledger_rankings: list[str] = field(default_factory=list)
    ledger_interactions: list[str] = field(default_factory=list)
    impressions: Counter = field(default_factory=Counter)
    exposure: Counter = field(default_factory=Counter)
    clicks: Counter = field(default_factory=Counter)
    purchases: Counter = field(default_factory=Counter)
    activity: Counter = field(default_factory=Counter)  # (user key, rankings|clicks|purchases) -> n
    users: set[str] = field(default_factory=set)  # whose profiles (or shown statistics) changed


def _item_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Metarank item fields as catalog fields: the known names as they are (a list becomes its first value), a
    colour under ``attributes``, every other scalar an attribute."""
    out: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    for name, value in fields.items():
        if isinstance(value, list):
            value = value[0] if value else None
        if value is None:
            continue
        if name in ITEM_FIELDS:
            out[name] = str(value) if name != "price" else value
        elif name in ("color", "colour"):
            attributes["colour"] = str(value)
        elif isinstance(value, str | int | float | bool):
            attributes[name] = value
    if attributes:
        out["attributes"] = attributes
    return out


def _query_hash(text: str | None) -> str:
    from ranker.live.identity import query_hash

    return query_hash(text, None)
