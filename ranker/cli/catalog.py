"""``ranker demo-catalog``, ``ranker index build|bridge|info|compact`` and ``ranker search``: the catalog and its indexes."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ranker.cli import main
from ranker.cli.common import (
    data_dir_option,
    prefix_option,
    setting,
    shown,
)


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
@click.option(
    "--encoders", "encoder_spec", default="default", show_default=True, help="'default' (MiniLM + EfficientNet-Lite0) or 'clip:<checkpoint dir or hub id>'."
)
@click.option(
    "--index-type",
    type=click.Choice(["auto", "flat", "hnsw", "ivf", "ivfpq"]),
    default="auto",
    show_default=True,
    help="auto: exact below --exact-threshold items, HNSW below --ivfpq-threshold, IVF-PQ from there on.",
)
@click.option("--exact-threshold", type=click.IntRange(min=1), default=20_000, show_default=True)
@click.option(
    "--ivfpq-threshold", type=click.IntRange(min=1), default=500_000, show_default=True, help="auto: IVF-PQ (catalogs past memory) from this many items."
)
@click.option("--strict", is_flag=True, help="Fail on the first bad catalog line instead of skipping and reporting it.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option(
    "--encoder-backend",
    type=click.Choice(["auto", "onnx", "torch"]),
    default=setting("encoder_backend"),
    show_default=shown("encoder_backend"),
    help="auto: ONNX Runtime on the CPU (graphs exported once into DATA_DIR/models), torch on CUDA.",
)
def index_build(
    catalog_path: Path,
    data_dir: Path,
    encoder_spec: str,
    index_type: str,
    exact_threshold: int,
    ivfpq_threshold: int,
    strict: bool,
    device: str,
    encoder_backend: str,
) -> None:
    """Load a catalog, embed every item and (re)build the indexes under --data-dir."""
    from ranker.catalog.items import CatalogError, load_catalog
    from ranker.retrieval.encoders import load_encoders, models_dir
    from ranker.retrieval.engine import SearchEngine
    from ranker.retrieval.index import IndexConfig

    try:
        loaded = load_catalog(catalog_path, strict=strict)
    except CatalogError as exc:
        raise click.ClickException(str(exc)) from None
    _report_errors("skipped", loaded.errors)
    click.echo(loaded.summary(), err=True)
    if not loaded.items:
        raise click.ClickException(f"{catalog_path}: no valid items to index")
    encoders = load_encoders(encoder_spec, device, backend=encoder_backend, cache_dir=models_dir(data_dir))
    click.echo(f"encoders run on {', '.join(f'{part}: {runtime}' for part, runtime in encoders.runtime().items())}", err=True)
    engine = SearchEngine(
        encoders,
        data_dir,
        index_config=IndexConfig(index_type=index_type, exact_threshold=exact_threshold, ivfpq_threshold=ivfpq_threshold),  # type: ignore[arg-type]
    )
    report = engine.build(loaded.items, progress=True)
    _report_errors("rejected", report.errors)
    _refit(engine, device=device)
    where = engine.save(encoder_spec=encoder_spec)
    click.echo(f"{report.summary()}; saved to {where}")


@index.command("bridge")
@data_dir_option
@click.option(
    "--if-due", is_flag=True, help="Only refit when the manifest says a refit is due (the catalog changed by the refit share, or reached the minimum)."
)
@click.option("--min-pairs", type=click.IntRange(min=2), default=None, help="Items with a text and a picture needed for the learned bridge [default: 200].")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Passes over the pairs [default: enough for ~600 steps, 2 to 200].")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu or cuda.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="CPU threads for the fit (one is fastest on shared cores).")
@click.option(
    "--redis-url",
    default=setting("redis_url"),
    show_default=shown("redis_url"),
    help="The deployment's Redis [env REDIS_URL]; unset: the embedded one under --data-dir when there is one. Writes made through the API "
    "since the last snapshot are read from its catalog stream, and the new bridge is published there: every server serves it at its next request.",
)
@prefix_option
def index_bridge(
    data_dir: Path, if_due: bool, min_pairs: int | None, epochs: int | None, device: str, threads: int, redis_url: str | None, prefix: str
) -> None:
    """Fit the text-picture bridge on the catalog's own (text, picture) pairs and recalibrate the channels.

    Works on a catalog built from a file (`ranker index build`) and on one written through the API (its item
    store and snapshots under --data-dir, its latest writes in the catalog stream). Below the minimum number
    of pairs the ImageNet-label bridge keeps serving; the index manifest (``ranker index info``) says which
    bridge serves and why. The maintenance worker beside `ranker serve` does the same by itself when due."""
    from ranker.live.backend import EmbeddedRedis, connect
    from ranker.live.catalog_stream import CatalogLog

    embedded = None
    if not redis_url and (data_dir / "redis").is_dir():
        embedded = EmbeddedRedis(data_dir / "redis")  # joins the server's when it runs
        redis_url = embedded.url
    try:
        engine = _open(data_dir, reconcile=not redis_url)
        catalog_log = None
        if redis_url:
            catalog_log = CatalogLog(connect(redis_url, socket_timeout=30), prefix=prefix)
            applied = catalog_log.catch_up(engine)
            engine.reconcile()
            click.echo(f"{applied} catalog stream entries applied (the writes its snapshot lacked)", err=True)
        if if_due and not engine.bridge_info()["due"]:
            click.echo(f"no refit due: {json.dumps(engine.bridge_info())}")
            return
        _refit(engine, device=device, min_pairs=min_pairs, epochs=epochs, threads=threads)
        engine.save(stream_position=catalog_log.last_id if catalog_log else None)
        if catalog_log is not None:
            catalog_log.publish_bridge(engine)
            click.echo("published to every server through the catalog stream", err=True)
    finally:
        if embedded is not None:
            embedded.close()


def _refit(engine, *, device: str, min_pairs: int | None = None, epochs: int | None = None, threads: int = 1) -> None:
    """Fit the bridge and the calibration with a progress bar, and say which bridge serves."""
    from ranker.retrieval.bridge import MIN_PAIRS, refit_bridge

    state = refit_bridge(engine, min_pairs=min_pairs or MIN_PAIRS, epochs=epochs, device=device, threads=threads, progress=True)
    calibrated = ", ".join(sorted(engine.calibration.channels)) or "none (raw cosines)"
    click.echo(f"bridge: {state['serving']} ({state['reason']}); calibrated channels: {calibrated}", err=True)


@index.command("info")
@data_dir_option
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda: the device a server would use.")
@click.option("--encoder-backend", type=click.Choice(["auto", "onnx", "torch"]), default=setting("encoder_backend"), show_default=shown("encoder_backend"))
def index_info(data_dir: Path, device: str, encoder_backend: str) -> None:
    """Print the index manifest (encoders, counts, index types, build time) as JSON, with ``serving_runtime``:
    what a server on this data directory would run the encoders on (``encoder_runtime`` is what built the index)."""
    from ranker.retrieval.encoders import models_dir, planned_runtime
    from ranker.retrieval.engine import manifest_path

    manifest = manifest_path(data_dir)
    if not manifest.exists():
        raise click.ClickException(f"no index under {data_dir}: run `ranker index build --catalog PATH --data-dir {data_dir}`")
    body = json.loads(manifest.read_text())
    body["serving_runtime"] = planned_runtime(body.get("encoder_spec") or "default", device, backend=encoder_backend, cache_dir=models_dir(data_dir))
    click.echo(json.dumps(body, indent=2))


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
def search(
    text: str | None,
    image_path: Path | None,
    k: int,
    categories: tuple[str, ...],
    price_min: float | None,
    price_max: float | None,
    data_dir: Path,
    as_json: bool,
) -> None:
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


def _open(data_dir: Path, *, reconcile: bool = True):
    """The engine under ``data_dir``: its snapshot, or (a catalog written through the API) its item store."""
    from ranker.retrieval.engine import IndexMismatchError, manifest_path, open_engine

    if not manifest_path(data_dir).exists() and not (data_dir / "index" / "items.sqlite").exists():
        raise click.ClickException(
            f"no catalog under {data_dir}: run `ranker index build --catalog PATH --data-dir {data_dir}` first, or write items through the API"
        )
    try:
        return open_engine(data_dir, reconcile=reconcile)
    except IndexMismatchError as exc:
        raise click.ClickException(str(exc)) from None


def _report_errors(verb: str, errors: list) -> None:
    for error in errors[:50]:
        click.echo(f"{verb}: {error}", err=True)
    if len(errors) > 50:
        click.echo(f"... and {len(errors) - 50} more {verb}", err=True)
