"""Explanation cost: exact group Shapley values and reasons for a served slate (``ranker.ranking.explain``).

    python bench/explain.py                 # 10-item slates from 100 candidates, 200 requests
    python bench/explain.py --quick         # 20 requests

Times :func:`ranker.ranking.explain.explain_slate` with the packaged starting
policy on synthetic requests built by the serving feature code (random
similarities, prices, counters and a user profile), one thread, against the
greedy ranking of the same request for scale. This is the extra work of
``explain: true`` on a rank request (the JSON of the result aside); the normal
path does none of it.
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")  # one request, one core

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ranker.interactions import EVENT_TYPES
from ranker.live.registry import STARTING_POLICY
from ranker.ranking.explain import explain_slate, feature_groups
from ranker.ranking.features import CandidateSet, FeatureBuilder, Observation, UserProfile
from ranker.ranking.policy import RankingPolicy

OUT = Path(__file__).parent / "out"


def request(rng: np.random.Generator, k: int, slate: int) -> Observation:
    vectors = rng.standard_normal((k, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    candidates = CandidateSet(
        item_ids=[f"i{i}" for i in range(k)],
        categories=[f"c{i % 6}" for i in range(k)],
        brands=[f"b{i % 9}" for i in range(k)],
        prices=rng.lognormal(3.5, 0.6, k),
        has_image=rng.random(k) < 0.9,
        text_vectors=vectors,
        retrieval_scores=np.sort(rng.uniform(0.2, 0.8, k))[::-1],
        channel_scores={"text": rng.uniform(0.2, 0.8, k), "text_to_image": rng.uniform(0.0, 0.4, k)},
    )
    profile = UserProfile()
    for i, kind in enumerate(EVENT_TYPES):
        profile.record(kind=kind, category=f"c{i}", brand=f"b{i}", price=30.0 + i * 20, text_vector=vectors[i])
    counts = np.column_stack([rng.integers(0, 500, k), rng.integers(0, 40, k), rng.integers(0, 8, k), rng.uniform(0, 150, k)]).astype(float)
    return FeatureBuilder(k, slate).build(candidates, counts=counts, profile=profile, query_has_text=True, query_has_image=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--slate", type=int, default=10)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n = 20 if args.quick else args.requests
    policy = RankingPolicy.load(STARTING_POLICY)
    rng = np.random.default_rng(0)
    observations = [request(rng, args.candidates, args.slate) for _ in range(n)]
    explain_ms, rank_ms, worst = [], [], 0.0
    for observation in observations:
        started = time.perf_counter()
        ranking = policy.rank(observation, args.slate)
        ranked = time.perf_counter()
        explained = explain_slate(policy, observation, ranking.slots, args.slate)
        done = time.perf_counter()
        rank_ms.append((ranked - started) * 1000)
        explain_ms.append((done - ranked) * 1000)
        worst = max(worst, max(abs(e.baseline + sum(e.contributions.values()) - e.score) for e in explained))
    figures = {
        "requests": n,
        "candidates": args.candidates,
        "slate": args.slate,
        "groups": len(feature_groups()),
        "explain_ms_p50": float(np.percentile(explain_ms, 50)),
        "explain_ms_p99": float(np.percentile(explain_ms, 99)),
        "greedy_rank_ms_p50": float(np.percentile(rank_ms, 50)),
        "max_sum_error": worst,
        "threads": os.environ["OMP_NUM_THREADS"],
    }
    for name, value in figures.items():
        print(f"{name:>20}: {value:.4g}" if isinstance(value, float) else f"{name:>20}: {value}")
    OUT.mkdir(exist_ok=True)
    (OUT / "explain.json").write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
