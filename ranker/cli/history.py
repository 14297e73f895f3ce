"""``ranker import events FILE``: a shop's logged history into the counters, the profiles and the event log."""

from __future__ import annotations

from pathlib import Path

import click

from ranker.cli import main
from ranker.cli.common import data_dir_option, prefix_option, redis_url_option


@main.group("import")
def import_group() -> None:
    """Bring history in from other tools."""


@import_group.command("events")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "metarank", "obp"]),
    default="auto",
    show_default=True,
    help="metarank: JSON lines of item, ranking and interaction events; obp: a logged-bandit table (CSV); auto: by the file's name.",
)
@data_dir_option
@redis_url_option
@prefix_option
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bars on stderr.")
def import_events(path: Path, fmt: str, data_dir: Path, redis_url: str | None, prefix: str, progress: bool) -> None:
    """Import logged events: warm item counters and user profiles, write rankings and interactions to the event log.

    Idempotent: a re-run (or an overlapping file) counts nothing twice. Items must be in the catalog under
    --data-dir (an `item` event adds or updates one); what is left out is reported with the reason.
    """
    from ranker.config import load_settings
    from ranker.history.formats import HistoryFormatError
    from ranker.history.importer import HistoryImporter, ImportLocked
    from ranker.live.backend import EmbeddedRedis, connect, redacted
    from ranker.live.state import user_key_secret
    from ranker.retrieval.fusion import manifest_path

    if not manifest_path(data_dir).exists():
        raise click.ClickException(
            f"no catalog index under {data_dir}: build one first (`ranker index build --catalog FILE --data-dir {data_dir}`, or `make serve`)"
        )
    settings = load_settings()
    embedded = None
    if not redis_url:
        embedded = EmbeddedRedis(data_dir / "redis")  # joins the server's embedded Redis when it runs
        redis_url = embedded.url
    try:
        from ranker.retrieval.engine import open_engine

        engine = open_engine(data_dir, encoder_backend=settings.encoder_backend)
        importer = HistoryImporter(
            engine,
            connect(redis_url, socket_timeout=60),
            user_key_secret=user_key_secret(settings.user_key_secret, data_dir),
            prefix=prefix,
            stream_max_len=settings.stream_max_len,
            profile_ttl_s=settings.profile_ttl_s,
        )
        click.echo(f"importing {path} into {redacted(redis_url)} (prefix {prefix})", err=True)
        report = importer.run(path, fmt, progress=progress, log=lambda line: click.echo(line, err=True))
    except (HistoryFormatError, ImportLocked) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        if embedded is not None:
            embedded.close()
    for line in report.lines():
        click.echo(line)
