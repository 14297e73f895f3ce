"""The search demo served over HTTP (the ranking API grows here in later issues)."""

from __future__ import annotations

import pytest

from api import create_app


@pytest.fixture()
def client(demo_engine):
    app = create_app({"DATA_DIR": str(demo_engine.data_dir), "TESTING": True})
    return app.test_client()


def test_search_endpoint_returns_ranked_json(client):
    response = client.get("/v1/search?q=backpack&k=4")
    assert response.status_code == 200
    results = response.get_json()["results"]
    assert len(results) == 4 and results[0]["score"] >= results[-1]["score"]


@pytest.mark.parametrize("query, field", [("?q=&k=3", "query"), ("?q=mug&k=zero", "k"), ("?q=mug&k=0", "k")])
def test_bad_search_is_a_400_naming_the_field(client, query, field):
    response = client.get("/v1/search" + query)
    assert response.status_code == 400
    assert response.get_json()["error"]["field"] == field


def test_page_shows_results_with_pictures(client, demo_items):
    page = client.get("/?q=" + demo_items[0].category).get_data(as_text=True)
    assert demo_items[0].category in page and "<img src=\"/images/" in page
    picture = client.get("/images/" + demo_items[0].item_id)
    assert picture.status_code == 200 and picture.mimetype == "image/png"
    assert client.get("/images/no-such-item").status_code == 404
