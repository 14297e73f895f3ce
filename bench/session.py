"""Sessions, not single slates: every policy on the session environment, paired on identical sessions (issue 28).

    python bench/session.py --policy ranker/assets/starting_policy                 # the session table and targets
    python bench/session.py --policy DIR --episodes 4000 --slate                    # also the SlateShopping target
    python bench/session.py --policy DIR --set rephrase_rate=0.3                    # another session model setting

Every policy meets the same ``--episodes`` sessions of ``envs/SessionShopping-v0`` (seed ``--seed``: the same
shoppers, searches, after-page decisions and outcome draws); the learners (LambdaMART, the linear bandit, the
critic-greedy ranker) are fitted on ``--log-episodes`` logged sessions of another world (seed + 1). Per policy:
purchases, reward, pages and abandonment per session; then PPO against each, paired (difference and ratio of the
means with 95% intervals, ``envs.evaluation.paired``). Targets:

- (a) the session's clicks pay: PPO against the same policy with its session features zeroed (today's product):
  purchases per session higher, the interval of the difference above 0;
- (b) PPO against the best myopic baseline with the same features: lower bound of the paired ratio >= 0.99;
- (c) with ``--slate``: on ``envs/SlateShopping-v0``, PPO >= 0.98x the best baseline.

Writes ``bench/out/session.json``.
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

import envs  # noqa: E402,F401
from envs.evaluation import SessionLog, format_paired, format_table, paired, paired_table, run_all, summarise  # noqa: E402
from ranker.evaluation.simulation import BASELINES, TABLE_ORDER, evaluation_policies, format_ppo_paired  # noqa: E402
from ranker.ranking.features import CONTEXT_FEATURES  # noqa: E402
from ranker.ranking.policy import RankingPolicy  # noqa: E402

OUT = Path("bench/out")
METRICS = ("purchases", "rewards")


def parse_settings(pairs: list[str]) -> dict[str, Any]:
    settings = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        settings[name] = json.loads(value)
    return settings


def evaluate(env_id: str, policy: RankingPolicy, *, episodes: int, seed: int, log_episodes: int, settings: dict[str, Any]) -> dict[str, SessionLog]:
    env = gym.make(env_id, **settings)
    started = time.perf_counter()
    policies = evaluation_policies(env, policy, seed=seed, log_episodes=log_episodes)
    print(f"{env_id}: baselines fitted on {log_episodes} logged sessions in {time.perf_counter() - started:.0f} s")
    policies = {name: policies[name] for name in TABLE_ORDER if name in policies}
    return run_all(env, policies, episodes=episodes, seed=seed, progress=True)


def with_ppo_paired(table: dict[str, Any], logs: dict[str, SessionLog]) -> dict[str, Any]:
    """``table`` with each row's ``ppo_vs``: PPO against that policy, paired (purchases and reward)."""
    for name, log in logs.items():
        if name != "ppo":
            table[name]["ppo_vs"] = {metric: paired(logs["ppo"].metric(metric), log.metric(metric)) for metric in METRICS}
    return table


def best_of(logs: dict[str, SessionLog], metric: str) -> str:
    return max((name for name in BASELINES if name in logs), key=lambda name: logs[name].metric(metric).mean())


def verdicts(logs: dict[str, SessionLog], *, sessions: bool) -> dict[str, Any]:
    """The issue-28 targets from the logs of one environment."""
    out: dict[str, Any] = {}
    for metric in METRICS:
        best = best_of(logs, metric)
        result = paired(logs["ppo"].metric(metric), logs[best].metric(metric))
        out[f"ppo_vs_best_{metric}"] = {"best": best, **result}
    if sessions:
        out["clicks_pay"] = {metric: paired(logs["ppo"].metric(metric), logs["ppo_without_session"].metric(metric)) for metric in METRICS}
        # where PPO's gain over the best baseline is earned: the first page, or the pages after it
        best = out["ppo_vs_best_rewards"]["best"]
        out["where"] = {metric: paired(logs["ppo"].metric(metric), logs[best].metric(metric)) for metric in ("first_page_rewards", "later_page_rewards")}
    return out


def describe(name: str, result: dict[str, Any]) -> str:
    low, high = result["difference_ci95"]
    ratio_low, ratio_high = result["ratio_ci95"]
    return f"{name}: {result['ratio']:.3f}x [{ratio_low:.3f}, {ratio_high:.3f}], difference {result['difference']:+.4f} [{low:+.4f}, {high:+.4f}]"


def profile_share(env_id: str, sessions: int, seed: int, settings: dict[str, Any]) -> float:
    """Share of sessions whose user has a profile (``user_has_profile``) over the first ``sessions`` of a world, in
    retrieval order."""
    env = gym.make(env_id, **settings)
    column = CONTEXT_FEATURES.index("user_has_profile")
    has = []
    for episode in range(sessions):
        observation, _ = env.reset(seed=seed if episode == 0 else None)
        has.append(observation["context"][column])
        done = False
        while not done:
            observation, _, done, _, _ = env.step(int(np.argmax(observation["mask"])))
    return float(np.mean(has))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", type=Path, default=Path("ranker/assets/starting_policy"))
    parser.add_argument("--env", default="envs/SessionShopping-v0")
    parser.add_argument("--episodes", type=int, default=4000, help="sessions per policy (>= 2,000 for the targets)")
    parser.add_argument("--log-episodes", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--catalog", default=None, help="data directory with a built index (default: the demo shop)")
    parser.add_argument("--set", dest="settings", action="append", default=[], help="NAME=JSON: a simulator setting (repeatable)")
    parser.add_argument("--slate", action="store_true", help="also PPO against the baselines on envs/SlateShopping-v0 (target c)")
    parser.add_argument("--profiles", type=int, default=0, help="first print the share of sessions by a user with a profile over this many")
    args = parser.parse_args()
    from envs.catalog import demo_data_dir
    from ranker.retrieval.demo_index import ensure_demo_index

    if args.catalog is None:
        ensure_demo_index(demo_data_dir())
    settings = {**parse_settings(args.settings), **({"catalog": args.catalog} if args.catalog else {})}
    if args.profiles:
        catalog = {key: value for key, value in settings.items() if key == "catalog"}
        for env_id in ("envs/SlateShopping-v0", args.env):
            share = profile_share(env_id, args.profiles, args.seed, catalog)
            print(f"{env_id}: {share:.3f} of the first {args.profiles} sessions of a world by a user with a profile (retrieval order)")
    policy = RankingPolicy.load(args.policy)
    print(f"policy {policy.version} ({args.policy}); {args.episodes} sessions per policy, seed {args.seed}; load average {os.getloadavg()[0]:.1f}")
    report: dict[str, Any] = {"policy": policy.version, "episodes": args.episodes, "seed": args.seed, "settings": args.settings}
    logs = evaluate(args.env, policy, episodes=args.episodes, seed=args.seed, log_episodes=args.log_episodes, settings=settings)
    table = with_ppo_paired(summarise(logs), logs)
    print(format_table(table))
    print(format_ppo_paired(table))
    print(format_paired(paired_table(logs, "ppo"), "ppo"))
    found = verdicts(logs, sessions=True)
    clicks = found["clicks_pay"]["purchases"]
    print(
        f"(a) the session's clicks pay, purchases/session, PPO vs PPO without session features: {describe('ppo', clicks)}: "
        f"{'met' if clicks['difference_ci95'][0] > 0 else 'NOT met'}"
    )
    for metric in METRICS:
        result = found[f"ppo_vs_best_{metric}"]
        print(
            f"(b) {metric}/session, PPO vs the best myopic baseline ({result['best']}): {describe('ppo', result)}: "
            f"{'met' if result['ratio_ci95'][0] >= 0.99 else 'NOT met'} (lower bound >= 0.99)"
        )
    for metric, result in found["where"].items():
        print(f"    where, {metric.replace('_', ' ')}/session, PPO vs {found['ppo_vs_best_rewards']['best']}: {describe('ppo', result)}")
    for name in ("oracle", "sub_intent_oracle"):  # what knowing more than the query is worth, on each page
        for metric in ("first_page_rewards", "later_page_rewards"):
            result = paired(logs[name].metric(metric), logs["intent_blind_oracle"].metric(metric))
            found.setdefault("information", {}).setdefault(name, {})[metric] = result
            print(f"    information, {metric.replace('_', ' ')}/session, {name} vs intent_blind_oracle: {describe(name, result)}")
    later = {name: float(log.metric("later_page_rewards").mean() / max(log.rewards.mean(), 1e-9)) for name, log in logs.items()}
    print("share of the reward earned after page 1: " + ", ".join(f"{name} {share:.1%}" for name, share in later.items()))
    report.update(session_table=table, session_targets=found, later_page_share=later)
    if args.slate:
        slate_settings = {key: value for key, value in settings.items() if key == "catalog"}
        slate_logs = evaluate("envs/SlateShopping-v0", policy, episodes=args.episodes, seed=args.seed, log_episodes=args.log_episodes, settings=slate_settings)
        slate_table = with_ppo_paired(summarise(slate_logs), slate_logs)
        print(format_table(slate_table))
        print(format_ppo_paired(slate_table))
        slate = verdicts(slate_logs, sessions=False)
        for metric in METRICS:
            result = slate[f"ppo_vs_best_{metric}"]
            print(
                f"(c) SlateShopping {metric}/session, PPO vs the best baseline ({result['best']}): {describe('ppo', result)}: "
                f"{'met' if result['ratio'] >= 0.98 else 'NOT met'} (>= 0.98x)"
            )
        report.update(slate_table=slate_table, slate_targets=slate)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "session.json").write_text(json.dumps(report, indent=2, default=float))
    print(f"wrote {OUT / 'session.json'}")


if __name__ == "__main__":
    main()
