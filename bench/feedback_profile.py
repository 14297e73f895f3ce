"""Where a feedback request's CPU goes: ``POST /v1/feedback`` (2 events) profiled in process, without gunicorn.

Prints figures; asserts nothing (issue 32, item 3: profile, then cut).

    python bench/feedback_profile.py                # 3,000 requests, the top 25 functions by own time
    python bench/feedback_profile.py --requests 1000 --top 40

1. serves the cached 2,000-item text catalog of ``bench/serve.py --quick`` with the Flask app in this process and its
   own embedded Redis (as bench/feedback.py, but no gunicorn and no socket);
2. asks for ``--rankings`` slates, then times ``--requests`` feedback requests of 2 events through a WSGI call with a
   prebuilt environ: this process's CPU per request, and Redis's (read from /proc);
3. runs them again under cProfile and prints the functions with the most own time, and the cumulative time of the
   request's parts (validation, the service, the script's round trip, metrics, the response).

What gunicorn, HTTP parsing and the loopback socket add is the difference to bench/feedback.py's CPU per request.
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse
import cProfile
import io
import json
import pstats
import shutil
import sys
import time
import uuid
from pathlib import Path

from common import FEEDBACK_MIX, OUT, cpu_seconds, ensure_catalog, make_queries, prepare_run_dir


def wsgi_post(app, path: str, body: bytes) -> tuple[str, bytes]:
    """One request straight into the WSGI app: no socket, no HTTP parser."""
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }
    status: list[str] = []
    chunks = app(environ, lambda s, headers, exc_info=None: status.append(s))
    return status[0], b"".join(chunks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=2_000)
    parser.add_argument("--rankings", type=int, default=300)
    parser.add_argument("--requests", type=int, default=3_000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", type=Path, default=OUT / "feedback-profile.txt")
    args = parser.parse_args()

    from api import create_app
    from ranker.live.backend import EmbeddedRedis

    catalog, _ = ensure_catalog(args.items, 0, False)
    run_dir = prepare_run_dir(catalog)
    redis_server = EmbeddedRedis(run_dir / "redis")
    try:
        app = create_app({"DATA_DIR": str(run_dir), "REDIS_URL": redis_server.url, "PREFIX": f"bench-profile-{uuid.uuid4().hex[:8]}", "RATE_LIMITS": False})
        rankings = []
        for index, query in enumerate(make_queries(args.rankings, 0)):
            status, data = wsgi_post(app, "/v1/rank", json.dumps({"query": {"text": query}, "user_id": f"u{index % 100}", "num_results": 10}).encode())
            if not status.startswith("200"):
                raise RuntimeError(f"rank: {status} {data[:200]!r}")
            answer = json.loads(data)
            rankings.append((answer["ranking_id"], [item["item_id"] for item in answer["items"]]))
        run = uuid.uuid4().hex[:6]

        def body(index: int, tag: str) -> bytes:
            ranking_id, slate = rankings[index % len(rankings)]
            events = [
                {"event_id": f"{tag}-{run}-{index}-{j}", "item_id": slate[(index + j) % len(slate)], "type": FEEDBACK_MIX[(index + j) % len(FEEDBACK_MIX)]}
                for j in range(2)
            ]
            return json.dumps({"ranking_id": ranking_id, "events": events}).encode()

        def send(tag: str) -> None:
            for index in range(args.requests):
                status, data = wsgi_post(app, "/v1/feedback", body(index, tag))
                if not status.startswith("202"):
                    raise RuntimeError(f"feedback: {status} {data[:200]!r}")

        send("warm")
        redis_pid = redis_server._server.pid
        cpu, redis_cpu, wall = time.process_time(), cpu_seconds(redis_pid), time.perf_counter()
        send("timed")
        cpu_us = 1e6 * (time.process_time() - cpu) / args.requests
        redis_us = 1e6 * (cpu_seconds(redis_pid) - redis_cpu) / args.requests
        wall_us = 1e6 * (time.perf_counter() - wall) / args.requests
        print(
            f"in process, {args.requests} requests of 2 events: app + service {cpu_us:.0f} us CPU, Redis {redis_us:.0f} us, wall {wall_us:.0f} us per request"
        )
        profiler = cProfile.Profile()
        profiler.enable()
        send("profiled")
        profiler.disable()
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text)
        stats.sort_stats("tottime").print_stats(args.top)
        stats.sort_stats("cumulative").print_stats(args.top)
        report = text.getvalue()
        print(report)
        args.out.write_text(f"app + service {cpu_us:.0f} us, Redis {redis_us:.0f} us per request\n\n{report}")
    finally:
        redis_server.close()
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
