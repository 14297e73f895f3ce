"""Stated intent in the simulator: shoppers hold to what they type, and parsing changes what is retrieved and seen."""

from __future__ import annotations

import numpy as np
import pytest

from envs.catalog import SimCatalog
from envs.intents import PARSED, PLAIN, STATED, IntentBank, round_limit, stated_phrase
from envs.shopping import SlateShoppingEnv
from ranker.ranking.features import CONTEXT_FEATURES, FEATURES

# six mugs: red and blue, two brands, prices 10 .. 60; one plain query, one stated query and its parsed twin
PRICES = np.array([10.0, 20.0, 30.0, 40.0, 50.0, 60.0])


def _catalog(twin_price_max: float = 35.0) -> SimCatalog:
    rng = np.random.default_rng(0)
    text = rng.standard_normal((6, 8)).astype(np.float32)
    text[:, 0] += 4.0  # all alike: every item is a plausible mug
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    queries = np.stack([text[3], text[3], text[3]])
    bank = IntentBank.from_rows(
        [
            {"kind": PLAIN},
            {"kind": STATED, "asked_price_max": 35.0, "asked_colour": 0, "parsed": 2},
            {"kind": PARSED, "price_max": twin_price_max, "colour": 0},
        ]
    )
    return SimCatalog(
        item_ids=[f"m{i}" for i in range(6)],
        titles=[f"{'Red' if i % 2 == 0 else 'Blue'} Mug {i}" for i in range(6)],
        category_codes=np.zeros(6, dtype=np.int64),
        category_names=["Mugs"],
        brand_codes=np.array([0, 1, 0, 1, 0, 1]),
        brand_names=["Acme", "Bolt"],
        prices=PRICES,
        text=text,
        has_image=np.zeros(6, dtype=bool),
        image=None,
        image_in_text=None,
        query_texts=["mug", "red mug under 35", "mug"],
        query_items=np.array([3, 3, 3]),
        query_text=queries,
        source="intent-test",
        colour_codes=np.array([0, 1, 0, 1, 0, 1]),
        colour_names=["Red", "Blue"],
        intents=bank,
    )


CONFIG = {"n_candidates": 6, "slate_size": 3, "n_users": 5, "cold_item_share": 0.0, "intent_share": 1.0}


def test_a_parsed_price_range_filters_retrieval_and_is_relaxed_when_no_item_is_in_it():
    catalog = _catalog()
    assert set(catalog.retrieve(0, "text", 6).rows) == set(range(6))  # a plain query: everything
    assert set(catalog.retrieve(1, "text", 6).rows) == set(range(6))  # the typed phrase, unparsed: no filter
    assert set(PRICES[catalog.retrieve(2, "text", 6).rows]) == {10.0, 20.0, 30.0}  # its twin: under 35 only
    nothing = _catalog(twin_price_max=5.0)
    assert len(nothing.retrieve(2, "text", 6).rows) == 6  # nothing costs under 5: relaxed


def test_shoppers_hold_to_what_they_typed():
    env = SlateShoppingEnv(_catalog(), **CONFIG)
    env.reset(seed=1)
    session = env.session
    assert session.query == 1 and session.price_limit == 35.0 and session.colour == 0  # intent_share=1: always the stated phrase
    rows = np.arange(6)
    stated = env.world.utilities(session, rows).utility
    plain = env.world.utilities(type(session)(**{**session.__dict__, "price_limit": None, "colour": -1}), rows).utility
    penalty = plain - stated
    expected = 4.0 * (PRICES > 35.0) + 2.0 * (catalog_colours := np.array([0, 1, 0, 1, 0, 1]) != 0)
    np.testing.assert_allclose(penalty, expected)
    assert catalog_colours.sum() == 3


@pytest.mark.parametrize("parse", [True, False])
def test_parsing_decides_the_candidates_and_the_intent_features(parse):
    env = SlateShoppingEnv(_catalog(), parse_queries=parse, **CONFIG)
    observation, _ = env.reset(seed=1)
    valid = observation["mask"].astype(bool)
    limit = observation["features"][:, FEATURES.index("price_vs_limit")]
    colour = observation["features"][:, FEATURES.index("colour_match")]
    flags = observation["context"][[CONTEXT_FEATURES.index("query_price_limit"), CONTEXT_FEATURES.index("query_colour")]]
    if parse:
        assert valid.sum() == 3 and set(PRICES[env.unwrapped.rows]) == {10.0, 20.0, 30.0}
        assert np.all(limit[valid] < 0) and set(colour[valid]) == {0.0, 1.0}
        np.testing.assert_array_equal(flags, [1.0, 1.0])
    else:
        assert valid.sum() == 6
        np.testing.assert_array_equal(limit, 0.0)
        np.testing.assert_array_equal(flags, [0.0, 0.0])


def test_stated_phrases_name_what_they_state_and_limits_are_round_and_above_the_price():
    rng = np.random.default_rng(3)
    for _ in range(200):
        phrase, asked = stated_phrase("running shoes", colour="Red", brand="Stride", price=47.0, rng=rng)
        assert asked and phrase.endswith("running shoes") or "asked_price_max" in asked
        if "asked_colour" in asked:
            assert "red" in phrase.split()
        if "asked_brand" in asked:
            assert "stride" in phrase.split()
        if "asked_price_max" in asked:
            assert str(int(asked["asked_price_max"])) in phrase
    limits = [round_limit(47.0, rng) for _ in range(100)]
    assert all(47 <= limit <= 47 * 1.6 + 5 and limit % 5 == 0 for limit in limits)
