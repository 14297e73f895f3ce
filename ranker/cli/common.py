"""What the command groups share: ``--data-dir``, the simulator options and their parsing."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def setting(name: str) -> Callable[[], Any]:
    """An option's default: setting ``name`` of :class:`ranker.config.Settings` (its default, or its ``RANKER_*`` variable)."""

    def read() -> Any:
        from ranker.config import SettingsError, load_settings

        try:
            return getattr(load_settings(), name)
        except SettingsError as exc:
            raise click.UsageError(str(exc)) from None

    return read


def shown(name: str) -> str:
    """How ``--help`` shows that default: the value and the variable that sets it."""
    from ranker.config import default

    variable = "REDIS_URL" if name == "redis_url" else f"RANKER_{name.upper()}"
    return f"{default(name)}; env {variable}"


def setting_option(*flags: str, name: str, help_extra: str = "", **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A click option for setting ``name`` whose default, shown default and help all come from
    :class:`ranker.config.Settings` (the field's description, then ``help_extra``): each is written once, there."""
    from ranker.config import Settings

    description = Settings.model_fields[name].description or ""
    help_text = (description[:1].upper() + description[1:] + "." + (" " + help_extra if help_extra else "")).strip()
    return click.option(*flags, default=setting(name), show_default=shown(name), help=help_text, **kwargs)


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=setting("data_dir"),
    show_default=shown("data_dir"),
    help="Where the item store, indexes, policies and embedded Redis live.",
)


redis_url_option = click.option(
    "--redis-url",
    default=setting("redis_url"),
    help="Redis server [env REDIS_URL]; unset: the embedded server under --data-dir (shared with `ranker serve`).",
    show_default=shown("redis_url"),
)
prefix_option = click.option(
    "--prefix", default=setting("prefix"), show_default=shown("prefix"), help="Redis key prefix of the deployment [env RANKER_PREFIX]."
)


def _make_env(env_id: str, catalog: str | None, overrides: tuple[str, ...]):
    """A registered simulator environment with CLI overrides, or a ClickException naming the bad setting."""
    import gymnasium as gym

    import envs

    if env_id not in envs.ENV_IDS:
        raise click.BadParameter(f"{env_id!r} is not registered; known: {', '.join(envs.ENV_IDS)}", param_hint="--env")
    kwargs = _parse_overrides(overrides)
    if catalog:
        kwargs["catalog"] = catalog
    if kwargs.get("catalog", envs.ENV_IDS[env_id].get("catalog")) == "demo":
        from envs.catalog import demo_data_dir
        from ranker.retrieval.demo_index import ensure_demo_index

        ensure_demo_index(demo_data_dir(), log=lambda line: click.echo(line, err=True))  # environments never build an index themselves
    try:
        return gym.make(env_id, **kwargs), kwargs
    except envs.ConfigError as exc:
        raise click.ClickException(str(exc)) from None


env_option = click.option("--env", "env_id", default="envs/SlateShopping-v0", show_default=True, help="A registered simulator id (see `ranker sim list`).")
catalog_option = click.option("--catalog", default=None, help="A data directory with a built index, or 'demo' (default: the environment's own).")
set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override an environment setting, e.g. --set click_model=cascade (JSON values; repeatable)."
)


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
