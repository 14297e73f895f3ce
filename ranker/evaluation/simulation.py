"""Policy evaluation in the simulator: PPO against every baseline and the oracles, paired, with plots.

All policies meet the same seeded sessions (``envs.evaluation``). The
baselines that learn (LambdaMART, the linear bandit, the critic-greedy
ranker) are fitted on logs from a different world of the same environment
(seed ``seed + 1``), so none of them has seen the evaluation sessions. On the
session environment the table adds PPO with its session features zeroed
(``ppo_without_session``: the same policy as a service without session state
runs it) and the oracle told the sub-intent after page 1; every row carries
PPO against it, paired on the same sessions (purchases and reward: the
difference and the ratio, with 95% intervals).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ranker.evaluation.baselines import CriticGreedy, LambdaMART, LinearBandit, collect_logs
from ranker.evaluation.figures import new_figure, save_figure
from ranker.ranking.policy import RankingPolicy

TABLE_ORDER = (
    "ppo",
    "ppo_without_session",
    "retrieval",
    "popularity",
    "lambdamart",
    "linear_bandit",
    "critic_greedy",
    "random",
    "intent_blind_oracle",
    "sub_intent_oracle",
    "oracle",
)
BASELINES = ("lambdamart", "linear_bandit", "critic_greedy")  # the myopic learners with the same features


def is_session_env(env: Any) -> bool:
    return hasattr(env.unwrapped, "session_config")


def evaluation_policies(env: Any, policy: RankingPolicy | None, *, seed: int, log_episodes: int = 3000) -> dict[str, Any]:
    """Every policy of the table, the learners fitted on ``log_episodes`` logged sessions of world ``seed + 1``."""
    from envs.policies import WithoutSession, reference_policies, session_reference_policies

    logs = collect_logs(env, episodes=log_episodes, seed=seed + 1)
    sessions = is_session_env(env)
    reference = session_reference_policies(seed) if sessions else reference_policies(seed)
    policies: dict[str, Any] = {}
    if policy is not None:
        policies["ppo"] = policy
        if sessions:
            policies["ppo_without_session"] = WithoutSession(policy, "ppo_without_session")
    policies.update(
        {
            "retrieval": reference["retrieval"],
            "popularity": reference["popularity"],
            "lambdamart": LambdaMART(seed=seed).fit(logs),
            "linear_bandit": LinearBandit().fit(logs),
            "critic_greedy": CriticGreedy(reward_weights=env.unwrapped.config.reward_weights, seed=seed).fit(logs),
            "random": reference["random"],
        }
    )
    policies.update({name: reference[name] for name in ("intent_blind_oracle", "sub_intent_oracle", "oracle") if name in reference})
    return policies


def evaluate_policies(
    env: Any, policy: RankingPolicy | None, *, episodes: int, seed: int, log_episodes: int = 3000, progress: bool = False
) -> dict[str, dict[str, Any]]:
    """The evaluation table: {name: {reward_mean, reward_ci95, purchases_mean, pages_mean, abandonment, oracle_ratio,
    ..., and with a PPO policy ``ppo_vs``: PPO against this row, paired}}."""
    from envs.evaluation import paired, run_all, summarise

    logs = run_all(env, evaluation_policies(env, policy, seed=seed, log_episodes=log_episodes), episodes=episodes, seed=seed, progress=progress)
    table = summarise(logs)
    if "ppo" in logs:
        for name, log in logs.items():
            if name != "ppo":
                table[name]["ppo_vs"] = {metric: paired(logs["ppo"].metric(metric), log.metric(metric)) for metric in ("purchases", "rewards")}
    return table


def format_ppo_paired(table: dict[str, dict[str, Any]]) -> str:
    """PPO against each other row, paired on the same sessions: purchases and reward per session, ratio and
    difference with 95% intervals."""
    lines = ["PPO against each policy, paired on the same sessions (95% intervals):"]
    for name, row in table.items():
        if "ppo_vs" not in row:
            continue
        cells = []
        for metric in ("purchases", "rewards"):
            value = row["ppo_vs"][metric]
            ratio = "" if value["ratio"] is None else f"{value['ratio']:.3f}x [{value['ratio_ci95'][0]:.3f}, {value['ratio_ci95'][1]:.3f}]"
            low, high = value["difference_ci95"]
            cells.append(f"{metric} {ratio} ({value['difference']:+.4f} [{low:+.4f}, {high:+.4f}])")
        lines.append(f"  vs {name:<20} " + "; ".join(cells))
    return "\n".join(lines)


def best_baseline(table: dict[str, dict[str, Any]], metric: str = "reward_mean") -> str:
    """The myopic learner with the highest ``metric`` in ``table``."""
    return max((name for name in BASELINES if name in table), key=lambda name: table[name][metric])


def plot_table(table: dict[str, dict[str, Any]], path: Path, *, title: str = "") -> Path:
    """Bar chart of mean reward per session with 95% CIs."""
    names = [name for name in TABLE_ORDER if name in table] + [name for name in table if name not in TABLE_ORDER]
    means = [table[name]["reward_mean"] for name in names]
    errors = [
        [means[i] - table[name]["reward_ci95"][0] for i, name in enumerate(names)],
        [table[name]["reward_ci95"][1] - means[i] for i, name in enumerate(names)],
    ]
    figure, axes = new_figure()
    colours = ["#d62728" if name == "ppo" else "#7f7f7f" if name == "oracle" else "#1f77b4" for name in names]
    axes.bar(names, means, yerr=errors, capsize=4, color=colours)
    for index, name in enumerate(names):
        ratio = table[name].get("oracle_ratio")
        if ratio is not None:
            axes.annotate(f"{ratio:.0%}", (index, means[index]), textcoords="offset points", xytext=(0, 8), ha="center", fontsize=8)
    axes.set_ylabel("reward per session (95% CI)")
    axes.set_title(title or "policies on the same seeded sessions (% of oracle)")
    return save_figure(figure, path)


def plot_learning_curve(curve: list[dict[str, Any]], path: Path, *, references: dict[str, float] | None = None) -> Path:
    """Held-out reward per session against training timesteps, with reference lines."""
    figure, axes = new_figure()
    if curve:
        steps = [point["timesteps"] for point in curve]
        axes.plot(steps, [point["reward_mean"] for point in curve], marker="o", color="#d62728", label="PPO (held-out worlds)")
        axes.fill_between(steps, [point["reward_ci95"][0] for point in curve], [point["reward_ci95"][1] for point in curve], color="#d62728", alpha=0.2)
    for name, value in (references or {}).items():
        axes.axhline(value, linestyle="--", linewidth=1, label=name, color="#7f7f7f" if name == "oracle" else None)
    axes.set_xlabel("training timesteps")
    axes.set_ylabel("reward per session")
    axes.set_title("learning curve")
    axes.legend(loc="lower right", fontsize=8)
    return save_figure(figure, path)
