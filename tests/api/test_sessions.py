"""Search sessions through HTTP: pages of a query never repeat an item, clicks steer the next page, the session and
the user's shown statistics live in Redis (and are erased with the user)."""

from __future__ import annotations

import numpy as np
import pytest

from ranker.live.backend import connect, key
from ranker.live.events import RankingEvent
from ranker.ranking.features import CONTEXT_FEATURES, STATIC_FEATURES

JSON = "application/json"


def rank(client, text, *, user="alice", **extra):
    response = client.post("/v1/rank", json={"user_id": user, "query": {"text": text}, **extra})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def click(client, body, item_id, event_id="c1"):
    response = client.post("/v1/feedback", json={"ranking_id": body["ranking_id"], "events": [{"event_id": event_id, "item_id": item_id, "type": "click"}]})
    assert response.status_code == 202, response.get_json()


def logged_event(app, ranking_id: str) -> RankingEvent:
    service = app.extensions["ranking_service"]
    return next(event for _, event in service.events.rankings() if event.ranking_id == ranking_id)


def test_pages_of_a_query_in_a_session_never_repeat_an_item(client):
    seen: set[str] = set()
    for page in (1, 2, 3):
        body = rank(client, "travel bag", session_id="s-1", page=page, num_results=5, num_candidates=20)
        ids = {item["item_id"] for item in body["items"]}
        assert len(ids) == 5 and not ids & seen, (page, ids & seen)
        seen |= ids
    # another session of the same user starts afresh, and page 1 of the query again is a new search of it
    again = {item["item_id"] for item in rank(client, "travel bag", session_id="s-2", page=1, num_results=5, num_candidates=20)["items"]}
    assert again & seen
    first = {item["item_id"] for item in rank(client, "travel bag", session_id="s-1", page=1, num_results=5, num_candidates=20)["items"]}
    assert first & seen


def test_a_page_above_one_needs_a_session(client):
    response = client.post("/v1/rank", json={"user_id": "alice", "query": {"text": "travel bag"}, "page": 2})
    assert response.status_code == 422
    assert "page" in response.get_json()["error"]["message"]
    assert client.post("/v1/rank", json={"user_id": "alice", "query": {"text": "bag"}, "session_id": "s", "page": 0}).status_code == 422


def test_a_rank_without_a_session_reads_no_session_and_excludes_nothing(make_app):
    app = make_app()
    client = app.test_client()
    a, b = rank(client, "travel bag", num_results=5), rank(client, "travel bag", num_results=5)
    event = logged_event(app, b["ranking_id"])
    assert {item["item_id"] for item in a["items"]} <= set(event.candidate_ids)  # what was shown stays a candidate
    assert event.page is None and event.context[CONTEXT_FEATURES.index("session_page")] == 0
    assert not event.features[:, STATIC_FEATURES.index("shown_in_session")].any()


def test_the_session_features_follow_pages_rephrasings_and_clicks(make_app):
    app = make_app()
    client = app.test_client()
    first = rank(client, "travel bag", session_id="s", num_results=5, num_candidates=20)
    clicked = first["items"][2]["item_id"]
    click(client, first, clicked)
    second = rank(client, "travel bag", session_id="s", page=2, num_results=5, num_candidates=20)
    event = logged_event(app, second["ranking_id"])
    context = dict(zip(CONTEXT_FEATURES, event.context))
    assert context["session_page"] == pytest.approx(0.25) and context["session_rephrasings"] == 0 and context["session_clicks"] > 0
    similarity = event.features[:, STATIC_FEATURES.index("sim_to_clicked")]
    assert similarity.max() > 0.3  # the clicked item's neighbours read it
    rephrased = rank(client, "leather backpack", session_id="s", num_results=5, num_candidates=20)
    event = logged_event(app, rephrased["ranking_id"])
    assert dict(zip(CONTEXT_FEATURES, event.context))["session_rephrasings"] == pytest.approx(1 / 3)
    shown_before = {item["item_id"] for item in first["items"] + second["items"]}
    flags = event.features[:, STATIC_FEATURES.index("shown_in_session")]
    assert {candidate for candidate, flag in zip(event.candidate_ids, flags) if flag} <= shown_before
    assert flags.sum() == len(shown_before & set(event.candidate_ids))


def test_a_click_on_page_one_moves_page_two_toward_the_clicked_item(make_app):
    """Greedy pages, so the comparison is not sampling noise: page 2 after a click on page 1 holds items more like
    the clicked one than page 2 of the same query in a session without the click."""
    app = make_app(TEMPERATURE=0.0)
    client = app.test_client()
    engine = app.extensions["ranking_service"].engine
    lifts = []
    for index, text in enumerate(["travel bag", "reading light", "coffee cup", "wool sweater"]):
        rank(client, text, user=f"plain-{index}", session_id="s", num_results=5, num_candidates=40)
        page_one = rank(client, text, user=f"clicker-{index}", session_id="s", num_results=5, num_candidates=40)
        target = page_one["items"][4]["item_id"]  # the lowest item of page 1: the shopper's click says more than the policy knew
        click(client, page_one, target, event_id=f"c{index}")
        without = rank(client, text, user=f"plain-{index}", session_id="s", page=2, num_results=5, num_candidates=40)
        with_click = rank(client, text, user=f"clicker-{index}", session_id="s", page=2, num_results=5, num_candidates=40)
        vectors = lambda body: np.stack([engine.indexes["text"].vectors_for(np.array([engine.store.key_of(i["item_id"])]))[0][0] for i in body["items"]])  # noqa: E731
        anchor = engine.indexes["text"].vectors_for(np.array([engine.store.key_of(target)]))[0][0]
        lifts.append(float((vectors(with_click) @ anchor).mean() - (vectors(without) @ anchor).mean()))
    assert np.mean(lifts) > 0, lifts


def test_what_a_user_is_shown_is_counted_and_erased_with_them(make_app, embedded_redis, prefix):
    app = make_app()
    client = app.test_client()
    body = rank(client, "travel bag", user="bob", session_id="s", num_results=5)
    click(client, body, body["items"][0]["item_id"])
    redis_client = connect(embedded_redis)
    service = app.extensions["ranking_service"]
    user_key = logged_event(app, body["ranking_id"]).user_key
    profile = service.state.user_profile(user_key)
    assert profile.shown == 5 and sum(profile.shown_brand_counts.values()) == 5 and profile.n_levels == 1
    assert redis_client.keys(key(prefix, "user", user_key, "session") + ":*")
    response = client.delete("/v1/users/bob", headers={"Content-Type": JSON})
    assert response.status_code in (200, 204), response.get_data(as_text=True)
    assert not redis_client.keys(key(prefix, "user", user_key) + "*")
