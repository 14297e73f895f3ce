"""Which shop an environment simulates: :func:`load_sim_catalog` resolves a ``catalog`` spec.

A spec is a :class:`~envs.catalog.SimCatalog`, a data directory with a built index, ``"demo"``, ``"compact"`` or
``"tiny"``. The resolution sits here, above the catalog and the packaged worlds (:mod:`envs.compact`,
:mod:`envs.tiny`) that are built from it, so that :mod:`envs.catalog` does not import the worlds made of it.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from envs.catalog import SimCatalog, build_sim_catalog, demo_data_dir, sim_catalog_path
from envs.compact import load_compact_world
from envs.config import ConfigError
from envs.tiny import tiny_catalog


def load_sim_catalog(spec: SimCatalog | str | Path = "demo", *, queries_per_item: int = 2, seed: int = 0) -> SimCatalog:
    """Resolve a catalog spec: a :class:`SimCatalog`, a data directory with a built index, ``"demo"``, ``"compact"``
    or ``"tiny"``.

    ``"demo"`` is the demo shop under ``$RANKER_DATA_DIR`` (else ``./data``), the one ``make serve`` builds, when
    an index is there; otherwise the compact demo world packaged with ``envs`` (``"compact"``,
    :mod:`envs.compact`), so ``gymnasium.make`` works on a fresh install in any directory. Making an environment
    never builds an index: a data directory without one is a :class:`ConfigError` that says how to build it.
    """
    if isinstance(spec, SimCatalog):
        return spec
    if spec == "tiny":
        return tiny_catalog()
    from ranker.retrieval.fusion import manifest_path

    if spec == "compact" or (spec == "demo" and not manifest_path(demo_data_dir()).exists()):
        return load_compact_world()
    data_dir = demo_data_dir() if spec == "demo" else Path(spec)
    if not manifest_path(data_dir).exists():
        raise ConfigError(
            f"catalog: no index with embeddings under {str(data_dir)!r}; build one with `ranker index build --catalog FILE --data-dir {data_dir}`",
            parameter="catalog",
            value=str(spec),
        )
    return _cached_catalog(sim_catalog_path(data_dir, queries_per_item=queries_per_item, seed=seed), data_dir, queries_per_item, seed)


@lru_cache(maxsize=4)
def _cached_catalog(path: Path, data_dir: Path, queries_per_item: int, seed: int) -> SimCatalog:
    if path.exists():
        return SimCatalog.load(path)
    from ranker.retrieval.engine import open_engine

    catalog = build_sim_catalog(open_engine(data_dir, device="cpu"), queries_per_item=queries_per_item, seed=seed, source=str(data_dir))
    catalog.save(path)
    return catalog
