"""Plots of an experiment report (``ranker.experiments.stats.analyse`` or an interleaving report), as PNG files.

A/B report: the cumulative primary metric per arm with its confidence band,
and the p-values over time, fixed-horizon beside always-valid (mSPRT), on a
log scale with the alpha line. The fixed-horizon curve crossing alpha early
and coming back is what makes peeking at it unsafe; the always-valid curve
only goes down and may be read at any time.

Interleaving report (``report["mode"] == "interleave"``): the preference
delta_ab over time with its interval, and the sign test's p-value over time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ranker.evaluation.figures import new_figure, save_figure

P_FLOOR = 1e-12  # a p-value of 0 cannot sit on a log axis


def plot_report(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write the report's plots under ``out_dir``; returns their paths."""
    return [path for path in (plot_one(report, name, Path(out_dir) / name) for name in plots_of(report)) if path is not None]


def plots_of(report: dict[str, Any]) -> list[str]:
    """The names of the plots a report has: an A/B report's two, or an interleaving report's two."""
    interleaved = report.get("mode") == "interleave"
    return [name for name in PLOTS if name.startswith("interleaving") == interleaved]


def plot_metric(report: dict[str, Any], path: Path) -> Path:
    """The cumulative primary metric per arm as sessions come in, with confidence bands."""
    over_time = report["over_time"]
    figure, axes = new_figure()
    for name, series in over_time["arms"].items():
        _with_band(axes, over_time["n_sessions"], series["value"], series["ci_low"], series["ci_high"], label=name)
    axes.legend(loc="best", fontsize=8)
    return _finish(figure, axes, path, "sessions so far", f"{report['primary']} ({1 - report['alpha']:.0%} CI)", f"cumulative {report['primary']} per arm")


def plot_p_values(report: dict[str, Any], path: Path) -> Path:
    """Fixed-horizon (Welch) and always-valid (mSPRT) p-values of each treatment arm as sessions come in, log scale."""
    over_time = report["over_time"]
    figure, axes = new_figure()
    for name, series in over_time["p_values"].items():
        line = _p_line(axes, over_time["n_sessions"], series["fixed_horizon"], linestyle="--", label=f"{name}: fixed horizon (Welch)")
        _p_line(axes, over_time["n_sessions"], series["always_valid"], color=line.get_color(), label=f"{name}: always valid (mSPRT)")
    _alpha_line(axes, report["alpha"])
    return _finish(
        figure,
        axes,
        path,
        "sessions so far",
        f"p-value, {report['primary']} vs {report['control']}",
        "p-value over time: only the always-valid one may be peeked at",
    )


def plot_preference(interleaving: dict[str, Any], path: Path) -> Path:
    """delta_ab (> 0: users prefer A) as rankings come in, with its interval."""
    over_time = interleaving["over_time"]
    figure, axes = new_figure()
    _with_band(
        axes,
        over_time["n_impressions"],
        over_time["delta_ab"],
        over_time["ci_low"],
        over_time["ci_high"],
        label="delta_AB",
        band_label=f"{1 - interleaving['alpha']:.0%} CI",
    )
    axes.axhline(0.0, color="#7f7f7f", linewidth=1)
    axes.legend(loc="best", fontsize=8)
    name_a, name_b = interleaving["arm_names"]
    return _finish(
        figure,
        axes,
        path,
        "interleaved rankings so far",
        f"delta_AB (> 0: {name_a} preferred, < 0: {name_b})",
        f"interleaving preference, {name_a} vs {name_b}",
    )


def plot_interleaving_p_value(interleaving: dict[str, Any], path: Path) -> Path:
    """The sign test's p-value as rankings come in, log scale."""
    over_time = interleaving["over_time"]
    figure, axes = new_figure()
    _p_line(axes, over_time["n_impressions"], over_time["p_value"], marker=".", color="#1f77b4", label="sign test (fixed horizon)")
    _alpha_line(axes, interleaving["alpha"])
    return _finish(figure, axes, path, "interleaved rankings so far", "p-value", "interleaving: sign test p-value over time")


PLOTS = {
    "primary_metric.png": plot_metric,
    "p_values.png": plot_p_values,
    "interleaving_preference.png": plot_preference,
    "interleaving_p_value.png": plot_interleaving_p_value,
}


def plot_one(report: dict[str, Any], name: str, path: Path) -> Path | None:
    """Only the plot ``name`` of :func:`plot_report` (None when this report has no such plot)."""
    if name not in plots_of(report):
        return None
    if report.get("mode") == "interleave":
        return None if report["interleaving"]["over_time"] is None else PLOTS[name](report["interleaving"], path)
    return PLOTS[name](report, path)


def _finish(figure: Any, axes: Any, path: Path, xlabel: str, ylabel: str, title: str) -> Path:
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    return save_figure(figure, path)


def _p_line(axes: Any, x: list[float], p_values: list[float | None], **style: Any) -> Any:
    """p-values on a log axis (a p of 0 drawn at ``P_FLOOR``), over the points where they are defined."""
    x, p_values = _defined(x, p_values)
    (line,) = axes.plot(x, [max(p, P_FLOOR) for p in p_values], **style)
    return line


def _with_band(
    axes: Any, x: list[float], values: list[float | None], lows: list[float | None], highs: list[float | None], *, label: str, band_label: str | None = None
) -> None:
    """A line with its confidence band in the same colour, over the points where all three are defined."""
    x, values, lows, highs = _defined(x, values, lows, highs)
    (line,) = axes.plot(x, values, marker=".", label=label)
    axes.fill_between(x, lows, highs, color=line.get_color(), alpha=0.2, label=band_label)


def _alpha_line(axes: Any, alpha: float) -> None:
    axes.axhline(alpha, color="#d62728", linestyle=":", linewidth=1, label=f"alpha = {alpha:g}")
    axes.set_yscale("log")
    axes.legend(loc="best", fontsize=8)


def _defined(times: list[float], *columns: list[float | None]) -> tuple[list[float], ...]:
    """The points where every column has a value (a report writes None where a figure is undefined)."""
    rows = [row for row in zip(times, *columns) if all(value is not None for value in row)]
    return tuple([list(column) for column in zip(*rows)] if rows else [[] for _ in range(len(columns) + 1)])
