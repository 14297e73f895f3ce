"""The event log, live state and policy pointer: one contract suite, run against every Redis backend."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import redis

from ranker.live.backend import connect
from ranker.live.events import EventLog, Feedback, FeedbackRefused, RankingEvent, new_ranking_id
from ranker.live.registry import STARTING_POLICY, PolicyCache, PolicyRegistry, RegistryError, install_starting_policy
from ranker.live.state import Interaction, RedisStateProvider
from ranker.ranking.features import STATIC_FEATURES, UserProfile, snapshot_precision
from ranker.ranking.policy import RankingPolicy


@pytest.fixture()
def client(redis_url):
    return connect(redis_url, socket_timeout=5)


def ranking_event(slate=("a", "b", "c"), user_key="u1") -> RankingEvent:
    rng = np.random.default_rng(0)
    candidates = list(slate) + ["d", "e"]
    return RankingEvent(
        ranking_id=new_ranking_id(),
        ts=time.time(),
        user_key=user_key,
        session_id="s1",
        query_text="red shoes",
        query_has_image=False,
        query_hash="abc",
        policy_version="v1",
        candidate_ids=candidates,
        retrieval_scores=[0.9, 0.8, 0.7, 0.6, 0.5],
        slate=list(slate),
        slots=[0, 1, 2],
        log_probs=[-0.1, -0.2, -0.3],
        temperature=0.5,
        category_codes=[0, 0, 1, 1, 2],
        features=snapshot_precision(rng.standard_normal((5, len(STATIC_FEATURES)))),
        context=rng.standard_normal(6).astype(np.float32),
        placed_similarity=snapshot_precision(rng.standard_normal((3, 5))),
    )


def interaction(item_id: str, kind: str = "click", event_id: str = "e1", profile: Interaction | None = None) -> Feedback:
    return Feedback(event_id=event_id, item_id=item_id, type=kind, value=None, ts=time.time(), profile=profile)


def test_ranking_event_round_trips_through_the_stream_with_its_feature_snapshot(client, prefix):
    log = EventLog(client, prefix=prefix)
    event = ranking_event()
    log.append_ranking(event)
    [(_, stored)] = log.rankings()
    np.testing.assert_array_equal(stored.features, event.features)
    np.testing.assert_array_equal(stored.context, event.context)
    np.testing.assert_array_equal(stored.placed_similarity, event.placed_similarity)
    np.testing.assert_array_equal(stored.retrieval_scores, np.float32([0.9, 0.8, 0.7, 0.6, 0.5]))
    assert stored.slots == [0, 1, 2] and stored.category_codes == [0, 0, 1, 1, 2]
    assert stored.slate == event.slate and stored.log_probs == event.log_probs and stored.policy_version == "v1"
    record = log.ranking(event.ranking_id)
    assert record.slate == ["a", "b", "c"] and record.user_key == "u1" and record.position_of("c") == 2
    assert log.ranking("r_unknown") is None


def test_the_snapshot_is_stored_at_half_precision_and_entries_written_in_float32_still_read(client, prefix):
    log = EventLog(client, prefix=prefix)
    event = ranking_event()
    fields = event.to_fields()
    assert (
        len(fields["features"]) == 5 * len(STATIC_FEATURES) * 2 and len(fields["placed_similarity"]) == 3 * 5 * 2 and len(fields["retrieval_scores"]) == 5 * 4
    )
    old = dict(fields)  # as written before the snapshot was float16 and the scores binary
    old["features"] = event.features.astype(np.float32).tobytes()
    old["placed_similarity"] = event.placed_similarity.astype(np.float32).tobytes()
    meta = json.loads(old.pop("event"))
    meta["retrieval_scores"] = [0.9, 0.8, 0.7, 0.6, 0.5]
    old["event"] = json.dumps(meta)
    del old["retrieval_scores"], old["retrieval_scores_shape"]
    client.xadd(log.rankings_stream, old)
    [(_, stored)] = log.rankings()
    np.testing.assert_array_equal(stored.features, event.features)
    np.testing.assert_array_equal(stored.placed_similarity, event.placed_similarity)
    np.testing.assert_allclose(stored.retrieval_scores, [0.9, 0.8, 0.7, 0.6, 0.5])


def test_logged_slates_count_impressions_for_their_items_only(client, prefix):
    log = EventLog(client, prefix=prefix)
    log.append_ranking(ranking_event(slate=("a", "b", "c")))
    log.append_ranking(ranking_event(slate=("a", "x", "y"), user_key="u2"))  # another user: one user counts once per item and window
    counts = RedisStateProvider(client, prefix=prefix).item_counts(["a", "b", "d"])
    np.testing.assert_array_equal(counts[:, 0], [2, 1, 0])  # d was a candidate, never shown
    np.testing.assert_allclose(counts[:, 3], [1 + 1, 1 / 2, 0])  # exposure: the examination prior of each position shown


def test_a_repeated_event_id_is_a_duplicate_and_counts_once(client, prefix):
    log = EventLog(client, prefix=prefix)
    event = ranking_event()
    log.append_ranking(event)
    first = log.record_feedback(event.ranking_id, [interaction("a", "click", "e1"), interaction("b", "purchase", "e2")])
    again = log.record_feedback(event.ranking_id, [interaction("a", "click", "e1"), interaction("c", "click", "e3")])
    assert first == [True, True] and again == [False, True]
    assert len(log.interactions()) == 3
    counts = RedisStateProvider(client, prefix=prefix).item_counts(["a", "b", "c"])
    np.testing.assert_array_equal(counts[:, 1:3], [[1, 0], [0, 1], [1, 0]])  # clicks, purchases


def test_concurrent_retries_of_one_event_are_accepted_exactly_once(client, prefix):
    log = EventLog(client, prefix=prefix)
    event = ranking_event()
    log.append_ranking(event)
    results: list[bool] = []

    def send() -> None:
        results.extend(log.record_feedback(event.ranking_id, [interaction("a", "click", "same")]))

    threads = [threading.Thread(target=send) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 15 + [True]
    assert len(log.interactions()) == 1


def test_feedback_for_an_unknown_ranking_or_an_item_outside_the_slate_is_refused_and_stores_nothing(client, prefix):
    log = EventLog(client, prefix=prefix)
    event = ranking_event()
    log.append_ranking(event)
    with pytest.raises(FeedbackRefused) as unknown:
        log.record_feedback("r_nope", [interaction("a")])
    assert unknown.value.index is None
    with pytest.raises(FeedbackRefused) as outside:
        log.record_feedback(event.ranking_id, [interaction("a", event_id="ok"), interaction("d", event_id="not-shown")])  # d: a candidate, not shown
    assert outside.value.index == 1
    assert log.interactions() == [] and client.exists(f"{{{prefix}}}:event:ok") == 0  # the valid event was not claimed either
    assert log.record_feedback(event.ranking_id, [interaction("c", "purchase", event_id="ok")]) == [True]
    [(_, stored)] = log.interactions()
    assert (stored.ranking_id, stored.item_id, stored.position, stored.type) == (event.ranking_id, "c", 2, "purchase")


def unit_vectors(n: int, dim: int = 8, seed: int = 3) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


ITEMS = {"a": ("shoes", "acme", 10.0), "b": ("bags", "zeta", 25.0), "c": ("shoes", "zeta", np.e)}


def learned(item: str, vectors: np.ndarray, kind: str = "click") -> Interaction:
    category, brand, price = ITEMS[item]
    return Interaction(kind, category, brand, price, vectors["abc".index(item)])


def fold_the_stream(log: EventLog, vectors: np.ndarray) -> UserProfile:
    """The user's profile as the in-memory fold of the interactions stream, in stream order."""
    expected = UserProfile()
    for _, event in log.interactions():
        one = learned(event.item_id, vectors, event.type)
        expected.record(kind=event.type, category=one.category, brand=one.brand, price=one.price, text_vector=one.text_vector)
    return expected


def assert_same_profile(stored: UserProfile, expected: UserProfile) -> None:
    assert (stored.n_interactions, stored.n_purchases) == (expected.n_interactions, expected.n_purchases)
    assert stored.category_counts == expected.category_counts and stored.brand_counts == expected.brand_counts
    assert stored.log_price_sum == pytest.approx(expected.log_price_sum, rel=1e-12)
    np.testing.assert_allclose(stored.embedding, expected.embedding, atol=1e-5)


def test_feedback_folds_the_profile_in_its_script_like_the_in_memory_profile(client, prefix):
    log = EventLog(client, prefix=prefix)
    state = RedisStateProvider(client, prefix=prefix)
    vectors = unit_vectors(3)
    event = ranking_event()
    log.append_ranking(event)
    sent = [("a", "click"), ("b", "add_to_cart"), ("c", "purchase"), ("a", "purchase")]
    log.record_feedback(event.ranking_id, [interaction(item, kind, f"e{i}", learned(item, vectors, kind)) for i, (item, kind) in enumerate(sent[:2])])
    log.record_feedback(event.ranking_id, [interaction(item, kind, f"e{i + 2}", learned(item, vectors, kind)) for i, (item, kind) in enumerate(sent[2:])])
    log.record_feedback(event.ranking_id, [interaction("a", "purchase", "e3", learned("a", vectors, "purchase"))])  # a duplicate teaches nothing
    log.record_feedback(event.ranking_id, [interaction("b", "click", "e9")])  # an item gone from the catalog: counted, not learned
    stored = state.user_profile("u1")
    assert stored.n_interactions == 4 and stored.n_purchases == 2 and stored.mean_log_price == pytest.approx((np.log(10.0) + 1.0) / 2)
    # the in-memory fold of what the stream holds, the unlearnable click left out
    expected = UserProfile()
    for item, kind in sent:
        one = learned(item, vectors, kind)
        expected.record(kind=kind, category=one.category, brand=one.brand, price=one.price, text_vector=one.text_vector)
    assert_same_profile(stored, expected)
    assert 0 < client.ttl(f"{{{prefix}}}:user:u1") <= log.user_data_ttl_s


def _send_feedback(url: str, prefix: str, ranking_ids: list[str], worker: int, requests: int) -> None:
    """One writer process: ``requests`` two-event feedback requests spread over the user's rankings."""
    client = connect(url, socket_timeout=10)
    log = EventLog(client, prefix=prefix)
    vectors = unit_vectors(3)
    for index in range(requests):
        ranking_id = ranking_ids[index % len(ranking_ids)]
        items = ("a", "b") if (worker + index) % 2 else ("c", "a")
        kinds = ("click", "purchase") if index % 3 == 0 else ("click", "add_to_cart")
        log.record_feedback(
            ranking_id, [interaction(item, kind, f"w{worker}-{index}-{j}", learned(item, vectors, kind)) for j, (item, kind) in enumerate(zip(items, kinds))]
        )


PER_WRITER = 100  # requests per writer; 8 writers (4 processes, 4 threads) race for one user


def test_the_profile_stays_exact_under_parallel_feedback_for_one_user(client, redis_url, prefix):
    import multiprocessing

    log = EventLog(client, prefix=prefix)
    rankings = [ranking_event() for _ in range(3)]  # three slates of one user
    for event in rankings:
        log.append_ranking(event)
    ids = [event.ranking_id for event in rankings]
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_send_feedback, args=(redis_url, prefix, ids, worker, PER_WRITER)) for worker in range(4)]
    threads = [threading.Thread(target=_send_feedback, args=(redis_url, prefix, ids, worker, PER_WRITER)) for worker in range(4, 8)]
    for writer in writers + threads:
        writer.start()
    for writer in writers:
        writer.join(60)
        assert writer.exitcode == 0
    for thread in threads:
        thread.join()
    events = log.interactions()
    assert len(events) == 8 * PER_WRITER * 2 and len({event.event_id for _, event in events}) == len(events)  # every event once
    stored = RedisStateProvider(client, prefix=prefix).user_profile("u1")
    assert stored.n_interactions == 8 * PER_WRITER * 2  # no update lost to a race
    assert_same_profile(stored, fold_the_stream(log, unit_vectors(3)))
    clicks = RedisStateProvider(client, prefix=prefix).item_counts(["a", "b", "c"])[:, 1]
    # live counters (issue 30): one user adds an item at most one click per window, and a ranking's position counts
    # one click however many arrive; the profile above still folds every event
    assert clicks.tolist() == [min(1, sum(1 for _, e in events if e.item_id == item and e.type == "click")) for item in "abc"]
    clicked = {(e.ranking_id, e.position) for _, e in events if e.type == "click"}
    assert int(client.hget(f"{{{prefix}}}:user:u1:activity", "clicks")) == len(clicked)


def test_ranking_records_expire_after_their_ttl(client, prefix):
    log = EventLog(client, prefix=prefix, ranking_ttl_s=30)
    event = ranking_event()
    log.append_ranking(event)
    assert log.ranking(event.ranking_id) is not None
    record = log._ranking_key(event.ranking_id)
    assert 29_000 < client.pttl(record) <= 30_000  # Redis forgets it after the TTL ...
    client.pexpire(record, 1)  # ... which we let pass at once instead of sleeping through it
    deadline = time.monotonic() + 5
    while client.exists(record) and time.monotonic() < deadline:
        pass
    assert log.ranking(event.ranking_id) is None
    assert len(log.rankings()) == 1  # the log itself keeps the event


def test_streams_are_trimmed_by_age_and_size_and_user_counters_expire(client, prefix):
    from ranker.live.state import activity_key

    log = EventLog(client, prefix=prefix, max_age_s=60.0, user_data_ttl_s=60)
    old = ranking_event()
    log.append_ranking(old)
    log.record_feedback(old.ranking_id, [interaction("a", "purchase", event_id="old-1")])
    written = time.time()
    while time.time() < written + 0.005:  # stream ids count milliseconds: the next entries get later ones
        pass
    later = EventLog(client, prefix=prefix, max_age_s=60.0, user_data_ttl_s=60, clock=lambda: time.time() + 60.0 - 0.002)  # a minute on
    new = ranking_event()
    later.append_ranking(new)  # trims what is older than a minute
    log = later
    log.record_feedback(new.ranking_id, [interaction("a", event_id="new-1")])
    assert [event.ranking_id for _, event in log.rankings()] == [new.ranking_id]
    assert [event.event_id for _, event in log.interactions()] == ["new-1"]
    assert 0 < client.ttl(activity_key(prefix, "u1")) <= 60
    sized = EventLog(client, prefix=prefix + "-sized", max_len=5, max_age_s=None)
    for _ in range(300):
        sized.append_ranking(ranking_event())
    assert sized.lengths()["rankings"] <= 5 + 100  # approximate trimming drops whole nodes (100 entries by default)


def test_the_reward_series_is_kept_per_day_and_expires_after_its_retention(client, prefix):
    from ranker.live.events import series_day

    log = EventLog(client, prefix=prefix, series_ttl_s=3600)
    now = time.time()
    event = ranking_event()
    log.append_ranking(event)
    log.record_feedback(event.ranking_id, [interaction("a", "purchase", event_id="p1"), interaction("b", event_id="c1")])
    today = log.series_key(series_day(now))
    assert (series_day(now) + 1) * 86400 + 3600 - now - 5 <= client.ttl(today) <= (series_day(now) + 1) * 86400 + 3600 - now + 1  # TTL rounds
    [(minute, rankings, reward)] = log.reward_series()["v1"]
    assert rankings == 1 and reward == pytest.approx(1.1) and minute <= now < minute + 60
    old = ranking_event()
    old.ts = now - 3 * 86400  # three days ago: past its day's retention of an hour, so gone at once
    log.append_ranking(old)
    log.record_feedback(old.ranking_id, [interaction("a", event_id="c2")])
    assert client.exists(log.series_key(series_day(old.ts))) == 0
    assert [version for version in log.reward_series(since=now - 4 * 86400)] == ["v1"] and len(log.reward_series(since=now - 4 * 86400)["v1"]) == 1
    assert [key for key in client.scan_iter(f"{{{prefix}}}:series:*") if client.ttl(key) == -1] == []  # nothing kept for ever


def test_unknown_users_have_empty_profiles(client, prefix):
    state = RedisStateProvider(client, prefix=prefix)
    assert state.user_profile("nobody") == UserProfile() and state.user_profile(None) == UserProfile()


# --------------------------------------------------------------- registry
def second_version(policies_dir, version="v-second", created_at: str | None = None):
    policy = RankingPolicy.load(STARTING_POLICY)
    policy.save(policies_dir / version, version=version, parent=policy.version)
    if created_at:  # the creation time the manifest records (to the second)
        manifest = policies_dir / version / "manifest.json"
        manifest.write_text(json.dumps(dict(json.loads(manifest.read_text()), created_at=created_at)))
    return version


def test_promote_and_rollback_move_the_pointer_and_keep_the_history(client, prefix, tmp_path):
    registry = PolicyRegistry(client, tmp_path, prefix=prefix)
    start = registry.ensure_current()
    assert registry.current() == start and registry.versions() == [start]
    second = second_version(tmp_path)
    assert registry.promote(second) == start
    assert registry.current() == second and registry.history() == [start]
    with pytest.raises(RegistryError, match="already serving"):
        registry.promote(second)
    assert registry.rollback() == (second, start)
    assert registry.current() == start and registry.history() == []
    with pytest.raises(RegistryError, match="no earlier version"):
        registry.rollback()
    assert registry.ensure_current() == start  # a restart does not move the pointer


def test_promote_refuses_unknown_and_corrupt_versions(client, prefix, tmp_path):
    registry = PolicyRegistry(client, tmp_path, prefix=prefix)
    start = registry.ensure_current()
    with pytest.raises(RegistryError) as unknown:
        registry.promote("v-missing")
    assert unknown.value.kind == "not_found"
    with pytest.raises(RegistryError):
        registry.promote("../../etc")
    broken = second_version(tmp_path, "v-broken")
    (tmp_path / broken / "policy.safetensors").write_bytes(b"not weights")
    with pytest.raises(RegistryError, match="sha256") as corrupt:
        registry.promote(broken)
    assert corrupt.value.kind == "conflict" and registry.current() == start


def test_policy_cache_swaps_on_a_new_pointer_and_keeps_serving_on_a_bad_one(tmp_path):
    start = install_starting_policy(tmp_path)
    second = second_version(tmp_path)
    cache = PolicyCache(tmp_path)
    first_policy = cache.get(start)
    assert cache.get(None) is first_policy and cache.version == start
    assert cache.get(second) is not first_policy and cache.version == second
    manifest = json.loads((tmp_path / second / "manifest.json").read_text())
    assert cache.policy.manifest["version"] == manifest["version"]
    assert cache.get("v-nowhere") is cache.policy and cache.version == second and "v-nowhere" in cache.failed


def test_an_unreachable_server_raises_a_redis_error_quickly(tmp_path):
    client = connect(f"unix://{tmp_path}/nothing.sock")
    started = time.perf_counter()
    with pytest.raises(redis.RedisError):
        EventLog(client, prefix="x").ranking("r_1")
    assert time.perf_counter() - started < 2.0


def test_retention_keeps_the_newest_versions_and_everything_that_can_serve(client, prefix, tmp_path):
    registry = PolicyRegistry(client, tmp_path, prefix=prefix)
    start = registry.ensure_current()
    versions = []
    for index in range(6):
        versions.append(second_version(tmp_path, f"v-{index}", created_at=f"2099-01-01T00:00:0{index}Z"))  # one a second, after the start
    registry.promote("v-0")
    registry.promote("v-1")
    deleted = registry.prune(keep=2)
    assert sorted(deleted) == ["v-2", "v-3"]  # v-0 and v-1 serve or can be rolled back to; v-4, v-5 are the newest
    assert set(registry.versions()) == {start, "v-0", "v-1", "v-4", "v-5"}
