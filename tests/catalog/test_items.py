"""Catalog loading: JSONL and CSV, image references, bad lines, round trips.

Bad input is tested with tables in the style of Open Bandit Pipeline: each row
is a bad line (or bad argument) and a fragment the error message must carry.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import random
from pathlib import Path

import pytest
from PIL import Image

from ranker.catalog.items import (
    CATALOG_FIELDS,
    CatalogError,
    Item,
    LoadReport,
    item_from_mapping,
    items_to_csv,
    load_catalog,
    write_jsonl,
)


# ------------------------------------------------------------------ helpers
def png_bytes(size: tuple[int, int] = (8, 6), color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def good_record(item_id: str = "sku-1", **overrides) -> dict:
    record = {"item_id": item_id, "title": "Trail running shoe", "price": 89.5, "category": "Shoes"}
    record.update(overrides)
    return record


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def random_items(seed: int, n: int) -> list[Item]:
    rng = random.Random(seed)
    colors = ["red", "blue", "black", "grün", "naïve white"]
    items = []
    for index in range(n):
        attributes: dict = {}
        if rng.random() < 0.8:
            attributes["color"] = rng.choice(colors)
        if rng.random() < 0.5:
            attributes["size"] = rng.randint(30, 48)
        if rng.random() < 0.5:
            attributes["weight_kg"] = round(rng.uniform(0.1, 3.0), 3)
        if rng.random() < 0.3:
            attributes["waterproof"] = rng.random() < 0.5
        if rng.random() < 0.2:
            attributes["code"] = "0042"  # a string that looks like a number stays a string
        items.append(
            Item(
                item_id=f"sku-{seed}-{index:04d}",
                title=f"Item {index} « {rng.choice(colors)} » with, comma",
                description=rng.choice(["", 'Line one.\nLine two, with "quotes".', "Plain description"]),
                price=round(rng.uniform(0, 500), 2),
                category=rng.choice(["Shoes", "Bags", "Outdoor > Tents"]),
                brand=rng.choice(["", "Acme", "Ünïcode Co"]),
                attributes=attributes,
            )
        )
    return items


# ------------------------------------------------------------ loading JSONL
def test_load_jsonl_good_lines(tmp_path: Path) -> None:
    records = [
        good_record("sku-1", brand="Acme", description="Light", attributes={"color": "red", "size": 42, "eco": True, "weight": 0.25}),
        good_record("sku-2", title="  Padded title  ", category="Bags", price=0),
        good_record("SKU.3:a_b-c"),
    ]
    path = write_lines(tmp_path / "catalog.jsonl", [json.dumps(r) for r in records])

    report = load_catalog(path)

    assert isinstance(report, LoadReport)
    assert report.errors == []
    assert report.n_lines == 3
    assert [item.item_id for item in report.items] == ["sku-1", "sku-2", "SKU.3:a_b-c"]
    first = report.items[0]
    assert first.attributes == {"color": "red", "size": 42, "eco": True, "weight": 0.25}
    assert type(first.attributes["size"]) is int and type(first.attributes["eco"]) is bool
    assert first.brand == "Acme" and first.description == "Light" and first.image is None
    assert report.items[1].title == "Padded title"  # stripped
    assert report.items[1].price == 0.0
    assert report.summary() == "3 items loaded, 0 lines skipped out of 3"


def test_blank_lines_are_not_records_but_keep_line_numbers(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "catalog.jsonl",
        [json.dumps(good_record("a")), "", "   ", json.dumps(good_record("b", price=-3))],
    )
    report = load_catalog(path)
    assert [item.item_id for item in report.items] == ["a"]
    assert report.n_lines == 2
    assert len(report.errors) == 1
    assert report.errors[0].line == 4
    assert "line 4" in str(report.errors[0])


@pytest.mark.parametrize("suffix", [".jsonl", ".ndjson", ".json", ".JSONL"])
def test_jsonl_suffixes(tmp_path: Path, suffix: str) -> None:
    path = write_lines(tmp_path / f"catalog{suffix}", [json.dumps(good_record("x1"))])
    assert [item.item_id for item in load_catalog(path).items] == ["x1"]


# -------------------------------------------------------------- loading CSV
def test_load_csv_with_attributes_column_and_extra_columns(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "catalog.csv",
        ["item_id", "title", "price", "category", "brand", "attributes", "color", "material"],
        [
            ["c1", "Tote bag", "19.90", "Bags", "Acme", json.dumps({"size": 40, "eco": True, "ratio": 1.5}), "navy", "canvas"],
            ["c2", "Rain jacket", "120", "Outdoor", "", "", "yellow", ""],
            ["c3", "Cap", "0", "Hats", "", "", "", ""],
        ],
    )
    report = load_catalog(path)

    assert report.errors == []
    assert report.n_lines == 3
    c1, c2, c3 = report.items
    assert c1.price == pytest.approx(19.9) and c1.brand == "Acme"
    assert c1.attributes == {"size": 40, "eco": True, "ratio": 1.5, "color": "navy", "material": "canvas"}
    assert type(c1.attributes["size"]) is int and type(c1.attributes["eco"]) is bool
    # empty cells are absent, not empty strings
    assert c2.attributes == {"color": "yellow"} and c2.brand == "" and c2.description == ""
    assert c3.attributes == {} and c3.price == 0.0 and c3.image is None


def test_csv_without_item_id_header_is_rejected(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "catalog.csv", ["sku", "title", "price", "category"], [["a", "T", "1", "C"]])
    with pytest.raises(CatalogError, match="item_id"):
        load_catalog(path)


# ------------------------------------------------------------------- images
def test_relative_image_path_resolves_against_catalog_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    catalog_dir = tmp_path / "catalog"
    (catalog_dir / "img").mkdir(parents=True)
    (catalog_dir / "img" / "shoe.png").write_bytes(png_bytes())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "img").mkdir()  # a decoy: the same relative path under the working directory
    (elsewhere / "img" / "decoy.png").write_bytes(png_bytes())
    monkeypatch.chdir(elsewhere)

    jsonl = write_lines(catalog_dir / "items.jsonl", [json.dumps(good_record("j1", image="img/shoe.png"))])
    csv_path = write_csv(catalog_dir / "items.csv", ["item_id", "title", "price", "category", "image"], [["k1", "Shoe", "5", "Shoes", "img/shoe.png"]])

    expected = str((catalog_dir / "img" / "shoe.png").resolve())
    for path in (jsonl, csv_path):
        report = load_catalog(path)
        assert report.errors == []
        assert report.items[0].image == expected
        assert Path(report.items[0].image).is_absolute()

    # resolve_images=False keeps the reference as written
    assert load_catalog(jsonl, resolve_images=False).items[0].image == "img/shoe.png"
    # a file present only under the working directory is not found
    decoy = write_lines(catalog_dir / "decoy.jsonl", [json.dumps(good_record("d1", image="img/decoy.png"))])
    assert load_catalog(decoy).items == []


def test_absolute_image_path_is_kept(tmp_path: Path) -> None:
    image = tmp_path / "pics" / "bag.png"
    image.parent.mkdir()
    image.write_bytes(png_bytes())
    (tmp_path / "sub").mkdir()
    path = write_lines(tmp_path / "sub" / "c.jsonl", [json.dumps(good_record("a", image=str(image)))])
    assert load_catalog(path).items[0].image == str(image)


def test_data_uri_and_raw_base64_images_are_accepted(tmp_path: Path) -> None:
    encoded = base64.b64encode(png_bytes((16, 16))).decode()
    data_uri = "data:image/png;base64," + encoded
    assert len(encoded) >= 64
    path = write_lines(
        tmp_path / "c.jsonl",
        [json.dumps(good_record("uri", image=data_uri)), json.dumps(good_record("raw", image=encoded)), json.dumps(good_record("none", image=""))],
    )
    report = load_catalog(path)
    assert report.errors == []
    by_id = {item.item_id: item for item in report.items}
    assert by_id["uri"].image == data_uri
    assert by_id["raw"].image == encoded
    assert by_id["none"].image is None  # an empty image is no image


def test_missing_image_file_is_a_bad_line(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "c.jsonl",
        [json.dumps(good_record("a")), json.dumps(good_record("b", image="img/missing.png"))],
    )
    report = load_catalog(path)
    assert [item.item_id for item in report.items] == ["a"]
    (error,) = report.errors
    assert error.line == 2 and error.field == "image" and error.value == "img/missing.png"
    assert "line 2" in str(error) and "'image'" in str(error) and "img/missing.png" in str(error) and "file not found" in str(error)
    with pytest.raises(CatalogError, match=r"line 2: field 'image' has bad value 'img/missing.png'"):
        load_catalog(path, strict=True)


def test_missing_image_not_checked_without_resolve(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "c.jsonl", [json.dumps(good_record("b", image="img/missing.png"))])
    report = load_catalog(path, resolve_images=False)
    assert report.errors == [] and report.items[0].image == "img/missing.png"


@pytest.mark.parametrize(
    "image, fragment",
    [
        ("data:image/png;base64,@@not-base64@@", "not valid base64"),
        ("data:image/png;base64,abc", "not valid base64"),  # bad padding
    ],
)
def test_bad_base64_image_names_the_line(tmp_path: Path, image: str, fragment: str) -> None:
    path = write_lines(tmp_path / "c.jsonl", [json.dumps(good_record("a")), json.dumps(good_record("b", image=image))])
    report = load_catalog(path)
    assert [item.item_id for item in report.items] == ["a"]
    (error,) = report.errors
    assert error.line == 2 and error.field == "image"
    assert "line 2" in str(error) and "'image'" in str(error) and fragment in str(error)


# ---------------------------------------------------------------- bad lines
# (case id, the bad JSONL line, field the error names (None: the line as a whole), fragments of the message)
BAD_JSONL_LINES = [
    ("malformed_json", '{"item_id": "b", "title": "T", "price": 1,', None, ["not valid JSON"]),
    ("trailing_garbage", '{"item_id": "b"} extra', None, ["not valid JSON"]),
    ("missing_title", json.dumps({"item_id": "b", "price": 1, "category": "C"}), "title", ["field 'title' is required"]),
    ("missing_price", json.dumps({"item_id": "b", "title": "T", "category": "C"}), "price", ["field 'price' is required"]),
    ("missing_item_id", json.dumps({"title": "T", "price": 1, "category": "C"}), "item_id", ["field 'item_id' is required"]),
    ("price_text", json.dumps(good_record("b", price="abc")), "price", ["field 'price'", "'abc'"]),
    ("price_negative", json.dumps(good_record("b", price=-0.01)), "price", ["field 'price'", "-0.01"]),
    ("price_nan", json.dumps(good_record("b", price=float("nan"))), "price", ["field 'price'", "nan"]),
    ("price_inf", json.dumps(good_record("b", price=float("inf"))), "price", ["field 'price'", "inf", "finite"]),
    ("price_minus_inf", json.dumps(good_record("b", price=float("-inf"))), "price", ["field 'price'", "-inf"]),
    ("price_null", json.dumps(good_record("b", price=None)), "price", ["field 'price'", "None"]),
    ("category_blank", json.dumps(good_record("b", category="   ")), "category", ["field 'category'", "'   '", "blank"]),
    ("category_empty", json.dumps(good_record("b", category="")), "category", ["field 'category'", "''"]),
    ("title_blank", json.dumps(good_record("b", title="\t ")), "title", ["field 'title'", "blank"]),
    ("item_id_space", json.dumps(good_record("bad id")), "item_id", ["field 'item_id'", "'bad id'"]),
    ("item_id_slash", json.dumps(good_record("a/b")), "item_id", ["field 'item_id'", "'a/b'"]),
    ("item_id_leading_dash", json.dumps(good_record("-ab")), "item_id", ["field 'item_id'", "'-ab'"]),
    ("item_id_too_long", json.dumps(good_record("a" * 129)), "item_id", ["field 'item_id'"]),
    ("item_id_number", json.dumps(good_record(12345)), "item_id", ["field 'item_id'", "12345"]),
    ("unknown_field", json.dumps(good_record("b", colour="red")), "colour", ["unknown field 'colour'", "allowed"]),
    ("json_array", json.dumps([good_record("b")]), None, ["expected a JSON object", "list"]),
    ("json_string", json.dumps("sku-2"), None, ["expected a JSON object", "str"]),
    ("attributes_list", json.dumps(good_record("b", attributes=["red"])), "attributes", ["field 'attributes'", "['red']"]),
    ("attributes_nested", json.dumps(good_record("b", attributes={"dims": [1, 2]})), "attributes.dims", ["field 'attributes.dims", "[1, 2]"]),
    ("repeated_item_id", json.dumps(good_record("good-1", title="Second copy")), "item_id", ["field 'item_id'", "'good-1'", "repeated"]),
]


@pytest.mark.parametrize("case, bad_line, field_name, fragments", BAD_JSONL_LINES, ids=[row[0] for row in BAD_JSONL_LINES])
def test_bad_jsonl_line_is_skipped_and_reported(tmp_path: Path, case: str, bad_line: str, field_name: str | None, fragments: list[str]) -> None:
    path = write_lines(tmp_path / "c.jsonl", [json.dumps(good_record("good-1")), bad_line, json.dumps(good_record("good-3"))])

    report = load_catalog(path)

    assert [item.item_id for item in report.items] == ["good-1", "good-3"]
    assert report.items[0].title == "Trail running shoe"  # the first of a repeated id wins
    assert report.n_lines == 3 and report.n_skipped == 1
    (error,) = report.errors
    assert isinstance(error, CatalogError)
    assert error.line == 2
    message = str(error)
    assert message.startswith("line 2: ")
    if field_name is not None:
        assert error.field is not None and error.field.startswith(field_name)
        assert f"'{field_name}" in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


@pytest.mark.parametrize("case, bad_line, field_name, fragments", BAD_JSONL_LINES, ids=[row[0] for row in BAD_JSONL_LINES])
def test_bad_jsonl_line_raises_in_strict_mode(tmp_path: Path, case: str, bad_line: str, field_name: str | None, fragments: list[str]) -> None:
    path = write_lines(tmp_path / "c.jsonl", [json.dumps(good_record("good-1")), bad_line, json.dumps(good_record("good-3"))])
    with pytest.raises(CatalogError) as caught:
        load_catalog(path, strict=True)
    assert caught.value.line == 2
    assert str(caught.value).startswith("line 2: ")
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_many_bad_lines_one_error_each_in_order(tmp_path: Path) -> None:
    bad = [row[1] for row in BAD_JSONL_LINES]
    lines = [json.dumps(good_record("good-1"))]
    for index, bad_line in enumerate(bad):
        lines.append(bad_line)
        lines.append(json.dumps(good_record(f"ok-{index}")))
    path = write_lines(tmp_path / "c.jsonl", lines)

    report = load_catalog(path)

    assert report.n_lines == len(lines)
    assert len(report.errors) == len(bad)
    assert [error.line for error in report.errors] == [2 + 2 * index for index in range(len(bad))]
    assert len(report.items) == 1 + len(bad)
    assert report.summary() == f"{1 + len(bad)} items loaded, {len(bad)} lines skipped out of {len(lines)}"

    with pytest.raises(CatalogError) as caught:
        load_catalog(path, strict=True)
    assert caught.value.line == 2  # the first bad line, not a later one


# (case id, CSV row for header item_id,title,price,category,attributes, field, fragments)
CSV_HEADER = ["item_id", "title", "price", "category", "attributes"]
BAD_CSV_ROWS = [
    ("attributes_array", ["b", "T", "1", "C", "[1, 2]"], "attributes", ["field 'attributes'", "'[1, 2]'", "not a JSON object"]),
    ("attributes_not_json", ["b", "T", "1", "C", "{color: red}"], "attributes", ["field 'attributes'", "'{color: red}'", "not a JSON object"]),
    ("attributes_string", ["b", "T", "1", "C", '"red"'], "attributes", ["field 'attributes'", "not a JSON object"]),
    ("price_text", ["b", "T", "abc", "C", ""], "price", ["field 'price'", "'abc'"]),
    ("price_negative", ["b", "T", "-5", "C", ""], "price", ["field 'price'", "'-5'"]),
    ("price_nan", ["b", "T", "nan", "C", ""], "price", ["field 'price'", "'nan'"]),
    ("price_inf", ["b", "T", "inf", "C", ""], "price", ["field 'price'", "'inf'"]),
    ("missing_title", ["b", "", "1", "C", ""], "title", ["field 'title' is required"]),
    ("missing_price", ["b", "T", "", "C", ""], "price", ["field 'price' is required"]),
    ("blank_category", ["b", "T", "1", "  ", ""], "category", ["field 'category'", "blank"]),
    ("bad_item_id", ["b#1", "T", "1", "C", ""], "item_id", ["field 'item_id'", "'b#1'"]),
    ("repeated_item_id", ["good-1", "T", "1", "C", ""], "item_id", ["field 'item_id'", "'good-1'", "repeated"]),
    ("too_many_values", ["b", "T", "1", "C", "", "surplus"], None, ["more values than header columns"]),
]


@pytest.mark.parametrize("case, row, field_name, fragments", BAD_CSV_ROWS, ids=[row[0] for row in BAD_CSV_ROWS])
def test_bad_csv_row_is_skipped_and_reported(tmp_path: Path, case: str, row: list[str], field_name: str | None, fragments: list[str]) -> None:
    path = write_csv(tmp_path / "c.csv", CSV_HEADER, [["good-1", "A", "1", "C", ""], row, ["good-3", "B", "2", "C", '{"k": "v"}']])

    report = load_catalog(path)

    assert [item.item_id for item in report.items] == ["good-1", "good-3"]
    assert report.items[1].attributes == {"k": "v"}
    assert report.n_lines == 3
    (error,) = report.errors
    assert error.line == 3  # the header is line 1
    assert str(error).startswith("line 3: ")
    if field_name is not None:
        assert error.field == field_name
    for fragment in fragments:
        assert fragment in str(error), (fragment, str(error))

    with pytest.raises(CatalogError) as caught:
        load_catalog(path, strict=True)
    assert caught.value.line == 3


def test_item_from_mapping_without_line_and_non_mapping() -> None:
    with pytest.raises(CatalogError, match=r"^field 'price' has bad value -1"):
        item_from_mapping(good_record("a", price=-1))
    with pytest.raises(CatalogError, match="expected a JSON object, got int"):
        item_from_mapping(7)  # type: ignore[arg-type]
    with pytest.raises(CatalogError) as caught:
        item_from_mapping(good_record("a", extra=1), line=9)
    assert caught.value.line == 9 and caught.value.field == "extra"
    assert all(name in str(caught.value) for name in CATALOG_FIELDS)


# -------------------------------------------------------------- round trips
def test_write_jsonl_round_trip(tmp_path: Path) -> None:
    items = random_items(seed=7, n=40)
    path = tmp_path / "out.jsonl"
    assert write_jsonl(items, path) == 40
    assert len(path.read_text(encoding="utf-8").splitlines()) == 40
    assert "ü" in path.read_text(encoding="utf-8")  # written as UTF-8, not \\u escapes

    report = load_catalog(path)
    assert report.errors == []
    assert report.items == items
    for loaded, original in zip(report.items, items):
        for key, value in original.attributes.items():
            assert type(loaded.attributes[key]) is type(value)


def test_write_jsonl_round_trip_with_images(tmp_path: Path) -> None:
    image = tmp_path / "pics" / "a.png"
    image.parent.mkdir()
    image.write_bytes(png_bytes())
    data_uri = "data:image/png;base64," + base64.b64encode(png_bytes((4, 4))).decode()
    items = [Item(item_id="a", title="A", price=1, category="C", image=str(image)), Item(item_id="b", title="B", price=2, category="C", image=data_uri)]
    path = tmp_path / "out" / "items.jsonl"
    path.parent.mkdir()
    write_jsonl(items, path)
    assert load_catalog(path).items == items


def test_items_to_csv_round_trip(tmp_path: Path) -> None:
    image = tmp_path / "pics" / "a.png"
    image.parent.mkdir()
    image.write_bytes(png_bytes())
    items = random_items(seed=11, n=40)
    items[0] = items[0].model_copy(update={"image": str(image)})
    items[1] = items[1].model_copy(update={"image": "data:image/png;base64," + base64.b64encode(png_bytes()).decode()})

    text = items_to_csv(items)
    header = next(csv.reader(io.StringIO(text)))
    assert header == list(CATALOG_FIELDS)
    path = tmp_path / "out.csv"
    path.write_text(text, encoding="utf-8", newline="")

    report = load_catalog(path)
    assert report.errors == []
    assert report.n_lines == 40
    assert report.items == items
    for loaded, original in zip(report.items, items):
        for key, value in original.attributes.items():
            assert type(loaded.attributes[key]) is type(value), (key, value, loaded.attributes[key])


# ------------------------------------------------------------- bad arguments
@pytest.mark.parametrize(
    "name, content, fragment",
    [
        ("catalog.txt", "x", "unsupported catalog format '.txt'"),
        ("catalog.xlsx", "x", "unsupported catalog format '.xlsx'"),
        ("catalog", "x", "unsupported catalog format ''"),
        ("absent.jsonl", None, "catalog file not found"),
        ("absent.csv", None, "catalog file not found"),
    ],
)
def test_bad_catalog_path(tmp_path: Path, name: str, content: str | None, fragment: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    assert fragment in str(caught.value)
    assert caught.value.field == "path"
    assert str(path) in str(caught.value)


def test_boolean_price_is_rejected(tmp_path):
    catalog = tmp_path / "shop.jsonl"
    catalog.write_text('{"item_id": "a", "title": "Mug", "price": true, "category": "Mugs"}\n')
    report = load_catalog(catalog)
    assert report.n_skipped == 1 and "'price'" in str(report.errors[0])


def test_invalid_utf8_line_is_reported_with_its_number(tmp_path):
    catalog = tmp_path / "shop.jsonl"
    good = b'{"item_id": "a", "title": "Mug", "price": 3, "category": "Mugs"}\n'
    catalog.write_bytes(good + b'{"item_id": "b", "title": "\xff\xfe", "price": 3, "category": "Mugs"}\n')
    report = load_catalog(catalog)
    assert len(report.items) == 1 and report.errors[0].line == 2 and "UTF-8" in str(report.errors[0])


def test_the_loaders_and_the_api_share_one_item_schema():
    """Every limit of an item is the same whether it arrives in a catalog file or through the HTTP API."""
    from api.schemas import ItemIn

    loader, api = Item.model_json_schema()["properties"], ItemIn.model_json_schema()["properties"]
    for name in ("item_id", "title", "description", "category", "brand", "price"):
        limits = {key: value for key, value in loader[name].items() if key not in ("title", "default")}
        assert {key: api[name][key] for key in limits if key in api[name]} == limits, name
    long_title = "t" * 5000  # over the API's old 2,000, under the shared 10,000
    assert Item(item_id="a", title=long_title, price=1, category="c").title == long_title
    assert ItemIn.model_validate({"item_id": "a", "title": long_title, "price": 1.0, "category": "c"}).title == long_title
    for bad in ({"item_id": "a b"}, {"title": "t" * 10_001}, {"title": "   "}):
        record = {"item_id": "a", "title": "t", "price": 1.0, "category": "c"} | bad
        with pytest.raises(ValueError):
            Item.model_validate(record)
        with pytest.raises(ValueError):
            ItemIn.model_validate(record)
