"""Applying a parse: merged filters, relaxation order, what is embedded and what the features see."""

from __future__ import annotations

from ranker.ranking.features import NO_INTENT
from ranker.retrieval.engine import Filters
from ranker.retrieval.query_intent import ParsedQuery
from ranker.retrieval.understanding import Understood


def parsed(text="mugs", price_min=None, price_max=None, brands=(), colours=(), categories=()) -> ParsedQuery:
    return ParsedQuery(
        text=text,
        price_min=price_min,
        price_max=price_max,
        price_phrase=None if price_min is None and price_max is None else "under",
        brands=tuple(brands),
        colours=tuple(colours),
        categories=tuple(categories),
    )


def test_the_rest_is_embedded_and_the_whole_text_when_nothing_is_left():
    assert Understood.of("red mugs under 20", parsed("mugs", price_max=20.0, colours=("Red",))).text == "mugs"
    assert Understood.of("red", parsed("", colours=("Red",))).text == "red"
    assert Understood.of("mugs", None).text == "mugs"


def test_parsed_constraints_merge_with_the_request_the_tighter_bound_winning_and_a_category_preferred():
    understood = Understood.of("mugs 10 to 30", parsed(price_min=10.0, price_max=30.0, categories=("Mugs",)))
    assert understood.filters(None) == Filters(prefer_categories=("Mugs",), price_min=10.0, price_max=30.0)  # a preference, not a wall
    request = Filters(categories=("Lamps",), price_min=15.0, price_max=40.0)
    assert understood.filters(request) == Filters(categories=("Lamps",), price_min=15.0, price_max=30.0)  # the shop's categories win
    contradiction = Filters(price_min=50.0)
    assert understood.filters(contradiction) == Filters(prefer_categories=("Mugs",), price_min=50.0)  # the parse yields to the request
    only_category = Understood.of("mugs", parsed(categories=("Mugs",)))
    assert only_category.filters(None) == Filters(prefer_categories=("Mugs",)) and not only_category.filters(None).active


def test_constraints_nothing_meets_are_relaxed_price_first_and_the_request_never():
    understood = Understood.of("mugs under 5", parsed(price_max=5.0, categories=("Mugs",), brands=("Acme",)))
    calls: list[Filters | None] = []

    def run(filters):  # as an engine whose named categories are a wall finds nothing in Mugs under 5
        calls.append(filters)
        return ["hit"] if filters is not None and filters.price_max is None and filters.prefer_categories == ("Mugs",) else []

    assert understood.search(run, None) == ["hit"]
    assert calls[0] == Filters(prefer_categories=("Mugs",), price_max=5.0) and understood.relaxed == ["price"]
    intent = understood.intent
    assert intent.price_max is None and intent.brands == ("Acme",)  # the relaxed price is not a feature either
    nothing = Understood.of("mugs under 5", parsed(price_max=5.0))
    assert nothing.search(lambda filters: [], Filters(price_max=3.0)) == [] and nothing.relaxed == []


def test_a_price_that_leaves_none_of_the_preferred_categories_is_relaxed_when_that_finds_them():
    cheap_other, dear_mug = ("Lamps", 4.0), ("Mugs", 12.0)

    def run(filters):  # a catalog with a lamp under 5 and a mug above it
        return [item for item in (cheap_other, dear_mug) if filters is None or filters.price_max is None or item[1] <= filters.price_max]

    def category(item):
        return item[0]

    understood = Understood.of("mugs under 5", parsed(price_max=5.0, categories=("Mugs",)))
    assert understood.search(run, None, category) == [cheap_other, dear_mug] and understood.relaxed == ["price"]
    lamps = Understood.of("lamps under 5", parsed(text="lamps", price_max=5.0, categories=("Lamps",)))
    assert lamps.search(run, None, category) == [cheap_other] and lamps.relaxed == []  # the category meets it: kept
    sofas = Understood.of("sofas under 5", parsed(text="sofas", price_max=5.0, categories=("Sofas",)))
    assert sofas.search(run, None, category) == [cheap_other] and sofas.relaxed == []  # relaxing finds none either
    requested = Understood.of("mugs", parsed(categories=("Mugs",)))
    assert requested.search(run, Filters(price_max=5.0), category) == [cheap_other] and requested.relaxed == []  # the request's bound stays


def test_no_intent_means_no_filters_and_no_intent_features():
    understood = Understood.of("mugs", parsed("mugs"))
    assert understood.filters(None) is None and understood.intent == NO_INTENT
    assert understood.to_json()["relaxed"] == []
