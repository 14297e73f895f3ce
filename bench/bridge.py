"""Cross-modal retrieval benchmark (issue 21): the learned bridge and calibrated fusion against the ImageNet-label bridge.

Prints figures; asserts nothing (targets are judged in bench/README.md).

    python bench/bridge.py                     # train on 2,400 demo items, evaluate on 360 held-out ones
    python bench/bridge.py --train-items 300   # near the minimum number of pairs
    python bench/bridge.py --fit-only          # the fit time on 100k pairs alone

The bridge and calibration are fitted on a training shop (demo seed 11); every
figure is measured on items never seen in that fit (demo seed 12: 15 items per
category, 360 in all) and on query pictures of a third shop (seed 13, 5 per
category). Three set-ups: ``labels-raw`` (today: ImageNet-label bridge, raw
cosines, fixed weights), ``labels-calibrated`` (label bridge, calibrated
fusion) and ``learned`` (learned head, calibrated fusion; what
``ranker index build`` now serves). Figures:

1. mixed catalog, 80% of items with title and picture, 20% picture-only
   (neutral title "Article NNNN", category "General"): share of the queried
   category's picture-only items in the top 20 of a text query naming the
   category (target >= 0.70; the issue measured 0.00);
2. picture-only catalog: text -> picture precision@10 (target >= 0.60; 0.18);
3. text-only catalog: picture -> text precision@10 (target >= 0.60);
4. text precision@10 on the mixed catalog's titled items, and categories with
   >= 8 of 10 (no regression);
5. fit time of the head on 100k pairs of cached encoder outputs (repeated
   real feature pairs with small noise; the encoders' cost is not in it),
   on the CPU with the threads given (target <= 10 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ranker.catalog.demo import generate_items  # noqa: E402
from ranker.catalog.items import Item  # noqa: E402
from ranker.retrieval.bridge import MIN_PAIRS, fit_bridge, refit_bridge  # noqa: E402
from ranker.retrieval.encoders import PictureVectors, load_encoders  # noqa: E402
from ranker.retrieval.engine import SearchEngine  # noqa: E402
from ranker.retrieval.fusion import UNCALIBRATED  # noqa: E402

PER_CATEGORY = 15
PICTURE_ONLY = 3  # of the 15: the 80% with both parts
QUERY_PICTURES = 5


class CachedEncoders:
    """The real encoders, each distinct text or picture path encoded once across the set-ups."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.text_dim, self.image_dim, self.lowercases = inner.text_dim, inner.image_dim, inner.lowercases
        self._texts: dict[str, np.ndarray] = {}
        self._pictures: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def describe(self) -> dict:
        return self.inner.describe()

    def runtime(self) -> dict:
        return self.inner.runtime()

    def encode_texts(self, texts, *, progress=None) -> np.ndarray:
        missing = sorted({text for text in texts if text not in self._texts})
        if missing:
            self._texts.update(zip(missing, self.inner.encode_texts(missing, progress=progress)))
        return np.stack([self._texts[text] for text in texts]) if texts else np.zeros((0, self.text_dim), np.float32)

    def encode_pictures(self, images, *, progress=None) -> PictureVectors:
        names = [picture_key(image) for image in images]
        missing = {name: image for name, image in zip(names, images) if name not in self._pictures}
        if missing:
            encoded = self.inner.encode_pictures(list(missing.values()), progress=len(missing) > 200)
            self._pictures.update(zip(missing, zip(encoded.image, encoded.in_text)))
        return PictureVectors(image=np.stack([self._pictures[n][0] for n in names]), in_text=np.stack([self._pictures[n][1] for n in names]))


def picture_key(image: Any) -> str:
    """A decoded picture's identity (the engine hands the encoders decoded images)."""
    if isinstance(image, (str, Path)):
        return str(image)
    return hashlib.sha1(image.tobytes() + repr(image.size).encode()).hexdigest()


def shop(n_items: int, seed: int, folder: Path) -> list[Item]:
    items = generate_items(n_items, seed=seed, images_dir=folder / f"shop-{seed}" / "images")
    return [item.model_copy(update={"image": str(folder / f"shop-{seed}" / item.image), "item_id": f"s{seed}-{item.item_id}"}) for item in items]


def per_category(items: list[Item], count: int) -> list[Item]:
    taken: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        if len(taken[item.category]) < count:
            taken[item.category].append(item)
    short = [name for name, chosen in taken.items() if len(chosen) < count]
    if short:
        raise SystemExit(f"too few items in {short}; generate more")
    return [item for chosen in taken.values() for item in chosen]


def picture_only(item: Item, number: int) -> Item:
    return item.model_copy(update={"title": f"Article {number:04d}", "category": "General", "brand": "", "attributes": {}, "description": ""})


def evaluate(engine: SearchEngine, held_out: list[Item], query_pictures: list[Item]) -> dict:
    truth = {item.item_id: item.category for item in held_out}
    categories = sorted({item.category for item in held_out})
    # 1. mixed: per category, the first 12 keep both parts, the last 3 are picture-only
    mixed, hidden = [], set()
    seen: dict[str, int] = defaultdict(int)
    for number, item in enumerate(held_out):
        seen[item.category] += 1
        if seen[item.category] > PER_CATEGORY - PICTURE_ONLY:
            mixed.append(picture_only(item, number))
            hidden.add(item.item_id)
        else:
            mixed.append(item)
    engine.build(mixed)
    found_hidden, text_hits, text_passing = [], [], 0
    for category in categories:
        top20 = engine.search(category.lower(), k=20)
        found_hidden.append(sum(c.item.item_id in hidden and truth[c.item.item_id] == category for c in top20) / PICTURE_ONLY)
        titled = [c for c in engine.search(category.lower(), k=40) if c.item.item_id not in hidden][:10]
        hits = sum(truth[c.item.item_id] == category for c in titled)
        text_hits.append(hits / 10)
        text_passing += hits >= 8
    # 2. picture-only catalog, text queries
    engine.build([picture_only(item, number) for number, item in enumerate(held_out)])
    text_to_picture = [np.mean([truth[c.item.item_id] == category for c in engine.search(category.lower(), k=10)]) for category in categories]
    # 3. text-only catalog, picture queries
    engine.build([item.model_copy(update={"image": None}) for item in held_out])
    picture_to_text = [np.mean([truth[c.item.item_id] == query.category for c in engine.search(image=query.image, k=10)]) for query in query_pictures]
    worst = sorted(zip(text_to_picture, categories))[:4]
    return {
        "mixed_picture_only_in_top20": round(float(np.mean(found_hidden)), 3),
        "picture_only_text_to_picture_p10": round(float(np.mean(text_to_picture)), 3),
        "text_only_picture_to_text_p10": round(float(np.mean(picture_to_text)), 3),
        "mixed_titled_text_p10": round(float(np.mean(text_hits)), 3),
        "mixed_titled_categories_ge8": f"{text_passing}/{len(categories)}",
        "text_to_picture_worst": {name: round(float(value), 2) for value, name in worst},
    }


def bench_setups(encoders: CachedEncoders, train_items: int, folder: Path) -> dict:
    train = shop(train_items, 11, folder)
    held_out = per_category(shop(1200, 12, folder), PER_CATEGORY)
    query_pictures = per_category(shop(600, 13, folder), QUERY_PICTURES)
    print(f"training shop: {len(train)} items; held out: {len(held_out)} items; query pictures: {len(query_pictures)}", flush=True)
    results = {}
    for setup in ("labels-raw", "labels-calibrated", "learned"):
        engine = SearchEngine(encoders, None)
        engine.build(train, progress=True)
        started = time.perf_counter()
        if setup != "labels-raw":
            state = refit_bridge(engine, min_pairs=10**9 if setup == "labels-calibrated" else MIN_PAIRS, device="cpu")
            print(f"  {setup}: bridge {state['serving']} ({state['reason']}) in {time.perf_counter() - started:.1f} s", flush=True)
        else:
            engine.calibration = UNCALIBRATED
        figures = evaluate(engine, held_out, query_pictures)
        figures["refit_seconds"] = round(time.perf_counter() - started, 1)
        results[setup] = figures
        print(f"{setup:>18}: {json.dumps(figures)}", flush=True)
    return results


def bench_fit_time(encoders: CachedEncoders, n_pairs: int, folder: Path, threads: list[int]) -> list[dict]:
    """The head's fit on ``n_pairs`` pairs: real cached feature pairs of 600 demo items, repeated with 2% noise."""
    items = shop(600, 14, folder)
    image = encoders.encode_pictures([item.image for item in items]).image
    text = encoders.encode_texts([item.text_for_embedding() for item in items])
    rng = np.random.default_rng(0)
    rows = rng.integers(0, len(items), n_pairs)
    noisy_image = image[rows] + rng.normal(scale=0.02 / np.sqrt(image.shape[1]), size=(n_pairs, image.shape[1])).astype(np.float32)
    noisy_text = text[rows] + rng.normal(scale=0.02 / np.sqrt(text.shape[1]), size=(n_pairs, text.shape[1])).astype(np.float32)
    figures = []
    for count in threads:
        started = time.perf_counter()
        head = fit_bridge(noisy_image, noisy_text, fingerprints={}, device="cpu", threads=count, progress=True)
        seconds = time.perf_counter() - started
        print(f"fit on {n_pairs} pairs: {seconds:.1f} s ({head.info['epochs']} epochs, {head.info['steps']} steps, {count} threads)", flush=True)
        figures.append({"pairs": n_pairs, "seconds": round(seconds, 1), "epochs": head.info["epochs"], "steps": head.info["steps"], "threads": count})
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-items", type=int, default=2400, help="items in the training shop (all with title and picture)")
    parser.add_argument("--fit-pairs", type=int, default=100_000, help="pairs for the fit-time figure (0: skip)")
    parser.add_argument("--fit-only", action="store_true", help="only the fit-time figure")
    parser.add_argument("--fit-threads", type=int, nargs="+", default=[1, 2], help="CPU threads for the fit-time figure, one fit each")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "bridge.json")
    args = parser.parse_args()
    cache = Path(os.environ.get("RANKER_MODELS_DIR", Path(__file__).resolve().parents[1] / ".pytest_cache" / "ranker-models"))
    encoders = CachedEncoders(load_encoders("default", "cpu", cache_dir=cache))
    print(f"{os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, encoders {encoders.runtime()}", flush=True)
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "train_items": args.train_items}
    with tempfile.TemporaryDirectory() as folder:
        if not args.fit_only:
            results["setups"] = bench_setups(encoders, args.train_items, Path(folder))
        if args.fit_pairs:
            results["fit"] = bench_fit_time(encoders, args.fit_pairs, Path(folder), args.fit_threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"figures written to {args.out}")


if __name__ == "__main__":
    main()
