"""Index build benchmark: a 100k-item text catalog built in full on ONNX Runtime, and picture encoding measured on a sample.

Prints figures; asserts nothing (targets are judged in bench/README.md).

    python bench/build.py                      # 100,000 text items in full, 1,000 pictures
    python bench/build.py --items 10000 --pictures 200   # shorter

1. the encoders as ``ranker index build`` loads them (ONNX Runtime on the CPU, every core; the graphs exported into
   ``--models-dir`` first, not timed);
2. ``--items`` generated demo items (text only), built with ``SearchEngine.build`` and saved: the whole build is
   timed, end to end, with the share spent encoding text;
3. ``--pictures`` demo product pictures rendered (timed apart), then encoded with the image graph: pictures/s and
   what a 100k-picture catalog would take at that rate (a projection: the full run does not fit a session here).

This process never imports torch: the CPU time figures are the build's alone. The load on the machine (cores used by
this process and by everything else) is printed beside each timed part.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ranker.catalog.demo import generate_items  # noqa: E402
from ranker.catalog.demo.drawing import render_item_image  # noqa: E402
from ranker.retrieval.encoders import load_encoders  # noqa: E402
from ranker.retrieval.engine import SearchEngine  # noqa: E402

OUT = ROOT / "bench" / "out"


def busy_seconds() -> float:
    """CPU seconds every process on the machine has spent (user, nice, system, irq, softirq)."""
    fields = [float(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    return (fields[0] + fields[1] + fields[2] + fields[5] + fields[6]) / os.sysconf("SC_CLK_TCK")


class Timed:
    """Wall time, this process's CPU time and the whole machine's busy cores over a block."""

    def __enter__(self) -> Timed:
        self.wall, self.cpu, self.busy = time.perf_counter(), time.process_time(), busy_seconds()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.wall
        self.cpu_s = time.process_time() - self.cpu
        machine = busy_seconds() - self.busy
        self.figures = {
            "seconds": round(self.seconds, 1),
            "cpu_s": round(self.cpu_s, 1),
            "ours_cores": round(self.cpu_s / self.seconds, 2),
            "others_cores": round(max(machine - self.cpu_s, 0.0) / self.seconds, 2),
        }


class CountingEncoders:
    """The encoders with the time spent in text encoding counted (the build's other part is the index)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.text_s = 0.0
        self.texts = 0

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def encode_texts(self, texts, *, progress=None):
        started = time.perf_counter()
        out = self.inner.encode_texts(texts, progress=progress)
        self.text_s += time.perf_counter() - started
        self.texts += len(texts)
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--pictures", type=int, default=1_000)
    parser.add_argument("--models-dir", type=Path, default=Path(os.environ.get("RANKER_MODELS_DIR") or OUT / "models"))
    parser.add_argument("--out", type=Path, default=OUT / "build.json")
    args = parser.parse_args()
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "cores": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
    print(f"{os.cpu_count()} cores; load average at start {results['load_average_at_start']}", flush=True)

    encoders = CountingEncoders(load_encoders("default", "cpu", backend="onnx", cache_dir=args.models_dir))
    results["runtime"] = encoders.runtime()
    print(f"encoders: {results['runtime']} (graphs under {args.models_dir})", flush=True)

    with Timed() as generated:
        items = generate_items(args.items, seed=0)
    print(f"generated {len(items):,} items in {generated.seconds:.1f} s (not part of the build)", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-build-") as directory:
        engine = SearchEngine(encoders, Path(directory))
        with Timed() as build:
            report = engine.build(items, progress=True)
            engine.save(encoder_spec="default")
        results["text_build"] = {
            "items": len(items),
            "distinct_texts": encoders.texts,
            "index": engine.indexes["text"].kind,
            **build.figures,
            "items_per_s": round(len(items) / build.seconds, 1),
            "text_encode_s": round(encoders.text_s, 1),
            "index_and_save_s": round(build.seconds - encoders.text_s, 1),
            "report": report.summary(),
        }
    print(
        f"text build, {len(items):,} items ({encoders.texts:,} distinct texts encoded), {results['text_build']['index']}: {build.seconds:.1f} s "
        f"({len(items) / build.seconds:,.0f} items/s; encoding {encoders.text_s:.1f} s, index and save {build.seconds - encoders.text_s:.1f} s); "
        f"cores: this build {build.figures['ours_cores']}, other processes {build.figures['others_cores']}",
        flush=True,
    )

    if args.pictures:
        rng = np.random.default_rng(0)
        with Timed() as drawn:
            pictures = [render_item_image(item, rng) for item in items[: args.pictures]]
        with Timed() as encoded:
            encoders.encode_pictures(pictures, progress=False)
        rate = len(pictures) / encoded.seconds
        results["pictures"] = {
            "pictures": len(pictures),
            "render_s": round(drawn.seconds, 1),
            **encoded.figures,
            "pictures_per_s": round(rate, 1),
            "cpu_ms_per_picture": round(1000 * encoded.cpu_s / len(pictures), 1),
            "projected_100k_s": round(100_000 / rate),
        }
        print(
            f"pictures: {len(pictures):,} encoded (image graph + label bridge) in {encoded.seconds:.1f} s = {rate:.1f} pictures/s "
            f"({1000 * encoded.cpu_s / len(pictures):.1f} ms CPU each); 100k pictures at this rate: ~{100_000 / rate / 60:.0f} min (projected); "
            f"cores: this process {encoded.figures['ours_cores']}, other processes {encoded.figures['others_cores']}",
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    met = results["text_build"]["seconds"] <= 150 and args.items >= 100_000
    print(
        f"target: a 100k-item text build <= 150 s, measured in full: {'met' if met else 'NOT met'} ({results['text_build']['seconds']} s); figures in {args.out}"
    )


if __name__ == "__main__":
    main()
