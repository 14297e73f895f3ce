"""`ranker serve` is production-grade by default (issue 32): the command becomes a gunicorn master (same pid, so a
supervisor's signal reaches it) with a worker per core, the workers import no torch, and SIGTERM stops the workers
and the embedded Redis. `--dev` is Flask's development server, one process. Real processes over HTTP."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

from ranker.client import ApiClient, free_port

ROOT = Path(__file__).resolve().parents[2]
THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def start_serve(data_dir: Path, *args: str) -> tuple[subprocess.Popen, str, Path]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RANKER_") and k != "REDIS_URL"}
    env.update(THREADS, RANKER_USER_KEY_SECRET="s", RANKER_MODELS_DIR=os.environ["RANKER_MODELS_DIR"])
    log = data_dir.parent / f"serve-{port}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "ranker.cli", "serve", "--data-dir", str(data_dir), "--port", str(port), "--no-learn", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(log, "w"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        ApiClient(base, timeout_s=5).wait_ready(240, process=process)
    except Exception as exc:
        process.kill()
        raise AssertionError(f"{exc}: {log.read_text()[-3000:]}") from None
    return process, base, log


def maps_torch(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def rank_once(base: str) -> int:
    body = json.dumps({"user_id": "u1", "query": {"text": "red running shoes"}, "num_results": 3}).encode()
    request = urllib.request.Request(f"{base}/v1/rank", data=body, headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=60) as answer:
        return answer.status


def gunicorn_workers(master: psutil.Process) -> list[psutil.Process]:
    """The master's forked workers (the embedded Redis is its child too)."""
    return [child for child in master.children() if "gunicorn" in " ".join(child.cmdline())]


def test_the_default_worker_count_is_one_per_core(monkeypatch):
    monkeypatch.delenv("RANKER_WORKERS", raising=False)
    done = subprocess.run(
        [sys.executable, "-c", "import runpy; print(runpy.run_path('api/gunicorn_conf.py')['workers'])"],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "RANKER_WORKERS"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.strip().splitlines()[-1]) == len(os.sched_getaffinity(0))


def test_ranker_serve_is_a_gunicorn_master_whose_workers_rank_without_torch_and_sigterm_stops_everything(demo_engine, tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(demo_engine.data_dir, data_dir)
    process, base, log = start_serve(data_dir, "--workers", "2")
    workers: list[psutil.Process] = []
    redis_pid = -1
    try:
        master = psutil.Process(process.pid)
        assert "gunicorn" in " ".join(master.cmdline())  # exec'd in place: the pid a supervisor holds is the master's
        workers = gunicorn_workers(master)
        assert len(workers) == 2
        assert rank_once(base) == 200
        assert not any(maps_torch(worker.pid) for worker in workers)
        redis_pid = json.loads((data_dir / "redis" / "owner.json").read_text())["redis_pid"]
        assert psutil.pid_exists(redis_pid)
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=120)
    assert code == 0, log.read_text()[-3000:]
    deadline = time.monotonic() + 10
    while any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in [redis_pid, *(w.pid for w in workers)]):
        assert time.monotonic() < deadline, "a worker or the embedded Redis outlived the master"
        time.sleep(0.2)


def test_dev_runs_flasks_server_in_one_process(demo_engine, tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(demo_engine.data_dir, data_dir)
    process, base, log = start_serve(data_dir, "--dev")
    try:
        assert "gunicorn" not in " ".join(psutil.Process(process.pid).cmdline())
        assert rank_once(base) == 200
        assert not gunicorn_workers(psutil.Process(process.pid))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
