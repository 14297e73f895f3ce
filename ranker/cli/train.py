"""``ranker train`` and ``ranker evaluate``: offline PPO in the simulator, and the policy against the baselines."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ranker.cli import main
from ranker.cli.common import (
    _make_env,
    catalog_option,
    env_option,
    set_option,
    setting,
    shown,
)


@main.command()
@env_option
@click.option("--timesteps", type=click.IntRange(min=1), default=200_000, show_default=True, help="Environment steps of PPO.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Artifact directory (weights, manifest, checkpoints, TensorBoard logs).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--n-envs", type=click.IntRange(min=1), default=16, show_default=True, help="Parallel simulated shops per PPO rollout.")
@click.option("--eval-every", type=click.IntRange(min=1), default=20_000, show_default=True, help="Evaluate on held-out worlds and checkpoint every N steps.")
@click.option("--eval-episodes", type=click.IntRange(min=2), default=300, show_default=True)
@click.option("--learning-rate", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True)
@click.option(
    "--parent", "parent_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), help="Start from this policy artifact (recorded as the parent)."
)
@click.option(
    "--lr-schedule",
    "learning_rate_schedule",
    type=click.Choice(["linear", "constant"]),
    default="linear",
    show_default=True,
    help="linear: the learning rate decays to 0 at the last step.",
)
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu or cuda.")
@click.option(
    "--objective",
    type=click.Choice(["purchases", "revenue", "mix"]),
    default=setting("objective"),
    show_default=shown("objective"),
    help="What the policy optimises (the simulator's purchase value); recorded in the artifact.",
)
@catalog_option
@set_option
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(
    env_id: str,
    timesteps: int,
    out_dir: Path,
    seed: int,
    n_envs: int,
    eval_every: int,
    eval_episodes: int,
    learning_rate: float,
    learning_rate_schedule: str,
    parent_dir: Path | None,
    device: str,
    objective: str,
    catalog: str | None,
    overrides: tuple[str, ...],
    quiet: bool,
) -> None:
    """Train a ranking policy with PPO in the shopper simulator and save it as an artifact."""
    from ranker.ranking.objective import ENV_PURCHASE_VALUE

    overrides = (f"purchase_value={json.dumps(ENV_PURCHASE_VALUE[objective])}", *overrides)  # an explicit --set wins
    from ranker.learning.offline import TrainConfig
    from ranker.learning.offline import train as run_training
    from ranker.ranking.policy import PolicyError, RankingPolicy

    env, kwargs = _make_env(env_id, catalog, overrides)  # validates the settings before any training starts
    env.close()
    try:
        parent = RankingPolicy.load(parent_dir) if parent_dir else None
    except PolicyError as exc:
        raise click.ClickException(str(exc)) from None
    config = TrainConfig(
        env_id=env_id,
        env_kwargs=kwargs,
        timesteps=timesteps,
        seed=seed,
        n_envs=n_envs,
        eval_every=eval_every,
        eval_episodes=eval_episodes,
        learning_rate=learning_rate,
        learning_rate_schedule=learning_rate_schedule,
        device=device,
    )
    policy = run_training(config, out_dir, progress=not quiet, parent=parent)
    held_out = policy.manifest["evaluation"]["held_out"]
    low, high = held_out["reward_ci95"]
    click.echo(
        f"saved policy {policy.version} to {out_dir}: held-out reward/session {held_out['reward_mean']:.4f} [{low:.4f}, {high:.4f}] "
        f"after {policy.manifest['training']['timesteps_done']} steps ({policy.manifest['training']['steps_per_second']:.0f} steps/s)"
    )


@main.command()
@env_option
@click.option("--policy", "policy_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), required=True, help="A policy artifact directory.")
@click.option("--episodes", type=click.IntRange(min=2), default=2000, show_default=True, help="Sessions per policy.")
@click.option("--seed", type=int, default=0, show_default=True, help="World seed of the evaluation sessions (baselines are fitted on seed + 1).")
@click.option(
    "--log-episodes", type=click.IntRange(min=10), default=3000, show_default=True, help="Logged sessions the LambdaMART and bandit baselines are fitted on."
)
@click.option(
    "--plots",
    "plots_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write evaluation.png and learning_curve.png (default: POLICY/evaluation).",
)
@catalog_option
@set_option
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print {"env", "episodes", "policies": {NAME: {reward_mean, reward_ci95, clicks_mean, purchases_mean, oracle_ratio}}}.',
)
def evaluate(
    env_id: str,
    policy_dir: Path,
    episodes: int,
    seed: int,
    log_episodes: int,
    plots_dir: Path | None,
    catalog: str | None,
    overrides: tuple[str, ...],
    as_json: bool,
) -> None:
    """Compare a trained policy with every baseline and the oracle on the same seeded sessions."""
    from envs.evaluation import format_table
    from ranker.evaluation.simulation import (
        TABLE_ORDER,
        evaluate_policies,
        format_ppo_paired,
        plot_learning_curve,
        plot_table,
    )
    from ranker.learning.offline import learning_curve
    from ranker.ranking.policy import PolicyError, RankingPolicy

    try:
        policy = RankingPolicy.load(policy_dir)
    except PolicyError as exc:
        raise click.ClickException(str(exc)) from None
    env, _ = _make_env(env_id, catalog, overrides)
    table = evaluate_policies(env, policy, episodes=episodes, seed=seed, log_episodes=log_episodes, progress=not as_json)
    table = {name: table[name] for name in TABLE_ORDER if name in table}
    plots_dir = plots_dir or policy_dir / "evaluation"
    plot_table(table, plots_dir / "evaluation.png", title=f"{env_id}: {episodes} sessions per policy")
    references = {name: table[name]["reward_mean"] for name in ("oracle", "retrieval", "lambdamart") if name in table}
    plot_learning_curve(learning_curve(policy), plots_dir / "learning_curve.png", references=references)
    if as_json:
        click.echo(
            json.dumps({"env": env_id, "episodes": episodes, "seed": seed, "policy": policy.version, "plots": str(plots_dir), "policies": table}, indent=2)
        )
    else:
        click.echo(f"{env_id}: policy {policy.version}, {episodes} sessions per policy, seed {seed}")
        click.echo(format_table(table))
        click.echo(format_ppo_paired(table))
        click.echo(f"plots: {plots_dir / 'evaluation.png'}, {plots_dir / 'learning_curve.png'}")
