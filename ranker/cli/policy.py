"""``ranker policy``: the versions on disk and the serving one's Bayesian head (show it, reset it to its prior)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ranker.cli import main
from ranker.cli.common import data_dir_option, setting, shown

redis_url_option = click.option(
    "--redis-url", default=setting("redis_url"), show_default=shown("redis_url"), help="Redis the servers use (unset: the embedded one under --data-dir)."
)
prefix_option = click.option("--prefix", default=setting("prefix"), show_default=shown("prefix"), help="Key prefix of the deployment in Redis.")


def _registry(data_dir: Path, redis_url: str | None, prefix: str):
    from ranker.live.backend import EmbeddedRedis, connect
    from ranker.live.registry import PolicyRegistry

    embedded = None
    if not redis_url:
        embedded = EmbeddedRedis(data_dir / "redis")  # joins the server's embedded Redis when it runs
        redis_url = embedded.url
    return PolicyRegistry(connect(redis_url), data_dir / "policies", prefix=prefix), embedded


@main.group()
def policy() -> None:
    """Policy versions and the serving version's Bayesian head."""


@policy.command("list")
@data_dir_option
@redis_url_option
@prefix_option
def policy_list(data_dir: Path, redis_url: str | None, prefix: str) -> None:
    """Versions on disk, oldest first; the serving one is marked."""
    registry, embedded = _registry(data_dir, redis_url, prefix)
    try:
        for info in registry.describe():
            click.echo(f"{'*' if info.current else ' '} {info.version}  parent {info.parent or '-'}  {info.created_at or ''}")
    finally:
        if embedded is not None:
            embedded.close()


@policy.group()
def head() -> None:
    """The Bayesian head: a posterior over a linear correction of the network's score, updated by the learner."""


@head.command("show")
@click.argument("version", required=False)
@data_dir_option
@redis_url_option
@prefix_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def head_show(version: str | None, data_dir: Path, redis_url: str | None, prefix: str, as_json: bool) -> None:
    """What VERSION's head has learnt (default: the serving version): rows, noise, examination curve, the largest
    corrections (in units of one standardised network score)."""
    registry, embedded = _registry(data_dir, redis_url, prefix)
    try:
        version = version or registry.current() or registry.ensure_current()
        loaded = registry.load(version)
    finally:
        if embedded is not None:
            embedded.close()
    if loaded.head is None:
        summary = {"version": version, "head": None, "note": "no head yet: the network's scores serve (the learner adds one with its first update)"}
    else:
        summary = {"version": version, "head": loaded.head.summary(top=10)}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"version {version}")
    if loaded.head is None:
        click.echo(f"  {summary['note']}")
        return
    info = summary["head"]
    state = "serving (calibrated)" if info["calibrated"] else "not serving yet (uncalibrated: the network's order serves)"
    click.echo(f"  head: {state}; {info['updates']} updates, {info['rows']} rows (after forgetting), noise sd {info['noise_sd']}")
    click.echo(f"  examination by position: {', '.join(str(e) for e in info['examination'])}")
    click.echo("  largest corrections (standardised network scores per unit of the input):")
    for name, value in info["largest_corrections"].items():
        click.echo(f"    {name:>24} {value:+.4f}")


@head.command("reset")
@data_dir_option
@redis_url_option
@prefix_option
def head_reset(data_dir: Path, redis_url: str | None, prefix: str) -> None:
    """Serve the current version's network with a fresh head (its prior: exactly the network's order). A new
    version is made and promoted, so a rollback returns to the head that was reset; the learner starts its
    head line again from it."""
    from ranker.learning.config import LearnerConfig
    from ranker.learning.head import fresh_head
    from ranker.ranking.policy import RankingPolicy, new_version

    registry, embedded = _registry(data_dir, redis_url, prefix)
    try:
        current = registry.current() or registry.ensure_current()
        loaded = registry.load(current)
        version = new_version()
        reset = RankingPolicy(net=loaded.net, manifest={"objective": loaded.objective}, head=fresh_head(loaded, LearnerConfig().head_settings()))
        reset.save(registry.path_of(version), version=version, parent=current, training={"kind": "head-reset"}, objective=loaded.objective)
        registry.promote(version)
    finally:
        if embedded is not None:
            embedded.close()
    click.echo(f"serving {version}: {current}'s network with a fresh head")
