"""The figures every report draws: a new matplotlib figure on the headless backend, and saving it as a PNG.

Shared by the simulation's comparisons (:mod:`ranker.evaluation.simulation`), the experiment plots
(:mod:`ranker.experiments.plots`) and the benches that chart their runs. matplotlib is imported when a figure is
drawn, never by importing this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def new_figure(figsize: tuple[float, float] = (8, 4)) -> tuple[Any, Any]:
    """A new (figure, axes) on the headless backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=figsize)


def save_figure(figure: Any, path: Path) -> Path:
    """Lay the figure out, write it to ``path`` (folders made as needed) at 110 dpi, and close it; returns the path."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
