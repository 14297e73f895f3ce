"""A synthetic but plausible shop catalog, with pictures, for demos and tests.

The ranking service needs a catalog whose text *and* images carry signal: a
shopper searching "navy leather backpack" should find navy leather backpacks,
and image-to-image search should return pictures of the same kind of product
in the same colour. Real catalogs cannot ship with the repo, so this module
invents one from small tables (categories, brands, colours, materials) and
draws each product as a simple category-specific silhouette with Pillow:
items of one category look alike, items of different categories do not, and
the item's colour and material show in the picture.

Everything is a pure function of ``seed`` (``numpy.random.default_rng``; no
global random state), down to the bytes of every PNG, so a demo catalog can
be regenerated anywhere instead of being stored.
"""

from __future__ import annotations

from ranker.catalog.demo.drawing import render_item_image
from ranker.catalog.demo.generate import generate_items, item_id_for, write_demo_catalog
from ranker.catalog.demo.tables import (
    APPAREL_SIZES,
    BRANDS,
    CATEGORIES,
    CATEGORY_BY_NAME,
    COLOURS,
    MATERIALS,
    SHOE_SIZES,
    Brand,
    Category,
    Material,
)

__all__ = [
    "APPAREL_SIZES",
    "BRANDS",
    "CATEGORIES",
    "CATEGORY_BY_NAME",
    "COLOURS",
    "MATERIALS",
    "SHOE_SIZES",
    "Brand",
    "Category",
    "Material",
    "generate_items",
    "item_id_for",
    "render_item_image",
    "write_demo_catalog",
]
