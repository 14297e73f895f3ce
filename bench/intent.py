"""Query understanding in the simulator: purchases per session with the parser and without it.

    python bench/intent.py                             # the packaged starting policy, 3,000 intent-bearing sessions
    python bench/intent.py --policy DIR --episodes 5000
    python bench/intent.py --intent-share 0.3          # the simulator's default mix of plain and stated queries

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
from ranker.catalog.demo import ensure_demo_index  # noqa: E402
from ranker.live.registry import STARTING_POLICY  # noqa: E402
from ranker.ranking.policy import RankingPolicy  # noqa: E402

TARGET = 1.10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", type=Path, default=None, help="policy directory (default: the packaged starting policy)")
    parser.add_argument("--episodes", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=20000)
    parser.add_argument("--intent-share", type=float, default=1.0)
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("RANKER_DATA_DIR", "data")))
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    ensure_demo_index(args.data_dir, log=print)
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
    }
    print(json.dumps(figures, indent=2))
    print(
        f"purchases/session: parsed {figures['purchases_parsed']:.3f}, unparsed {figures['purchases_unparsed']:.3f}, "
        f"ratio {ratio:.3f} (target >= {TARGET}: {'met' if figures['met'] else 'not met'}); "
        f"paired difference {difference[0]:+.3f} [{difference[1]:+.3f}, {difference[2]:+.3f}]"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
