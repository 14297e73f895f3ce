"""What the benches share: the machine and source they ran on, the cached text catalogs and fresh run directories,
a load generator with its tally, CPU meters, and gunicorn started on a data directory.

Imported by ``bench/serve.py``, ``bench/feedback.py``, ``bench/feedback_profile.py`` and ``bench/soak.py`` (their
folder is on ``sys.path`` when they run as scripts). Importing it first sets the thread variables to 1 (one request,
one core) before numpy or torch load, unless the caller set them.
"""

from __future__ import annotations

import os

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
for _name in THREAD_VARS:
    os.environ.setdefault(_name, "1")  # one request, one core

import http.client
import json
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retrieval import QUERIES, percentile_ms  # noqa: E402  (bench/retrieval.py: this script's folder is on sys.path)

from ranker.catalog.demo import generate_items  # noqa: E402
from ranker.client import free_port  # noqa: F401  (re-exported: the benches pick ports with it)
from ranker.retrieval.engine import SearchEngine, read_manifest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent / "out"
HOST = "127.0.0.1"
# the feedback traffic the benches send: seven clicks, two cart adds and a purchase in every ten events
FEEDBACK_MIX = ("click",) * 7 + ("add_to_cart",) * 2 + ("purchase",)


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


RANK_VS_ENCODE_TARGET = 0.6  # HTTP rank p50 / one fp32 torch encode p50 (issue 32)


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
