"""Memory benchmark: what `ranker serve` holds, process by process, after the requests a shop sends.

Prints figures; asserts nothing (targets are judged in bench/README.md).

    python bench/memory.py                 # 300 demo items with pictures, 2 workers, the learner beside them
    python bench/memory.py --items 2400

1. builds a demo catalog of ``--items`` items with their pictures into a fresh data directory (ONNX encoders; the
   graphs exported into ``--models-dir`` first when missing);
2. runs ``ranker serve`` on it (the production path: the gunicorn master, ``--workers`` workers, the learner and the
   embedded Redis), and sends text rankings, feedback, picture rankings and an item write through HTTP;
3. reads each process's resident memory (RSS), its proportional share (PSS: shared pages divided among the
   processes that map them) and what it alone holds (USS: private pages), and whether torch is mapped into it.

The index a worker holds is reported beside it (its files' size: faiss indexes and vectors are read whole).
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
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from ranker.catalog.demo import write_demo_catalog  # noqa: E402
from ranker.catalog.items import load_catalog  # noqa: E402
from ranker.client import ApiClient, free_port  # noqa: E402

OUT = ROOT / "bench" / "out"
MB = 1024 * 1024


def memory_of(pid: int) -> dict:
    """RSS, PSS and USS in MB, and whether torch's library is mapped, for one process."""
    process = psutil.Process(pid)
    full = process.memory_full_info()
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {
        "rss_mb": round(full.rss / MB, 1),
        "pss_mb": round(full.pss / MB, 1),
        "uss_mb": round(full.uss / MB, 1),
        "torch_mapped": "libtorch" in maps,
        "onnxruntime_mapped": "onnxruntime" in maps,
    }


def role_of(process: psutil.Process, master: int) -> str:
    command = " ".join(process.cmdline())
    if "ranker.cli learn" in command or " learn " in command:
        return "learner"
    if "redis-server" in command or "redis" in process.name():
        return "redis"
    if process.ppid() == master and "gunicorn" in command:
        return "worker"
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--ranks", type=int, default=300, help="text rank requests (new texts: query-cache misses)")
    parser.add_argument("--learn", action=argparse.BooleanOptionalAction, default=True, help="the learner beside the workers (as `ranker serve` runs)")
    parser.add_argument("--models-dir", type=Path, default=Path(os.environ.get("RANKER_MODELS_DIR") or OUT / "models"))
    parser.add_argument("--out", type=Path, default=OUT / "memory.json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    data_dir = work / "data"
    server = None
    try:
        catalog = write_demo_catalog(work / "catalog", seed=0, n_items=args.items, with_images=True)
        env = {name: value for name, value in os.environ.items() if not name.startswith("RANKER_") and name != "REDIS_URL"}
        env.update(RANKER_MODELS_DIR=str(args.models_dir), RANKER_RATE_LIMITS="0", RANKER_USER_KEY_SECRET="bench")
        build = [sys.executable, "-m", "ranker.cli", "index", "build", "--catalog", str(catalog), "--data-dir", str(data_dir)]
        subprocess.run(build, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
        index_mb = sum(path.stat().st_size for path in (data_dir / "index").iterdir() if path.is_file()) / MB
        port = free_port()
        command = [sys.executable, "-m", "ranker.cli", "serve", "--data-dir", str(data_dir), "--port", str(port), "--workers", str(args.workers)]
        command.append("--learn" if args.learn else "--no-learn")
        log = open(work / "serve.log", "w")
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        api = ApiClient(base, timeout_s=60)
        api.wait_ready(600, process=server)
        time.sleep(5)  # both workers booted (each loads its encoders and index before its first request)
        items = load_catalog(catalog, strict=True).items
        served = []
        for index in range(args.ranks):
            body = api.post("/v1/rank", {"user_id": f"user-{index % 50}", "query": {"text": f"{items[index % len(items)].title.lower()} no {index}"}})
            served.append(body)
        for body in served[:100]:
            api.post("/v1/feedback", {"ranking_id": body["ranking_id"], "events": [{"item_id": body["items"][0]["item_id"], "type": "click"}]})
        api.post(
            "/v1/feedback/batch",
            {"rankings": [{"ranking_id": b["ranking_id"], "events": [{"item_id": b["items"][1]["item_id"], "type": "click"}]} for b in served[100:200]]},
        )
        after_text = {}
        master = psutil.Process(server.pid)
        for child in master.children(recursive=True):
            if role_of(child, server.pid) == "worker":
                after_text[child.pid] = memory_of(child.pid)
        picture = base64.b64encode(Path(items[0].image).read_bytes()).decode()
        for index in range(20):
            api.post("/v1/rank", {"user_id": f"picture-{index}", "query": {"image": picture}})
        written = items[1].to_json()
        written.update(item_id="bench-memory-item", image="data:image/png;base64," + base64.b64encode(Path(items[1].image).read_bytes()).decode())
        api.post("/v1/items", {"items": [written]})
        time.sleep(2)
        processes = {"master": memory_of(server.pid)}
        for child in master.children(recursive=True):
            role = role_of(child, server.pid)
            entry = memory_of(child.pid)
            if role == "worker":
                entry["after_text_traffic"] = after_text.get(child.pid)
                processes[f"worker {child.pid}"] = entry
            elif role in ("learner", "redis"):
                processes[role] = entry
        results = {
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "items": args.items,
            "index_files_mb": round(index_mb, 1),
            "workers": args.workers,
            "learner": args.learn,
            "requests": f"{args.ranks} text ranks, 100 feedback requests, a batch of 100 rankings, 20 picture ranks, 1 item written with its picture",
            "processes": processes,
        }
        print(f"{args.items} items with pictures; index files {index_mb:.1f} MB; {results['requests']}")
        for name, entry in processes.items():
            extra = ""
            if entry.get("after_text_traffic"):
                extra = f" (after the text traffic only: RSS {entry['after_text_traffic']['rss_mb']} MB)"
            print(
                f"{name:16s} RSS {entry['rss_mb']:7.1f} MB  PSS {entry['pss_mb']:7.1f} MB  USS {entry['uss_mb']:7.1f} MB  torch mapped: {entry['torch_mapped']}{extra}"
            )
        worst = max((entry["rss_mb"] for name, entry in processes.items() if name.startswith("worker")), default=float("nan"))
        print(f"target: one API worker <= 300 MB resident plus its index ({index_mb:.1f} MB): {'met' if worst <= 300 + index_mb else 'NOT met'} ({worst} MB)")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
    finally:
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=120)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
