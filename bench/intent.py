"""Query understanding in the simulator: purchases per session with the parser and without it.

    python bench/intent.py                             # the packaged starting policy, 3,000 intent-bearing sessions
    python bench/intent.py --policy DIR --episodes 5000
    python bench/intent.py --intent-share 0.3          # the simulator's default mix of plain and stated queries
    python bench/intent.py --serving 600               # also: what parsing adds to a rank request, in process

Target (issue 20): parsing adds <= 0.5 ms p50 to a rank request. ``--serving N`` ranks the labelled queries
(tests/retrieval/data/labelled_queries.jsonl) N times through ``RankingService.rank`` on the demo shop with an
embedded Redis, parsing on and off, interleaved, and reports the ``parse`` stage's p50 and both totals (query
embeddings cached, so the totals differ by the parse and by what the parse changes: filters, fewer candidates).

Every session's shopper states an intent in the query (``--intent-share 1``): a price limit, a colour or a brand
("red running shoes under 60", ``envs.intents``), and holds to it. The same policy ranks the same sessions twice:

- **with parsing** (``parse_queries=True``): the service's parser reads the phrase; a price range filters the
  candidates, brands and colours become features, the rest of the text is embedded;
- **without** (``parse_queries=False``): the whole phrase is embedded, as a search without parsing would.

Target (issue 20): purchases per session with parsing >= 1.10x those without. Sessions are paired (same world,
same shoppers, same searches), so the interval of the difference is a paired t interval.
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gymnasium as gym  # noqa: E402

import envs  # noqa: E402,F401
from envs.evaluation import mean_ci95, run_policy  # noqa: E402
from ranker.live.registry import STARTING_POLICY  # noqa: E402
from ranker.ranking.policy import RankingPolicy  # noqa: E402
from ranker.retrieval.demo_index import ensure_demo_index  # noqa: E402

TARGET = 1.10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", type=Path, default=None, help="policy directory (default: the packaged starting policy)")
    parser.add_argument("--episodes", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=20000)
    parser.add_argument("--intent-share", type=float, default=1.0)
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("RANKER_DATA_DIR", "data")))
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--serving", type=int, default=0, help="rank requests per mode for the serving cost of parsing (0: skip)")
    args = parser.parse_args()
    ensure_demo_index(args.data_dir, log=print)
    serving = serving_cost(args.data_dir, args.serving) if args.serving else None
    policy = RankingPolicy.load(args.policy or STARTING_POLICY)
    logs = {}
    for parse in (True, False):
        env = gym.make("envs/SlateShopping-v0", catalog=args.data_dir, parse_queries=parse, intent_share=args.intent_share)
        logs[parse] = run_policy(env.unwrapped, policy, episodes=args.episodes, seed=args.seed, name="parsed" if parse else "unparsed", progress=True)
    parsed, unparsed = logs[True], logs[False]
    difference = mean_ci95(parsed.purchases - unparsed.purchases)
    ratio = parsed.purchases.mean() / unparsed.purchases.mean() if unparsed.purchases.mean() > 0 else float("inf")
    figures = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "policy": policy.version,
        "episodes": args.episodes,
        "intent_share": args.intent_share,
        "purchases_parsed": float(parsed.purchases.mean()),
        "purchases_unparsed": float(unparsed.purchases.mean()),
        "purchases_ratio": float(ratio),
        "purchases_difference_ci95": list(difference),
        "reward_parsed": parsed.summary()["reward_mean"],
        "reward_unparsed": unparsed.summary()["reward_mean"],
        "target_ratio": TARGET,
        "met": bool(ratio >= TARGET),
        "serving": serving,
    }
    print(json.dumps(figures, indent=2))
    print(
        f"purchases/session: parsed {figures['purchases_parsed']:.3f}, unparsed {figures['purchases_unparsed']:.3f}, "
        f"ratio {ratio:.3f} (target >= {TARGET}: {'met' if figures['met'] else 'not met'}); "
        f"paired difference {difference[0]:+.3f} [{difference[1]:+.3f}, {difference[2]:+.3f}]"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


def serving_cost(data_dir: Path, n_requests: int) -> dict:
    """p50 of the rank request's ``parse`` stage and of the whole request with parsing on and off (in process)."""
    import tempfile

    import numpy as np

    from api import create_app
    from ranker.live.backend import EmbeddedRedis

    labelled = Path(__file__).resolve().parents[1] / "tests" / "retrieval" / "data" / "labelled_queries.jsonl"
    queries = [json.loads(line)["query"] for line in labelled.read_text().splitlines() if line.strip()]
    queries = [query for query in queries if query.strip()]
    with tempfile.TemporaryDirectory() as run:
        redis_server = EmbeddedRedis(Path(run) / "redis")
        try:
            app = create_app({"DATA_DIR": str(data_dir), "REDIS_URL": redis_server.url, "PREFIX": "bench-intent"})
            service = app.extensions["ranking_service"]
            for query in queries:  # warm: every text (as typed, and its parsed rest) is in the query cache, so the
                for parse in (True, False):  # timed requests compare the work around the encoder, not the encoder
                    service.rank(user_id="warm", text=query, parse_query=parse)
            samples: dict[bool, list[float]] = {True: [], False: []}
            parse_ms: list[float] = []
            for index in range(n_requests):
                for parse in (True, False):
                    text = queries[index % len(queries)]
                    started = time.perf_counter()
                    result = service.rank(user_id=f"user-{index % 50}", text=text, parse_query=parse)
                    samples[parse].append(1000 * (time.perf_counter() - started))
                    if parse:
                        parse_ms.append(result.timings_ms["parse"])
        finally:
            redis_server.close()
    return {
        "requests_per_mode": n_requests,
        "parse_stage_p50_ms": float(np.percentile(parse_ms, 50)),
        "parse_stage_p99_ms": float(np.percentile(parse_ms, 99)),
        "rank_p50_ms_parsed": float(np.percentile(samples[True], 50)),
        "rank_p50_ms_unparsed": float(np.percentile(samples[False], 50)),
    }


if __name__ == "__main__":
    main()
