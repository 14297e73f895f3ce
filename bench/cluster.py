"""Redis Cluster: what replicated acknowledgements cost, and how long a failover keeps writes out.

Starts a real 3-master cluster with a replica each from Debian's redis-server (``tests/redis_cluster.py``,
``appendfsync always``), then:

1. appends feedback events (one per call, the event log's Lua script) from one client, with and without
   ``confirm_replicated`` (the WAIT that ``RANKER_REDIS_REPLICAS=1`` adds), and reports p50/p99 and calls/s;
2. SIGKILLs the master of the deployment's slot and measures the time until a write succeeds on the promoted
   replica (the cluster's own failover, ``cluster-node-timeout`` 1 s), then restarts the old master and measures
   the time until a replicated write (WAIT 1) succeeds again.

Usage: ``.venv/bin/python bench/cluster.py [--events 2000]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # this checkout's ranker, and the cluster the tests start

from redis_cluster import RedisCluster  # noqa: E402

from ranker.live.backend import confirm_replicated, connect, key  # noqa: E402
from ranker.live.events import EventLog, Feedback, RankingEvent  # noqa: E402
from ranker.ranking.features import CONTEXT_FEATURES, STATIC_FEATURES  # noqa: E402

PREFIX = "bench"


RANKING_ID = "r1"


def served(log: EventLog) -> None:
    """Log the one-item ranking every benchmark event reports on (feedback is checked against a served slate)."""
    log.append_ranking(
        RankingEvent(
            ranking_id=RANKING_ID,
            ts=time.time(),
            user_key="u1",
            session_id=None,
            query_text="q",
            query_has_image=False,
            query_hash="h",
            policy_version="v1",
            candidate_ids=["sku-1"],
            retrieval_scores=[1.0],
            slate=["sku-1"],
            slots=[0],
            log_probs=[0.0],
            temperature=1.0,
            category_codes=[0],
            features=np.zeros((1, len(STATIC_FEATURES)), np.float32),
            context=np.zeros(len(CONTEXT_FEATURES), np.float32),
            placed_similarity=np.ones((1, 1), np.float32),
        )
    )


def event() -> Feedback:
    return Feedback(event_id=uuid.uuid4().hex, item_id="sku-1", type="click", value=None, ts=time.time())


def appends(client: redis.Redis, n: int, replicas: int) -> dict[str, float]:
    log = EventLog(client, prefix=PREFIX)
    served(log)
    times = []
    started = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        assert log.record_feedback(RANKING_ID, [event()]) == [True]
        confirm_replicated(client, PREFIX, replicas, 200)
        times.append(time.perf_counter() - t0)
    wall = time.perf_counter() - started
    ms = np.array(times) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "per_s": n / wall}


def until_write(client: redis.Redis, replicas: int, timeout_s: float = 120) -> float:
    """Seconds until an event append (and, with ``replicas``, its confirmation) succeeds."""
    log = EventLog(client, prefix=PREFIX)
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            served(log)  # again: the ranking may have been lost with the old master
            log.record_feedback(RANKING_ID, [event()])
            confirm_replicated(client, PREFIX, replicas, 200)
            return time.monotonic() - started
        except redis.RedisError:
            time.sleep(0.05)
    raise TimeoutError("no write succeeded")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    args = parser.parse_args()
    figures: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as directory:
        cluster = RedisCluster(Path(directory), node_timeout_ms=1000)
        try:
            client = connect(cluster.url, socket_timeout=5)
            appends(client, 200, 1)  # warm up: scripts loaded, connections open
            for replicas in (0, 1):
                figures[f"append_replicas_{replicas}"] = result = appends(client, args.events, replicas)
                print(f"feedback append, 1 event, replicas={replicas}: p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, {result['per_s']:.0f}/s")
            master = cluster.master_of(key(PREFIX, "interactions"))
            killed = time.monotonic()
            cluster.kill(master)
            figures["kill_to_write_s"] = until_write(client, 0)
            print(f"SIGKILL of the slot's master -> a write succeeds on the promoted replica: {figures['kill_to_write_s']:.2f} s")
            cluster.restart(master)
            figures["restart_to_replicated_write_s"] = until_write(client, 1)
            print(f"old master restarted -> a replicated write (WAIT 1) succeeds: {figures['restart_to_replicated_write_s']:.2f} s")
            figures["kill_to_replicated_write_s"] = time.monotonic() - killed
            print(f"SIGKILL -> replicated writes again (restart right after the promotion): {figures['kill_to_replicated_write_s']:.2f} s")
        finally:
            cluster.stop()
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "cluster.json").write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
