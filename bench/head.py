"""What the Bayesian head costs (issue 27): one update of 1,000 rows, and what a serving head adds to ranking.

    python bench/head.py                 # 200 updates, 2,000 rankings each way, one thread

Prints the median and 90th percentile of (a) :func:`ranker.learning.head.update_head` on 1,000 rows (forgetting,
the statistics, the posterior, the examination curve, the draw factor) and of (b) ``RankingPolicy.rank`` on a
100-candidate, 10-position request (sampled at 1 nat per position), with and without a calibrated head, on the same
requests in alternation. Targets: (a) <= 50 ms on the CPU; (b) <= 0.3 ms added to a rank request's p50.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from ranker.learning.head import HeadRows, HeadSettings, fresh_head, update_head  # noqa: E402
from ranker.live.registry import STARTING_POLICY  # noqa: E402
from ranker.ranking.features import CONTEXT_FEATURES, STATIC_FEATURES, Observation  # noqa: E402
from ranker.ranking.policy import RankingPolicy  # noqa: E402


def rows(n: int, d: int, rng: np.random.Generator) -> HeadRows:
    phi = np.c_[rng.normal(size=(n, d - 1)), np.ones(n)]
    position = rng.integers(0, 10, n)
    reward = (rng.random(n) < 0.1) * rng.choice([0.1, 0.4, 1.4], size=n)
    return HeadRows(phi=phi, reward=reward, position=position, weight=np.ones(n))


def request(rng: np.random.Generator, k: int = 100) -> Observation:
    vectors = rng.normal(size=(k, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return Observation(
        static=rng.normal(size=(k, len(STATIC_FEATURES))).astype(np.float32),
        context=rng.normal(size=len(CONTEXT_FEATURES)).astype(np.float32),
        valid=np.ones(k, dtype=bool),
        text_vectors=vectors,
        category_codes=rng.integers(0, 8, k),
    )


def percentiles(samples: list[float]) -> str:
    return f"p50 {np.percentile(samples, 50):.3f} ms, p90 {np.percentile(samples, 90):.3f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--rankings", type=int, default=2000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    policy = RankingPolicy.load(STARTING_POLICY)
    settings = HeadSettings(half_life_s=3600.0, min_rows=500, device="cpu")
    head = fresh_head(policy, settings)
    head = update_head(head, rows(1000, head.dim, rng), newest_ts=0.0, settings=settings)  # calibrated from here on
    update_ms = []
    for index in range(args.updates):
        batch = rows(1000, head.dim, rng)
        started = time.perf_counter()
        head = update_head(head, batch, newest_ts=float(index + 1), settings=settings)
        update_ms.append((time.perf_counter() - started) * 1000)
    print(f"head update, 1,000 rows, {head.dim} inputs, CPU, one thread: {percentiles(update_ms)} (target <= 50 ms)")

    with_head = RankingPolicy(net=policy.net, manifest=policy.manifest, head=head)
    requests = [request(rng) for _ in range(50)]
    timings: dict[str, list[float]] = {"network": [], "head": []}
    for index in range(args.rankings):
        observation = requests[index % len(requests)]
        for name, served in (("network", policy), ("head", with_head)):
            started = time.perf_counter()
            served.rank(observation, 10, temperature=1.0, rng=np.random.default_rng(index), target_entropy=1.0)
            timings[name].append((time.perf_counter() - started) * 1000)
    added = np.percentile(timings["head"], 50) - np.percentile(timings["network"], 50)
    print(f"rank, 100 candidates, 10 positions, sampled: network {percentiles(timings['network'])}; with the head {percentiles(timings['head'])}")
    print(f"added by the head at p50: {added:.3f} ms (target <= 0.3 ms)")


if __name__ == "__main__":
    main()
