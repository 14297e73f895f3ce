"""``POST /v1/feedback/batch``: many rankings' events in one request (issue 32), with the per-ranking path's checks
and effects, one pipelined round trip, and a refused entry that stores nothing while the others are recorded."""

from __future__ import annotations

import numpy as np
import redis.connection

JSON = "application/json"


def rank(client, text: str, user: str, n: int = 5) -> dict:
    response = client.post("/v1/rank", json={"user_id": user, "query": {"text": text}, "num_results": n, "greedy": True})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def entry(body: dict, *kinds: str, prefix: str = "") -> dict:
    events = [{"event_id": f"{prefix}{body['ranking_id']}-{i}", "item_id": body["items"][i]["item_id"], "type": kind} for i, kind in enumerate(kinds)]
    return {"ranking_id": body["ranking_id"], "events": events}


def test_a_batch_of_many_rankings_records_each_event_once_and_a_resend_is_all_duplicates(make_app):
    app = make_app()
    client = app.test_client()
    service = app.extensions["ranking_service"]
    served = [
        rank(client, text, f"user-{i % 17}") for i, text in enumerate(["a gift for a friend", "travel bag", "something for the weekend", "nice present"] * 30)
    ]  # 120 rankings
    batch = {"rankings": [entry(body, "click", "add_to_cart") for body in served]}
    response = client.post("/v1/feedback/batch", json=batch)
    assert response.status_code == 202
    answer = response.get_json()
    assert (answer["accepted"], answer["duplicates"], answer["refused"]) == (240, 0, 0)
    assert [result["ranking_id"] for result in answer["results"]] == [body["ranking_id"] for body in served]
    assert all(result == {"ranking_id": result["ranking_id"], "accepted": 2, "duplicates": 0} for result in answer["results"])
    stored = service.events.interactions()
    assert len(stored) == 240 and len({(event.ranking_id, event.event_id) for _, event in stored}) == 240
    assert {(event.position, event.type) for _, event in stored} == {(0, "click"), (1, "add_to_cart")}
    again = client.post("/v1/feedback/batch", json=batch).get_json()
    assert (again["accepted"], again["duplicates"], again["refused"]) == (0, 240, 0)
    assert len(service.events.interactions()) == 240


def test_a_batch_moves_counters_and_profiles_as_the_per_ranking_path_does(make_app):
    app = make_app()
    client = app.test_client()
    service = app.extensions["ranking_service"]
    one, other = rank(client, "travel bag", "ann", 10), rank(client, "travel bag", "bob", 10)
    shown = [item["item_id"] for item in one["items"] if item["item_id"] in {item["item_id"] for item in other["items"]}][:3]
    assert len(shown) == 3  # the two slates share these items: each user acts on the same ones

    def acted(body: dict) -> dict:
        kinds = ("click", "purchase", "click")
        return {"ranking_id": body["ranking_id"], "events": [{"item_id": item, "type": kind} for item, kind in zip(shown, kinds)]}

    before = service.state.item_counts(shown)
    assert client.post("/v1/feedback", json=acted(one)).get_json() == {"accepted": 3, "duplicates": 0}
    middle = service.state.item_counts(shown)
    assert client.post("/v1/feedback/batch", json={"rankings": [acted(other)]}).status_code == 202
    after = service.state.item_counts(shown)
    assert (middle - before)[:, 1:3].sum() == 3  # clicks and purchases moved by the per-ranking request ...
    np.testing.assert_allclose((after - middle)[:, 1:3], (middle - before)[:, 1:3])  # ... and as much again by the batch
    users = {body["ranking_id"]: service.events.ranking(body["ranking_id"]).user_key for body in (one, other)}
    ann, bob = (service.state.user_profile(users[body["ranking_id"]]) for body in (one, other))
    assert (ann.n_interactions, ann.n_purchases) == (bob.n_interactions, bob.n_purchases) == (3, 1)
    np.testing.assert_allclose(ann.embedding, bob.embedding, atol=1e-6)
    assert (ann.category_counts, ann.brand_counts, ann.colour_counts, ann.level_sum) == (
        bob.category_counts,
        bob.brand_counts,
        bob.colour_counts,
        bob.level_sum,
    )


def test_refused_entries_store_nothing_name_their_field_and_the_others_are_recorded(make_app):
    app = make_app()
    client = app.test_client()
    service = app.extensions["ranking_service"]
    good, outside, late, fine = (rank(client, "a gift for a friend", f"u{i}") for i in range(4))
    bad_item = entry(outside, "click", "click")
    bad_item["events"][1]["item_id"] = "not-in-that-slate"
    bad_ts = entry(late, "click")
    bad_ts["events"][0]["ts"] = 1.0  # 1970
    rankings = [entry(good, "click"), bad_item, {"ranking_id": "r_gone", "events": [{"item_id": "a", "type": "click"}]}, bad_ts, entry(fine, "purchase")]
    answer = client.post("/v1/feedback/batch", json={"rankings": rankings}).get_json()
    assert (answer["accepted"], answer["duplicates"], answer["refused"]) == (2, 0, 3)
    errors = [result.get("error") for result in answer["results"]]
    assert errors[0] is None and errors[4] is None
    assert (errors[1]["code"], errors[1]["field"]) == ("invalid_feedback", "rankings[1].events[1].item_id") and "not-in-that-slate" in errors[1]["message"]
    assert (errors[2]["code"], errors[2]["field"]) == ("not_found", "rankings[2].ranking_id") and "r_gone" in errors[2]["message"]
    assert (errors[3]["code"], errors[3]["field"]) == ("invalid_feedback", "rankings[3].events[0].ts")
    stored = {event.ranking_id for _, event in service.events.interactions()}
    assert stored == {good["ranking_id"], fine["ranking_id"]}  # the refused entries' valid events were not stored either


def test_a_body_that_breaks_the_schema_is_refused_whole_with_422(make_app):
    app = make_app()
    client = app.test_client()
    body = rank(client, "a gift for a friend", "cy")
    for bad, field in [
        ({"rankings": []}, "rankings"),
        ({"rankings": [entry(body, "click"), {"ranking_id": body["ranking_id"], "events": [{"item_id": "x", "type": "like"}]}]}, "rankings[1].events[0].type"),
        ({"rankings": [{"ranking_id": body["ranking_id"], "events": [{"item_id": "x", "type": "click"}] * 1000}] * 11}, "rankings"),
        ({"ranking_id": body["ranking_id"], "events": []}, "rankings"),
    ]:
        response = client.post("/v1/feedback/batch", json=bad)
        assert response.status_code == 422, response.get_json()
        assert response.get_json()["error"]["field"] == field
    assert app.extensions["ranking_service"].events.lengths()["interactions"] == 0


def test_a_user_over_the_feedback_limit_is_refused_in_the_batch_with_when_to_retry(make_app):
    app = make_app(FEEDBACK_LIMIT_PER_USER="2/minute")
    client = app.test_client()
    served = [rank(client, "travel bag", "dee") for _ in range(3)]
    answer = client.post("/v1/feedback/batch", json={"rankings": [entry(body, "click") for body in served]}).get_json()
    assert [result.get("error", {}).get("code") for result in answer["results"]] == [None, None, "rate_limited"]
    assert answer["results"][2]["retry_after_s"] >= 1 and answer["accepted"] == 2


def test_a_batch_is_one_pipelined_round_trip_whatever_its_size(make_app, monkeypatch):
    app = make_app(RATE_LIMITS=False)  # a rate limit is a round trip of its own (api.limits)
    client = app.test_client()
    served = [rank(client, "nice present", f"v{i}") for i in range(50)]
    client.post("/v1/feedback/batch", json={"rankings": [entry(served[0], "click", prefix="warm-")]})  # the script is loaded once
    sends = []
    original = redis.connection.AbstractConnection.send_packed_command
    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", lambda self, *a, **k: sends.append(a[0]) or original(self, *a, **k))
    answer = client.post("/v1/feedback/batch", json={"rankings": [entry(body, "click", "click") for body in served]}).get_json()
    assert answer["accepted"] == 100
    assert len(sends) == 1  # the 50 script calls at once, by the script's sha
    service = app.extensions["ranking_service"]
    service.client.script_flush()  # Redis restarted or flushed its scripts: the batch loads it and goes again
    again = client.post("/v1/feedback/batch", json={"rankings": [entry(body, "add_to_cart", prefix="again-") for body in served]}).get_json()
    assert again["accepted"] == 50 and len(service.events.interactions()) == 1 + 100 + 50
