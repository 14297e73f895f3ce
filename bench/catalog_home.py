"""The catalog's home (issue 29): a shop's catalog written through the API, with no command run afterwards.

    python bench/catalog_home.py                       # every part (about 25 minutes on 2 shared cores)
    python bench/catalog_home.py --only shop           # the picture-only items and the lost Redis
    python bench/catalog_home.py --only fit            # rank latency while a 10k-pair bridge fit runs
    python bench/catalog_home.py --only categories     # a named category as a boost or a wall, on the demo shop

All real parts on loopback: Debian's ``redis-server`` (append-only file on), ``ranker serve`` with its default
settings (the learner and the maintenance worker beside it), the real encoders. Figures:

1. **shop**: the issue's catalog, 24 categories x 15 items (demo seed 12), 3 of each 15 with their picture, a
   neutral title ("Article NNNN") and the category "General", written through ``POST /v1/items`` into an
   empty data directory. Every 15 s for 5 minutes after the last write, for each category a text query naming
   it ("backpacks"): the share of its 3 picture-only items in the top 20 of the greedy ``/v1/rank`` slate (what
   the shop shows) and in the top 20 of the retrieval order (the candidates by their retrieval score, before
   the policy orders them); and when ``/readyz`` first says the learned bridge serves. Target >= 0.70 within
   5 minutes.
2. **lost Redis**: then the server is stopped (SIGTERM), Redis loses its data (``FLUSHALL``), the server is
   started again: ``/readyz``'s item count before and after, and the share of the items found by their own
   title in the top 10. Target: the same count, every item.
3. **fit**: a data directory of 10,000 items with pictures (the shop's real vectors, repeated with 2% noise,
   the shop's titles and categories) served by ``ranker serve --no-learn --no-maintain``; rank p50 over
   HTTP (sequential, query embeddings cached) before, while ``ranker maintain --once`` fits the bridge on
   the 10,000 pairs (the fit window: from its "fitting" log line to its "bridge:" line), and after.
   Target: <= 20% added to p50 while the fit runs.
4. **categories**: the demo shop (2,400 items, seed 0, the bridge fitted as ``ranker index build`` does); for
   the 24 category names and the 257 labelled queries that name a category
   (``tests/retrieval/data/labelled_queries.jsonl``), precision@10 of the retrieval order in the named
   categories with a named category as a wall (``RANKER_CATEGORY_MATCH=filter``, the former behaviour) and as
   a boost (the default); and the demo text precision@10 (``bench/retrieval.py``'s relevance figure).

Writes ``bench/out/catalog_home/result.json``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ranker.client import ApiClient, free_port  # noqa: E402

OUT = ROOT / "bench" / "out" / "catalog_home"
THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
PER_CATEGORY, PICTURE_ONLY = 15, 3
WINDOW_S, EVERY_S = 300.0, 15.0


class Redis:
    """Debian's redis-server on a unix socket, append-only file on."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.socket = folder / "redis.sock"
        self.process = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", str(self.socket), "--dir", str(folder), "--save", "", "--appendonly", "yes"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        while not self.socket.exists():
            time.sleep(0.05)
        self.url = f"unix://{self.socket}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


class Server:
    """``ranker serve`` in its own process (default settings unless ``args`` say otherwise)."""

    def __init__(self, data_dir: Path, redis_url: str, log_name: str, *args: str):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("RANKER_") and k != "REDIS_URL"}
        env.update(THREADS, REDIS_URL=redis_url, RANKER_RATE_LIMITS="0")  # queries as fast as the CPU allows, not abuse
        self.log = open(OUT / log_name, "w")
        command = [sys.executable, "-m", "ranker.cli", "serve", "--data-dir", str(data_dir), "--port", str(self.port), *args]
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        ApiClient(self.base, timeout_s=5).wait_ready(600, process=self.process, poll_s=0.5)
        self.api = ApiClient(self.base, timeout_s=600)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=300)
        self.log.close()


# ------------------------------------------------------------------ 1 and 2
def the_shop(folder: Path) -> tuple[list, dict[str, set[str]]]:
    """24 categories x 15 items, 3 of each with a neutral title under "General" (their true category kept aside)."""
    from ranker.catalog.demo import generate_items

    items = generate_items(1200, seed=12, images_dir=folder / "images")
    taken: dict[str, list] = defaultdict(list)
    for item in items:
        if len(taken[item.category]) < PER_CATEGORY:
            taken[item.category].append(item)
    shop, hidden = [], defaultdict(set)
    number = 0
    for category, chosen in taken.items():
        for index, item in enumerate(chosen):
            doc = item.to_json()
            doc["image"] = "data:image/png;base64," + base64.b64encode((folder / item.image).read_bytes()).decode()
            if index >= PER_CATEGORY - PICTURE_ONLY:
                number += 1
                doc.update(title=f"Article {number:04d}", category="General", brand="", attributes={}, description="")
                hidden[category].add(item.item_id)
            shop.append(doc)
    return shop, hidden


def picture_only_shares(api: ApiClient, hidden: dict[str, set[str]], *, parse_query: bool = True) -> dict[str, float]:
    """Mean over categories of the share of its picture-only items in the slate's top 20 and the retrieval top 20."""
    slate_shares, retrieval_shares = [], []
    for category, item_ids in hidden.items():
        query = {"user_id": "bench", "query": {"text": category.lower()}, "greedy": True, "parse_query": parse_query}
        slate = api.post("/v1/rank", {**query, "num_results": 20})["items"]
        everything = api.post("/v1/rank", {**query, "num_results": 100, "num_candidates": 100})["items"]
        by_retrieval = sorted(everything, key=lambda item: -item["retrieval_score"])[:20]
        slate_shares.append(len(item_ids & {item["item_id"] for item in slate}) / len(item_ids))
        retrieval_shares.append(len(item_ids & {item["item_id"] for item in by_retrieval}) / len(item_ids))
    return {"slate_top20": round(float(np.mean(slate_shares)), 3), "retrieval_top20": round(float(np.mean(retrieval_shares)), 3)}


def found_by_title(api: ApiClient, shop: list[dict]) -> dict[str, float]:
    """The share of the items found by their own title: in the greedy slate's top 10, and in the retrieval top 10."""
    in_slate = in_retrieval = 0
    for doc in shop:
        query = {"user_id": "bench", "query": {"text": doc["title"]}, "greedy": True, "parse_query": False}
        slate = api.post("/v1/rank", {**query, "num_results": 10})["items"]
        everything = api.post("/v1/rank", {**query, "num_results": 100, "num_candidates": 100})["items"]
        in_slate += doc["item_id"] in {item["item_id"] for item in slate}
        in_retrieval += doc["item_id"] in {item["item_id"] for item in sorted(everything, key=lambda item: -item["retrieval_score"])[:10]}
    return {"slate_top10": round(in_slate / len(shop), 3), "retrieval_top10": round(in_retrieval / len(shop), 3)}


def bench_shop() -> dict:
    from ranker.live.backend import connect

    folder = OUT / "shop"
    shop, hidden = the_shop(folder)
    for old in ("redis", "shop-data"):  # an empty data directory and an empty Redis
        shutil.rmtree(OUT / old, ignore_errors=True)
    redis_server = Redis(OUT / "redis")
    data_dir = OUT / "shop-data"
    result: dict = {"items": len(shop), "picture_only": sum(len(ids) for ids in hidden.values())}
    server = Server(data_dir, redis_server.url, "serve-shop.log")
    try:
        started = time.time()
        for start in range(0, len(shop), 60):
            server.api.post("/v1/items", {"items": shop[start : start + 60]})
        written = time.time()
        result["write_s"] = round(written - started, 1)
        print(f"{len(shop)} items written through POST /v1/items in {result['write_s']} s")
        timeline, learned_at = [], None
        while time.time() - written <= WINDOW_S:
            ready = server.api.get("/readyz")
            bridge = ready["catalog"]["bridge"]
            if learned_at is None and bridge["serving"] == "learned":
                learned_at = time.time() - written
            shares = picture_only_shares(server.api, hidden)
            timeline.append({"s_after_write": round(time.time() - written, 1), "bridge": bridge["serving"], **shares})
            print(f"  {timeline[-1]}")
            time.sleep(max(0.0, EVERY_S - (time.time() - written - timeline[-1]["s_after_write"])))
        result["timeline"] = timeline
        result["learned_bridge_serving_s_after_write"] = round(learned_at, 1) if learned_at is not None else None
        result["at_5_minutes"] = timeline[-1]
        result["at_5_minutes_parse_query_false"] = picture_only_shares(server.api, hidden, parse_query=False)
        before = server.api.get("/readyz")
        result["readyz_before"] = {"items": before["items"], "indexed": before["catalog"]["indexed"]}
        result["found_by_title_before"] = found_by_title(server.api, shop)
    finally:
        server.stop()
    # 2. Redis loses its data; the server starts again
    connect(redis_server.url).flushall()
    restarted_at = time.time()
    again = Server(data_dir, redis_server.url, "serve-shop-restarted.log")
    try:
        result["restart_s"] = round(time.time() - restarted_at, 1)
        after = again.api.get("/readyz")
        result["readyz_after_flushall"] = {"items": after["items"], "indexed": after["catalog"]["indexed"], "bridge": after["catalog"]["bridge"]["serving"]}
        result["found_by_title_after_flushall"] = found_by_title(again.api, shop)
    finally:
        again.stop()
        redis_server.stop()
    print(json.dumps({k: v for k, v in result.items() if k != "timeline"}, indent=2))
    return result


# ------------------------------------------------------------------ 3
def ten_thousand_pairs(source: Path, target: Path, n_items: int, seed: int = 0) -> None:
    """A data directory of ``n_items`` items with pictures: the shop's real vectors repeated with 2% noise."""
    from ranker.retrieval.encoders import load_encoders
    from ranker.retrieval.engine import EmbeddedItems, SearchEngine

    encoders = load_encoders("default", "cpu")
    shop = SearchEngine(encoders, source, reconcile=False)
    keys = np.sort(shop.store.keys())
    base = [shop.store.item_for_key(int(key)) for key in keys]
    vectors = {name: shop.indexes[name].vectors_for(keys)[0] for name in ("text", "image", "image_in_text")}
    rng = np.random.default_rng(seed)
    shutil.rmtree(target, ignore_errors=True)
    engine = SearchEngine(encoders, target)

    def noisy(rows: np.ndarray, name: str) -> np.ndarray:
        jittered = vectors[name][rows] + rng.normal(0, 0.02, (len(rows), vectors[name].shape[1])).astype(np.float32)
        return jittered / np.linalg.norm(jittered, axis=1, keepdims=True)

    for start in range(0, n_items, 1000):
        rows = np.arange(start, min(start + 1000, n_items)) % len(base)
        items = [base[row].model_copy(update={"item_id": f"x{start + offset:05d}"}) for offset, row in enumerate(rows)]
        engine.insert_embedded(EmbeddedItems(items, noisy(rows, "text"), list(range(len(rows))), noisy(rows, "image"), noisy(rows, "image_in_text")))
    engine.save(encoder_spec="default")
    print(f"{len(engine)} items with pictures under {target}")


def bench_fit(n_items: int) -> dict:
    source = OUT / "shop-data"
    if not (source / "index" / "manifest.json").exists():
        raise SystemExit("run the shop part first (--only shop): the 10k catalog repeats its real vectors")
    target = OUT / "fit-data"
    ten_thousand_pairs(source, target, n_items)
    shutil.rmtree(OUT / "fit-redis", ignore_errors=True)
    redis_server = Redis(OUT / "fit-redis")
    server = Server(target, redis_server.url, "serve-fit.log", "--no-learn", "--no-maintain")
    queries = [f"{word} {noun}" for word in ("red", "black", "leather", "cheap", "small") for noun in ("backpack", "mug", "sneakers", "lamp", "dress", "tent")]
    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def rank_loop() -> None:
        index = 0
        while not stop.is_set():
            started = time.perf_counter()
            server.api.post("/v1/rank", {"user_id": f"u{index % 50}", "query": {"text": queries[index % len(queries)]}, "num_results": 10})
            samples.append((time.time(), (time.perf_counter() - started) * 1000))
            index += 1

    try:
        for query in queries:  # warm the query cache: the figure is the rank path, not the encoder
            server.api.post("/v1/rank", {"user_id": "warm", "query": {"text": query}})
        thread = threading.Thread(target=rank_loop, daemon=True)
        thread.start()
        time.sleep(60)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RANKER_") and k != "REDIS_URL"}
        env.update(THREADS)
        marks: dict[str, float] = {}
        maintain = subprocess.Popen(
            [sys.executable, "-m", "ranker.cli", "maintain", "--once", "--data-dir", str(target), "--redis-url", redis_server.url],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        launched = time.time()
        with open(OUT / "maintain-fit.log", "w") as log:
            for line in maintain.stdout:
                log.write(line)
                if "fitting the bridge and the calibration" in line:
                    marks.setdefault("fit_started", time.time())
                if "bridge: " in line and "published" in line:
                    marks.setdefault("fit_done", time.time())
        maintain.wait()
        time.sleep(30)
        ready = server.api.get("/readyz")
        stop.set()
        thread.join(timeout=60)
    finally:
        server.stop()
        redis_server.stop()

    def quantiles(low: float, high: float) -> tuple[float, float, int]:
        window = [ms for at, ms in samples if low <= at < high]
        if not window:
            return float("nan"), float("nan"), 0
        return round(statistics.median(window), 2), round(float(np.percentile(window, 99)), 1), len(window)

    before, before_p99, n_before = quantiles(launched - 55, launched)
    during, during_p99, n_during = quantiles(marks["fit_started"], marks["fit_done"])
    after, after_p99, n_after = quantiles(marks["fit_done"] + 5, marks["fit_done"] + 30)
    result = {
        "items": n_items,
        "fit_s": round(marks["fit_done"] - marks["fit_started"], 1),
        "rank_p50_ms": {"before": before, "during_fit": during, "after": after},
        "rank_p99_ms": {"before": before_p99, "during_fit": during_p99, "after": after_p99},
        "requests": {"before": n_before, "during_fit": n_during, "after": n_after},
        "added_during_fit": round(during / before - 1.0, 3),
        "bridge_after": ready["catalog"]["bridge"]["serving"],
        "max_ms_after_fit": round(max(ms for at, ms in samples if at >= marks["fit_done"]), 1),
    }
    print(json.dumps(result, indent=2))
    return result


# ------------------------------------------------------------------ 4
def bench_categories() -> dict:
    from ranker.catalog.demo import write_demo_catalog
    from ranker.catalog.items import load_catalog
    from ranker.retrieval.bridge import refit_bridge
    from ranker.retrieval.encoders import load_encoders
    from ranker.retrieval.engine import SearchEngine
    from ranker.retrieval.query_intent import QueryParser
    from ranker.retrieval.understanding import Understood

    encoders = load_encoders("default", "cpu")
    catalog = write_demo_catalog(OUT / "demo", seed=0, n_items=2400, with_images=True)
    engine = SearchEngine(encoders, None)
    engine.build(load_catalog(catalog, strict=True).items, progress=True)
    state = refit_bridge(engine, progress=True)
    print(f"bridge: {state['serving']} ({state['reason']})")
    text = {category: sum(c.item.category == category for c in engine.search(category, k=10)) / 10 for category in engine.store.categories()}
    labelled = [json.loads(line) for line in open(ROOT / "tests" / "retrieval" / "data" / "labelled_queries.jsonl")]
    named = [row for row in labelled if row["categories"]]
    parser = QueryParser(engine.query_vocabulary)

    def precision(query: str, wanted: set[str]) -> tuple[float, list[str]]:
        understood = Understood.of(query, parser.parse(query))
        vectors = engine.embed_query(understood.text)
        top = understood.search(lambda filters: engine.search_vectors(vectors, k=10, filters=filters), None)
        return (sum(c.item.category in wanted for c in top) / max(len(top), 1)), understood.relaxed

    result: dict = {"bridge": state["serving"], "demo_text_precision_at_10": round(float(np.mean(list(text.values()))), 3)}
    result["demo_categories_ge8"] = f"{sum(p >= 0.8 for p in text.values())}/{len(text)}"
    for mode, boost in (("filter", None), ("boost", engine.category_boost)):
        engine.category_boost = boost
        names = [precision(category.lower(), {category})[0] for category in engine.store.categories()]
        rows = [precision(row["query"], set(row["categories"])) for row in named]
        worst = sorted(zip(rows, named), key=lambda pair: pair[0][0])[:6]
        result[mode] = {
            "worst_labelled": [f"{row['query']!r}: {p:.1f}" for (p, _), row in worst],
            "category_names_precision_at_10": round(float(np.mean(names)), 3),
            "labelled_precision_at_10": round(float(np.mean([p for p, _ in rows])), 3),
            "labelled_queries_below_0_8": sum(p < 0.8 for p, _ in rows),
            "labelled_relaxed": sum(bool(relaxed) for _, relaxed in rows),
        }
    result["labelled_queries"] = len(named)
    print(json.dumps(result, indent=2))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["shop", "fit", "categories"])
    parser.add_argument("--fit-items", type=int, default=10_000)
    args = parser.parse_args()
    os.environ.update(THREADS)
    OUT.mkdir(parents=True, exist_ok=True)
    result_file = OUT / "result.json"
    result = json.loads(result_file.read_text()) if result_file.exists() else {}
    result["date"] = time.strftime("%Y-%m-%d")
    for part, run in (("shop", bench_shop), ("fit", lambda: bench_fit(args.fit_items)), ("categories", bench_categories)):
        if args.only in (None, part):
            result[part] = run()
            result_file.write_text(json.dumps(result, indent=2))
    print(f"written to {result_file}")


if __name__ == "__main__":
    main()
