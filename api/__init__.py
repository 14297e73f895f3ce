"""HTTP layer: the Flask app factory.

For now it serves the search demo (a page and ``GET /v1/search``) over the
retrieval engine; the ranking API of DESIGN.md ("HTTP API v1") grows here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flask import Flask, abort, jsonify, render_template_string, request, send_file

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ranker search demo</title>
<style>
body{font-family:system-ui,sans-serif;margin:2rem;max-width:1100px}
form{margin-bottom:1.5rem}input[type=text]{width:24rem;padding:.4rem}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:1rem}
.card{border:1px solid #ddd;border-radius:8px;padding:.6rem;font-size:.9rem}
.card img{width:100%;border-radius:4px;background:#f4f4f4}.score{color:#666;font-size:.8rem}
</style></head><body>
<h1>Search demo</h1>
<form method="get" action="/"><input type="text" name="q" value="{{ q }}" placeholder="e.g. red leather sneakers" autofocus>
<button>Search</button></form>
{% if error %}<p style="color:#b00">{{ error }}</p>{% endif %}
<div class="grid">{% for r in results %}
<div class="card">{% if r.has_image %}<img src="/images/{{ r.item_id }}" alt="{{ r.title }}">{% endif %}
<div><b>{{ r.title }}</b></div><div>{{ r.category }} · {{ '%.2f'|format(r.price) }}</div>
<div class="score">score {{ '%.3f'|format(r.score) }}{% for name, value in r.scores.items() %}{% if value is not none %} · {{ name }} {{ '%.3f'|format(value) }}{% endif %}{% endfor %}</div>
</div>{% endfor %}</div></body></html>"""


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Defaults, then ``RANKER_*`` environment variables, then ``test_config``."""
    app = Flask(__name__)
    app.config.update(DATA_DIR=os.environ.get("RANKER_DATA_DIR", "data"))
    app.config.from_prefixed_env("RANKER")
    if test_config:
        app.config.update(test_config)

    from ranker.retrieval import open_engine

    engine = open_engine(Path(app.config["DATA_DIR"]))
    app.extensions["search_engine"] = engine

    def run_search(text: str, k: int) -> list[dict[str, Any]]:
        results = engine.search(text, k=k)
        return [dict(candidate.to_json(), has_image=candidate.item.image is not None) for candidate in results]

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify(status="ok", items=len(engine))

    @app.get("/v1/search")
    def search_json() -> Any:
        text = request.args.get("q", "")
        try:
            k = int(request.args.get("k", "10"))
            return jsonify(results=run_search(text, k))
        except ValueError as exc:
            field = getattr(exc, "field", "k")
            return jsonify(error={"code": "bad_request", "message": str(exc), "field": field}), 400

    @app.get("/")
    def page() -> Any:
        text = request.args.get("q", "").strip()
        results, error = [], None
        if text:
            try:
                results = run_search(text, 24)
            except ValueError as exc:
                error = str(exc)
        return render_template_string(_PAGE, q=text, results=results, error=error)

    @app.get("/images/<item_id>")
    def item_image(item_id: str) -> Any:
        item = engine.get(item_id)
        if item is None or item.image is None or not Path(item.image).is_file():
            abort(404)
        return send_file(item.image, max_age=86_400)

    return app
