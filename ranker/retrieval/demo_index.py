"""The demo shop's index, built once: what ``make serve``, the notebooks and the benches call before they need it.

It lives in retrieval, not beside the demo catalog in :mod:`ranker.catalog.demo`, because building an index is
retrieval's work (the encoders, the FAISS indexes, the bridge); the catalog stage only writes the items.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ranker.catalog.demo import write_demo_catalog


def ensure_demo_index(data_dir: Path, *, log: Callable[[str], None] = print) -> bool:
    """Build the demo catalog and its index under ``data_dir`` when no index is there.

    Returns True when it built one. The catalog goes to ``data_dir/demo-catalog``.
    """
    from ranker.catalog.items import load_catalog
    from ranker.retrieval.engine import manifest_path, open_engine

    if manifest_path(data_dir).exists():
        return False
    catalog = Path(data_dir) / "demo-catalog" / "catalog.jsonl"
    if not catalog.exists():
        log(f"writing the demo catalog to {catalog.parent}")
        write_demo_catalog(catalog.parent, seed=0)
    engine = open_engine(Path(data_dir))
    report = engine.build(load_catalog(catalog, strict=True).items, progress=True)
    from ranker.retrieval.bridge import refit_bridge

    state = refit_bridge(engine, progress=True)  # as `ranker index build` does
    log(f"bridge: {state['serving']} ({state['reason']})")
    engine.save(encoder_spec="default")
    log(report.summary())
    return True
