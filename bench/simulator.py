"""Simulator throughput: environment steps per second on one core for every registered id, resets included.

    python bench/simulator.py                          # every registered id
    python bench/simulator.py --env envs/SessionShopping-v0 --steps 50000
    python bench/simulator.py --reference              # also the reference policies' table (SlateShopping-v0)

Target (issue 28): every registered environment steps >= 10,000 times a second on one core, resets included.
Steps are counted with a policy that costs almost nothing (the first available candidate), so the figure is the
environment's own cost, through ``gymnasium.make`` (its wrappers included). Each id runs ``--rounds`` rounds of
``--steps`` steps after a warm-up (retrieval tables, the first pages of frequent queries); the best round is
reported, in wall-clock time and in the process's CPU time (on a shared machine the wall clock also counts the
time other processes held the core). A session environment's later pages are built inside its steps; a reset
opens a session's first page.
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

import envs  # noqa: E402
from envs.evaluation import compare, format_table  # noqa: E402
from envs.policies import reference_policies  # noqa: E402

TARGET = 10_000


def steps_per_second(env: gym.Env, n_steps: int) -> dict[str, float]:
    """One round: ``n_steps`` steps of the first-available policy, resetting whenever an episode ends."""
    observation, _ = env.reset()
    reset_time = step_time = 0.0
    steps = episodes = 0
    started, cpu_started = time.perf_counter(), time.process_time()
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
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return {
        "steps_per_second": steps / wall,
        "cpu_steps_per_second": steps / cpu,
        "step_us": 1e6 * step_time / steps,
        "reset_us": 1e6 * reset_time / max(episodes, 1),
        "steps_per_episode": steps / max(episodes, 1),
    }


def measure(env_id: str, catalog: str | None, n_steps: int, rounds: int) -> dict[str, float]:
    kwargs = {} if env_id.endswith("Tiny-v0") or catalog is None else {"catalog": catalog}
    env = gym.make(env_id, **kwargs)
    env.reset(seed=0)
    steps_per_second(env, max(n_steps // 4, 2_000))  # warm-up: retrieval tables, first pages kept per query
    best = max((steps_per_second(env, n_steps) for _ in range(rounds)), key=lambda figures: figures["cpu_steps_per_second"])
    raw = env.unwrapped
    return {**best, "k": raw.config.n_candidates, "l": raw.config.slate_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", action="append", help="a registered id (repeatable; default: every registered id)")
    parser.add_argument("--catalog", default=None, help="data directory with a built index (default: the demo shop)")
    parser.add_argument("--steps", type=int, default=30_000, help="steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reference", action="store_true", help="also the reference policies on SlateShopping-v0")
    parser.add_argument("--episodes", type=int, default=2_000, help="sessions per reference policy")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from envs.catalog import demo_data_dir
    from ranker.retrieval.demo_index import ensure_demo_index

    if args.catalog is None:
        ensure_demo_index(demo_data_dir())  # the demo shop's environments need its index; making one never builds it
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (benchmark: 1 thread)")
    results = {}
    for env_id in args.env or list(envs.ENV_IDS):
        figures = results[env_id] = measure(env_id, args.catalog, args.steps, args.rounds)
        met = "met" if figures["cpu_steps_per_second"] >= TARGET else "NOT met"
        print(
            f"{env_id:<32} K={figures['k']:<4} L={figures['l']:<3} {figures['steps_per_second']:>8,.0f} steps/s wall, "
            f"{figures['cpu_steps_per_second']:>8,.0f} CPU (resets included; {met}); step {figures['step_us']:.1f} us, "
            f"reset {figures['reset_us']:.1f} us, {figures['steps_per_episode']:.1f} steps/episode"
        )
    table = None
    if args.reference:
        env = gym.make("envs/SlateShopping-v0", **({"catalog": args.catalog} if args.catalog else {}))
        table = compare(env.unwrapped, reference_policies(0), episodes=args.episodes, seed=0)
        print(format_table(table))
    if args.json:
        print(json.dumps({"steps": results, "evaluation": table}, indent=2))


if __name__ == "__main__":
    main()
