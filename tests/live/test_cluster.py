"""Redis Cluster faults: replicas confirm what is acknowledged, a master killed mid-traffic and replaced by its replica
through the cluster's own failover loses no acknowledged feedback, the learner rides through it and trains nothing
twice, and a node that is down answers as Redis down does (rank serves, writes 503 with Retry-After).

Real processes throughout: Debian's redis-server nodes (``tests/redis_cluster.py``), the service over the Flask
test client, the learner in a thread of its own."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest
import redis
from redis_cluster import RedisCluster

from api import create_app
from ranker.learning.config import LearnerConfig
from ranker.learning.loop import Learner
from ranker.live.backend import NotReplicated, confirm_replicated, connect, key

QUERIES = ["leather backpack", "desk lamp", "running shoes", "coffee mug", "wool sweater"]


def test_a_write_is_confirmed_by_the_replica_of_its_slot(redis_cluster, prefix):
    client = connect(redis_cluster.url, socket_timeout=5)
    client.set(key(prefix, "x"), "1")
    assert confirm_replicated(client, prefix, 1, 200) == 1
    replica = redis_cluster.replica_of(redis_cluster.master_of(key(prefix, "x")))
    reader = redis.Redis(host="127.0.0.1", port=replica.port, single_connection_client=True)
    assert reader.execute_command("READONLY") and reader.get(key(prefix, "replicated")) is not None  # the probe reached it
    assert confirm_replicated(client, prefix, 0, 200) == 0  # not asked: no round trip


def test_a_server_without_replicas_refuses_to_confirm(debian_redis, tmp_path, prefix):
    client = connect(debian_redis(tmp_path / "lonely", "--appendonly", "no").url, socket_timeout=5)
    started = time.monotonic()
    with pytest.raises(NotReplicated, match="0 of 1 replica"):
        confirm_replicated(client, prefix, 1, 100)
    assert time.monotonic() - started < 2
    assert issubclass(NotReplicated, redis.RedisError)  # so the API answers 503 and the learner waits it out


@pytest.fixture(scope="module")
def engine(demo_engine_of):
    return demo_engine_of(60)


@pytest.fixture()
def failover_cluster(tmp_path):
    """A cluster of its own (this test kills one of its masters), failing over after 1 s of silence."""
    try:
        cluster = RedisCluster(tmp_path / "cluster", node_timeout_ms=1000)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    yield cluster
    cluster.stop()


def service_on(url: str, prefix: str, engine, data_dir: Path):
    return create_app(
        {
            "TESTING": True,
            "DATA_DIR": str(data_dir),
            "REDIS_URL": url,
            "PREFIX": prefix,
            "ENGINE": engine,
            "SEED": 0,
            "USER_KEY_SECRET": "s",
            "TEMPERATURE": 1.0,
            "REDIS_REPLICAS": 1,
        }
    )


class Traffic:
    """Shoppers in a thread: rank, then a click with its own event_id, retried on 503 until acknowledged."""

    def __init__(self, app):
        self.client = app.test_client()
        self.acknowledged: list[str] = []
        self.rank_status: list[int] = []
        self.unavailable: list[tuple[str, str | None]] = []  # (the error message, Retry-After) of each 503
        self.lost_rankings = 0  # served, but their log entry did not survive (or was never written): feedback 404
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            index = 0
            while not self.stop.is_set():
                index += 1
                response = self.client.post(
                    "/v1/rank", json={"user_id": f"user-{index % 9}", "query": {"text": QUERIES[index % len(QUERIES)]}, "num_results": 5}
                )
                self.rank_status.append(response.status_code)
                if response.status_code != 200:
                    continue
                body = response.get_json()
                event = {"event_id": uuid.uuid4().hex, "item_id": body["items"][index % 5]["item_id"], "type": "click" if index % 4 else "purchase"}
                while True:
                    answer = self.client.post("/v1/feedback", json={"ranking_id": body["ranking_id"], "events": [event]})
                    if answer.status_code == 202:
                        self.acknowledged.append(event["event_id"])
                        break
                    if answer.status_code == 404:
                        self.lost_rankings += 1
                        break
                    assert answer.status_code == 503, (answer.status_code, answer.get_data(as_text=True))
                    self.unavailable.append((answer.get_json()["error"]["message"], answer.headers.get("Retry-After")))
                    time.sleep(0.2)
        except BaseException as exc:  # noqa: BLE001  (reported by the test)
            self.error = exc


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.mark.slow
def test_a_master_killed_mid_traffic_fails_over_and_loses_no_acknowledged_feedback(failover_cluster, engine, tmp_path):
    cluster, prefix = failover_cluster, "fo"
    app = service_on(cluster.url, prefix, engine, tmp_path / "data")
    service = app.extensions["ranking_service"]
    client = connect(cluster.url, socket_timeout=5)
    config = LearnerConfig(
        prefix=prefix,
        label_delay_s=0.0,
        batch_size=40,
        min_batch=1,  # the last few rankings train too
        update_interval_s=0.5,
        gate_env="envs/SlateShoppingTiny-v0",
        gate_episodes=60,
        bootstrap=100,
        block_ms=100,
        redis_replicas=1,
    )
    learner = Learner(client, service.registry.policies_dir, config)
    learner_stop = threading.Event()
    learner_thread = threading.Thread(target=lambda: learner.run(until=learner_stop.is_set), daemon=True)
    traffic = Traffic(app)
    learner_thread.start()
    traffic.thread.start()
    try:
        wait_for(lambda: len(traffic.acknowledged) >= 30, 120, "traffic before the crash")
        master = cluster.master_of(key(prefix, "interactions"))
        replica = cluster.replica_of(master)
        acknowledged_before = len(traffic.acknowledged)
        cluster.kill(master)  # SIGKILL mid-traffic
        wait_for(lambda: replica.client().info("replication")["role"] == "master", 60, "the replica's promotion")
        wait_for(lambda: len(traffic.unavailable) > 0, 60, "a refused write")
        # the new master has no replica yet: writes stay 503 (WAIT 1 fails) until the old master is back as its replica
        cluster.restart(master)
        cluster.wait_healthy()
        assert master.client().info("replication")["role"] == "slave"
        wait_for(lambda: len(traffic.acknowledged) >= acknowledged_before + 30, 120, "traffic after the failover")
    finally:
        traffic.stop.set()
        traffic.thread.join(timeout=60)
    assert traffic.error is None, traffic.error
    assert set(traffic.rank_status) == {200}  # ranking served throughout
    assert all(retry_after for _, retry_after in traffic.unavailable)
    # every acknowledged click is in the log exactly once, on the promoted replica
    logged = [event.event_id for _, event in service.events.interactions()]
    assert len(logged) == len(set(logged))
    assert set(traffic.acknowledged) <= set(logged), set(traffic.acknowledged) - set(logged)
    # the learner rode through: it consumes everything, and every ranking counts in exactly one committed update
    rankings = set(entry_id for entry_id, _ in service.events.rankings())

    seen: dict = {}

    def learner_done() -> bool:
        groups = {g["name"].decode() if isinstance(g["name"], bytes) else g["name"]: g for g in client.xinfo_groups(learner.events.rankings_stream)}
        seen.update(groups.get(config.group) or {}, stage=learner.stage, updates=len(learner.updates), ready=len(learner.ready))
        return seen.get("pending") == 0 and seen.get("lag") == 0

    try:
        wait_for(learner_done, 180, "the learner to consume the log")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {seen}") from None
    finally:
        learner_stop.set()
        learner_thread.join(timeout=120)
    decisions = learner.decisions()
    versions = {service.registry.current(), *(d.get("version") for d in decisions.values()), *(d.get("parent") for d in decisions.values())}
    counted = sum(learner.reward_stats(version)[0] for version in versions if version)
    assert len(decisions) >= 2 and counted == len(rankings), (counted, len(rankings), decisions)


def test_a_cluster_node_that_is_down_answers_as_redis_down_and_loses_nothing_acknowledged(redis_cluster, engine, tmp_path, prefix):
    """The slot's master and its replica both down (no failover possible): rank serves unlogged, feedback is 503 with
    Retry-After; back up, what was acknowledged before is all there and the refused event is accepted once."""
    app = service_on(redis_cluster.url, prefix, engine, tmp_path / "data")
    client = app.test_client()
    first = client.post("/v1/rank", json={"user_id": "u", "query": {"text": "desk lamp"}, "num_results": 3}).get_json()
    item = first["items"][0]["item_id"]
    assert (
        client.post("/v1/feedback", json={"ranking_id": first["ranking_id"], "events": [{"event_id": "e1", "item_id": item, "type": "click"}]}).status_code
        == 202
    )
    master = redis_cluster.master_of(key(prefix, "interactions"))
    replica = redis_cluster.replica_of(master)
    for node in (replica, master):
        node.stop()  # SIGTERM: both flush their append-only files
    try:
        down = client.post("/v1/rank", json={"user_id": "u", "query": {"text": "desk lamp"}, "num_results": 3})
        assert down.status_code == 200 and down.get_json()["logged"] is False
        refused = client.post("/v1/feedback", json={"ranking_id": first["ranking_id"], "events": [{"event_id": "e2", "item_id": item, "type": "click"}]})
        assert refused.status_code == 503 and refused.headers["Retry-After"]
        assert client.get("/readyz").status_code == 503
    finally:
        for node in (master, replica):
            redis_cluster.restart(node)
        redis_cluster.wait_healthy()
    retried = {"event_id": "e2", "item_id": item, "type": "click"}
    assert client.post("/v1/feedback", json={"ranking_id": first["ranking_id"], "events": [retried]}).get_json() == {"accepted": 1, "duplicates": 0}
    events = app.extensions["ranking_service"].events.interactions()
    assert [event.event_id for _, event in events] == ["e1", "e2"]
