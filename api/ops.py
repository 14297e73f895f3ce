"""Operations: ``/healthz``, ``/readyz``, ``/metrics``, ``/openapi.json``, and the demo page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis
from flask import Response, abort, current_app, jsonify, render_template_string, request, send_file
from flask_openapi3 import APIBlueprint, Tag

from api.common import metrics, service
from api.schemas import ItemPath
from ranker.learning import LearnerStatus
from ranker.retrieval import QueryError

bp = APIBlueprint("ops", __name__, abp_tags=[Tag(name="operations")])


@bp.get("/healthz", operation_id="healthz")
def healthz() -> Any:
    """Liveness: the process answers."""
    return {"status": "ok"}


@bp.get("/readyz", operation_id="readyz")
def readyz() -> Any:
    """Readiness: Redis answers and a policy is loaded (503 with the reasons otherwise)."""
    svc = service()
    problems = []
    try:
        svc.client.ping()
    except redis.RedisError as exc:
        problems.append(f"redis: {exc}")
    if svc.policies.policy is None:
        problems.append("policy: none loaded")
    body = {"status": "ready" if not problems else "not_ready", "problems": problems, "items": len(svc.engine), "policy_version": svc.policies.version}
    return jsonify(body), (200 if not problems else 503)


@bp.get("/metrics", operation_id="metrics")
def prometheus() -> Any:
    """Prometheus exposition of the service's metrics."""
    svc, m = service(), metrics()
    m.items.set(len(svc.engine))
    m.serving(svc.policies.version)
    try:
        learner = LearnerStatus(svc.client, prefix=current_app.config["PREFIX"])
        for reason, count in learner.skipped().items():
            m.learner_skipped.labels(reason).set(count)
        for decision, count in learner.decision_counts().items():
            m.learner_updates.labels(decision).set(count)
    except redis.RedisError:
        pass  # counted by the rank path; the scrape still answers
    payload, content_type = m.exposition()
    return Response(payload, content_type=content_type)


@bp.get("/openapi.json", operation_id="openapi")
def openapi() -> Any:
    """This document."""
    return jsonify(current_app.api_doc)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ranker demo</title>
<style>
body{font-family:system-ui,sans-serif;margin:2rem;max-width:1100px}
form{margin-bottom:1.5rem}input[type=text]{width:24rem;padding:.4rem}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:1rem}
.card{border:1px solid #ddd;border-radius:8px;padding:.6rem;font-size:.9rem}
.card img{width:100%;border-radius:4px;background:#f4f4f4}.score{color:#666;font-size:.8rem}
</style></head><body>
<h1>Ranking demo</h1>
<p>Policy <code>{{ version }}</code> · <a href="/docs">API docs</a></p>
<form method="get" action="/"><input type="text" name="q" value="{{ q }}" placeholder="e.g. red leather sneakers" autofocus>
<button>Search</button></form>
{% if error %}<p style="color:#b00">{{ error }}</p>{% endif %}
<div class="grid">{% for r in results %}
<div class="card">{% if r.has_image %}<img src="/images/{{ r.item_id }}" alt="{{ r.title }}">{% endif %}
<div><b>{{ r.title }}</b></div><div>{{ r.category }} · {{ '%.2f'|format(r.price) }}</div>
<div class="score">score {{ '%.2f'|format(r.score) }} · text {{ '%.3f'|format(r.explain.text_similarity) }} · image {{ '%.3f'|format(r.explain.image_similarity) }} · policy {{ '%+.2f'|format(r.explain.policy_adjustment) }}</div>
</div>{% endfor %}</div></body></html>"""


@bp.get("/", doc_ui=False)
def page() -> Any:
    text = request.args.get("q", "").strip()
    results: list[dict[str, Any]] = []
    error = None
    svc = service()
    if text:
        try:
            ranked = svc.rank(user_id="demo-page", text=text, num_results=24, temperature=0.0)
            results = [dict(item.to_json(explain=True), has_image=item.candidate.item.image is not None) for item in ranked.items]
        except QueryError as exc:
            error = str(exc)
    return render_template_string(_PAGE, q=text, results=results, error=error, version=svc.policies.version)


@bp.get("/images/<item_id>", doc_ui=False)
def item_image(path: ItemPath) -> Any:
    item = service().engine.get(path.item_id)
    if item is None or item.image is None:
        abort(404)
    if item.image.startswith("data:"):
        from ranker.catalog import image_bytes

        return Response(image_bytes(item.image), content_type="application/octet-stream")
    if not Path(item.image).is_file():
        abort(404)
    return send_file(item.image, max_age=86_400)
