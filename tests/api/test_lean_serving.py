"""Serving processes import no torch and no transformers (DESIGN.md, "Processes and defaults"; issue 32).

Each check runs in a fresh interpreter: the test process itself has loaded torch long before. The second test
runs a whole API worker the way gunicorn does (``create_app`` over a data directory, its embedded Redis, the
encoders' cached ONNX graphs, a policy artifact) and sends it the requests a shop sends: text and picture
rankings, an explanation, feedback for one ranking and a batch, an item written through the catalog API.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers")

IMPORTS_ONLY = """
import sys
import api, ranker.serving, ranker.feedback, ranker.ranking.policy, ranker.ranking.explain, ranker.retrieval.encoders
print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] in HEAVY)))
"""

WORKER = """
import base64, io, sys
from PIL import Image
from api import create_app

app = create_app({"DATA_DIR": sys.argv[1], "USER_KEY_SECRET": "s", "RATE_LIMITS": False})
client = app.test_client()
JSON = "application/json"
seen = {}
promoted = client.post("/v1/policies/v-lean/promote", content_type=JSON)
seen["promote"] = promoted.status_code
ranked = client.post("/v1/rank", json={"user_id": "u1", "query": {"text": "red running shoes"}, "num_results": 5, "explain": True})
seen["rank"] = ranked.status_code
body = ranked.get_json()
seen["policy_version"] = body["policy_version"]
picture = io.BytesIO()
Image.new("RGB", (64, 64), "navy").save(picture, format="PNG")
by_picture = client.post("/v1/rank", json={"user_id": "u2", "query": {"image": base64.b64encode(picture.getvalue()).decode()}, "num_results": 3})
seen["rank_image"] = by_picture.status_code
items = [item["item_id"] for item in body["items"]]
seen["feedback"] = client.post("/v1/feedback", json={"ranking_id": body["ranking_id"], "events": [{"item_id": items[0], "type": "click"}]}).status_code
batch = {"rankings": [{"ranking_id": body["ranking_id"], "events": [{"item_id": items[1], "type": "add_to_cart"}]}]}
seen["feedback_batch"] = client.post("/v1/feedback/batch", json=batch).status_code
item = {"title": "Lean test lamp", "category": "Lamps", "price": 12.5}
seen["item"] = client.put("/v1/items/lean-lamp", json=item).status_code
seen["heavy"] = sorted(name for name in sys.modules if name.split(".")[0] in HEAVY)
print(json.dumps(seen))
"""


def run_python(code: str, *args: str) -> dict | list:
    env = {key: value for key, value in os.environ.items() if key not in ("REDIS_URL",) and not key.startswith("RANKER_") or key == "RANKER_MODELS_DIR"}
    preamble = f"import json\nHEAVY = {HEAVY!r}\n"
    done = subprocess.run([sys.executable, "-c", preamble + code, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_the_api_and_the_serving_pipeline_loads_no_torch_or_transformers():
    assert run_python(IMPORTS_ONLY) == []


@pytest.fixture()
def lean_data_dir(demo_engine, tmp_path):
    """A copy of the demo shop's data directory, the encoders' graphs exported (by this process, with torch) and a
    policy artifact saved under ``policies/v-lean``."""
    from ranker.ranking.network import SlateNet
    from ranker.ranking.policy import RankingPolicy
    from ranker.retrieval.encoders import load_encoders, models_dir

    data_dir = tmp_path / "data"
    shutil.copytree(demo_engine.data_dir, data_dir)
    load_encoders("default", "cpu", backend="onnx", cache_dir=models_dir(data_dir))
    RankingPolicy(SlateNet()).save(data_dir / "policies" / "v-lean", version="v-lean")
    return data_dir


def test_a_worker_ranks_explains_takes_feedback_and_items_without_torch_or_transformers(lean_data_dir):
    seen = run_python(WORKER, str(lean_data_dir))
    assert seen["heavy"] == []
    assert seen["promote"] == 200 and seen["policy_version"] == "v-lean"
    assert (seen["rank"], seen["rank_image"], seen["feedback"], seen["feedback_batch"]) == (200, 200, 202, 202)
    assert seen["item"] in (200, 201)
