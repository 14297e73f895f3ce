"""Plots of an experiment report (``ranker.abstats.analyse`` or an interleaving report), as PNG files.

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

from ranker.evaluation import _figure, _save

P_FLOOR = 1e-12  # a p-value of 0 cannot sit on a log axis


def plot_report(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write the report's plots under ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    if report.get("mode") == "interleave":
        interleaving = report["interleaving"]
        if interleaving["over_time"] is None:  # no impression times: nothing to draw against
            return []
        return [plot_preference(interleaving, out_dir / "interleaving_preference.png"),
                plot_interleaving_p_value(interleaving, out_dir / "interleaving_p_value.png")]
    return [plot_metric(report, out_dir / "primary_metric.png"), plot_p_values(report, out_dir / "p_values.png")]


def plot_metric(report: dict[str, Any], path: Path) -> Path:
    """The cumulative primary metric per arm as sessions come in, with confidence bands."""
    over_time = report["over_time"]
    figure, axes = _figure()
    for name, series in over_time["arms"].items():
        _with_band(axes, over_time["n_sessions"], series["value"], series["ci_low"], series["ci_high"], label=name)
    confidence = 1 - report["alpha"]
    axes.set_xlabel("sessions so far")
    axes.set_ylabel(f"{report['primary']} ({confidence:.0%} CI)")
    axes.set_title(f"cumulative {report['primary']} per arm")
    axes.legend(loc="best", fontsize=8)
    return _save(figure, path)


def plot_p_values(report: dict[str, Any], path: Path) -> Path:
    """Fixed-horizon (Welch) and always-valid (mSPRT) p-values of each treatment arm as sessions come in, log scale."""
    over_time = report["over_time"]
    figure, axes = _figure()
    for name, series in over_time["p_values"].items():
        times, fixed = _defined(over_time["n_sessions"], series["fixed_horizon"])
        (line,) = axes.plot(times, [max(p, P_FLOOR) for p in fixed], linestyle="--", label=f"{name}: fixed horizon (Welch)")
        times, always_valid = _defined(over_time["n_sessions"], series["always_valid"])
        axes.plot(times, [max(p, P_FLOOR) for p in always_valid], color=line.get_color(), label=f"{name}: always valid (mSPRT)")
    _alpha_line(axes, report["alpha"])
    axes.set_xlabel("sessions so far")
    axes.set_ylabel(f"p-value, {report['primary']} vs {report['control']}")
    axes.set_title("p-value over time: only the always-valid one may be peeked at")
    return _save(figure, path)


def plot_preference(interleaving: dict[str, Any], path: Path) -> Path:
    """delta_ab (> 0: users prefer A) as rankings come in, with its interval."""
    over_time = interleaving["over_time"]
    figure, axes = _figure()
    _with_band(axes, over_time["n_impressions"], over_time["delta_ab"], over_time["ci_low"], over_time["ci_high"], label="delta_AB",
               band_label=f"{1 - interleaving['alpha']:.0%} CI")
    axes.axhline(0.0, color="#7f7f7f", linewidth=1)
    name_a, name_b = interleaving["arm_names"]
    axes.set_xlabel("interleaved rankings so far")
    axes.set_ylabel(f"delta_AB (> 0: {name_a} preferred, < 0: {name_b})")
    axes.set_title(f"interleaving preference, {name_a} vs {name_b}")
    axes.legend(loc="best", fontsize=8)
    return _save(figure, path)


def plot_interleaving_p_value(interleaving: dict[str, Any], path: Path) -> Path:
    """The sign test's p-value as rankings come in, log scale."""
    over_time = interleaving["over_time"]
    figure, axes = _figure()
    times, p_values = _defined(over_time["n_impressions"], over_time["p_value"])
    axes.plot(times, [max(p, P_FLOOR) for p in p_values], marker=".", color="#1f77b4", label="sign test (fixed horizon)")
    _alpha_line(axes, interleaving["alpha"])
    axes.set_xlabel("interleaved rankings so far")
    axes.set_ylabel("p-value")
    axes.set_title("interleaving: sign test p-value over time")
    return _save(figure, path)


def _with_band(axes: Any, x: list[float], values: list[float | None], lows: list[float | None], highs: list[float | None], *,
               label: str, band_label: str | None = None) -> None:
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
