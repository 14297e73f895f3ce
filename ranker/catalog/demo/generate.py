"""The demo shop's items: titles, descriptions, prices and attributes invented from the tables, and the catalog
file written with its pictures."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ranker.catalog.demo.drawing import _attach_images
from ranker.catalog.demo.tables import (
    _LOWERCASE_TITLE_WORDS,
    _T,
    BRANDS,
    CATEGORIES,
    COLOURS,
    MATERIALS,
    PRICE_ENDING_WEIGHTS,
    PRICE_ENDINGS,
    STYLE_WORD_PROBABILITY,
    STYLE_WORDS,
    Category,
)
from ranker.catalog.items import Item, write_jsonl


def generate_items(n_items: int, seed: int = 0, *, images_dir: Path | None = None, image_size: int = 160) -> list[Item]:
    """Invent ``n_items`` catalog items, deterministically from ``seed``.

    Every category gets at least ``n_items // (2 * len(CATEGORIES))`` items so
    that small demo catalogs still cover the whole shop; the rest follow the
    categories' popularity. With ``images_dir`` a PNG is drawn for every item
    and ``image`` holds its path relative to the catalog folder (the parent
    of ``images_dir``); the text fields do not depend on whether pictures
    are drawn.
    """
    if n_items < 0:
        raise ValueError(f"n_items must be >= 0, got {n_items}")
    rng = np.random.default_rng(seed)
    categories = _assign_categories(n_items, rng)
    items = [_invent_item(index, category, rng) for index, category in enumerate(categories)]
    if images_dir is not None:
        items = _attach_images(items, seed, Path(images_dir), image_size, show_progress=False)
    return items


def write_demo_catalog(out_dir: Path, seed: int = 0, n_items: int = 2400, with_images: bool = True) -> Path:
    """Write a demo catalog (``catalog.jsonl`` plus ``images/``) into ``out_dir``; returns the JSONL path.

    The output is byte-for-byte the same for the same arguments, so a demo
    catalog never needs to be committed: regenerate it.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    items = generate_items(n_items, seed)
    if with_images:
        items = _attach_images(items, seed, out_dir / "images", 160, show_progress=n_items >= 500)
    catalog_path = out_dir / "catalog.jsonl"
    write_jsonl(items, catalog_path)
    return catalog_path


def item_id_for(index: int) -> str:
    """The SKU-like id of the ``index``-th generated item (0-based): ``sku-000001`` first."""
    return f"sku-{index + 1:06d}"


def _assign_categories(n_items: int, rng: np.random.Generator) -> list[Category]:
    """A shuffled list of categories: a guaranteed floor for each, the rest by popularity."""
    floor = n_items // (2 * len(CATEGORIES))
    popularity = np.array([category.popularity for category in CATEGORIES])
    extra = rng.multinomial(n_items - floor * len(CATEGORIES), popularity / popularity.sum())
    chosen = [category for category, count in zip(CATEGORIES, extra) for _ in range(floor + int(count))]
    return [chosen[i] for i in rng.permutation(len(chosen))]


def _invent_item(index: int, category: Category, rng: np.random.Generator) -> Item:
    brands = [brand.name for brand in BRANDS if category.name in brand.categories]
    brand = _pick(rng, brands)
    colour = _pick(rng, list(COLOURS))
    material = _pick(rng, category.materials)
    noun = _pick(rng, category.nouns)
    style = _pick(rng, STYLE_WORDS) if rng.random() < STYLE_WORD_PROBABILITY else None
    rating = round(float(np.clip(rng.normal(4.1, 0.55), 1.0, 5.0)), 1)
    attributes: dict[str, str | int | float | bool] = {"colour": colour, "material": material}
    for key, values in category.specs:
        attributes[key] = _pick(rng, values)
    attributes["rating"] = rating
    attributes["reviews"] = int(rng.lognormal(3.0, 1.2))
    return Item(
        item_id=item_id_for(index),
        title=_title(brand, colour, material, noun, style),
        description=_description(category, brand, colour, material, noun, rng),
        image=None,
        price=_price(category, rng),
        category=category.name,
        brand=brand,
        attributes=attributes,
    )


def _title(brand: str, colour: str, material: str, noun: str, style: str | None) -> str:
    """Brand first, then what a shopper filters on: "Nordwell Navy Merino Wool Crew Neck T-Shirt"."""
    words = [brand, colour, material] + ([style] if style else []) + [_title_case(noun)]
    return " ".join(words)


def _description(category: Category, brand: str, colour: str, material: str, noun: str, rng: np.random.Generator) -> str:
    """One to three sentences; the first always names colour, material, use and a feature."""
    use = _pick(rng, category.uses)
    feature = _pick(rng, category.features)
    colour_word, material_word = colour.lower(), _lower_material(material)
    openers = (
        f"{_article(colour_word).capitalize()} {colour_word} {noun} made from {material_word} for {use}, with {feature}.",
        f"This {colour_word} {material_word} {noun} is made for {use} and comes with {feature}.",
        f"{feature[0].upper()}{feature[1:]} and {material_word} in {colour_word} make this {noun} a good pick for {use}.",
    )
    extras = (
        f"The {material_word} is {MATERIALS[material].note}.",
        f"Designed by {brand} to be used every day for years.",
        f"Part of the {brand} {category.name.lower()} range.",
    )
    sentences = [_pick(rng, openers)]
    n_extra = int(rng.integers(0, 3))
    sentences += [extras[i] for i in sorted(rng.choice(len(extras), size=n_extra, replace=False))]
    return " ".join(sentences)


def _price(category: Category, rng: np.random.Generator) -> float:
    """A shelf price inside the category's range with a shop-like ending (19.99, 24.49, 30.00)."""
    raw = float(np.clip(rng.lognormal(math.log(category.price_median), category.price_sigma), category.price_min, category.price_max - 1))
    ending = PRICE_ENDINGS[int(rng.choice(len(PRICE_ENDINGS), p=PRICE_ENDING_WEIGHTS))]
    return round(math.floor(raw) + ending, 2)


def _pick(rng: np.random.Generator, options: Sequence[_T]) -> _T:
    return options[int(rng.integers(len(options)))]


def _title_case(phrase: str) -> str:
    """ "crew neck t-shirt" -> "Crew Neck T-Shirt", "eau de parfum" -> "Eau de Parfum"."""
    words = phrase.split()
    return " ".join(
        word if i > 0 and word in _LOWERCASE_TITLE_WORDS else "-".join(part[:1].upper() + part[1:] for part in word.split("-")) for i, word in enumerate(words)
    )


def _lower_material(material: str) -> str:
    """Lower-case for running text, but keep acronyms like TPE."""
    return material if material.isupper() else material.lower()


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"
