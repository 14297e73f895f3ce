"""``ranker sim list|evaluate``: the shopper simulator and its reference policies."""

from __future__ import annotations

import json

import click

from ranker.cli import main
from ranker.cli.common import (
    _make_env,
    catalog_option,
    env_option,
    set_option,
)


@main.group()
def sim() -> None:
    """The shopper simulator: environments and reference policies."""


@sim.command("list")
def sim_list() -> None:
    """List the registered simulator environments and their settings."""
    import envs

    for env_id, kwargs in envs.ENV_IDS.items():
        settings = ", ".join(f"{key}={value}" for key, value in kwargs.items() if key in ("catalog", "click_model", "n_candidates", "slate_size"))
        click.echo(f"{env_id:<34} {settings}")


@sim.command("evaluate")
@env_option
@click.option("--episodes", type=click.IntRange(min=2), default=1000, show_default=True, help="Sessions per policy.")
@click.option("--seed", type=int, default=0, show_default=True, help="World seed: every policy meets the same sessions.")
@catalog_option
@click.option(
    "--policy",
    "policies",
    multiple=True,
    type=click.Choice(["random", "retrieval", "popularity", "intent_blind_oracle", "sub_intent_oracle", "oracle"]),
    help="Only these reference policies (repeatable; default all).",
)
@set_option
@click.option("--json", "as_json", is_flag=True, help='Print {"env", "episodes", "seed", "policies": {NAME: {reward_mean, reward_ci95, ...}}}.')
def sim_evaluate(env_id: str, episodes: int, seed: int, catalog: str | None, policies: tuple[str, ...], overrides: tuple[str, ...], as_json: bool) -> None:
    """Mean reward per session (95% CI) of the reference policies, and their ratio to the oracle (on a session
    environment also pages and abandonment per session, and the sub-intent oracle)."""
    from envs.evaluation import compare, format_table
    from envs.policies import reference_policies, session_reference_policies

    env, _ = _make_env(env_id, catalog, overrides)
    references = session_reference_policies(seed) if hasattr(env.unwrapped, "session_config") else reference_policies(seed)
    chosen = {name: policy for name, policy in references.items() if not policies or name in policies}
    table = compare(env, chosen, episodes=episodes, seed=seed, progress=not as_json)
    if as_json:
        click.echo(json.dumps({"env": env_id, "episodes": episodes, "seed": seed, "policies": table}, indent=2))
    else:
        click.echo(f"{env_id}: {episodes} sessions per policy, seed {seed}")
        click.echo(format_table(table))
