"""Text encoder benchmark: MiniLM on ONNX Runtime (int8) against fp32 torch, in the same run.

Prints figures; asserts nothing (targets are judged in bench/README.md).

    python bench/encoders.py                # 300 distinct queries, 20,000 titles for batch throughput
    python bench/encoders.py --titles 5000  # shorter

1. one query at a time on one thread (the serving case): p50/p99 per encode,
   torch fp32 (the traced model, as served before) and ONNX Runtime, over the
   same distinct queries, interleaved so both see the same machine load;
2. cosine of the ONNX rows to the fp32 torch rows on the demo titles and queries;
3. batch throughput on every core (the index build's encode): titles/s, and the
   100k-title encode time it implies.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from ranker.catalog.demo import generate_items
from ranker.retrieval.encoders import TextEncoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--titles", type=int, default=20_000)
    args = parser.parse_args()
    cache = Path(os.environ.get("RANKER_MODELS_DIR") or tempfile.mkdtemp(prefix="bench-models-"))
    torch.set_num_threads(1)
    fast, slow = TextEncoder(device="cpu", backend="onnx", cache_dir=cache), TextEncoder(device="cpu", backend="torch")
    print(f"onnx runtime: {fast.runtime} ({fast.onnx_path}); torch {torch.__version__}, {os.cpu_count()} cores")
    items = generate_items(max(args.titles, 2_000), seed=1)
    titles = [item.text_for_embedding() for item in items]
    queries = list(dict.fromkeys(" ".join(item.title.lower().split()[1:]) for item in items))[: args.queries]  # distinct, query-like
    for encoder in (fast, slow):
        encoder.encode(queries[:10], progress=False)
    timings: dict[str, list[float]] = {"torch": [], "onnx": []}
    for query in queries:
        for name, encoder in (("torch", slow), ("onnx", fast)):
            started = time.perf_counter()
            encoder.encode([query], progress=False)
            timings[name].append(time.perf_counter() - started)
    p50 = {name: float(np.median(samples)) * 1000 for name, samples in timings.items()}
    for name, samples in timings.items():
        print(f"single query, 1 thread, {name:5s}: p50 {p50[name]:.2f} ms, p99 {np.percentile(samples, 99) * 1000:.2f} ms ({len(samples)} distinct queries)")
    print(f"speed-up (torch p50 / onnx p50): {p50['torch'] / p50['onnx']:.2f}x")
    check = titles[:2_000] + queries
    cosines = np.sum(fast.encode(check, progress=False) * slow.encode_torch(check), axis=1)
    print(f"cosine to fp32 torch over {len(check)} texts: min {cosines.min():.4f}, p1 {np.percentile(cosines, 1):.4f}, mean {cosines.mean():.4f}")
    torch.set_num_threads(os.cpu_count() or 1)
    batch = TextEncoder(device="cpu", backend="onnx", cache_dir=cache)  # a session with every core
    started = time.perf_counter()
    batch.encode(titles[: args.titles], progress=False)
    seconds = time.perf_counter() - started
    rate = args.titles / seconds
    print(
        f"batch encode, ONNX, {torch.get_num_threads()} threads: {args.titles} titles in {seconds:.1f} s = {rate:.0f} titles/s -> 100k titles in {100_000 / rate:.0f} s"
    )
    started = time.perf_counter()
    slow.encode(titles[:2_000], progress=False)
    torch_rate = 2_000 / (time.perf_counter() - started)
    print(f"batch encode, torch fp32, {torch.get_num_threads()} threads: {torch_rate:.0f} titles/s -> 100k titles in {100_000 / torch_rate:.0f} s")


if __name__ == "__main__":
    main()
