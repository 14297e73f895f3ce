"""Feedback no one can game (issue 30): live counters move once per event type and shown position and within each
user's cap, impressions count once per user and item per window, idempotency is per ranking, rate limits answer 429
with Retry-After, the guardrail reads capped statistics, and feedback is bounded (seconds near now, a value
ceiling, ids fullmatched, JSON depth). Through HTTP, on a real Redis."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from ranker.learning.config import LearnerConfig
from ranker.learning.guardrail import guardrail, queue_reward
from ranker.live.registry import STARTING_POLICY
from ranker.ranking.policy import RankingPolicy


def rank(client, user="alice", text="travel bag", headers=None, **extra):
    response = client.post("/v1/rank", json={"user_id": user, "query": {"text": text}, "num_results": 5, **extra}, headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def feedback(client, body, events, **kwargs):
    return client.post("/v1/feedback", json={"ranking_id": body["ranking_id"], "events": events}, **kwargs)


def counters(app, item):
    return app.extensions["ranking_service"].state.item_counts([item])[0].tolist()  # impressions, clicks, purchases, exposure


# ------------------------------------------------------------ counters
def test_two_hundred_clicks_on_one_shown_item_move_its_click_counter_once(make_app):
    app = make_app()
    client = app.test_client()
    body = rank(client)
    item = body["items"][0]["item_id"]
    response = feedback(client, body, [{"item_id": item, "type": "click"} for _ in range(200)])
    assert response.status_code == 202 and response.get_json()["accepted"] == 200  # stored: the learner's caps judge them
    assert counters(app, item)[1] == 1.0
    assert app.extensions["ranking_service"].events.lengths()["interactions"] == 200
    purchase = feedback(client, body, [{"item_id": item, "type": "purchase"}, {"item_id": item, "type": "purchase"}])
    assert purchase.get_json()["accepted"] == 2 and counters(app, item)[2] == 1.0


def test_one_user_adds_at_most_their_cap_to_an_item_across_rankings(make_app):
    app = make_app()
    client = app.test_client()
    item = None
    for _ in range(6):
        body = rank(client, user="bot", greedy=True)
        item = item or body["items"][0]["item_id"]
        assert feedback(client, body, [{"item_id": item, "type": "click"}]).status_code == 202
    assert counters(app, item)[1] == 1.0  # RANKER_COUNTER_USER_CAP: 1 per window
    other = rank(client, user="someone-else", greedy=True)
    feedback(client, other, [{"item_id": item, "type": "click"}])
    assert counters(app, item)[1] == 2.0


def test_impressions_count_once_per_user_and_item_per_window(make_app):
    app = make_app()
    client = app.test_client()
    first = rank(client, user="eve", greedy=True)
    for _ in range(9):
        rank(client, user="eve", greedy=True)
    item = first["items"][0]["item_id"]
    assert counters(app, item)[0] == 1.0  # ten rankings of one user, one impression
    rank(client, user="frank", greedy=True)
    assert counters(app, item)[0] == 2.0


def test_idempotency_is_per_ranking_and_event_id(make_app):
    app = make_app()
    client = app.test_client()
    first, second = rank(client, user="ann"), rank(client, user="bob")
    event = {"event_id": "order-1", "type": "purchase"}
    assert feedback(client, first, [dict(event, item_id=first["items"][0]["item_id"])]).get_json() == {"accepted": 1, "duplicates": 0}
    assert feedback(client, second, [dict(event, item_id=second["items"][0]["item_id"])]).get_json() == {"accepted": 1, "duplicates": 0}
    assert feedback(client, first, [dict(event, item_id=first["items"][0]["item_id"])]).get_json() == {"accepted": 0, "duplicates": 1}


# ------------------------------------------------------------ rate limits
def test_rank_and_feedback_are_rate_limited_per_user_and_key_with_retry_after(make_app):
    app = make_app(RANK_LIMIT_PER_USER="3/minute", FEEDBACK_LIMIT_PER_USER="2/minute", RANK_LIMIT_PER_KEY="6/minute", INGEST_KEY="ik", ADMIN_KEY="ak")
    client = app.test_client()
    headers = {"X-API-Key": "ik"}
    bodies = [rank(client, user="carl", headers=headers) for _ in range(3)]
    limited = client.post("/v1/rank", json={"user_id": "carl", "query": {"text": "mug"}}, headers=headers)
    assert limited.status_code == 429 and 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.get_json()["error"]["code"] == "rate_limited"
    rank(client, user="dora", headers=headers)  # another user goes on ...
    rank(client, user="dora", headers=headers)
    over_key = client.post("/v1/rank", json={"user_id": "ed", "query": {"text": "mug"}}, headers=headers)
    assert over_key.status_code == 429 and over_key.get_json()["error"]["field"] == "key"  # ... until the key's limit
    item = bodies[0]["items"][0]["item_id"]
    for body in bodies[:2]:
        assert feedback(client, body, [{"item_id": body["items"][0]["item_id"], "type": "click"}], headers=headers).status_code == 202
    over = feedback(client, bodies[2], [{"item_id": item, "type": "click"}], headers=headers)
    assert over.status_code == 429 and int(over.headers["Retry-After"]) >= 1
    assert app.extensions["ranking_service"].events.lengths()["interactions"] == 2  # nothing stored past the limit


def test_rate_limits_are_shared_by_every_process_through_redis(make_app):
    first = make_app(RANK_LIMIT_PER_USER="2/minute").test_client()
    second = make_app(RANK_LIMIT_PER_USER="2/minute").test_client()
    rank(first, user="gil")
    rank(second, user="gil")
    assert second.post("/v1/rank", json={"user_id": "gil", "query": {"text": "mug"}}).status_code == 429
    assert first.post("/v1/rank", json={"user_id": "gil", "query": {"text": "mug"}}).status_code == 429


def test_the_guardrail_reads_capped_statistics_so_one_bot_cannot_force_a_rollback(make_app, prefix):
    app = make_app()
    service = app.extensions["ranking_service"]
    start = service.registry.ensure_current()
    RankingPolicy.load(STARTING_POLICY).save(service.registry.path_of("v-new"), version="v-new", parent=start)
    service.registry.promote("v-new")
    rng = np.random.default_rng(0)
    pipe = service.client.pipeline(transaction=True)
    for version in (start, "v-new"):  # 400 shoppers each, the same reward on both versions
        for user in range(400):
            queue_reward(pipe, service.client, prefix, version, f"shopper-{user}", float(rng.binomial(1, 0.5)), 5)
    for _ in range(3000):  # a bot: thousands of rankings of the new version without feedback
        queue_reward(pipe, service.client, prefix, "v-new", "bot", 0.0, 5)
    pipe.execute()
    config = LearnerConfig(prefix=prefix, guardrail_min_rankings=300)
    assert guardrail(service.client, service.registry, config) is None and service.registry.current() == "v-new"
    n_plain = float(service.client.hget(f"{{{prefix}}}:learner:reward:v-new", "n"))
    assert n_plain == 3400  # uncapped, the bot's zeros would dominate the mean (0.06 against 0.5): a forced rollback


# ------------------------------------------------------------ bounds
@pytest.mark.parametrize(
    "event, field",
    [
        ({"type": "click", "ts": time.time() * 1000}, "events[0].ts"),  # milliseconds
        ({"type": "click", "ts": time.time() - 3 * 86400}, "events[0].ts"),  # days old
        ({"type": "click", "ts": time.time() + 3600}, "events[0].ts"),  # an hour ahead
        ({"type": "purchase", "value": 1.7e308}, "events[0].value"),
    ],
)
def test_out_of_bounds_feedback_is_422_naming_the_field_and_stores_nothing(make_app, event, field):
    app = make_app()
    client = app.test_client()
    body = rank(client)
    response = feedback(client, body, [dict(event, item_id=body["items"][0]["item_id"])])
    assert response.status_code == 422 and response.get_json()["error"]["field"] == field, response.get_json()
    if "ts" in event and event["ts"] > 1e11:
        assert "milliseconds" in response.get_json()["error"]["message"]
    assert app.extensions["ranking_service"].events.lengths()["interactions"] == 0
    assert feedback(client, body, [{"item_id": body["items"][0]["item_id"], "type": "click", "ts": time.time() - 5}]).status_code == 202


def test_an_item_id_with_a_trailing_newline_is_refused(make_app, fresh_engine):
    client = make_app(ENGINE=fresh_engine).test_client()
    item = {"title": "Mug", "price": 5.0, "category": "Kitchen"}
    assert client.put("/v1/items/sku-new%0A", json=item).status_code == 422
    batch = client.post("/v1/items", json={"items": [dict(item, item_id="sku-x\n")]})
    assert batch.status_code == 422 and batch.get_json()["error"]["field"].startswith("items[0].item_id")
    assert client.get("/v1/items/sku-new%0A").status_code == 404 and client.get("/v1/items/sku-x%0A").status_code == 404


@pytest.mark.parametrize("depth", [40, 5000, 100_000])
def test_deeply_nested_json_is_a_4xx_not_a_500(client, depth):
    body = '{"user_id": "u", "query": {"text": "mug"}, "filters": ' + "[" * depth + "]" * depth + "}"
    for url in ("/v1/rank", "/v1/feedback", "/v1/items"):
        response = client.post(url, data=body, content_type="application/json")
        assert response.status_code == 400 and response.get_json()["error"]["code"] == "too_deep", (url, depth, response.status_code)
    shallow = json.dumps({"user_id": "u", "query": {"text": "mug"}, "filters": {"categories": ["Mugs"]}})
    assert client.post("/v1/rank", data=shallow, content_type="application/json").status_code == 200
