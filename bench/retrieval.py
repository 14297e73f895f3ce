"""Retrieval benchmark: build throughput, query latency, ANN recall and demo relevance.

Prints figures; asserts nothing (targets are judged in bench/README.md).

    python bench/retrieval.py                      # the full run (10k and 100k items)
    python bench/retrieval.py --sizes 2000 --quick # a smoke run

Figures:
1. build throughput (items/s) on generated catalogs: text only at every size,
   text+image at the smallest size (rendering the pictures is not counted);
2. query latency p50/p99 at the largest size, encode + search, for text and
   image queries. Encoding 100k pictures takes this machine ~30 minutes, so
   the image index at the largest size holds the real picture vectors of the
   smallest catalog repeated with small jitter: the latency of the graph
   search depends on the count and dimension, not on which pictures they are;
3. recall@100 of the approximate (HNSW) text index against exact search;
4. relevance on the demo catalog: for each category, how many of the top 10
   for a text query naming it are in that category (target >= 8), as
   ``ranker index build`` now serves it (learned bridge and calibrated
   fusion, ``bridge``) and with the former fusion (ImageNet-label bridge, raw
   cosines, ``labels-raw``). ``--only relevance`` runs this figure alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ranker.catalog.demo import generate_items, write_demo_catalog  # noqa: E402
from ranker.catalog.items import load_catalog  # noqa: E402
from ranker.retrieval.bridge import refit_bridge  # noqa: E402
from ranker.retrieval.encoders import load_encoders  # noqa: E402
from ranker.retrieval.engine import SearchEngine  # noqa: E402
from ranker.retrieval.index import VectorIndex  # noqa: E402

QUERIES = [
    "red running shoes",
    "leather office chair",
    "blue ceramic mug",
    "waterproof hiking tent",
    "wireless headphones",
    "wool sweater",
    "stainless steel kettle",
    "floral summer dress",
    "yoga mat non slip",
    "gold wrist watch",
    "linen sofa",
    "cast iron pan",
    "polarised sunglasses",
    "kids bicycle",
    "glass vase",
    "cotton t-shirt black",
    "denim jacket",
    "travel backpack",
    "desk lamp",
    "porcelain teapot",
]


def percentile_ms(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples) * 1000.0, q))


def time_queries(fn, queries, repeats: int) -> list[float]:
    for query in queries[:3]:
        fn(query)  # warm-up
    samples = []
    for _ in range(repeats):
        for query in queries:
            started = time.perf_counter()
            fn(query)
            samples.append(time.perf_counter() - started)
    return samples


def bench_build(encoders, sizes: list[int], image_items: int, seed: int) -> tuple[dict, dict[int, SearchEngine], SearchEngine]:
    figures: dict[str, dict] = {}
    engines: dict[int, SearchEngine] = {}
    for size in sizes:
        items = generate_items(size, seed=seed)
        engine = SearchEngine(encoders, None)
        started = time.perf_counter()
        engine.build(items, progress=True)
        seconds = time.perf_counter() - started
        figures[f"text_only_{size}"] = {
            "items": size,
            "seconds": round(seconds, 1),
            "items_per_s": round(size / seconds, 1),
            "index": engine.indexes["text"].kind,
        }
        print(f"build text-only {size:>7} items: {seconds:7.1f} s  {size / seconds:8.1f} items/s  ({engine.indexes['text'].kind})", flush=True)
        engines[size] = engine
    folder = Path(tempfile.mkdtemp(prefix="bench-pictures-"))  # kept: image queries read these files later
    items = generate_items(image_items, seed=seed, images_dir=folder / "images")
    items = [item.model_copy(update={"image": str(folder / item.image)}) for item in items]
    engine = SearchEngine(encoders, None)
    started = time.perf_counter()
    engine.build(items, progress=True)
    seconds = time.perf_counter() - started
    figures[f"text_image_{image_items}"] = {"items": image_items, "seconds": round(seconds, 1), "items_per_s": round(image_items / seconds, 1)}
    print(f"build text+image {image_items:>6} items: {seconds:7.1f} s  {image_items / seconds:8.1f} items/s", flush=True)
    return figures, engines, engine


def bench_latency(encoders, engine: SearchEngine, picture_engine: SearchEngine, repeats: int, seed: int) -> dict:
    size = len(engine)
    # Fill the big engine's picture indexes (see module docstring), then time image queries end to end.
    rng = np.random.default_rng(seed)
    base_image = picture_engine.indexes["image"]
    base_bridge = picture_engine.indexes["image_in_text"]
    source_keys = base_image.keys()
    picks = source_keys[rng.integers(0, len(source_keys), size)]
    image_vectors, _ = base_image.vectors_for(picks)
    bridge_vectors, _ = base_bridge.vectors_for(picks)
    keys = engine.indexes["text"].keys()
    for name, vectors in (("image", image_vectors), ("image_in_text", bridge_vectors)):
        jittered = vectors + rng.normal(scale=0.02, size=vectors.shape).astype(np.float32)
        jittered /= np.linalg.norm(jittered, axis=1, keepdims=True)
        index = VectorIndex(vectors.shape[1], engine.index_config)
        started = time.perf_counter()
        index.add(keys, jittered)
        print(f"  filled {name} index with {size} vectors in {time.perf_counter() - started:.1f} s ({index.kind})", flush=True)
        engine.indexes[name] = index
    text_samples = time_queries(lambda query: engine.search(query, k=100), QUERIES, repeats)
    encode_only = time_queries(lambda query: encoders.encode_texts([query], progress=False), QUERIES, repeats)
    pictures = [picture_engine.store.item_for_key(int(key)).image for key in source_keys[:20]]
    image_samples = time_queries(lambda picture: engine.search(image=picture, k=100), pictures, max(1, repeats // 2))
    figures = {
        "items": size,
        "text_query_ms": {"p50": percentile_ms(text_samples, 50), "p99": percentile_ms(text_samples, 99)},
        "text_encode_ms": {"p50": percentile_ms(encode_only, 50), "p99": percentile_ms(encode_only, 99)},
        "image_query_ms": {"p50": percentile_ms(image_samples, 50), "p99": percentile_ms(image_samples, 99)},
    }
    print(
        f"text query  (encode + search, k=100, {size} items): p50 {figures['text_query_ms']['p50']:.1f} ms  p99 {figures['text_query_ms']['p99']:.1f} ms"
        f"  [encode alone p50 {figures['text_encode_ms']['p50']:.1f} ms]"
    )
    print(f"image query (decode + encode + search, k=100):     p50 {figures['image_query_ms']['p50']:.1f} ms  p99 {figures['image_query_ms']['p99']:.1f} ms")
    return figures


def bench_recall(encoders, engine: SearchEngine, n_queries: int, seed: int) -> dict:
    """Recall@100 of the engine's text index (HNSW at 100k) against exact search on the same vectors."""
    approx = engine.indexes["text"]
    exact = VectorIndex(approx.dim, replace(engine.index_config, index_type="flat"))
    keys = approx.keys()
    vectors, _ = approx.vectors_for(keys)
    exact.add(keys, vectors)
    rng = np.random.default_rng(seed)
    texts = [engine.store.item_for_key(int(key)).title for key in keys[rng.integers(0, len(keys), n_queries // 2)]]
    queries = np.concatenate([encoders.encode_texts(QUERIES * 3, progress=False)[: n_queries - len(texts)], encoders.encode_texts(texts, progress=False)])
    _, found = approx.search(queries, 100)
    _, truth = exact.search(queries, 100)
    recall = float(np.mean([len(set(a) & set(b)) / 100 for a, b in zip(found, truth)]))
    print(f"recall@100 ({approx.kind} vs exact, {len(keys)} items, {len(queries)} queries): {recall:.4f}")
    return {"items": len(keys), "index": approx.kind, "queries": len(queries), "recall_at_100": round(recall, 4)}


def bench_relevance(encoders, seed: int) -> dict:
    figures = {}
    with tempfile.TemporaryDirectory() as folder:
        catalog = write_demo_catalog(Path(folder), seed=seed, n_items=2400, with_images=True)
        engine = SearchEngine(encoders, None)
        engine.build(load_catalog(catalog, strict=True).items, progress=True)
        for setup in ("labels-raw", "bridge"):
            if setup == "bridge":
                state = refit_bridge(engine, progress=True)
                print(f"bridge: {state['serving']} ({state['reason']})")
            per_category = {}
            for category in engine.store.categories():
                results = engine.search(category, k=10)
                per_category[category] = sum(candidate.item.category == category for candidate in results)
            passing = sum(hits >= 8 for hits in per_category.values())
            mean = sum(per_category.values()) / (10 * len(per_category))
            print(f"relevance on the demo catalog ({setup}): {passing}/{len(per_category)} categories with >= 8 of top 10 in category, mean {mean:.3f}")
            for category, hits in sorted(per_category.items(), key=lambda pair: pair[1])[:5]:
                print(f"  {hits:>2}/10  {category}")
            figures[setup] = {"categories": len(per_category), "passing": passing, "mean_precision_at_10": round(mean, 3), "hits_per_category": per_category}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="catalog sizes for text-only builds")
    parser.add_argument("--image-items", type=int, default=10_000, help="catalog size for the text+image build")
    parser.add_argument("--repeats", type=int, default=5, help="passes over the 20 queries for latency")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--only", choices=["relevance"], help="run one figure alone")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "retrieval.json")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.image_items, args.repeats = [1_000, 3_000], 300, 2
    encoders = load_encoders("default", "auto")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {encoders.text.device}"
    )
    if args.only == "relevance":
        results = {"date": time.strftime("%Y-%m-%d"), "relevance": bench_relevance(encoders, args.seed)}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_name("retrieval-relevance.json").write_text(json.dumps(results, indent=2))
        return
    builds, engines, picture_engine = bench_build(encoders, args.sizes, args.image_items, args.seed)
    largest = engines[max(engines)]
    results = {
        "date": time.strftime("%Y-%m-%d"),
        "build": builds,
        "latency": bench_latency(encoders, largest, picture_engine, args.repeats, args.seed),
        "recall": bench_recall(encoders, largest, 200, args.seed),
        "relevance": bench_relevance(encoders, args.seed),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"figures written to {args.out}")


if __name__ == "__main__":
    main()
