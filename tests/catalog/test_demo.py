"""The demo catalog: valid items, full category coverage, byte-level determinism, readable pictures."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from ranker.catalog.demo import (
    BRANDS,
    CATEGORIES,
    CATEGORY_BY_NAME,
    COLOURS,
    MATERIALS,
    generate_items,
    write_demo_catalog,
)
from ranker.catalog.items import Item, load_catalog

N_SMALL = 150


@pytest.fixture(scope="module")
def many_items() -> list[Item]:
    return generate_items(2000, seed=3)


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out_dir = tmp_path_factory.mktemp("demo")
    write_demo_catalog(out_dir, seed=7, n_items=N_SMALL)
    return out_dir


def test_tables_are_consistent() -> None:
    assert len(CATEGORIES) >= 22
    assert len({category.shape for category in CATEGORIES}) == len(CATEGORIES)
    assert 35 <= len(BRANDS) <= 45 and len(COLOURS) >= 15
    for brand in BRANDS:
        assert 2 <= len(brand.categories) <= 5
        assert set(brand.categories) <= set(CATEGORY_BY_NAME), brand
    for category in CATEGORIES:
        assert 3 <= len(category.nouns) <= 5
        assert set(category.materials) <= set(MATERIALS), category.name
        assert 0 < category.price_min < category.price_median < category.price_max
        assert sum(category.name in brand.categories for brand in BRANDS) >= 2, category.name


def test_items_validate_and_cover_every_category(many_items: list[Item]) -> None:
    assert len(many_items) == 2000
    for item in many_items:
        assert Item.model_validate(item.to_json()) == item
        assert item.image is None
    counts = {name: sum(item.category == name for item in many_items) for name in CATEGORY_BY_NAME}
    assert len([name for name, count in counts.items() if count]) >= 20
    assert min(counts.values()) >= 2000 // (2 * len(CATEGORIES))
    assert len({item.item_id for item in many_items}) == 2000
    assert many_items[0].item_id == "sku-000001"


def test_prices_titles_and_attributes(many_items: list[Item]) -> None:
    for item in many_items:
        category = CATEGORY_BY_NAME[item.category]
        assert category.price_min <= item.price <= category.price_max and item.price > 0
        assert round(item.price, 2) == item.price
        colour, material = item.attributes["colour"], item.attributes["material"]
        assert item.title.startswith(item.brand + " ")
        assert str(colour) in item.title and str(material) in item.title
        assert str(colour).lower() in item.description
        assert material in category.materials
        assert any(brand.name == item.brand and item.category in brand.categories for brand in BRANDS)
        assert 1.0 <= float(item.attributes["rating"]) <= 5.0
        for key, values in category.specs:
            assert item.attributes[key] in values


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    first = write_demo_catalog(tmp_path / "a", seed=11, n_items=120)
    second = write_demo_catalog(tmp_path / "b", seed=11, n_items=120)
    other = write_demo_catalog(tmp_path / "c", seed=12, n_items=120)
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() != other.read_bytes()
    pictures_a = sorted((tmp_path / "a" / "images").glob("*.png"))
    assert len(pictures_a) == 120
    for picture in pictures_a:
        assert picture.read_bytes() == (tmp_path / "b" / "images" / picture.name).read_bytes()
    differing = sum(picture.read_bytes() != (tmp_path / "c" / "images" / picture.name).read_bytes() for picture in pictures_a)
    assert differing == 120


def test_text_does_not_depend_on_pictures(tmp_path: Path) -> None:
    with_pictures = generate_items(60, seed=5, images_dir=tmp_path / "images", image_size=64)
    without = generate_items(60, seed=5)
    assert [item.model_copy(update={"image": None}) for item in with_pictures] == without


def test_every_item_has_a_readable_picture(catalog_dir: Path) -> None:
    report = load_catalog(catalog_dir / "catalog.jsonl", resolve_images=False)
    assert report.errors == [] and len(report.items) == N_SMALL
    for item in report.items:
        assert item.image == f"images/{item.item_id}.png"
        with Image.open(catalog_dir / item.image) as picture:
            assert picture.format == "PNG" and picture.mode == "RGB" and picture.size == (160, 160)
            picture.load()


def test_load_catalog_reads_it_back_and_resolves_images(catalog_dir: Path) -> None:
    report = load_catalog(catalog_dir / "catalog.jsonl", strict=True)
    assert report.errors == [] and report.n_lines == N_SMALL and len(report.items) == N_SMALL
    assert report.items == load_catalog(catalog_dir / "catalog.jsonl").items
    for item in report.items:
        assert item.image is not None and Path(item.image).is_absolute() and Path(item.image).is_file()


def test_image_size_is_honoured(tmp_path: Path) -> None:
    items = generate_items(len(CATEGORIES), seed=1, images_dir=tmp_path / "images", image_size=96)
    for item in items:
        with Image.open(tmp_path / str(item.image)) as picture:
            assert picture.size == (96, 96)


def test_pictures_of_different_categories_differ_more_than_within(tmp_path: Path) -> None:
    """A crude check that the silhouettes carry the category: the mean foreground
    mask of one category is closer to its own pictures than to other categories'."""
    import numpy as np

    items = generate_items(24 * 8, seed=2, images_dir=tmp_path / "images", image_size=64)
    masks: dict[str, list[np.ndarray]] = {}
    for item in items:
        pixels = np.asarray(Image.open(tmp_path / str(item.image)).convert("L"), dtype=np.float32)
        masks.setdefault(item.category, []).append((np.abs(pixels - np.median(pixels)) > 20).astype(np.float32))
    names = [name for name, group in masks.items() if len(group) >= 3]
    centroids = {name: np.mean(masks[name][1:], axis=0) for name in names}
    correct = 0
    for name in names:
        probe = masks[name][0]
        nearest = min(names, key=lambda other: float(np.abs(centroids[other] - probe).mean()))
        correct += nearest == name
    assert correct >= 0.6 * len(names)
