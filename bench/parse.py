"""Query parsing latency on the demo shop's vocabulary (target: <= 0.5 ms p50 per parse).

    python bench/parse.py                 # 200 passes over the labelled queries
    python bench/parse.py --repeats 20    # a quick look

Builds the vocabulary from the demo shop as ``make serve`` does (2,400 items, seed 0; nothing is encoded), then
times every :meth:`QueryParser.parse` over the labelled queries (``tests/retrieval/data/labelled_queries.jsonl``),
``--repeats`` passes, one ``perf_counter_ns`` pair per parse. Also timed: building the vocabulary, rebuilding its
match tables after a name appears, one item's add + remove, and queries at the length cap (256 characters of
words, and 100 kB of text). Prints the figures and writes them to ``bench/out/parse/result.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ranker.catalog.demo import generate_items  # noqa: E402
from ranker.catalog.items import Item  # noqa: E402
from ranker.retrieval.query_intent import QueryParser, QueryVocabulary  # noqa: E402

OUT = ROOT / "bench" / "out" / "parse"
LABELLED = ROOT / "tests" / "retrieval" / "data" / "labelled_queries.jsonl"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def time_parses(parser: QueryParser, queries: list[str], repeats: int) -> list[float]:
    """Milliseconds per parse, every parse of every pass."""
    times = []
    for _ in range(repeats):
        for query in queries:
            started = time.perf_counter_ns()
            parser.parse(query)
            times.append((time.perf_counter_ns() - started) / 1e6)
    return times


def main() -> None:
    parser_args = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser_args.add_argument("--repeats", type=int, default=200)
    parser_args.add_argument("--items", type=int, default=2400)
    args = parser_args.parse_args()

    items = generate_items(args.items, seed=0)
    started = time.perf_counter()
    vocabulary = QueryVocabulary.from_items(items)
    build_ms = (time.perf_counter() - started) * 1e3
    started = time.perf_counter()
    vocabulary.tables()
    tables_ms = (time.perf_counter() - started) * 1e3
    parser = QueryParser(vocabulary)

    queries = [json.loads(line)["query"] for line in LABELLED.read_text(encoding="utf-8").splitlines() if line.strip()]
    time_parses(parser, queries, 3)  # warm-up
    times = time_parses(parser, queries, args.repeats)

    newcomer = Item(item_id="bench-new", title="Quokkaline Lilac Hammock", price=70.0, category="Hammocks", brand="Quokkaline", attributes={"colour": "Lilac"})
    started = time.perf_counter()
    for _ in range(100):
        vocabulary.add([newcomer])
        vocabulary.remove([newcomer])
    add_remove_ms = (time.perf_counter() - started) * 1e3 / 100
    vocabulary.add([newcomer])
    started = time.perf_counter()
    parser.parse("quokkaline hammock")  # the first parse after a new name rebuilds the tables
    first_after_change_ms = (time.perf_counter() - started) * 1e3

    capped = ("navy kestrel backpack under 50 " * 20)[:256]
    long_text = "red leather backpack " * 5000
    capped_ms = statistics.median(time_parses(parser, [capped], 200))
    long_ms = statistics.median(time_parses(parser, [long_text], 50))

    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "items": args.items,
        "queries": len(queries),
        "parses": len(times),
        "parse_ms": {"p50": percentile(times, 0.50), "p95": percentile(times, 0.95), "p99": percentile(times, 0.99), "mean": statistics.fmean(times)},
        "vocabulary_build_ms": build_ms,
        "match_tables_build_ms": tables_ms,
        "one_item_add_remove_ms": add_remove_ms,
        "first_parse_after_new_name_ms": first_after_change_ms,
        "parse_256_chars_p50_ms": capped_ms,
        "parse_100kB_p50_ms": long_ms,
        "target_p50_ms": 0.5,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "result.json").write_text(json.dumps(result, indent=2))
    p = result["parse_ms"]
    print(f"{len(times)} parses ({len(queries)} labelled queries x {args.repeats}) on a {args.items}-item vocabulary")
    print(f"parse: p50 {p['p50']:.4f} ms, p95 {p['p95']:.4f} ms, p99 {p['p99']:.4f} ms, mean {p['mean']:.4f} ms (target p50 <= 0.5 ms)")
    print(f"vocabulary from {args.items} items: {build_ms:.1f} ms; match tables: {tables_ms:.2f} ms")
    print(f"one item add + remove: {add_remove_ms:.3f} ms; first parse after a new name: {first_after_change_ms:.2f} ms")
    print(f"a 256-character query: p50 {capped_ms:.3f} ms; a 100 kB query: p50 {long_ms:.3f} ms")


if __name__ == "__main__":
    main()
