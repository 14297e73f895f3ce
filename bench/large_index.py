"""Catalogs past memory: the IVF-PQ text index at a million items, against exact search.

Prints figures; asserts nothing (targets are judged in bench/README.md).

    python bench/large_index.py                    # 1,000,000 vectors, 200 queries (~5 minutes on 2 cores)
    python bench/large_index.py --items 200000     # a smaller run

The vectors are synthetic, 384-d like MiniLM's, with the structure real sentence embeddings have rather than
uniform noise (which no index can beat exhaustive search on): a common direction every vector leans towards
(sentence embeddings are anisotropic), 40 broad topics, narrower ones around them (one per 50 items: 20,000 at a
million, so a query's 100 nearest items span several topics at every size; with a fixed 4,000 topics a million
items crowd 250 to a topic and the search gets easier as the catalog grows), and each item a noisy copy of its
narrow topic, L2-normalised. Queries are fresh draws from the same mixture. The script prints the cosine
statistics of the set (a random pair, a query's nearest and its 100th nearest item) so they can be set against real
embeddings.

Figures, for ``VectorIndex`` with ``auto`` (which picks IVF-PQ at this size; the index serving uses):
- build time (train + add, both cores);
- memory: FAISS's index (serialised size), the float16 copy of the vectors kept for re-scoring and features, the key
  arrays, and the growth of the process's resident memory over the build (the input vectors excluded);
- recall@100 of ``search(q, 100)`` against exact inner-product search over the same float32 vectors;
- query latency p50/p99, one query at a time on one thread (as a server worker runs it), at k = 100 and at k = 200
  (what the engine asks each channel for when a ranking takes 100 candidates).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ranker.retrieval.index import IndexConfig, VectorIndex  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
DIM = 384


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


class Mixture:
    """A common direction, broad topics, narrow topics around them; items are noisy copies of a narrow topic."""

    def __init__(self, rng: np.random.Generator, broad: int, narrow: int):
        common = unit(rng.standard_normal((1, DIM)).astype(np.float32))
        self.broad = unit(0.5 * common + unit(rng.standard_normal((broad, DIM)).astype(np.float32)))
        parents = rng.integers(broad, size=narrow)
        self.narrow = unit(self.broad[parents] + 0.8 * unit(rng.standard_normal((narrow, DIM)).astype(np.float32)))

    def draw(self, rng: np.random.Generator, n: int, chunk: int = 100_000) -> np.ndarray:
        out = np.empty((n, DIM), dtype=np.float32)
        for start in range(0, n, chunk):
            size = min(chunk, n - start)
            topics = rng.integers(len(self.narrow), size=size)
            noise = rng.standard_normal((size, DIM)).astype(np.float32) * np.float32(0.9 / np.sqrt(DIM))
            out[start : start + size] = unit(self.narrow[topics] + noise)
        return out


def exact_top(queries: np.ndarray, vectors: np.ndarray, k: int, chunk: int = 200_000) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` (scores, rows) by inner product, over the base in chunks."""
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_rows = np.full((len(queries), k), -1, dtype=np.int64)
    for start in range(0, len(vectors), chunk):
        scores = queries @ vectors[start : start + chunk].T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        merged_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, axis=1)], axis=1)
        merged_rows = np.concatenate([best_rows, top + start], axis=1)
        keep = np.argpartition(-merged_scores, k - 1, axis=1)[:, :k]
        best_scores, best_rows = np.take_along_axis(merged_scores, keep, axis=1), np.take_along_axis(merged_rows, keep, axis=1)
    order = np.argsort(-best_scores, axis=1)
    return np.take_along_axis(best_scores, order, axis=1), np.take_along_axis(best_rows, order, axis=1)


def timed_queries(index: VectorIndex, queries: np.ndarray, k: int) -> tuple[dict, np.ndarray]:
    for query in queries[:10]:
        index.search(query, k)  # warm-up
    samples, found = [], []
    for query in queries:
        started = time.perf_counter()
        _, keys = index.search(query, k)
        samples.append(time.perf_counter() - started)
        found.append(keys[0])
    ms = 1000.0 * np.asarray(samples)
    return {"p50": round(float(np.percentile(ms, 50)), 2), "p99": round(float(np.percentile(ms, 99)), 2)}, np.stack(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--nprobe", type=int, default=IndexConfig().ivf_nprobe, help="IVF lists probed per query")
    parser.add_argument("--index-type", default="auto", help="auto (IVF-PQ from 500,000 items), or ivfpq to force it on a smaller run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT / "large_index.json")
    args = parser.parse_args()
    threads = faiss.omp_get_max_threads()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; faiss {faiss.__version__}, {threads} threads for the build")

    rng = np.random.default_rng(args.seed)
    mixture = Mixture(rng, broad=40, narrow=max(args.items // 50, 100))  # 50 items a narrow topic at every size: a query's 100 nearest span topics
    started = time.perf_counter()
    vectors = mixture.draw(rng, args.items)
    queries = mixture.draw(rng, args.queries)
    keys = np.arange(args.items, dtype=np.int64)
    print(f"data: {args.items:,} x {DIM} synthetic vectors in {time.perf_counter() - started:.0f} s", flush=True)

    exact_scores, exact_rows = exact_top(queries, vectors, 100)
    pairs = rng.integers(args.items, size=(20_000, 2))
    stats = {
        "random_pair_cosine_mean": round(float(np.mean(np.sum(vectors[pairs[:, 0]] * vectors[pairs[:, 1]], axis=1))), 3),
        "query_top1_cosine_mean": round(float(exact_scores[:, 0].mean()), 3),
        "query_top100_cosine_mean": round(float(exact_scores[:, 99].mean()), 3),
    }
    print(
        f"data: cosine of a random pair {stats['random_pair_cosine_mean']}, a query's nearest {stats['query_top1_cosine_mean']}, "
        f"its 100th nearest {stats['query_top100_cosine_mean']}",
        flush=True,
    )

    config = IndexConfig(index_type=args.index_type, ivf_nprobe=args.nprobe)
    before = rss_mb()
    started = time.perf_counter()
    index = VectorIndex(DIM, config)
    index.add(keys, vectors)
    build_s = time.perf_counter() - started
    grown = rss_mb() - before
    buffer = faiss.serialize_index(index._index)
    memory = {
        "faiss_index_mb": round(len(buffer) / 2**20, 1),
        "kept_vectors_mb": round(index._vectors.nbytes / 2**20, 1),
        "key_arrays_mb": round((index._row_keys.nbytes + index._alive.nbytes) / 2**20, 1),
        "process_growth_mb": round(grown, 1),
    }
    del buffer
    print(
        f"build: {index.kind}, {index._index.nlist} lists, {index._index.pq.M} x {index._index.pq.nbits}-bit codes; {build_s:.1f} s on {threads} threads; "
        f"memory: FAISS {memory['faiss_index_mb']} MB, float16 vectors {memory['kept_vectors_mb']} MB, keys {memory['key_arrays_mb']} MB; "
        f"the process grew {memory['process_growth_mb']} MB",
        flush=True,
    )

    faiss.omp_set_num_threads(1)  # one query at a time on one thread, as a server worker runs it
    latency_100, found_100 = timed_queries(index, queries, 100)
    latency_200, _ = timed_queries(index, queries, 200)
    hits = sum(len(set(found.tolist()) & set(truth.tolist())) for found, truth in zip(found_100, exact_rows))
    recall_100 = hits / exact_rows.size
    print(f"recall@100 against exact search: {recall_100:.3f} (nprobe {args.nprobe}, re-scoring {config.ivfpq_rerank} x k)")
    print(f"query (one thread): k=100 p50 {latency_100['p50']} ms, p99 {latency_100['p99']} ms; k=200 p50 {latency_200['p50']} ms, p99 {latency_200['p99']} ms")

    total_mb = memory["faiss_index_mb"] + memory["kept_vectors_mb"] + memory["key_arrays_mb"]
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "items": args.items,
        "dim": DIM,
        "queries": args.queries,
        "data": stats,
        "index": {
            "kind": index.kind,
            "lists": int(index._index.nlist),
            "pq_m": int(index._index.pq.M),
            "pq_bits": int(index._index.pq.nbits),
            "nprobe": args.nprobe,
        },
        "build_s": round(build_s, 1),
        "build_threads": threads,
        "memory": memory,
        "recall_at_100": round(recall_100, 4),
        "query_ms_k100": latency_100,
        "query_ms_k200": latency_200,
        "targets": {
            "memory_le_1gb": bool(max(total_mb, memory["process_growth_mb"]) <= 1024),
            "recall_at_100_ge_0.9": bool(recall_100 >= 0.9),
            "query_p50_le_5ms": bool(latency_100["p50"] <= 5.0),
        },
    }
    print(f"targets (1M items: memory <= 1 GB, recall@100 >= 0.9, query p50 <= 5 ms): {results['targets']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"figures written to {args.out}")


if __name__ == "__main__":
    main()
