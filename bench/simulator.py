"""Simulator throughput: environment steps per second on one core, and evaluation sessions per second.

    python bench/simulator.py                 # K=100, L=10 on the demo shop
    python bench/simulator.py --quick         # fewer steps

Target (issue 3): >= 10,000 steps/s for K=100, L=10 on one core. Steps are
counted with resets included (one reset per L steps), with a policy that
costs almost nothing (the first available candidate), so the figure is the
environment's own cost.
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")  # one core

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

import envs  # noqa: E402,F401
from envs.evaluation import compare, format_table  # noqa: E402
from envs.policies import reference_policies  # noqa: E402


def steps_per_second(env: gym.Env, n_steps: int, seed: int) -> dict[str, float]:
    observation, _ = env.reset(seed=seed)
    reset_time = step_time = 0.0
    steps = episodes = 0
    started = time.perf_counter()
    while steps < n_steps:
        action = int(np.argmax(observation["mask"]))
        t0 = time.perf_counter()
        observation, _, terminated, truncated, _ = env.step(action)
        t1 = time.perf_counter()
        step_time += t1 - t0
        steps += 1
        if terminated or truncated:
            observation, _ = env.reset()
            reset_time += time.perf_counter() - t1
            episodes += 1
    total = time.perf_counter() - started
    return {
        "steps_per_second": steps / total,
        "env_steps_per_second": steps / (reset_time + step_time),
        "step_us": 1e6 * step_time / steps,
        "reset_us": 1e6 * reset_time / max(episodes, 1),
        "steps": steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="envs/SlateShopping-v0")
    parser.add_argument("--catalog", default=None, help="data directory with a built index (default: the demo shop)")
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--episodes", type=int, default=2_000, help="sessions per reference policy")
    parser.add_argument("--quick", action="store_true", help="20k steps, 300 sessions")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from envs.catalog import demo_data_dir
    from ranker.catalog.demo import ensure_demo_index

    ensure_demo_index(demo_data_dir())  # the demo shop's environments need its index; making one never builds it
    if args.quick:
        args.steps, args.episodes = 20_000, 300
    kwargs = {"catalog": args.catalog} if args.catalog else {}
    env = gym.make(args.env, **kwargs)
    raw = env.unwrapped
    print(f"{args.env}: K={raw.config.n_candidates}, L={raw.config.slate_size}, catalog {raw.catalog.describe()}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (benchmark pinned to 1 thread)")
    raw.reset(seed=0)
    started = time.perf_counter()
    for mode in raw.world.modes:  # once per catalog and K, as in any run longer than a few thousand sessions
        raw.catalog.retrieval_table(mode, raw.config.n_candidates, image_noise=raw.config.shopper.image_query_noise)
    print(f"retrieval tables for {len(raw.catalog.query_texts)} bank queries x {raw.world.modes}: {time.perf_counter() - started:.2f} s, once")
    results = {"raw": steps_per_second(raw, args.steps, seed=0), "gym.make": steps_per_second(env, args.steps // 2, seed=0)}
    for name, figures in results.items():
        print(f"{name:<9} {figures['steps_per_second']:>9,.0f} steps/s (resets included)  step {figures['step_us']:.1f} us  reset {figures['reset_us']:.1f} us")
    table = compare(raw, reference_policies(0), episodes=args.episodes, seed=0)
    print(format_table(table))
    for name, row in table.items():
        print(f"{name:<11} {row['sessions_per_second']:>8,.0f} sessions/s")
    if args.json:
        print(json.dumps({"steps": results, "evaluation": table}, indent=2))


if __name__ == "__main__":
    main()
