"""What pagination adds to a rank request (issue 28): the session's read round trip and the earlier pages left out.

    python bench/pagination.py                 # 600 rounds on the demo shop, one thread

Each round ranks the same query three ways on one in-process service (the endpoint's code, an embedded Redis), in
rotating order so that drift hits all three alike: without a session (today's request), page 1 of a fresh session,
and page 2 of that session after a click on page 1 (the session's clicks, shown items and the query's earlier page
read back, page 1's items left out of retrieval). Prints each way's p50 / p99 and the paired median difference.
Target: pagination adds <= 1 ms to a rank request's p50.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import uuid
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

OUT = ROOT / "bench" / "out" / "pagination"
QUERIES = ["travel bag", "running shoes", "red dress", "wireless headphones", "coffee mug", "leather wallet", "desk lamp", "yoga mat"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=600)
    parser.add_argument("--source", type=Path, default=ROOT / "data", help="demo data directory (built when missing)")
    args = parser.parse_args()

    from api import create_app
    from ranker.live.backend import EmbeddedRedis
    from ranker.retrieval.demo_index import ensure_demo_index

    ensure_demo_index(args.source, log=print)
    run_dir = OUT / "data"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    shutil.copytree(args.source / "index", run_dir / "index")
    redis_server = EmbeddedRedis(OUT / "redis")
    try:
        app = create_app({"DATA_DIR": str(run_dir), "REDIS_URL": redis_server.url, "PREFIX": f"bench-page-{uuid.uuid4().hex[:6]}"})
        service = app.extensions["ranking_service"]
        times: dict[str, list[float]] = {"no session": [], "page 1": [], "page 2 after a click": []}
        for warm in range(20):
            service.rank(user_id="warm", text=QUERIES[warm % len(QUERIES)], num_results=10)
        for index in range(args.rounds):
            user, text, session = f"user-{index % 50}", QUERIES[index % len(QUERIES)], f"s-{index}"
            order = ["no session", "page 1"][:: 1 if index % 2 == 0 else -1]
            for way in order:
                started = time.perf_counter()
                if way == "no session":
                    service.rank(user_id=user, text=text, num_results=10)
                else:
                    first = service.rank(user_id=user, text=text, num_results=10, session_id=session, page=1)
                times[way].append(time.perf_counter() - started)
            service.feedback(first.ranking_id, [{"event_id": f"c-{index}", "item_id": first.items[2].candidate.item.item_id, "type": "click"}])
            started = time.perf_counter()
            second = service.rank(user_id=user, text=text, num_results=10, session_id=session, page=2)
            times["page 2 after a click"].append(time.perf_counter() - started)
            assert not {i.candidate.item.item_id for i in second.items} & {i.candidate.item.item_id for i in first.items}, "page 2 repeated page 1"
        base = np.array(times["no session"])
        print(f"{args.rounds} rounds, {len(service.engine):,} items, one thread")
        for way, samples in times.items():
            values = 1000 * np.array(samples)
            added = 1000 * float(np.median(np.array(samples) - base))
            print(f"  {way:>22}: p50 {np.percentile(values, 50):6.2f} ms  p99 {np.percentile(values, 99):6.2f} ms  paired median added {added:+.2f} ms")
        print("target: pagination adds <= 1 ms to a rank request's p50")
    finally:
        redis_server.close()


if __name__ == "__main__":
    main()
