"""The web console: a search page with feedback, the policies and experiments dashboards, catalog pictures.

Server-rendered Jinja templates (``api/templates``) and one plain JavaScript
file (``api/static/console.js``): no build step, nothing from a CDN. The
pages call the same HTTP API as any shop (``/v1/rank``, ``/v1/feedback``,
promote and rollback with the API key typed in the header); plots are PNGs
drawn here with matplotlib from the same data the API returns.
"""

from __future__ import annotations

import hashlib
import html
import io
import tempfile
import time
from pathlib import Path
from typing import Any

from flask import Response, abort, current_app, render_template, request, send_file
from flask_openapi3 import APIBlueprint
from PIL import Image
from pydantic import Field

from api.common import service
from api.schemas import ExperimentPath, ItemPath
from ranker.catalog.items import CatalogError, image_bytes
from ranker.errors import RequestError
from ranker.experiments.plots import plot_one, plots_of
from ranker.experiments.stats import METRICS

bp = APIBlueprint("console", __name__, doc_ui=False)
IMAGE_MAX_AGE_S = 24 * 3600


def fmt(value: Any, spec: str) -> str:
    """A number for a template, or "n/a" where a report has none."""
    return "n/a" if value is None else format(value, spec)


def _page(template: str, **context: Any) -> str:
    return render_template(template, key_required=bool(current_app.config.get("API_KEY")), fmt=fmt, **context)


@bp.get("/")
def search_page() -> Any:
    """Search by text and/or picture; click a result (a click) or buy it (a purchase)."""
    return _page("search.html", active="search", q=request.args.get("q", ""), catalog=catalog_view())


def catalog_view() -> dict[str, Any]:
    """The catalog line: items, which text-picture bridge serves in this process and when it was fitted, the maintenance worker."""
    import redis

    from ranker.learning.maintenance import maintenance_status
    from ranker.live.catalog_stream import catalog_state

    svc = service()
    state = catalog_state(svc.engine, svc.catalog_log)
    bridge = state["bridge"]
    state["min_pairs"] = current_app.extensions["settings"].bridge_min_pairs
    bridge["when"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(bridge["fitted_at"])) if bridge["fitted_at"] else None
    try:
        state["maintenance"] = maintenance_status(svc.client, current_app.config["PREFIX"])
    except redis.RedisError:
        state["maintenance"] = None
    return state


# ------------------------------------------------------------------ policies
def gate_summary(evaluation: dict[str, Any] | None) -> str:
    """The gate's verdict of a version, as HTML (escaped)."""
    gate = (evaluation or {}).get("gate")
    if not gate:
        return '<span class="muted">not gated (trained offline)</span>'
    parts = []
    for name, label in (("simulator", "simulator"), ("off_policy", "off-policy")):
        check = gate.get(name)
        if check:
            low, high = check["ci95"]
            parts.append(f"{label} {check['difference']:+.4f} [{low:+.4f}, {high:+.4f}]")
    verdict = '<span class="passed">passed</span>' if gate.get("passed") else '<span class="rejected">rejected</span>'
    reasons = "; ".join(gate.get("reasons", []))
    return f"{verdict}: {html.escape(', '.join(parts))}" + (f"<br><small>{html.escape(reasons)}</small>" if reasons else "")


def learner_view() -> dict[str, Any]:
    """The learner panel: running or not, the last update, errors by kind, restarts, dead letters, freshness."""
    import redis

    from ranker.learning.status import LearnerStatus

    try:
        summary = LearnerStatus(service().client, prefix=current_app.config["PREFIX"]).summary()
    except redis.RedisError as exc:
        return {"unavailable": f"Redis unavailable: {exc}"}
    last = summary["last_update"]
    if last:
        last["when"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last["at"]))
        last["why"] = "; ".join(last.get("reasons") or last.get("notes") or []) or "passed the gate"
    summary["dead"] = LearnerStatus(service().client, prefix=current_app.config["PREFIX"]).dead_letters(5) if summary["dead_letters"] else []
    return summary


@bp.get("/console/policies")
def policies_page() -> Any:
    """Versions with lineage and gate results, the serving one, promote and rollback, the reward curve, the learner."""
    registry = service().registry
    policies = [dict(info.to_json(), gate=gate_summary(info.evaluation)) for info in reversed(registry.describe())]
    return _page("policies.html", active="policies", policies=policies, current=registry.current(), history=registry.history(), learner=learner_view())


@bp.get("/console/policies/reward.png")
def reward_plot() -> Any:
    """Reward per ranking per minute, one line per policy version (from the event log's reward series)."""
    from ranker.evaluation.figures import new_figure

    series = service().events.reward_series()
    figure, axis = new_figure()
    start = min((points[0][0] for points in series.values()), default=0.0)
    for version, points in sorted(series.items()):
        minutes = [(minute - start) / 60.0 for minute, rankings, _ in points if rankings]
        rewards = [reward / rankings for _, rankings, reward in points if rankings]
        axis.plot(minutes, rewards, marker=".", label=version)
    axis.set_xlabel("minutes since the first logged ranking")
    axis.set_ylabel("reward per ranking")
    axis.set_title("live reward per ranking, by serving policy version" if series else "no rankings logged yet")
    if series:
        axis.legend(fontsize=8)
    return _png(figure)


def _png(figure: Any) -> Response:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    response = Response(buffer.getvalue(), mimetype="image/png")
    response.cache_control.no_store = True
    return response


# --------------------------------------------------------------- experiments
def _report_view(experiment: Any) -> dict[str, Any]:
    """An experiment with its report, and the per-arm lookups the template needs."""
    entry: dict[str, Any] = {"experiment": experiment.public(), "report": None, "error": None, "plots": []}
    try:
        report = service().experiments.report(experiment.experiment_id)
    except (ValueError, RequestError) as exc:  # an experiment without sessions yet, for one
        entry["error"] = f"no report yet: {exc}"
        return entry
    entry["report"] = report
    entry["plots"] = plots_of(report)
    if experiment.mode == "interleave":
        return entry
    entry["prob_best"] = {arm["arm"]: arm["prob_best"] for arm in report["bayesian"]["arms"]}
    entry["primary"] = {c["arm"]: c for c in report["comparisons"] if c["metric"] == report["primary"] and c["test"] == "welch_t"}
    entry["sequential"] = {arm["arm"]: arm for arm in report["sequential"]["arms"]}
    return entry


@bp.get("/console/experiments")
def experiments_page() -> Any:
    """Every experiment, newest first: arms, metrics with intervals, P(best), tests, SRM, guardrails, plots."""
    experiments = list(reversed(service().experiments.list()))
    return _page("experiments.html", active="experiments", experiments=[_report_view(e) for e in experiments], metrics=METRICS)


class PlotPath(ExperimentPath):
    plot: str = Field(pattern=r"^[a-z_]+\.png$")


@bp.get("/console/experiments/<experiment_id>/<plot>")
def experiment_plot(path: PlotPath) -> Any:
    """One of an experiment's report plots (``ranker.experiments.plots``), drawn alone."""
    report = service().experiments.report(path.experiment_id)
    with tempfile.TemporaryDirectory() as directory:
        written = plot_one(report, path.plot, Path(directory) / path.plot)
        if written is None:
            abort(404)
        response = Response(written.read_bytes(), mimetype="image/png")
    response.cache_control.no_store = True
    return response


# ------------------------------------------------------------------ pictures
@bp.get("/images/<item_id>")
def item_image(path: ItemPath) -> Any:
    """An item's picture, from the catalog's file or the bytes stored with the item; cacheable for a day, with an ETag."""
    item = service().engine.get(path.item_id)
    if item is None or item.image is None:
        abort(404)
    if not item.image.startswith("data:") and Path(item.image).is_file():
        return send_file(item.image, max_age=IMAGE_MAX_AGE_S, conditional=True, etag=True)
    try:
        data = image_bytes(item.image)
        kind = Image.open(io.BytesIO(data)).format or "octet-stream"  # reads the header only
    except (CatalogError, OSError):
        abort(404)
    response = Response(data, mimetype=f"image/{kind.lower()}")
    response.cache_control.public = True
    response.cache_control.max_age = IMAGE_MAX_AGE_S
    response.set_etag(hashlib.sha256(data).hexdigest()[:32])
    return response.make_conditional(request)
