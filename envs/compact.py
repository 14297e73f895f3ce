"""The compact demo world packaged with ``envs``: what ``gymnasium.make`` uses on a fresh install.

The environments need a :class:`envs.catalog.SimCatalog`: item attributes, the
item embeddings of a built index and an encoded query bank. Building one needs
the demo shop's pictures drawn and every item and phrase run through the
encoders: about 30 s on two cores once the encoders are exported to ONNX, a few minutes on a first run. So a small world is
built once, here, and shipped as package data:

- the demo shop's generator at :data:`COMPACT_ITEMS` items (seed 0, every
  category, pictures), indexed with the default encoders and the learned
  text-picture bridge exactly as ``ranker index build`` does;
- its :class:`SimCatalog` (three phrases per item plus their parsed twins)
  with every embedding stored as float16 and the file compressed: 4.2 MB,
  read in well under a second. Half precision moves a cosine by about 1e-3,
  far below the simulator's utility noise.

Packaging beats building into a user cache on first use: the first
``gymnasium.make`` takes a second instead of minutes, works without a writable
home or the encoders' first export, and every install sees the same world.

Rebuild it after a change to the demo generator, the encoders, the query bank
or :data:`envs.catalog.SIM_CATALOG_VERSION` (``tests/envs/test_compact.py``
fails until then)::

    python -m envs.compact            # writes envs/assets/compact_world.npz
"""

from __future__ import annotations

import argparse
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from envs.catalog import SimCatalog, build_sim_catalog

COMPACT_WORLD_PATH = Path(__file__).resolve().parent / "assets" / "compact_world.npz"
COMPACT_ITEMS = 600  # 12+ items in each of the 24 categories: room for K=100 candidates
COMPACT_SEED = 0
SOURCE = f"compact demo world ({COMPACT_ITEMS} items, packaged with envs)"


@lru_cache(maxsize=1)
def load_compact_world() -> SimCatalog:
    """The packaged world (read once per process; environments share it read-only)."""
    return SimCatalog.load(COMPACT_WORLD_PATH)


def build_compact_world(out: Path = COMPACT_WORLD_PATH, *, n_items: int = COMPACT_ITEMS, seed: int = COMPACT_SEED, progress: bool = True) -> Path:
    """Draw the demo shop at ``n_items``, index it with the default encoders and the bridge, and save its simulator
    world at half precision to ``out``."""
    from ranker.catalog.demo import write_demo_catalog
    from ranker.catalog.items import load_catalog
    from ranker.retrieval.bridge import refit_bridge
    from ranker.retrieval.engine import open_engine

    with tempfile.TemporaryDirectory(prefix="compact-world-") as work:
        catalog_file = write_demo_catalog(Path(work) / "catalog", seed=seed, n_items=n_items, with_images=True)
        engine = open_engine(Path(work) / "data", encoder_spec="default", device="cpu")
        engine.build(load_catalog(catalog_file, strict=True).items, progress=progress)
        refit_bridge(engine, progress=progress)  # as `ranker index build` and `make serve` do
        world = build_sim_catalog(engine, source=f"compact demo world ({n_items} items, packaged with envs)")
    world.save(out, vector_dtype=np.float16, compress=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Rebuild the compact demo world packaged with envs.")
    parser.add_argument("--out", type=Path, default=COMPACT_WORLD_PATH)
    parser.add_argument("--items", type=int, default=COMPACT_ITEMS)
    args = parser.parse_args(argv)
    path = build_compact_world(args.out, n_items=args.items)
    world = SimCatalog.load(path)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): {world.describe()}")


if __name__ == "__main__":
    main()
