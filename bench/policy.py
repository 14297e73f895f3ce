"""Policy benchmark: greedy inference latency, PPO training throughput, time to 0.90 of the oracle.

    python bench/policy.py --policy bench/out/ppo-demo     # read a finished training run
    python bench/policy.py --train 300000                  # train one first (writes bench/out/ppo-bench)

- Inference: greedy ranking of K=100 candidates from ready features (one
  forward pass and a sort), p50 and p99 over 2,000 requests, one thread.
- Training throughput: environment steps per second inside PPO (rollouts
  and updates together), from the run's manifest.
- Time to 0.90 of the oracle: the first held-out checkpoint whose reward per
  session reaches 0.90 of the oracle's on the same held-out sessions.
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")  # one request, one core

import argparse
import json
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import envs  # noqa: F401
from envs.evaluation import run_policy
from envs.policies import OraclePolicy
from ranker.ranking.policy import RankingPolicy


def inference_latency(policy: RankingPolicy, env_id: str, requests: int) -> dict[str, float]:
    torch.set_num_threads(1)
    env = gym.make(env_id)
    env.reset(seed=0)
    observations = []
    for _ in range(50):
        env.reset()
        observations.append(env.unwrapped.slate.observation)
    slate_size = env.unwrapped.config.slate_size
    for observation in observations[:10]:
        policy.rank(observation, slate_size)
    timings = []
    for index in range(requests):
        started = time.perf_counter()
        policy.rank(observations[index % len(observations)], slate_size)
        timings.append(time.perf_counter() - started)
    sampled = []
    for index in range(requests // 4):
        started = time.perf_counter()
        policy.rank(observations[index % len(observations)], slate_size, temperature=1.0, rng=np.random.default_rng(index))
        sampled.append(time.perf_counter() - started)
    return {
        "greedy_p50_ms": 1e3 * float(np.percentile(timings, 50)),
        "greedy_p99_ms": 1e3 * float(np.percentile(timings, 99)),
        "sampled_p50_ms": 1e3 * float(np.percentile(sampled, 50)),
        "k": observations[0].valid.size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", type=Path, help="a finished training run (artifact directory)")
    parser.add_argument("--train", type=int, default=0, help="train this many steps first (into bench/out/ppo-bench)")
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    from envs.catalog import demo_data_dir
    from ranker.retrieval.demo_index import ensure_demo_index

    ensure_demo_index(demo_data_dir())  # the demo shop's environments need its index; making one never builds it
    if args.train:
        from ranker.learning.offline import TrainConfig, train

        args.policy = Path("bench/out/ppo-bench")
        train(TrainConfig(timesteps=args.train, eval_every=max(args.train // 6, 10_000)), args.policy, progress=True)
    if args.policy is None:
        parser.error("give --policy DIR or --train N")
    policy = RankingPolicy.load(args.policy)
    training = policy.manifest["training"]
    env_id = training["env_id"]
    latency = inference_latency(policy, env_id, args.requests)
    print(
        f"greedy inference, K={latency['k']}: p50 {latency['greedy_p50_ms']:.3f} ms, p99 {latency['greedy_p99_ms']:.3f} ms "
        f"(target p50 <= 1 ms); sampled slate p50 {latency['sampled_p50_ms']:.3f} ms"
    )
    print(
        f"training: {training['timesteps_done']:,} steps in {training['seconds']:.0f} s = {training['steps_per_second']:.0f} env steps/s inside PPO "
        f"({training['n_envs']} envs, device {training['device']})"
    )
    env = gym.make(env_id, **training.get("env_kwargs", {}))
    oracle = run_policy(env, OraclePolicy(), episodes=training["eval_episodes"], seed=training["eval_seed"]).summary()["reward_mean"]
    reached = next((point for point in training["learning_curve"] if point["reward_mean"] >= 0.9 * oracle), None)
    curve = ", ".join(f"{point['timesteps']:,}: {point['reward_mean'] / oracle:.2f}" for point in training["learning_curve"])
    print(f"held-out oracle {oracle:.4f}; PPO / oracle by timesteps: {curve}")
    print("time to 0.90 of the oracle: " + (f"{reached['seconds']:.0f} s ({reached['timesteps']:,} steps)" if reached else "not reached in this run"))
    out = Path("bench/out")
    out.mkdir(parents=True, exist_ok=True)
    (out / "policy.json").write_text(
        json.dumps(
            {
                "latency": latency,
                "training": {k: training[k] for k in ("timesteps_done", "seconds", "steps_per_second", "n_envs", "device")},
                "oracle": oracle,
                "reached_090": reached,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
