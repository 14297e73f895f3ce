"""The multi-machine deployment of docs/operations.md on loopback: two API processes (`ranker serve --no-learn`), each with
its own copy of one index snapshot, policy versions on shared storage, a learner process as a consumer-group member,
and one Redis Cluster (three masters, a replica each). A promote and a catalog write made through one API process
reach the other; what the learner trains is served by both."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ranker.client import ApiClient, ApiError, free_port
from ranker.learning.status import LearnerStatus
from ranker.live.backend import connect, key
from ranker.live.registry import install_starting_policy

ROOT = Path(__file__).resolve().parents[2]
THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
PREFIX = "deploy"


def environment(redis_url: str) -> dict[str, str]:
    """What every machine of the deployment sets alike: Redis, the key prefix, the user-id key, replicated writes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RANKER_") and k != "REDIS_URL"}
    env.update(THREADS, REDIS_URL=redis_url, RANKER_PREFIX=PREFIX, RANKER_USER_KEY_SECRET="shared-secret", RANKER_REDIS_REPLICAS="1")
    return env


def machine(root: Path, name: str, snapshot: Path | None, policies: Path) -> Path:
    """A machine's data directory: its copy of the index snapshot, and the shared policy storage mounted as ``policies``."""
    data_dir = root / name
    if snapshot is not None:
        shutil.copytree(snapshot, data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "policies").symlink_to(policies, target_is_directory=True)
    return data_dir


def rank(api: ApiClient, user: str, text: str) -> dict:
    return api.post("/v1/rank", {"user_id": user, "query": {"text": text}, "num_results": 5})


@pytest.mark.slow
def test_two_api_processes_and_a_learner_share_one_redis_cluster(redis_cluster, demo_engine, tmp_path):
    policies = tmp_path / "shared-policies"
    policies.mkdir()
    install_starting_policy(policies)
    snapshot = Path(demo_engine.data_dir)
    env = environment(redis_cluster.url)
    servers: list[tuple[subprocess.Popen, ApiClient, Path]] = []
    learner = None
    try:
        for name in ("api-a", "api-b"):
            data_dir = machine(tmp_path, name, snapshot, policies)
            port = free_port()
            log = tmp_path / f"{name}.log"
            command = [sys.executable, "-m", "ranker.cli", "serve", "--no-learn", "--data-dir", str(data_dir), "--port", str(port), "--temperature", "1.0"]
            process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=open(log, "w"))
            servers.append((process, ApiClient(f"http://127.0.0.1:{port}", timeout_s=30), log))
        for process, api, log in servers:  # both start together; wait for each
            try:
                api.wait_ready(240, process=process)
            except ApiError as exc:
                raise AssertionError(f"{exc}: {log.read_text()[-3000:]}") from None
        (a, _), (b, _) = [(api, log) for _, api, log in servers]

        # shoppers through both replicas; one learner, a consumer-group member, trains on all of it
        for index in range(30):
            api = (a, b)[index % 2]
            body = rank(api, f"user-{index % 6}", ["leather backpack", "desk lamp", "running shoes"][index % 3])
            item = body["items"][index % 3]["item_id"]
            assert api.post("/v1/feedback", {"ranking_id": body["ranking_id"], "events": [{"event_id": f"e{index}", "item_id": item, "type": "click"}]}) == {
                "accepted": 1,
                "duplicates": 0,
            }
        learner_dir = machine(tmp_path, "learner", None, policies)
        command = [sys.executable, "-m", "ranker.cli", "learn", "--data-dir", str(learner_dir), "--batch-size", "30", "--label-delay", "0"]
        command += ["--gate-env", "envs/SlateShoppingTiny-v0", "--gate-episodes", "60", "--max-updates", "1", "--consumer", "learner-1", "--device", "cpu"]
        learner = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, stderr = learner.communicate(timeout=300)
        assert learner.returncode == 0, stderr.decode()[-3000:]
        client = connect(redis_cluster.url, socket_timeout=10)
        consumers = client.xinfo_consumers(key(PREFIX, "rankings"), "learner")
        assert [c["name"] for c in consumers] in (["learner-1"], [b"learner-1"]) and consumers[0]["pending"] == 0
        update = LearnerStatus(client, prefix=PREFIX).last_update()
        trained = update["version"]
        assert (policies / trained / "manifest.json").exists()

        # a promote (the learner's, else an admin's through one process) reaches both at their next request
        if update["decision"] != "promoted":
            a.post(f"/v1/policies/{trained}/promote", {})
        for api in (b, a):
            assert api.get("/v1/policies")["current"] == trained
            assert rank(api, "someone", "desk lamp")["policy_version"] == trained
        previous = b.post("/v1/policies/rollback", {})["current"]
        assert previous != trained and rank(a, "someone", "desk lamp")["policy_version"] == previous

        # a catalog write through one process is searchable on the other at once
        item = {"title": "Zephyrine Cobalt Hammock Chair", "price": 149.0, "category": "Furniture", "brand": "Zephyrine"}
        b.put("/v1/items/sku-hammock", item)
        assert a.get("/v1/items/sku-hammock")["title"] == item["title"]
        assert "sku-hammock" in [found["item_id"] for found in rank(a, "someone", "cobalt hammock chair")["items"]]
        b.delete("/v1/items/sku-hammock")
        assert "sku-hammock" not in [found["item_id"] for found in rank(a, "someone", "cobalt hammock chair")["items"]]
    finally:
        if learner is not None and learner.poll() is None:
            learner.kill()
            learner.wait()
        for process, _, _ in servers:
            process.send_signal(signal.SIGTERM)
        for process, _, _ in servers:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
