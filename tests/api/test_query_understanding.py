"""Query understanding through HTTP: a parsed price limit filters, a limit nothing meets is relaxed and said so,
parsing can be turned off, the parse is logged, the vocabulary follows catalog writes, and odd queries never 5xx."""

from __future__ import annotations

import numpy as np
import pytest


def rank(client, text, **extra):
    response = client.post("/v1/rank", json={"user_id": "alice", "query": {"text": text}, "num_results": 10, **extra})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


@pytest.fixture(scope="module")
def shoes(engine):
    """A category of the 80 demo items with several items, its prices, and its lower-case plural noun."""
    items = [engine.store.item_for_key(int(key)) for key in engine.store.keys()]
    by_category: dict[str, list[float]] = {}
    for item in items:
        by_category.setdefault(item.category, []).append(item.price)
    category = max(by_category, key=lambda name: len(by_category[name]))
    return category, np.array(by_category[category])


def test_a_parsed_price_limit_filters_every_result(client, shoes):
    category, prices = shoes
    limit = float(np.ceil(np.median(prices)))
    body = rank(client, f"{category.lower()} under {limit:g}")
    parsed = body["query"]["parsed"]
    assert parsed["price_max"] == pytest.approx(limit) and body["query"]["relaxed"] == []
    assert body["items"] and all(item["price"] <= limit for item in body["items"])
    assert category in parsed["categories"]
    in_category = sum(price <= limit for price in prices)
    assert sum(item["category"] == category for item in body["items"]) == in_category  # a named category is a strong preference ...
    assert len(body["items"]) == 10 > in_category  # ... not a wall: other categories fill the slate
    unparsed = rank(client, f"{category.lower()} under {limit:g}", parse_query=False)
    assert unparsed["query"]["parsed"] is None and unparsed["query"]["text"] == f"{category.lower()} under {limit:g}"


def test_a_named_category_is_a_wall_when_the_deployment_or_the_request_asks_for_one(make_app, client, shoes):
    category, prices = shoes
    walled = make_app(CATEGORY_MATCH="filter").test_client()
    body = rank(walled, f"{category.lower()}")
    assert len(body["items"]) == len(prices) and all(item["category"] == category for item in body["items"])
    nothing = rank(walled, f"{category.lower()} under 1")  # a wall nothing meets is relaxed, price first
    assert nothing["query"]["relaxed"] == ["price"] and all(item["category"] == category for item in nothing["items"])
    requested = rank(client, category.lower(), filters={"categories": [category]})
    assert len(requested["items"]) == len(prices) and all(item["category"] == category for item in requested["items"])


def test_a_limit_no_item_meets_is_relaxed_and_the_response_says_so(client, shoes):
    category, prices = shoes
    body = rank(client, f"{category.lower()} under 1")
    assert body["query"]["parsed"]["price_max"] == 1.0
    assert body["query"]["relaxed"] == ["price"]
    assert body["items"], "a parse never empties the result"
    assert min(item["price"] for item in body["items"]) > 1.0


def test_a_limit_the_named_category_never_meets_is_relaxed_rather_than_showing_only_other_categories(client, engine, shoes):
    category, prices = shoes
    others = [engine.store.item_for_key(int(key)) for key in engine.store.keys()]
    limit = float(np.floor(prices.min())) - 0.01
    assert any(item.price <= limit and item.category != category for item in others)  # other categories meet the limit
    body = rank(client, f"{category.lower()} under {limit:g}")
    assert body["query"]["relaxed"] == ["price"]  # as the wall did: the category the shopper named, over the price
    assert body["items"] and all(item["category"] == category for item in body["items"][: min(len(prices), 10)])


def test_the_parse_is_logged_with_the_ranking(make_app, shoes):
    category, _ = shoes
    app = make_app()
    body = rank(app.test_client(), f"cheap {category.lower()}")
    [(_, event)] = app.extensions["ranking_service"].events.rankings()
    assert event.ranking_id == body["ranking_id"] and event.query_parsed == body["query"]
    assert event.query_parsed["parsed"]["price_max"] is not None  # "cheap": the category's lower price quantile


def test_the_vocabulary_follows_catalog_writes(make_app, fresh_engine):
    client = make_app(ENGINE=fresh_engine).test_client()
    item = {"title": "Brambleworth enamel camping mug", "price": 19.0, "category": "Mugs", "brand": "Brambleworth"}
    assert client.put("/v1/items/new-brand-1", json=item).status_code == 200
    body = rank(client, "brambleworth mug")
    assert body["query"]["parsed"]["brands"] == ["Brambleworth"]
    assert client.delete("/v1/items/new-brand-1").status_code == 204
    assert rank(client, "brambleworth mug")["query"]["parsed"]["brands"] == []


@pytest.mark.parametrize("text", ["under -5", "mugs under 1e309", "under 99999999999999999999999999", "12345", "!!! ??? ...", "$$$", "between 40 and 20", "0"])
def test_odd_queries_are_parsed_as_text_never_a_5xx(client, text):
    response = client.post("/v1/rank", json={"user_id": "alice", "query": {"text": text}})
    assert response.status_code == 200, response.get_data(as_text=True)
    parsed = response.get_json()["query"]["parsed"]
    for bound in ("price_min", "price_max"):
        assert parsed[bound] is None or (np.isfinite(parsed[bound]) and parsed[bound] >= 0)


def test_a_query_over_the_length_limit_is_422_naming_the_field(client):
    response = client.post("/v1/rank", json={"user_id": "alice", "query": {"text": "red mugs under 50 " * 80}})
    assert response.status_code == 422
    assert "query.text" in response.get_data(as_text=True)
