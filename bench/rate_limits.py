"""What the rate limits cost a request: ``RateLimits.check`` (api.limits) against the embedded Redis, per limit.

    python bench/rate_limits.py [--checks 5000]

Prints microseconds per check for one limit and for the rank path's three (per key, and the per-user pair).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.limits import RateLimits
from ranker.live.backend import EmbeddedRedis, connect


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=5000)
    args = parser.parse_args()
    server = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="bench-limits-")))
    try:
        client = connect(server.url)
        limits = RateLimits(client, "bench", {"rank_per_key": "1000000/second", "rank_per_user": "1000000/second;100000000/minute"})
        for scope, label in (("rank_per_key", "one limit"), ("rank_per_user", "two limits (per user)")):
            started = time.perf_counter()
            for index in range(args.checks):
                limits.check(scope, f"user-{index % 100}")
            print(f"{label}: {(time.perf_counter() - started) / args.checks * 1e6:.0f} us per request ({args.checks} requests)")
    finally:
        server.close()


if __name__ == "__main__":
    main()
