"""Policy evaluation in the simulator: PPO against every baseline and the oracle, with plots.

All policies meet the same seeded sessions (``envs.evaluation.compare``). The
baselines that learn (LambdaMART, the linear bandit) are fitted on logs from
a different world of the same environment (seed ``seed + 1``), so none of
them has seen the evaluation sessions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ranker.learning.baselines import LambdaMART, LinearBandit, collect_logs
from ranker.ranking.policy import RankingPolicy

TABLE_ORDER = ("ppo", "retrieval", "popularity", "lambdamart", "linear_bandit", "random", "intent_blind_oracle", "oracle")


def evaluate_policies(
    env: Any, policy: RankingPolicy | None, *, episodes: int, seed: int, log_episodes: int = 3000, progress: bool = False
) -> dict[str, dict[str, Any]]:
    """The evaluation table: {name: {reward_mean, reward_ci95, clicks_mean, purchases_mean, oracle_ratio, ...}}."""
    from envs.evaluation import compare
    from envs.policies import reference_policies

    logs = collect_logs(env, episodes=log_episodes, seed=seed + 1)
    reference = reference_policies(seed)
    policies: dict[str, Any] = {}
    if policy is not None:
        policies["ppo"] = policy
    policies.update(
        {
            "retrieval": reference["retrieval"],
            "popularity": reference["popularity"],
            "lambdamart": LambdaMART(seed=seed).fit(logs),
            "linear_bandit": LinearBandit().fit(logs),
            "random": reference["random"],
            "intent_blind_oracle": reference["intent_blind_oracle"],
            "oracle": reference["oracle"],
        }
    )
    return compare(env, policies, episodes=episodes, seed=seed, progress=progress)


def plot_table(table: dict[str, dict[str, Any]], path: Path, *, title: str = "") -> Path:
    """Bar chart of mean reward per session with 95% CIs."""
    names = [name for name in TABLE_ORDER if name in table] + [name for name in table if name not in TABLE_ORDER]
    means = [table[name]["reward_mean"] for name in names]
    errors = [
        [means[i] - table[name]["reward_ci95"][0] for i, name in enumerate(names)],
        [table[name]["reward_ci95"][1] - means[i] for i, name in enumerate(names)],
    ]
    figure, axes = _figure()
    colours = ["#d62728" if name == "ppo" else "#7f7f7f" if name == "oracle" else "#1f77b4" for name in names]
    axes.bar(names, means, yerr=errors, capsize=4, color=colours)
    for index, name in enumerate(names):
        ratio = table[name].get("oracle_ratio")
        if ratio is not None:
            axes.annotate(f"{ratio:.0%}", (index, means[index]), textcoords="offset points", xytext=(0, 8), ha="center", fontsize=8)
    axes.set_ylabel("reward per session (95% CI)")
    axes.set_title(title or "policies on the same seeded sessions (% of oracle)")
    return _save(figure, path)


def plot_learning_curve(curve: list[dict[str, Any]], path: Path, *, references: dict[str, float] | None = None) -> Path:
    """Held-out reward per session against training timesteps, with reference lines."""
    figure, axes = _figure()
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
    return _save(figure, path)


def _figure():
    """A new figure on the headless backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(8, 4))


def _save(figure: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
