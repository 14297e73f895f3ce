"""``ranker maintain``: the catalog's maintenance worker (bridge fits, compaction, snapshots), on its own or beside a server."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

import click

from ranker.cli import main
from ranker.cli.common import data_dir_option, prefix_option, redis_url_option, setting, shown


@main.command()
@data_dir_option
@redis_url_option
@prefix_option
@click.option("--once", is_flag=True, help="One round (apply the catalog stream, fit when due, compact, snapshot), then exit.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=setting("maintenance_interval_s"),
    show_default=shown("maintenance_interval_s"),
    help="Seconds between rounds.",
)
@click.option(
    "--min-pairs",
    type=click.IntRange(min=2),
    default=setting("bridge_min_pairs"),
    show_default=shown("bridge_min_pairs"),
    help="(title, picture) pairs before the learned bridge is fitted.",
)
@click.option("--device", default=setting("device"), show_default=shown("device"), help="auto (CUDA when available), cpu or cuda: where the bridge is fitted.")
@click.option(
    "--nice", "niceness", type=click.IntRange(0, 19), default=10, show_default=True, help="Lower this process's CPU priority so serving keeps its cores."
)
def maintain(data_dir: Path, redis_url: str | None, prefix: str, once: bool, interval: float, min_pairs: int, device: str, niceness: int) -> None:
    """Keep the catalog under --data-dir maintained: fit the text-picture bridge and calibration when due and publish
    them to every server, compact the indexes, and snapshot them (on a schedule and when stopped)."""
    from ranker.cli.serve import refuse_secret_in_argv
    from ranker.config import load_settings
    from ranker.learning.maintenance import Maintenance, MaintenanceConfig
    from ranker.learning.supervisor import PARENT_PID_ENV
    from ranker.live.backend import EmbeddedRedis, connect, redacted

    refuse_secret_in_argv("redis_url", redis_url)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s maintenance %(levelname)s %(message)s")
    if niceness:
        os.nice(niceness)
    stop = threading.Event()
    for stop_signal in (signal.SIGTERM, signal.SIGINT):  # either: finish the round, snapshot, exit
        signal.signal(stop_signal, lambda *_: stop.set())
    settings = load_settings()
    embedded = None
    if not redis_url:
        embedded = EmbeddedRedis(data_dir / "redis")  # joins the server's embedded Redis when it runs
        redis_url = embedded.url
    config = MaintenanceConfig(
        prefix=prefix,
        interval_s=interval,
        settle_s=settings.bridge_settle_s,
        max_wait_s=settings.bridge_max_wait_s,
        snapshot_interval_s=settings.snapshot_interval_s,
        min_pairs=min_pairs,
        device=device,
        fit_cpu_share=settings.bridge_fit_cpu_share,
    )
    parent = int(os.environ.get(PARENT_PID_ENV, 0))  # started by `ranker serve`: stop when it is gone
    try:
        client = connect(redis_url, socket_timeout=30)
        click.echo(f"maintaining {data_dir} from {redacted(redis_url)} (prefix {prefix})", err=True)
        worker = Maintenance(client, data_dir, config)
        if once:
            done = worker.round(now_or_never=True)
            click.echo(
                f"applied {done.applied} catalog entries; bridge: {worker.engine.bridge_info()['serving']}"
                f"{' (fitted now)' if done.fitted else ''}; snapshot: {done.snapshot or 'unchanged'}",
                err=True,
            )
            return
        worker.run(until=lambda: stop.is_set() or bool(parent and os.getppid() != parent))
    finally:
        if embedded is not None:
            embedded.close()
