"""``ranker import events`` (issue 33): a shop's logged history warms the counters and profiles and fills the event
log; re-runs count nothing twice; bad lines are reported, not fatal; the learner's critic fits from the history."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import redis
from click.testing import CliRunner

from ranker.history.demo import write_demo_history
from ranker.history.importer import IMPORTED_POLICY, HistoryImporter
from ranker.learning.config import LearnerConfig
from ranker.learning.join import Joiner, replayable
from ranker.live.events import EventLog
from ranker.live.state import RedisStateProvider, counter_key, pseudonym_key
from ranker.ranking.features import CONTEXT_FEATURES, STATIC_FEATURES
from ranker.serving import pseudonymise

SECRET = b"test-secret"


@pytest.fixture()
def client(embedded_redis):
    return redis.Redis.from_url(embedded_redis)


@pytest.fixture(scope="module")
def history_file(demo_engine, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("history") / "events.jsonl"
    write_demo_history(demo_engine, path, n_rankings=400, n_users=40, n_queries=60, slate_size=20, seed=1)
    return path


def importer(engine, client, prefix: str, **kwargs) -> HistoryImporter:
    return HistoryImporter(engine, client, user_key_secret=SECRET, prefix=prefix, **kwargs)


def events_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def user_key(client, prefix: str, user_id: str) -> str:
    return client.get(pseudonym_key(prefix, pseudonymise(user_id, SECRET))).decode()


def test_history_warms_counters_and_profiles_and_fills_the_event_log(demo_engine, client, prefix, history_file):
    report = importer(demo_engine, client, prefix, batch_rankings=64).run(history_file)  # more rankings than one batch
    events = events_of(history_file)
    rankings = [event for event in events if event["event"] == "ranking"]
    interactions = [event for event in events if event["event"] == "interaction"]
    assert report.rankings == len(rankings) == 400 and report.interactions == len(interactions) > 50
    assert report.items_unchanged == len(demo_engine) and report.items_added == 0 and report.skips.total == 0
    assert report.events == len(events)

    shown = Counter(entry["id"] for ranking in rankings for entry in ranking["items"])
    clicked = Counter(event["item"] for event in interactions if event["type"] == "click")
    bought = Counter(event["item"] for event in interactions if event["type"] == "purchase")
    counts = RedisStateProvider(client, prefix=prefix).item_counts(sorted(shown))
    assert counts[:, 0].tolist() == [shown[item] for item in sorted(shown)]
    assert counts[:, 1].tolist() == [clicked[item] for item in sorted(shown)]
    assert counts[:, 2].tolist() == [bought[item] for item in sorted(shown)]

    # the profile the live service finds for a user (by the same pseudonym) holds every interaction of theirs
    by_user = Counter(event["user"] for event in interactions)
    user, n_events = by_user.most_common(1)[0]
    profile = RedisStateProvider(client, prefix=prefix).user_profile(user_key(client, prefix, user))
    assert profile.n_interactions == n_events and profile.embedding is not None

    log = EventLog(client, prefix=prefix)
    assert log.lengths() == {"rankings": 400, "interactions": len(interactions)}
    logged = [event for _, event in log.rankings()]
    assert all(event.policy_version == IMPORTED_POLICY and event.features.shape == (20, len(STATIC_FEATURES)) for event in logged)
    assert all(event.context.shape == (len(CONTEXT_FEATURES),) and event.placed_similarity.shape == (20, 20) for event in logged)
    # snapshots are taken as the history happened: a user's first ranking knew no profile, a later one after a click did
    has_profile = CONTEXT_FEATURES.index("user_has_profile")
    first_seen, later = {}, []
    for event in sorted(logged, key=lambda event: event.ts):
        first_seen.setdefault(event.user_key, event)
        later.append(event)
    assert all(event.context[has_profile] == 0.0 for event in first_seen.values())
    assert any(event.context[has_profile] == 1.0 for event in later)
    popularity = STATIC_FEATURES.index("log_popularity")
    assert np.all(logged[0].features[:, popularity] == 0.0) and logged[-1].features[:, popularity].max() > 0
    positions = {(i.ranking_id, i.item_id): i.position for _, i in log.interactions()}
    slates = {event.ranking_id: event.slate for event in logged}
    assert all(slates[ranking][position] == item for (ranking, item), position in positions.items())


def test_a_rerun_counts_nothing_twice(demo_engine, client, prefix, history_file):
    first = importer(demo_engine, client, prefix).run(history_file)
    items = sorted({entry["id"] for event in events_of(history_file) if event["event"] == "ranking" for entry in event["items"]})
    counts = RedisStateProvider(client, prefix=prefix).item_counts(items)
    again = importer(demo_engine, client, prefix).run(history_file)
    assert again.rankings == 0 and again.interactions == 0
    assert again.skips.counts["already_imported"] == first.rankings + first.interactions
    np.testing.assert_array_equal(RedisStateProvider(client, prefix=prefix).item_counts(items), counts)
    assert EventLog(client, prefix=prefix).lengths() == {"rankings": first.rankings, "interactions": first.interactions}


def test_bad_lines_are_counted_with_their_reason_and_the_rest_imports(demo_engine, client, prefix, tmp_path):
    known = [item.item_id for item in demo_engine.store.items()[:5]]
    ranking = {"event": "ranking", "id": "r1", "timestamp": "1788000000000", "user": "u1", "items": [{"id": item} for item in known]}
    lines = [
        json.dumps(ranking),
        "{not json",
        json.dumps({"event": "sale", "id": "x"}),
        json.dumps({"event": "user", "id": "u", "user": "u1", "timestamp": 1, "fields": []}),
        json.dumps({**ranking, "id": "r2", "items": [{"id": known[0]}, {"id": "sku-gone"}]}),
        json.dumps({"event": "interaction", "id": "i1", "ranking": "r1", "user": "u1", "item": known[1], "type": "click", "timestamp": "1788000005000"}),
        json.dumps({"event": "interaction", "id": "i2", "ranking": "r1", "user": "u1", "item": known[1], "type": "like", "timestamp": "1788000005000"}),
        json.dumps({"event": "interaction", "id": "i3", "ranking": "r1", "user": "u1", "item": "sku-gone", "type": "click", "timestamp": "1788000005000"}),
        json.dumps(
            {"event": "interaction", "id": "i4", "ranking": "r1", "user": "u1", "item": demo_engine.store.items()[9].item_id, "type": "click", "timestamp": 2}
        ),
        json.dumps({"event": "interaction", "id": "i5", "user": "u2", "item": known[2], "type": "purchase", "timestamp": "2026-09-01T10:00:00Z"}),
        json.dumps({"event": "ranking", "id": "r3", "timestamp": "yesterday", "items": [{"id": known[0]}]}),
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    report = importer(demo_engine, client, prefix).run(path)
    assert report.rankings == 1 and report.interactions == 1 and report.counted_only == 1  # i5: no ranking, still counted
    assert report.skips.counts == {"bad_event": 3, "user_event": 1, "unknown_item": 2, "unknown_type": 1, "not_in_ranking": 1}
    examples = " ".join(example for kept in report.skips.examples.values() for example in kept)
    assert "line 2:" in examples and "event: unknown kind 'sale'" in examples and "timestamp: 'yesterday'" in examples
    assert "sku-gone, not in the catalog" in examples and "type 'like'" in examples
    assert any("skipped 8" in line for line in report.lines())
    counts = RedisStateProvider(client, prefix=prefix).item_counts(known[:3])
    assert counts[:, 1].tolist() == [0, 1, 0] and counts[:, 2].tolist() == [0, 0, 1]


def test_sessions_replay_as_serving_keeps_them(demo_engine, client, prefix, tmp_path):
    """Schema 4: a query's second ranking in a session is its page 2, a click in the session shows in the next
    page's features, and every slate joins the user's shown statistics (the hash the ranking script counts)."""
    items = demo_engine.store.items()
    page_1, page_2 = [item.item_id for item in items[:5]], [item.item_id for item in items[5:10]]
    rank = {"event": "ranking", "user": "u1", "session": "s1", "fields": [{"name": "query", "value": "red shoes"}]}
    lines = [
        {**rank, "id": "r1", "timestamp": "1788000000000", "items": [{"id": item} for item in page_1]},
        {"event": "interaction", "id": "i1", "ranking": "r1", "user": "u1", "item": page_1[2], "type": "click", "timestamp": "1788000005000"},
        {**rank, "id": "r2", "timestamp": "1788000010000", "items": [{"id": item} for item in page_2]},
        {**rank, "id": "r3", "session": "s2", "timestamp": "1788000020000", "items": [{"id": item} for item in page_2]},
    ]
    path = tmp_path / "sessions.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    assert importer(demo_engine, client, prefix).run(path).rankings == 3
    logged = {event.ranking_id: event for _, event in EventLog(client, prefix=prefix).rankings()}
    assert [logged[r].page for r in ("r1", "r2", "r3")] == [1, 2, 1]
    page, clicks = CONTEXT_FEATURES.index("session_page"), CONTEXT_FEATURES.index("session_clicks")
    to_clicked = STATIC_FEATURES.index("sim_to_clicked")
    assert logged["r1"].context[clicks] == 0 and logged["r2"].context[clicks] > 0 and logged["r3"].context[clicks] == 0
    assert logged["r2"].context[page] > logged["r1"].context[page]
    assert np.all(logged["r1"].features[:, to_clicked] == 0) and np.any(logged["r2"].features[:, to_clicked] != 0)
    assert np.all(logged["r3"].features[:, to_clicked] == 0)  # another session: page 1 again, no clicks of its own
    profile = RedisStateProvider(client, prefix=prefix).user_profile(user_key(client, prefix, "u1"))
    assert profile.shown == 15 and sum(profile.shown_brand_counts.values()) == 15 and profile.n_interactions == 1


def test_an_obp_table_imports_with_its_propensities(demo_engine, client, prefix, tmp_path):
    items = [item.item_id for item in demo_engine.store.items()[:6]]
    rows = ["timestamp,slate_id,user_id,item_id,position,click,propensity_score"]
    for slate in range(4):
        for position in range(3):
            item = items[(slate + position) % 6]
            rows.append(f"2026-09-01 10:0{slate}:00+00:00,s{slate},u{slate % 2},{item},{position + 1},{int(position == slate % 3)},{0.5 / (position + 1)}")
    rows.append("2026-09-01 10:09:00+00:00,s9,u1,sku-gone,1,0,0.2")
    path = tmp_path / "logged.csv"
    path.write_text("\n".join(rows) + "\n")
    report = importer(demo_engine, client, prefix).run(path)
    assert report.rankings == 4 and report.interactions == 4 and report.skips.counts == {"unknown_item": 1}
    logged = [event for _, event in EventLog(client, prefix=prefix).rankings()]
    assert [len(event.slate) for event in logged] == [3, 3, 3, 3]
    np.testing.assert_allclose(np.exp(logged[0].log_probs), [0.5, 0.25, 0.5 / 3])
    assert logged[0].slate == [items[0], items[1], items[2]]
    assert all(event.ts == pytest.approx(1788256800 + 60 * index) for index, event in enumerate(logged))
    interactions = [event for _, event in EventLog(client, prefix=prefix).interactions()]
    assert sorted((event.ranking_id, event.position) for event in interactions) == [(f"obp:slate_id:s{s}", s % 3) for s in range(4)]
    assert importer(demo_engine, client, prefix).run(path).rankings == 0  # ids come from the rows: a re-read is the same import


def test_item_events_add_new_items_to_the_catalog(demo_engine_of, client, prefix, tmp_path):
    engine = demo_engine_of(30)
    present = engine.store.items()[0]
    lines = [
        {"event": "item", "id": "e1", "item": "sku-new", "timestamp": 1, "fields": [{"name": "title", "value": "Teal Linen Summer Dress"}]},
        {
            "event": "item",
            "id": "e2",
            "item": "sku-new",
            "timestamp": 2,
            "fields": [{"name": "price", "value": 59.0}, {"name": "category", "value": ["Dresses"]}],
        },
        {"event": "item", "id": "e3", "item": present.item_id, "timestamp": 3, "fields": [{"name": "price", "value": present.price + 1}]},
        {"event": "item", "id": "e4", "item": "sku-bad", "timestamp": 4, "fields": [{"name": "title", "value": "No price"}]},
        {"event": "ranking", "id": "r1", "timestamp": 5, "user": "u1", "items": [{"id": "sku-new"}, {"id": present.item_id}]},
    ]
    path = tmp_path / "items.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    report = importer(engine, client, prefix).run(path)
    assert (report.items_added, report.items_updated, report.rankings) == (1, 1, 1)
    assert report.skips.counts == {"bad_item": 1} and "price" in report.skips.examples["bad_item"][0]
    new = engine.get("sku-new")
    assert new is not None and new.price == 59.0 and new.category == "Dresses" and new.title == "Teal Linen Summer Dress"
    assert engine.get(present.item_id).price == present.price + 1 and engine.get(present.item_id).title == present.title
    assert [candidate.item.item_id for candidate in engine.search("teal linen summer dress", k=1)] == ["sku-new"]


def test_the_learner_fits_its_critic_from_imported_history(demo_engine, client, prefix, tmp_path):
    """The learner's own join, replay and critic fit read the imported history; the critic ranks held-out clicks."""
    from ranker.evaluation.critic import OutcomeCritic, fit_critic
    from ranker.learning.replay import replay

    path = tmp_path / "events.jsonl"
    write_demo_history(demo_engine, path, n_rankings=800, n_users=60, n_queries=80, slate_size=10, seed=2)
    importer(demo_engine, client, prefix).run(path)
    log = EventLog(client, prefix=prefix)
    joiner = Joiner(LearnerConfig(prefix=prefix))
    for entry_id, event in log.rankings():
        joiner.add_ranking(entry_id, event, now=event.ts)
    for entry_id, event in log.interactions():
        joiner.add_interaction(entry_id, event, now=event.ts)
    trajectories = joiner.ready(now=2e9)
    assert len(trajectories) == 800 and sum(t.total_reward > 0 for t in trajectories) > 100
    assert {replayable(t) for t in trajectories} == {"no_propensity"}  # PPO leaves them out; the critic does not
    steps = replay(trajectories)
    train = steps.trajectory < 600
    critic = OutcomeCritic(steps.features.shape[2], steps.context.shape[1])
    fit_critic(critic, steps.features[train], steps.context[train], steps.positions[train], steps.actions[train], steps.outcomes[train], epochs=10)
    import torch

    test = ~train
    with torch.no_grad():
        predicted = critic(
            torch.as_tensor(steps.features[test]), torch.as_tensor(steps.context[test]), torch.as_tensor(steps.positions[test], dtype=torch.long)
        ).numpy()[np.arange(test.sum()), steps.actions[test], 0]
    clicked = steps.outcomes[test, 0] > 0

    def auc(score: np.ndarray) -> float:
        return float((score[clicked][:, None] > score[~clicked][None, :]).mean() + 0.5 * (score[clicked][:, None] == score[~clicked][None, :]).mean())

    base_rate = float(steps.outcomes[train, 0].mean())
    log_loss = lambda p: float(-np.mean(np.where(clicked, np.log(p), np.log(1 - p))))  # noqa: E731
    assert auc(predicted) > 0.65 and log_loss(np.clip(predicted, 1e-6, 1 - 1e-6)) < log_loss(np.full(len(predicted), base_rate))
    # the snapshot carries the query: shown items that were clicked were closer to it (the history's shoppers click matches)
    shown_sim_text = steps.features[np.arange(len(steps.actions)), steps.actions, STATIC_FEATURES.index("sim_text")]
    assert shown_sim_text[steps.outcomes[:, 0] > 0].mean() > shown_sim_text[steps.outcomes[:, 0] == 0].mean()


def test_cli_imports_a_file_and_reports(demo_engine, embedded_redis, prefix, history_file, tmp_path, monkeypatch):
    from ranker.cli import main

    monkeypatch.setenv("RANKER_USER_KEY_SECRET", SECRET.decode())
    arguments = ["import", "events", str(history_file), "--data-dir", str(demo_engine.data_dir), "--redis-url", embedded_redis, "--prefix", prefix]
    result = CliRunner().invoke(main, [*arguments, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "rankings: 400 imported" in result.output and "events/s" in result.output
    again = CliRunner().invoke(main, [*arguments, "--no-progress"])
    assert "rankings: 0 imported" in again.output and "already_imported" in again.output
    client = redis.Redis.from_url(embedded_redis)
    first_shown = next(event for event in events_of(history_file) if event["event"] == "ranking")["items"][0]["id"]
    assert int(client.hget(counter_key(prefix, "impressions"), first_shown) or 0) >= 1
    missing = CliRunner().invoke(main, ["import", "events", str(history_file), "--data-dir", str(tmp_path / "none"), "--redis-url", embedded_redis])
    assert missing.exit_code != 0 and "no catalog index" in missing.output
