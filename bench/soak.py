"""Load and soak: the maximum sustainable throughput, then a long run at 70% of it.

    python bench/soak.py                  # 60 s to find the maximum, then 10 minutes at 70% of it
    python bench/soak.py --minutes 1      # a quick look

What runs (loopback only, bounded request counts): gunicorn with 2 workers
(``api/gunicorn_conf.py``) on the demo shop, an embedded Redis, and a load
generator in this process. The traffic mixes what a shop sends: every
request ranks (text queries of the demo shop, 500 users), and 30% of
rankings get a click as feedback.

1. Maximum: closed loop at 4 concurrent clients for ``--probe`` seconds; the
   rate of completed requests is the maximum sustainable throughput here.
2. Soak: open loop at 70% of it for ``--minutes``: request i is due at
   ``i / rate``; its latency counts from when it was due, so a server that
   falls behind shows it (no coordinated omission). Every 10 s the resident
   memory of the gunicorn processes (master and workers) and of Redis is
   sampled, with Redis's own figures: data held, forks (append-only file
   rewrites and snapshots) and the rankings stream's length.

It prints and writes (``bench/out/soak/``): errors, per-minute p50 and p99,
and memory at the start and the end (targets: zero errors, a stable p99,
resident memory growth under 10%), with a plot. Redis holds the event log by
design, so its memory grows with the data kept until the retention cap
(``--stream-max-len``, the service's ``RANKER_STREAM_MAX_LEN``) is reached;
the gunicorn processes should not grow at all.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import THREAD_VARS, Client, Gunicorn, children_of, free_port, machine, make_queries  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "soak"
FEEDBACK_SHARE = 0.3


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


class Traffic:
    """One simulated request: a ranking, and for some of them a click on the first item."""

    def __init__(self, queries: list[str], seed: int):
        self.queries = queries
        self.rng = np.random.default_rng(seed)
        self.lock = threading.Lock()

    def send(self, client: Client, index: int) -> str | None:
        """Send request ``index``; returns an error description, or None."""
        body = {"user_id": f"soak-user-{index % 500}", "query": {"text": self.queries[index % len(self.queries)]}, "num_results": 10}
        status, data = client.call("POST", "/v1/rank", body)
        if status != 200:
            return f"rank HTTP {status}: {data[:200]!r}"
        with self.lock:
            give_feedback = self.rng.random() < FEEDBACK_SHARE
        if give_feedback:
            ranking = json.loads(data)
            events = [{"event_id": f"soak-{index}", "item_id": ranking["items"][0]["item_id"], "type": "click"}]
            status, data = client.call("POST", "/v1/feedback", {"ranking_id": ranking["ranking_id"], "events": events})
            if status != 202:
                return f"feedback HTTP {status}: {data[:200]!r}"
        return None


def closed_loop(port: int, traffic: Traffic, seconds: float, concurrency: int) -> dict:
    """As fast as ``concurrency`` clients go for ``seconds``: completed requests per second."""
    done, errors = [], []
    stop_at = time.monotonic() + seconds
    counter = iter(range(10**9))
    lock = threading.Lock()

    def worker() -> None:
        client = Client(port)
        while time.monotonic() < stop_at:
            with lock:
                index = next(counter)
            started = time.perf_counter()
            try:
                error = traffic.send(client, index)
            except OSError as exc:
                error = f"{type(exc).__name__}: {exc}"
                client.close()
            with lock:
                (errors if error else done).append(error or time.perf_counter() - started)
        client.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"requests_per_s": len(done) / seconds, "requests": len(done), "errors": len(errors), "p99_ms": float(np.percentile(done, 99) * 1000)}


class Memory:
    """Resident memory of the service's processes and Redis, and what Redis says it holds."""

    def __init__(self, server: Gunicorn, redis_url: str, prefix: str):
        from ranker.live.backend import connect, key

        self.server = server
        self.client = connect(redis_url, socket_timeout=10)
        self.redis_pid = int(self.client.info("server")["process_id"])
        self.stream = key(prefix, "rankings")

    def sample(self) -> dict:
        gunicorn = sum(rss_mb(pid) for pid in [self.server.process.pid, *children_of(self.server.process.pid)])
        info = self.client.info()
        return {
            "gunicorn_mb": gunicorn,
            "redis_mb": rss_mb(self.redis_pid),
            "redis_data_mb": info["used_memory"] / 2**20,
            "forks": info.get("total_forks", 0),
            "aof_delayed_fsync": info.get("aof_delayed_fsync", 0),
            "rankings": self.client.xlen(self.stream),
        }

    def bytes_per_ranking(self) -> float:
        length = self.client.xlen(self.stream)
        return (self.client.memory_usage(self.stream, samples=0) or 0) / length if length else float("nan")


def open_loop(port: int, traffic: Traffic, rate: float, seconds: float, memory_of: Memory, concurrency: int = 8) -> dict:
    """``rate`` requests per second for ``seconds`` (a bounded count), latencies from each request's due time."""
    total = int(rate * seconds)
    started = time.monotonic() + 1.0
    due_at = lambda index: started + index / rate  # noqa: E731
    counter = iter(range(total))
    lock = threading.Lock()
    samples: list[tuple[float, float]] = []  # (due, latency)
    errors: list[tuple[float, str]] = []
    memory: list[tuple[float, dict]] = []
    finished = threading.Event()

    def worker() -> None:
        client = Client(port)
        while True:
            with lock:
                index = next(counter, None)
            if index is None:
                break
            due = due_at(index)
            time.sleep(max(0.0, due - time.monotonic()))
            try:
                error = traffic.send(client, index)
            except OSError as exc:
                error = f"{type(exc).__name__}: {exc}"
                client.close()
            now = time.monotonic()
            with lock:
                if error:
                    errors.append((due - started, error))
                else:
                    samples.append((due - started, now - due))
        client.close()

    def sampler() -> None:
        while not finished.wait(10.0 if memory else 0.0):
            memory.append((time.monotonic() - started, memory_of.sample()))

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    watcher = threading.Thread(target=sampler)
    watcher.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    finished.set()
    watcher.join()
    memory.append((time.monotonic() - started, memory_of.sample()))
    return {"samples": samples, "errors": errors, "memory": memory, "requests": total}


def per_minute(samples: list[tuple[float, float]]) -> list[dict]:
    minutes: dict[int, list[float]] = {}
    for due, latency in samples:
        minutes.setdefault(int(due // 60), []).append(latency * 1000)
    return [
        {"minute": minute + 1, "requests": len(values), "p50_ms": float(np.percentile(values, 50)), "p99_ms": float(np.percentile(values, 99))}
        for minute, values in sorted(minutes.items())
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="soak duration")
    parser.add_argument("--probe", type=float, default=60.0, help="seconds of closed-loop load to find the maximum")
    parser.add_argument("--share", type=float, default=0.7, help="soak rate as a share of the maximum")
    parser.add_argument("--source", type=Path, default=ROOT / "data", help="demo data directory (built when missing)")
    parser.add_argument("--stream-max-len", type=int, default=None, help="the service's RANKER_STREAM_MAX_LEN (default: the service's default)")
    parser.add_argument("--name", default="soak", help="names the figures and plot written to bench/out/soak/ (NAME.json, NAME.png)")
    parser.add_argument(
        "--redis-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a redis.conf setting for the embedded Redis, e.g. auto-aof-rewrite-percentage=0 (repeatable)",
    )
    args = parser.parse_args()
    for name in THREAD_VARS:
        os.environ[name] = "1"

    from ranker.live.backend import EmbeddedRedis
    from ranker.retrieval.demo_index import ensure_demo_index

    ensure_demo_index(args.source, log=print)
    OUT.mkdir(parents=True, exist_ok=True)
    run_dir = OUT / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    (run_dir / "index").symlink_to((args.source / "index").resolve(), target_is_directory=True)
    redis_server = EmbeddedRedis(run_dir / "redis", dict(setting.split("=", 1) for setting in args.redis_setting))
    port = free_port()
    settings = {"RANKER_STREAM_MAX_LEN": str(args.stream_max_len)} if args.stream_max_len else None
    server = Gunicorn(run_dir, redis_server.url, "soak", workers=2, port=port, log_path=OUT / "gunicorn.log", settings=settings)
    memory_of = Memory(server, redis_server.url, "soak")
    traffic = Traffic(make_queries(200, seed=0), seed=0)
    try:
        print(f"gunicorn ready in {server.wait_ready(300):.0f} s")
        closed_loop(port, traffic, 10.0, 4)  # warm-up
        maximum = closed_loop(port, traffic, args.probe, 4)
        rate = args.share * maximum["requests_per_s"]
        print(
            f"maximum: {maximum['requests_per_s']:.1f} requests/s at 4 clients ({maximum['errors']} errors, p99 {maximum['p99_ms']:.0f} ms); "
            f"soak at {rate:.1f}/s for {args.minutes:g} min"
        )
        soak = open_loop(port, traffic, rate, args.minutes * 60.0, memory_of)
        bytes_per_ranking = memory_of.bytes_per_ranking()
    finally:
        server.stop()
        redis_server.close()
    minutes = per_minute(soak["samples"])
    memory = soak["memory"]
    first, last = memory[min(1, len(memory) - 1)][1], memory[-1][1]  # from the first 10 s sample: the workers have warmed up
    growth = {name: (last[name] - first[name]) / first[name] for name in ("gunicorn_mb", "redis_mb")}
    growth["total"] = (last["gunicorn_mb"] + last["redis_mb"]) / (first["gunicorn_mb"] + first["redis_mb"]) - 1.0
    p99s = [minute["p99_ms"] for minute in minutes]
    figures = {
        "machine": machine(),
        "maximum": maximum,
        "soak_rate_per_s": rate,
        "minutes": args.minutes,
        "requests": soak["requests"],
        "errors": len(soak["errors"]),
        "first_errors": [error for _, error in soak["errors"][:5]],
        "per_minute": minutes,
        "p99_ms_range": [min(p99s), max(p99s)] if p99s else None,
        "stream_max_len": args.stream_max_len,
        "redis_settings": args.redis_setting,
        "memory_start": first,
        "memory_end": last,
        "rss_growth": growth,
        "redis_bytes_per_ranking": bytes_per_ranking,
        "memory": memory,
    }
    (OUT / f"{args.name}.json").write_text(json.dumps(figures, indent=2))

    from ranker.evaluation.figures import new_figure, save_figure

    figure, axis = new_figure()
    middles = [m["minute"] - 0.5 for m in minutes]  # a minute's figures sit at its middle, on the same time axis as memory and forks
    axis.plot(middles, p99s, marker="o", label="p99 latency (ms)")
    axis.plot(middles, [m["p50_ms"] for m in minutes], marker=".", label="p50 latency (ms)")
    other = axis.twinx()
    times = [t / 60.0 for t, _ in memory]
    other.plot(times, [sample["gunicorn_mb"] for _, sample in memory], color="tab:gray", label="gunicorn RSS (MB)")
    other.plot(times, [sample["redis_mb"] for _, sample in memory], color="tab:brown", linestyle="--", label="Redis RSS (MB)")
    other.set_ylabel("resident memory (MB)")
    forks = [t / 60.0 for (t, sample), (_, before) in zip(memory[1:], memory) if sample["forks"] > before["forks"]]
    for index, at in enumerate(forks):  # Redis forked (an append-only file rewrite) within the 10 s before
        axis.axvline(at, color="tab:red", alpha=0.3, label="Redis fork (append-only file rewrite)" if index == 0 else None)
    other.set_ylim(bottom=0)
    axis.set_xlabel("minute of the soak")
    axis.set_ylabel("latency from the request's due time (ms)")
    cap = f", rankings stream capped at {args.stream_max_len:,}" if args.stream_max_len else ""
    axis.set_title(f"soak at {rate:.0f} requests/s ({args.share:.0%} of the maximum){cap}")
    handles = [handle for ax in (axis, other) for handle in ax.get_legend_handles_labels()[0]]
    axis.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, fontsize=8)
    save_figure(figure, OUT / f"{args.name}.png")

    print(f"\nsoak: {soak['requests']} requests at {rate:.1f}/s over {args.minutes:g} min; errors {len(soak['errors'])}")
    for minute in minutes:
        print(f"  minute {minute['minute']:>2}: {minute['requests']} requests, p50 {minute['p50_ms']:.1f} ms, p99 {minute['p99_ms']:.1f} ms")
    for name, label in (("gunicorn_mb", "gunicorn master + workers"), ("redis_mb", "Redis")):
        print(f"resident memory, {label}: {first[name]:.0f} MB -> {last[name]:.0f} MB ({growth[name]:+.1%})")
    print(f"resident memory, both: {growth['total']:+.1%} (target < +10%)")
    print(
        f"Redis: data {first['redis_data_mb']:.0f} MB -> {last['redis_data_mb']:.0f} MB; rankings stream {first['rankings']} -> {last['rankings']} entries "
        f"(cap {args.stream_max_len or 'default'}), {bytes_per_ranking / 1024:.1f} KB each; {last['forks'] - first['forks']} forks, "
        f"at minutes {', '.join(f'{at:.1f}' for at in forks) or '-'}; {last['aof_delayed_fsync'] - first['aof_delayed_fsync']} delayed fsyncs"
    )
    print(f"plot: {OUT / (args.name + '.png')}; figures: {OUT / (args.name + '.json')}")


if __name__ == "__main__":
    main()
