"""``ranker ab ...``: A/B and interleaving experiments against a running service, over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ranker.cli import main
from ranker.cli.common import (
    _parse_overrides,
    data_dir_option,
    set_option,
    setting,
    shown,
)

# ------------------------------------------------------------------ A/B tests
url_option = click.option("--url", envvar="RANKER_URL", default="http://127.0.0.1:8000", show_default=True, help="The ranking service [env RANKER_URL].")
api_key_option = click.option(
    "--api-key-file",
    "api_key",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="A file holding the service's key (admin for create and stop); else RANKER_ADMIN_KEY, RANKER_API_KEY or RANKER_INGEST_KEY. "
    "Never the key itself on a command line: ps shows it.",
)


def service_key(path: str | None = None) -> str | None:
    """The key the commands send: from ``path``, else the environment (admin, then the one key, then ingest)."""
    import os

    if path:
        return open(path).read().strip() or None
    return os.environ.get("RANKER_ADMIN_KEY") or os.environ.get("RANKER_API_KEY") or os.environ.get("RANKER_INGEST_KEY") or None


def _client(url: str, api_key: str | None = None, timeout_s: float = 60.0):
    from ranker.client import ApiClient

    return ApiClient(url, api_key=service_key(api_key), timeout_s=timeout_s)


def _call(function, *args):
    """Run an API call; the service's error message becomes the command's."""
    from ranker.client import ApiError

    try:
        return function(*args)
    except ApiError as exc:
        raise click.ClickException(str(exc)) from None


def _parse_arms(specs: tuple[str, ...]) -> list[dict[str, object]]:
    arms = []
    for spec in specs:
        name, sep, rest = spec.partition("=")
        policy, _, weight = rest.partition(":")
        if not sep or not name or not policy:
            raise click.BadParameter(f"{spec!r}: use NAME=POLICY or NAME=POLICY:WEIGHT", param_hint="--arm")
        try:
            arms.append({"name": name, "policy": policy, "weight": float(weight) if weight else None})
        except ValueError:
            raise click.BadParameter(f"{spec!r}: the weight {weight!r} is not a number", param_hint="--arm") from None
    unweighted = [arm for arm in arms if arm["weight"] is None]
    if unweighted:  # what the given weights leave, split evenly
        left = 1.0 - sum(arm["weight"] for arm in arms if arm["weight"] is not None)
        for arm in unweighted:
            arm["weight"] = left / len(unweighted)
    return arms


def _experiment_line(experiment: dict) -> str:
    arms = ", ".join(f"{arm['name']}={arm['policy']} ({arm['weight']:.0%})" for arm in experiment["arms"])
    layer = f" layer {experiment['layer']}" if experiment.get("layer") else ""
    return f"{experiment['experiment_id']:<18} {experiment['status']:<9} {experiment['mode']:<10} {experiment['traffic']:.0%} of users{layer}: {arms}  [{experiment['name']}]"


@main.group()
def ab() -> None:
    """A/B and interleaving experiments between policy versions, on a running service."""


@ab.command("create")
@click.option("--name", required=True, help="What the experiment tests.")
@click.option(
    "--arm",
    "arms",
    multiple=True,
    required=True,
    metavar="NAME=POLICY[:WEIGHT]",
    help="An arm: a policy version or 'retrieval'; weights default to an even split of what is left (repeatable, first = control).",
)
@click.option(
    "--mode", type=click.Choice(["ab", "interleave"]), default="ab", show_default=True, help="Split users between arms, or interleave 2 arms in every slate."
)
@click.option("--layer", default=None, help="Share a layer's users with the other experiments in it (otherwise experiments may not overlap).")
@click.option("--traffic", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True, help="Share of users in the experiment.")
@click.option(
    "--primary-metric",
    type=click.Choice(["purchases_per_session", "purchase_rate", "click_through", "revenue_per_session"]),
    default="purchases_per_session",
    show_default=True,
    help="The metric the experiment decides on.",
)
@click.option("--guardrail", "guardrails", multiple=True, default=("click_through",), show_default=True, help="Guardrail metrics (repeatable).")
@click.option("--duration", type=click.FloatRange(0, min_open=True), default=None, help="Stop by itself after this many seconds (default: when stopped).")
@click.option("--id", "experiment_id", default=None, help="The experiment's id (default: generated).")
@url_option
@api_key_option
def ab_create(
    name: str,
    arms: tuple[str, ...],
    mode: str,
    layer: str | None,
    traffic: float,
    primary_metric: str,
    guardrails: tuple[str, ...],
    duration: float | None,
    experiment_id: str | None,
    url: str,
    api_key: str | None,
) -> None:
    """Start an experiment; prints its id."""
    import time

    body: dict[str, object] = {
        "name": name,
        "arms": _parse_arms(arms),
        "mode": mode,
        "traffic": traffic,
        "primary_metric": primary_metric,
        "guardrail_metrics": list(guardrails),
    }
    for field_name, value in (("layer", layer), ("experiment_id", experiment_id), ("end_at", time.time() + duration if duration else None)):
        if value is not None:
            body[field_name] = value
    experiment = _call(_client(url, api_key).post, "/v1/experiments", body)
    click.echo(_experiment_line(experiment))


@ab.command("list")
@url_option
def ab_list(url: str) -> None:
    """Every experiment with its status."""
    for experiment in _call(_client(url).get, "/v1/experiments")["experiments"]:
        click.echo(_experiment_line(experiment))


@ab.command("show")
@click.argument("experiment_id")
@url_option
def ab_show(experiment_id: str, url: str) -> None:
    """One experiment's definition, as JSON."""
    click.echo(json.dumps(_call(_client(url).get, f"/v1/experiments/{experiment_id}"), indent=2))


@ab.command("stop")
@click.argument("experiment_id")
@url_option
@api_key_option
def ab_stop(experiment_id: str, url: str, api_key: str | None) -> None:
    """Stop an experiment (its logs and report stay)."""
    click.echo(_experiment_line(_call(_client(url, api_key).post, f"/v1/experiments/{experiment_id}/stop")))


@ab.command("report")
@click.argument("experiment_id")
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Where the plots and report.json go (default: ./ab-reports/ID)."
)
@click.option("--alpha", type=click.FloatRange(0, 0.5, min_open=True, max_open=True), default=0.05, show_default=True, help="Significance level.")
@click.option("--mde", type=click.FloatRange(0, min_open=True), default=0.10, show_default=True, help="Relative effect the sequential test is tuned for.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole report as JSON.")
@url_option
def ab_report(experiment_id: str, out_dir: Path | None, alpha: float, mde: float, as_json: bool, url: str) -> None:
    """Print an experiment's report and write its plots (metric per arm over time, p-values over time)."""
    from ranker.experiments.plots import plot_report
    from ranker.experiments.store import summarise

    report = _call(_client(url).get, f"/v1/experiments/{experiment_id}/report?alpha={alpha}&mde={mde}")
    out_dir = out_dir or Path("ab-reports") / experiment_id
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    plots = plot_report(report, out_dir)
    click.echo(json.dumps(report, indent=2) if as_json else summarise(report))
    click.echo(f"plots: {', '.join(str(path) for path in plots)}; report: {out_dir / 'report.json'}", err=True)


@ab.command("simulate")
@click.option("--sessions", type=click.IntRange(min=1), default=1000, show_default=True, help="Simulated shopping sessions to send.")
@data_dir_option
@click.option("--seed", type=int, default=0, show_default=True, help="The simulated world (its users and their sessions).")
@click.option(
    "--skip",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Continue the world of --seed after the sessions an earlier run sent (e.g. a pre-period before the experiment).",
)
@set_option
@click.option("--experiment", "experiment_id", default=None, help="Print this experiment's report at the end.")
@click.option(
    "--redis-url",
    default=setting("redis_url"),
    help="The service's Redis [env REDIS_URL], for a catalog written through the API; unset: its embedded one under --data-dir.",
    show_default=shown("redis_url"),
)
@click.option("--prefix", default=setting("prefix"), show_default=shown("prefix"), help="The service's Redis key prefix [env RANKER_PREFIX].")
@url_option
def ab_simulate(
    sessions: int, data_dir: Path, seed: int, skip: int, overrides: tuple[str, ...], experiment_id: str | None, redis_url: str | None, prefix: str, url: str
) -> None:
    """Send simulated shoppers (envs) to a running service: rank, play the slate, report clicks and purchases.

    --data-dir must be the service's, so that the simulator knows its items
    (a built index, or the catalog written through the API). The
    same --seed meets the same users, so a run before the experiment (say
    --sessions 2000) and one after it (--skip 2000) give CUPED its pre-period.
    """
    from collections import Counter

    from tqdm.auto import tqdm

    import envs
    from ranker.client import ApiError
    from ranker.harness import Shopper, session_through
    from ranker.learning.world import NoSimulatedWorld, shoppers_world

    client = _client(url)
    try:
        shopper = Shopper(shoppers_world(data_dir, redis_url, prefix=prefix), seed, **_parse_overrides(overrides))
    except (envs.ConfigError, NoSimulatedWorld) as exc:
        raise click.ClickException(str(exc)) from None
    shopper.skip(skip)
    served: Counter[str] = Counter()
    rewards = 0.0
    for _ in tqdm(range(sessions), desc="sessions", unit="session"):
        try:
            reward, body, _ = session_through(client, shopper, shopper.reset())
        except ApiError as exc:
            raise click.ClickException(str(exc)) from None
        rewards += reward
        experiment = body.get("experiment")
        served[f"{experiment['experiment_id']}:{experiment['arm'] or 'interleaved'}" if experiment else "outside experiments"] += 1
    click.echo(
        f"{sessions} sessions, mean reward {rewards / sessions:.3f}; served by: " + ", ".join(f"{name} {count}" for name, count in sorted(served.items()))
    )
    if experiment_id:
        from ranker.experiments.store import summarise

        click.echo(summarise(_call(client.get, f"/v1/experiments/{experiment_id}/report")))


@ab.command("preview")
@click.argument("version")
@click.option("--rankings", type=click.IntRange(min=10), default=2000, show_default=True, help="Latest logged rankings to estimate from.")
@click.option("--json", "as_json", is_flag=True, help="Print the estimate as JSON.")
@url_option
def ab_preview(version: str, rankings: int, as_json: bool, url: str) -> None:
    """Off-policy estimate of a policy version's value from logged rankings (IPS, SNIPS, DR), before it gets traffic."""
    result = _call(_client(url, timeout_s=600).get, f"/v1/policies/{version}/estimate?rankings={rankings}")  # replays every logged decision
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"{version}: {result['rankings']} logged rankings (skipped {result['skipped']}); logged policies' value {result['logged_value']}")
    for name, value in result["estimators"].items():
        click.echo(f"  {name:<6} {value['value']:.4f}  95% CI [{value['ci95'][0]:.4f}, {value['ci95'][1]:.4f}]")
    click.echo(f"  effective sample size {result['effective_sample_size']}")
