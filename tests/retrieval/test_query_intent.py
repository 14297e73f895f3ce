"""The query parser: extraction quality on the labelled demo-shop queries, the vocabulary following the catalog,
bad input, and the ``query.parsed`` JSON shape."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ranker.catalog.demo import generate_items
from ranker.catalog.items import Item
from ranker.retrieval.query_intent import MAX_PARSE_CHARS, MAX_PARSE_TOKENS, ParsedQuery, QueryParser, QueryVocabulary

LABELLED = Path(__file__).parent / "data" / "labelled_queries.jsonl"
NAME_KINDS = ("brands", "colours", "categories")


@pytest.fixture(scope="module")
def vocabulary() -> QueryVocabulary:
    """The vocabulary of the demo shop as ``make serve`` builds it (2,400 items, seed 0); nothing is encoded."""
    return QueryVocabulary.from_items(generate_items(2400, seed=0))


@pytest.fixture(scope="module")
def parser(vocabulary: QueryVocabulary) -> QueryParser:
    return QueryParser(vocabulary)


def _labelled() -> list[dict]:
    return [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines() if line.strip()]


def _expected_price(record: dict, vocabulary: QueryVocabulary) -> tuple[float | None, float | None]:
    """The labelled bounds; a price word ("cheap", "premium") reads the quantile of the labelled categories."""
    words = record.get("price_words")
    if words == "cheap":
        return None, vocabulary.price_quantile(0.25, record["categories"])
    if words == "premium":
        return vocabulary.price_quantile(0.75, record["categories"]), None
    return record["price_min"], record["price_max"]


def _same(a: float | None, b: float | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and abs(a - b) <= 1e-6)


def extraction_scores(parser: QueryParser, records: list[dict]) -> dict[str, tuple[float, float]]:
    """Precision and recall per kind over the labelled queries.

    Price: a query *predicts* a price when the parser sets either bound, and *has* one when its label does; a
    prediction is correct when both bounds equal the label's within 1e-6 (for "cheap"/"premium" labels: the 25th or
    75th percentile of the labelled categories' prices, or of the catalog when none). Precision = correct /
    predicted, recall = correct / labelled. Brands, colours, categories: over (query, catalog name) pairs,
    precision = pairs found that are labelled / pairs found, recall = labelled pairs found / labelled pairs. A kind
    with nothing predicted scores precision 0 (so an empty parser fails rather than passing vacuously).
    """
    counts = {kind: [0, 0, 0] for kind in ("price", *NAME_KINDS)}  # correct, predicted, labelled
    for record in records:
        parsed = parser.parse(record["query"])
        want_min, want_max = _expected_price(record, parser.vocabulary)
        predicted = parsed.price_min is not None or parsed.price_max is not None
        labelled = want_min is not None or want_max is not None
        counts["price"][0] += predicted and labelled and _same(parsed.price_min, want_min) and _same(parsed.price_max, want_max)
        counts["price"][1] += predicted
        counts["price"][2] += labelled
        for kind in NAME_KINDS:
            found, wanted = set(getattr(parsed, kind)), set(record[kind])
            counts[kind][0] += len(found & wanted)
            counts[kind][1] += len(found)
            counts[kind][2] += len(wanted)
    return {kind: (c / p if p else 0.0, c / w if w else 0.0) for kind, (c, p, w) in counts.items()}


def test_labelled_set_is_big_and_varied() -> None:
    records = _labelled()
    assert len(records) >= 220
    assert sum(not any(r[k] for k in NAME_KINDS) and r["price_min"] is None and r["price_max"] is None and "price_words" not in r for r in records) >= 30
    assert any(r["query"] == "iphone 15 case" for r in records) and any(r["query"] == "size 42 boots" for r in records)


def test_extraction_precision_and_recall_per_kind(parser: QueryParser) -> None:
    scores = extraction_scores(parser, _labelled())
    for kind, (precision, recall) in scores.items():
        print(f"{kind:<10} precision {precision:.3f}  recall {recall:.3f}")
    for kind, (precision, recall) in scores.items():
        assert precision >= 0.95, f"{kind}: precision {precision:.3f} < 0.95"
        assert recall >= 0.90, f"{kind}: recall {recall:.3f} < 0.90"


def test_the_scores_fail_a_parser_that_understands_nothing(vocabulary: QueryVocabulary) -> None:
    scores = extraction_scores(QueryParser(QueryVocabulary()), _labelled())
    assert all(precision < 0.95 and recall < 0.90 for kind, (precision, recall) in scores.items() if kind != "price")

    class EveryNumberIsAPrice(QueryParser):  # the mistake the labelled set guards against: "iphone 15 case" under 15
        def parse(self, text: str) -> ParsedQuery:
            parsed = super().parse(text)
            numbers = [float(word) for word in text.split() if word.isdigit()]
            return parsed if parsed.price_max is not None or not numbers else replace(parsed, price_max=numbers[0])

    precision, _ = extraction_scores(EveryNumberIsAPrice(vocabulary), _labelled())["price"]
    assert precision < 0.95


# ------------------------------------------------------------------ prices and the rest of the text
@pytest.mark.parametrize(
    ("query", "price_min", "price_max", "phrase", "text"),
    [
        ("red running shoes under 50", None, 50.0, "under 50", "running shoes"),
        ("below $30 mugs", None, 30.0, "below $30", "mugs"),
        ("between 40 and 20", 20.0, 40.0, "between 40 and 20", ""),
        ("20-40 eur backpack", 20.0, 40.0, "20-40 eur", "backpack"),
        ("lamp over 1,200.50", 1200.5, None, "over 1,200.50", "lamp"),
        ("bike under 2k", None, 2000.0, "under 2k", "bike"),
        ("mug for under 10 euros", None, 10.0, "under 10 euros", "mug"),
        ("over 20 under 50", 20.0, 50.0, "over 20 under 50", ""),
    ],
)
def test_explicit_prices(parser: QueryParser, query: str, price_min: float | None, price_max: float | None, phrase: str, text: str) -> None:
    parsed = parser.parse(query)
    assert (parsed.price_min, parsed.price_max, parsed.price_phrase, parsed.text) == (price_min, price_max, phrase, text)
    assert parsed.price_quantile is None and parsed.has_intent


@pytest.mark.parametrize(
    "query",
    ["iphone 15 case", "size 42 boots", "2 person tent", "4k monitor", "100% cotton shirt", "pack of 3", "tent up to 4 persons", "30 euros", "size 10 and up"],
)
def test_numbers_that_are_not_prices_stay_text(parser: QueryParser, query: str) -> None:
    parsed = parser.parse(query)
    assert parsed.price_min is None and parsed.price_max is None and parsed.price_phrase is None
    assert all(token in parsed.text.split() for token in query.split() if any(ch.isdigit() for ch in token))


def test_price_words_read_the_named_categorys_quantiles(parser: QueryParser, vocabulary: QueryVocabulary) -> None:
    cheap = parser.parse("cheap backpacks")
    assert cheap.price_max == pytest.approx(vocabulary.price_quantile(0.25, ["Backpacks"])) and cheap.price_min is None
    assert (cheap.price_phrase, cheap.price_quantile, cheap.text, cheap.categories) == ("cheap", 0.25, "backpacks", ("Backpacks",))
    premium = parser.parse("premium sofa")
    assert premium.price_min == pytest.approx(vocabulary.price_quantile(0.75, ["Sofas"])) and premium.price_quantile == 0.75
    assert parser.parse("premium sofa").price_min > parser.parse("premium mug").price_min  # per category, not one catalog figure
    anything = parser.parse("something cheap")
    assert anything.price_max == pytest.approx(vocabulary.price_quantile(0.25)) and anything.text == "something"
    assert parser.parse("cheap mug under 8").price_max == 8.0  # an amount typed wins
    assert parser.parse("High-End headphones").price_phrase == "High-End"  # as typed
    nothing_priced = QueryParser(QueryVocabulary()).parse("cheap mugs")
    assert nothing_priced.price_max is None and nothing_priced.text == "cheap mugs"  # no prices to read: the word stays


def test_names_case_plurals_typos_and_multi_word(parser: QueryParser) -> None:
    parsed = parser.parse("BLACK Kestral sneakrs by alder and finch in forest gren")
    assert parsed.colours == ("Black", "Forest Green")
    assert parsed.brands == ("Kestrel", "Alder & Finch")
    assert parsed.categories == ("Sneakers",)
    assert parsed.text == "sneakrs"  # the category word stays for the text encoder; brands, colours and connectors go
    assert parser.parse("watch").categories == parser.parse("watches").categories == ("Watches",)
    assert parser.parse("t shirt").categories == parser.parse("T-Shirts").categories == ("T-Shirts",)
    assert parser.parse("phone cases").categories == ("Phone Cases",)


def test_words_that_are_not_typos_of_names(parser: QueryParser) -> None:
    assert not parser.parse("iphone 15 cases").categories  # "cases" is a catalog word, not "vases" mistyped
    assert not parser.parse("while running").colours  # a common word, not "white"
    assert not parser.parse("red").brands and not parser.parse("rex").colours  # short words match exactly only
    assert not parser.parse("green tent").colours  # "green" alone is no catalog colour


# ------------------------------------------------------------------ the vocabulary follows the catalog
def _item(item_id: str, *, brand: str = "Acme", category: str = "Mugs", colour: str = "Red", price: float = 10.0) -> Item:
    return Item(item_id=item_id, title=f"{brand} {colour} thing", price=price, category=category, brand=brand, attributes={"color": colour})


def test_vocabulary_counts_names_per_item() -> None:
    vocabulary = QueryVocabulary.from_items([_item("a", brand="Zorblax"), _item("b", brand="Zorblax", colour="Teal")])
    parser = QueryParser(vocabulary)
    assert parser.parse("zorblax mug").brands == ("Zorblax",)
    vocabulary.remove([_item("a", brand="Zorblax")])
    assert parser.parse("zorblax mug").brands == ("Zorblax",)  # one item still carries it
    vocabulary.remove([_item("b", brand="Zorblax", colour="Teal")])
    assert parser.parse("zorblax teal mug") == ParsedQuery(text="zorblax teal mug")
    assert vocabulary.names("brand") == [] and vocabulary.price_quantile(0.5) is None


def test_vocabulary_price_quantiles_follow_adds_and_removes() -> None:
    vocabulary = QueryVocabulary.from_items([_item(str(i), price=float(i)) for i in range(1, 6)] + [_item("s", category="Sofas", price=900.0)])
    assert vocabulary.price_quantile(0.25, ["mugs"]) == 2.0 and vocabulary.price_quantile(0.75, ["Sofas"]) == 900.0
    assert vocabulary.price_quantile(0.5, ["Mugs", "Sofas"]) == 3.5
    vocabulary.remove([_item("1", price=1.0)])
    assert vocabulary.price_quantile(0.0, ["Mugs"]) == 2.0
    vocabulary.add([_item("x", price=0.5)])
    assert vocabulary.price_quantile(0.0, ["Mugs"]) == 0.5
    items = generate_items(150, seed=2)  # a bulk add sorts once; single adds insert in place: the same figures
    one_by_one = QueryVocabulary()
    for item in items:
        one_by_one.add([item])
    bulk = QueryVocabulary.from_items(items)
    for q in (0.0, 0.25, 0.75, 1.0):
        assert bulk.price_quantile(q) == one_by_one.price_quantile(q) == pytest.approx(np.percentile([i.price for i in items], 100 * q))


def test_engine_vocabulary_follows_upserts_and_deletes(demo_engine_of, encoders) -> None:
    from ranker.retrieval.engine import SearchEngine

    engine = demo_engine_of(8)
    parser = QueryParser(engine.query_vocabulary)
    assert "Quokkaline" not in engine.query_vocabulary.names("brand")
    engine.upsert([_item("new-1", brand="Quokkaline", category="Hammocks", colour="Lilac", price=70.0)])
    parsed = parser.parse("quokkaline lilac hammocks under 100")
    assert (parsed.brands, parsed.colours, parsed.categories, parsed.price_max) == (("Quokkaline",), ("Lilac",), ("Hammocks",), 100.0)
    engine.upsert([_item("new-1", brand="Quokkaline", category="Hammocks", colour="Mauve", price=70.0)])  # a replaced item counts once
    assert parser.parse("lilac").colours == () and parser.parse("mauve").colours == ("Mauve",)
    reopened = SearchEngine(encoders, engine.data_dir)  # the store on disk: the vocabulary is rebuilt from it
    assert QueryParser(reopened.query_vocabulary).parse("quokkaline").brands == ("Quokkaline",)
    engine.delete(["new-1", "new-1"])
    assert parser.parse("quokkaline hammocks").brands == () and "Hammocks" not in engine.query_vocabulary.names("category")
    first = engine.store.items()[0]
    engine.build(engine.store.items()[1:])
    assert engine.query_vocabulary.names("category") == sorted({item.category for item in engine.store.items()})
    assert first.item_id not in engine.store


# ------------------------------------------------------------------ bad input and the JSON shape
@pytest.mark.parametrize("query", ["under -5", "under 1e309", "under 99999999999999", "over 1e3", "under nan", "under inf"])
def test_implausible_prices_stay_text(parser: QueryParser, query: str) -> None:
    parsed = parser.parse(query)
    assert parsed.price_min is None and parsed.price_max is None and parsed.text == query


@pytest.mark.parametrize("query", ["", "   ", "12345", "$$$", "!!! ???", "-", "€", "42 17 3.5", "\x00\u200b\ufeff", "🙂🙂"])
def test_numbers_symbols_and_blank_stay_text(parser: QueryParser, query: str) -> None:
    parsed = parser.parse(query)
    assert not parsed.has_intent and parsed.text == " ".join(query.split()).strip(" ,;:-/")


def test_long_text_is_parsed_up_to_the_cap_and_kept_whole(parser: QueryParser) -> None:
    long = "navy backpack " + "very " * 20_000 + "under 50 red"
    parsed = parser.parse(long)
    assert parsed.colours == ("Navy",) and parsed.categories == ("Backpacks",) and parsed.truncated
    assert parsed.price_max is None and parsed.text.endswith("under 50 red") and parsed.text.startswith("backpack very")
    many_words = " ".join(["mug"] * (MAX_PARSE_TOKENS + 5)) + " red"
    assert parser.parse(many_words).truncated and parser.parse(many_words).colours == ()
    assert len("x" * MAX_PARSE_CHARS) == MAX_PARSE_CHARS and not parser.parse("x" * MAX_PARSE_CHARS).truncated
    assert parser.parse("y" * (MAX_PARSE_CHARS * 4)).text == "y" * (MAX_PARSE_CHARS * 4)  # no space to cut at


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300) | st.text(alphabet="0123456789 $€£-.,+<>%ekunderoverbtwa", max_size=60))
def test_parse_never_raises(text: str) -> None:
    parsed = QueryParser(_FUZZ_VOCABULARY).parse(text)
    assert isinstance(parsed.text, str) and json.loads(json.dumps(parsed.to_json())) == parsed.to_json()
    for bound in (parsed.price_min, parsed.price_max):
        assert bound is None or (math.isfinite(bound) and bound >= 0)
    if parsed.price_min is not None and parsed.price_max is not None:
        assert parsed.price_min <= parsed.price_max


_FUZZ_VOCABULARY = QueryVocabulary.from_items(generate_items(240, seed=1))


def test_to_json_shape(parser: QueryParser) -> None:
    parsed = parser.parse("cheap navy kestrel backpacks")
    document = parsed.to_json()
    assert set(document) == {"text", "price_min", "price_max", "price_phrase", "price_quantile", "brands", "colours", "categories", "truncated"}
    assert document["brands"] == ["Kestrel"] and document["colours"] == ["Navy"] and document["categories"] == ["Backpacks"]
    assert document["price_min"] is None and isinstance(document["price_max"], float) and document["price_phrase"] == "cheap"
    assert json.loads(json.dumps(document)) == document
    assert ParsedQuery(text="mugs").to_json()["brands"] == [] and not ParsedQuery(text="mugs").has_intent


def test_parse_rejects_a_non_string(parser: QueryParser) -> None:
    with pytest.raises(TypeError, match="text: must be a string"):
        parser.parse(None)  # type: ignore[arg-type]
