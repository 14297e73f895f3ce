"""A shop's path end to end: a catalog written only through the API, the learner beside the service.

    python bench/api_catalog.py                     # 600 items, 5,000 sessions (about 15 minutes on 2 cores)
    python bench/api_catalog.py --sessions 500      # a quick look

What runs (all real parts, on loopback):

- Debian's ``redis-server`` (append-only file on) as ``REDIS_URL``, or the
  embedded one with ``--embedded``;
- ``ranker serve`` on an empty data directory with its default settings: the
  learner runs beside it (``--learn`` is the default) with default cadence;
- ``--items`` demo-shop items (titles, prices, pictures as base64) written
  through ``POST /v1/items``: no ``ranker index build``;
- simulated shoppers (``envs``) over HTTP: ``POST /v1/rank``, their clicks,
  carts and purchases through ``POST /v1/feedback``. Their world is the
  catalog as the service holds it (:class:`ranker.learning.world.LiveCatalog`).

It prints and writes (``bench/out/api_catalog/result.json``): the time from
the first feedback to the first decided update, the updates decided
(promoted, rejected) in the run, errors and restarts of the learner, and
whether it is still running at the end.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from online import THREADS, wait_ready  # noqa: E402

from ranker.client import free_port  # noqa: E402

OUT = ROOT / "bench" / "out" / "api_catalog"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=5000)
    parser.add_argument("--items", type=int, default=600)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--embedded", action="store_true", help="the embedded Redis instead of Debian's redis-server")
    args = parser.parse_args()
    os.environ.update(THREADS)

    from ranker.catalog.demo import write_demo_catalog
    from ranker.catalog.items import load_catalog
    from ranker.client import ApiClient
    from ranker.harness import Shopper, session_through
    from ranker.learning.status import LearnerStatus
    from ranker.learning.world import shoppers_world
    from ranker.live.backend import connect

    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    catalog = load_catalog(write_demo_catalog(OUT / "shop", seed=0, n_items=args.items, with_images=True), strict=True).items
    data_dir = OUT / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RANKER_") and k != "REDIS_URL"}
    env.update(THREADS, RANKER_RATE_LIMITS="0")  # simulated shoppers as fast as the CPU allows
    processes: list[subprocess.Popen] = []
    if not args.embedded:
        (OUT / "redis").mkdir()
        socket_path = OUT / "redis" / "redis.sock"
        processes.append(
            subprocess.Popen(
                ["redis-server", "--port", "0", "--unixsocket", str(socket_path), "--dir", str(OUT / "redis"), "--save", "", "--appendonly", "yes"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        while not socket_path.exists():
            time.sleep(0.05)
        env["REDIS_URL"] = f"unix://{socket_path}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(OUT / "serve.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "ranker.cli", "serve", "--data-dir", str(data_dir), "--port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_ready(base, server)
        api = ApiClient(base, timeout_s=300)
        started = time.time()
        for start in range(0, len(catalog), 50):
            docs = []
            for item in catalog[start : start + 50]:
                doc = item.to_json()
                doc["image"] = "data:image/png;base64," + base64.b64encode(Path(item.image).read_bytes()).decode()
                docs.append(doc)
            api.post("/v1/items", {"items": docs})
        print(f"{len(catalog)} items written through POST /v1/items in {time.time() - started:.0f} s")
        redis_url = env.get("REDIS_URL") or f"unix://{json.loads((data_dir / 'redis' / 'owner.json').read_text())['socket']}"
        client = connect(redis_url, socket_timeout=30)
        world = shoppers_world(data_dir, redis_url)
        shopper = Shopper(world, seed=args.seed)
        status = LearnerStatus(client)
        first_feedback = first_decided = None
        from tqdm.auto import tqdm

        loop_started = time.time()
        for _ in tqdm(range(args.sessions), desc="sessions", unit="session"):
            _, body, _ = session_through(api, shopper, shopper.reset())
            if first_feedback is None and client.xlen("{ranker}:interactions"):
                first_feedback = time.time()
            if first_decided is None and status.last_update() is not None:
                first_decided = time.time()
        elapsed = time.time() - loop_started
        deadline = time.time() + 120
        while first_decided is None and time.time() < deadline:  # a short run: wait for the first decision
            if status.last_update() is not None:
                first_decided = time.time()
            time.sleep(1)
        summary = status.summary()
        result = {
            "items": len(catalog),
            "sessions": args.sessions,
            "seconds": round(elapsed, 1),
            "redis": "embedded" if args.embedded else "redis-server",
            "first_feedback_to_first_decision_s": round(first_decided - first_feedback, 1) if first_decided and first_feedback else None,
            "decisions": summary["decisions"],
            "errors": summary["errors"],
            "restarts": summary["restarts"],
            "dead_letters": summary["dead_letters"],
            "learner_running_at_end": bool(summary["running"]),
            "skipped": summary["skipped"],
            "last_promoted_feedback_to_serving_s": (summary["last_promoted"] or {}).get("feedback_to_serving_s"),
        }
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)
        for process in processes:
            process.terminate()
            process.wait(timeout=30)
        log.close()
    (OUT / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
