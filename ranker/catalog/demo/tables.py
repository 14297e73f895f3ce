"""The demo shop's tables: categories with their nouns, silhouettes and price ranges, materials, colours, brands
and the words titles are made of."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TypeVar

RGB = tuple[int, int, int]
RGBA = tuple[int, int, int, int]
SpecValue = str | int | bool
_T = TypeVar("_T")


# --------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Category:
    """One product category and everything needed to invent items in it.

    Prices are log-normal around ``price_median`` (EUR) and clipped to
    ``[price_min, price_max]``, which is what real price lists look like: many
    mid-priced items, a long tail of expensive ones.
    """

    name: str
    nouns: tuple[str, ...]
    price_median: float
    price_sigma: float
    price_min: int
    price_max: int
    materials: tuple[str, ...]
    shape: str
    uses: tuple[str, ...]
    features: tuple[str, ...]
    specs: tuple[tuple[str, tuple[SpecValue, ...]], ...] = ()
    popularity: float = 1.0


@dataclass(frozen=True)
class Material:
    """A material: the texture it gets in pictures and a line of copy about it."""

    texture: str
    note: str


@dataclass(frozen=True)
class Brand:
    """An invented brand; real shops have brands that span a few related categories."""

    name: str
    categories: tuple[str, ...]


APPAREL_SIZES: tuple[str, ...] = ("XS", "S", "M", "L", "XL", "XXL")
SHOE_SIZES: tuple[str, ...] = tuple(f"EU {size}" for size in range(36, 47))

CATEGORIES: tuple[Category, ...] = (
    Category(
        "T-Shirts",
        ("crew neck t-shirt", "v-neck tee", "pocket tee", "oversized t-shirt", "boxy tee"),
        25,
        0.4,
        8,
        80,
        ("Cotton", "Organic Cotton", "Linen", "Merino Wool", "Recycled Polyester"),
        "tshirt",
        ("everyday wear", "warm summer days", "layering under a jacket"),
        ("a reinforced collar", "double-stitched seams", "a soft brushed finish"),
        (("size", APPAREL_SIZES), ("fit", ("regular", "slim", "relaxed"))),
        1.6,
    ),
    Category(
        "Sneakers",
        ("running shoe", "trainer", "high-top sneaker", "low-top sneaker", "court sneaker"),
        95,
        0.35,
        35,
        260,
        ("Leather", "Suede", "Canvas", "Mesh", "Vegan Leather"),
        "sneaker",
        ("city walks", "light running", "long days on your feet"),
        ("a cushioned foam midsole", "a grippy rubber outsole", "a padded collar"),
        (("size", SHOE_SIZES),),
        1.5,
    ),
    Category(
        "Backpacks",
        ("daypack", "laptop backpack", "rolltop backpack", "travel backpack"),
        70,
        0.4,
        20,
        250,
        ("Canvas", "Nylon", "Leather", "Recycled Polyester"),
        "backpack",
        ("the daily commute", "weekend trips", "carrying a laptop to class"),
        ("a padded laptop sleeve", "water-resistant zips", "a hidden back pocket"),
        (("capacity", ("15 L", "20 L", "25 L", "30 L", "35 L")),),
    ),
    Category(
        "Mugs",
        ("coffee mug", "tea mug", "latte mug", "camp mug"),
        16,
        0.35,
        5,
        45,
        ("Ceramic", "Stoneware", "Porcelain", "Enamelled Steel"),
        "mug",
        ("the morning coffee", "slow weekend breakfasts", "tea at the desk"),
        ("a comfortable wide handle", "a glazed interior", "a thick rim that keeps drinks warm"),
        (("capacity", ("250 ml", "300 ml", "350 ml", "450 ml")),),
        1.2,
    ),
    Category(
        "Lamps",
        ("table lamp", "floor lamp", "bedside lamp", "desk lamp"),
        80,
        0.5,
        20,
        400,
        ("Linen", "Glass", "Aluminium", "Rattan"),
        "lamp",
        ("reading in the evening", "a cosy living room", "lighting a home office"),
        ("a dimmable switch", "a weighted base", "a fabric cord"),
        (("bulb", ("E27", "E14", "GU10", "integrated LED")),),
    ),
    Category(
        "Headphones",
        ("over-ear headphones", "on-ear headphones", "noise-cancelling headphones", "studio headphones"),
        120,
        0.55,
        20,
        450,
        ("Recycled Plastic", "Aluminium", "Vegan Leather"),
        "headphones",
        ("music on the go", "focused work in open offices", "long flights"),
        ("memory-foam ear cushions", "a 30-hour battery", "a fold-flat design"),
        (("connectivity", ("wireless", "wired", "wireless + wired")),),
    ),
    Category(
        "Watches",
        ("chronograph watch", "field watch", "dive watch", "minimalist watch"),
        180,
        0.6,
        30,
        1200,
        ("Leather", "Stainless Steel", "Silicone", "Titanium"),
        "watch",
        ("everyday wear", "the office", "outdoor adventures"),
        ("a sapphire crystal", "a quick-release strap", "luminous hands"),
        (("case_size", ("36 mm", "38 mm", "40 mm", "42 mm", "44 mm")), ("water_resistance", ("3 ATM", "5 ATM", "10 ATM"))),
    ),
    Category(
        "Sofas",
        ("lounge sofa", "chesterfield sofa", "modular sofa", "sofa bed", "mid-century sofa"),
        900,
        0.45,
        250,
        3500,
        ("Velvet", "Linen", "Leather", "Boucle"),
        "sofa",
        ("family movie nights", "small city apartments", "lazy Sunday afternoons"),
        ("deep feather-filled cushions", "removable covers", "solid oak legs"),
        (("seats", (2, 3, 4)),),
        0.6,
    ),
    Category(
        "Cookware",
        ("frying pan", "skillet", "saute pan", "wok"),
        55,
        0.5,
        15,
        300,
        ("Cast Iron", "Stainless Steel", "Copper", "Enamelled Steel"),
        "pan",
        ("searing steaks", "everyday home cooking", "stir-fries on a high flame"),
        ("a stay-cool handle", "an even-heating base", "an oven-safe body"),
        (("diameter", ("20 cm", "24 cm", "26 cm", "28 cm")), ("induction", (True, False))),
    ),
    Category(
        "Yoga Mats",
        ("yoga mat", "travel yoga mat", "pilates mat", "exercise mat"),
        35,
        0.4,
        12,
        140,
        ("Natural Rubber", "Cork", "TPE"),
        "yoga_mat",
        ("daily yoga practice", "home workouts", "hot yoga classes"),
        ("a non-slip surface", "a carry strap", "alignment lines"),
        (("thickness", ("3 mm", "4 mm", "6 mm", "8 mm")),),
    ),
    Category(
        "Sunglasses",
        ("aviator sunglasses", "round sunglasses", "square sunglasses", "cat-eye sunglasses", "sport sunglasses"),
        90,
        0.5,
        15,
        350,
        ("Acetate", "Titanium", "Recycled Plastic"),
        "sunglasses",
        ("sunny holidays", "driving", "days at the beach"),
        ("UV400 lenses", "spring hinges", "a scratch-resistant coating"),
        (("lens", ("polarised", "gradient", "mirrored", "photochromic")),),
    ),
    Category(
        "Dresses",
        ("midi dress", "wrap dress", "slip dress", "shirt dress", "maxi dress"),
        70,
        0.45,
        20,
        300,
        ("Cotton", "Linen", "Silk", "Velvet", "Denim"),
        "dress",
        ("summer weddings", "evenings out", "relaxed weekends"),
        ("a tie waist", "hidden side pockets", "a flattering A-line cut"),
        (("size", APPAREL_SIZES),),
        1.3,
    ),
    Category(
        "Jackets",
        ("bomber jacket", "rain jacket", "puffer jacket", "trucker jacket", "field jacket"),
        140,
        0.5,
        40,
        600,
        ("Denim", "Leather", "Quilted Nylon", "Wool", "Waxed Canvas"),
        "jacket",
        ("cold commutes", "autumn hikes", "layering in the city"),
        ("a two-way zip", "an adjustable hood", "fleece-lined pockets"),
        (("size", APPAREL_SIZES), ("waterproof", (True, False))),
        1.2,
    ),
    Category(
        "Office Chairs",
        ("ergonomic office chair", "task chair", "desk chair", "executive chair"),
        250,
        0.5,
        70,
        1200,
        ("Mesh", "Vegan Leather", "Recycled Polyester"),
        "office_chair",
        ("long working days", "a home office", "gaming sessions"),
        ("adjustable lumbar support", "4D armrests", "a tilt lock"),
        (("max_load", ("110 kg", "130 kg", "150 kg")),),
        0.7,
    ),
    Category(
        "Bicycles",
        ("city bike", "gravel bike", "road bike", "commuter bike", "hybrid bike"),
        750,
        0.55,
        200,
        4500,
        ("Aluminium", "Chromoly Steel", "Carbon Fibre"),
        "bicycle",
        ("commuting to work", "weekend gravel rides", "fast road training"),
        ("hydraulic disc brakes", "puncture-resistant tyres", "internal cable routing"),
        (("frame_size", ("S", "M", "L", "XL")), ("gears", (1, 8, 11, 22))),
        0.6,
    ),
    Category(
        "Tents",
        ("dome tent", "backpacking tent", "family tent", "tunnel tent"),
        220,
        0.55,
        50,
        1000,
        ("Ripstop Nylon", "Canvas", "Recycled Polyester"),
        "tent",
        ("wild camping", "festival weekends", "family campsites"),
        ("a full-coverage rain fly", "colour-coded poles", "a roomy vestibule"),
        (("persons", (1, 2, 3, 4, 6)),),
        0.7,
    ),
    Category(
        "Perfume",
        ("eau de parfum", "eau de toilette", "cologne", "parfum"),
        75,
        0.4,
        20,
        250,
        ("Glass", "Frosted Glass"),
        "perfume",
        ("evenings out", "everyday wear", "a thoughtful gift"),
        ("notes of bergamot and cedar", "a long-lasting base of amber", "a refillable atomiser"),
        (("volume", ("30 ml", "50 ml", "75 ml", "100 ml")),),
    ),
    Category(
        "Teapots",
        ("teapot", "infuser teapot", "round teapot", "brewing pot"),
        40,
        0.45,
        12,
        180,
        ("Cast Iron", "Porcelain", "Stoneware", "Glass"),
        "teapot",
        ("loose-leaf tea", "afternoon tea for two", "slow weekend mornings"),
        ("a removable steel infuser", "a drip-free spout", "a snug-fitting lid"),
        (("capacity", ("0.6 L", "0.8 L", "1.0 L", "1.2 L")),),
    ),
    Category(
        "Vases",
        ("flower vase", "bud vase", "amphora vase", "tall vase", "bottle vase"),
        35,
        0.5,
        8,
        200,
        ("Ceramic", "Glass", "Stoneware", "Porcelain"),
        "vase",
        ("fresh flowers", "dried arrangements", "a sideboard display"),
        ("a hand-thrown shape", "a watertight glaze", "a weighted base"),
        (("height", ("15 cm", "20 cm", "25 cm", "30 cm", "40 cm")),),
    ),
    Category(
        "Rugs",
        ("area rug", "runner rug", "kilim rug", "shag rug", "flatweave rug"),
        180,
        0.6,
        30,
        1500,
        ("Wool", "Jute", "Cotton", "Recycled Polyester"),
        "rug",
        ("living rooms", "hallways", "a cosy bedroom"),
        ("a non-slip backing", "a hand-knotted border", "a low pile that is easy to clean"),
        (("dimensions", ("80x150 cm", "120x170 cm", "160x230 cm", "200x300 cm")),),
    ),
    Category(
        "Kettles",
        ("electric kettle", "gooseneck kettle", "stovetop kettle", "variable temperature kettle"),
        60,
        0.4,
        20,
        220,
        ("Stainless Steel", "Glass", "Enamelled Steel", "Recycled Plastic"),
        "kettle",
        ("pour-over coffee", "quick cups of tea", "a busy family kitchen"),
        ("automatic shut-off", "a keep-warm mode", "a limescale filter"),
        (("capacity", ("0.8 L", "1.0 L", "1.5 L", "1.7 L")),),
    ),
    Category(
        "Phone Cases",
        ("phone case", "folio phone case", "bumper case", "slim phone case", "rugged phone case"),
        25,
        0.4,
        8,
        80,
        ("Silicone", "Leather", "Polycarbonate", "Recycled Plastic"),
        "phone_case",
        ("everyday protection", "outdoor sports", "a slim pocket fit"),
        ("raised camera edges", "drop protection up to 3 m", "wireless charging support"),
        (("fits", ("5.8-inch phones", "6.1-inch phones", "6.7-inch phones")),),
        1.3,
    ),
    Category(
        "Water Bottles",
        ("water bottle", "insulated bottle", "sports bottle", "flask"),
        25,
        0.35,
        8,
        70,
        ("Stainless Steel", "Aluminium", "Glass", "Recycled Plastic"),
        "bottle",
        ("the gym", "hiking trails", "staying hydrated at the desk"),
        ("a leak-proof lid", "double-wall insulation", "a carry loop"),
        (("capacity", ("500 ml", "750 ml", "1 L")),),
    ),
    Category(
        "Umbrellas",
        ("compact umbrella", "golf umbrella", "stick umbrella", "travel umbrella"),
        30,
        0.45,
        10,
        150,
        ("Recycled Polyester", "Ripstop Nylon", "Waxed Canvas"),
        "umbrella",
        ("rainy commutes", "windy coastal walks", "travel"),
        ("a windproof fibreglass frame", "an auto-open button", "a quick-dry canopy"),
        (("canopy", ("95 cm", "105 cm", "120 cm", "130 cm")),),
    ),
)

CATEGORY_BY_NAME: Mapping[str, Category] = MappingProxyType({category.name: category for category in CATEGORIES})

MATERIALS: Mapping[str, Material] = MappingProxyType(
    {
        "Cotton": Material("weave", "soft, breathable and machine washable"),
        "Organic Cotton": Material("weave", "grown without synthetic pesticides"),
        "Linen": Material("weave", "light, airy and gets softer with every wash"),
        "Merino Wool": Material("knit", "warm, odour-resistant and itch-free"),
        "Wool": Material("knit", "naturally warm and hard-wearing"),
        "Silk": Material("sheen", "smooth with a gentle drape"),
        "Velvet": Material("velvet", "plush with a rich sheen"),
        "Boucle": Material("speckle", "textured, nubby and very soft"),
        "Denim": Material("twill", "sturdy and fades beautifully"),
        "Canvas": Material("stripes", "tough and made to last"),
        "Waxed Canvas": Material("stripes", "water-repellent and rugged"),
        "Leather": Material("sheen", "full-grain and develops a patina over time"),
        "Vegan Leather": Material("sheen", "animal-free and easy to wipe clean"),
        "Suede": Material("speckle", "soft with a velvety nap"),
        "Mesh": Material("dots", "breathable and light"),
        "Nylon": Material("grid", "light and abrasion-resistant"),
        "Ripstop Nylon": Material("grid", "light and tear-resistant"),
        "Quilted Nylon": Material("quilt", "insulated and packs down small"),
        "Recycled Polyester": Material("plain", "made from recycled bottles"),
        "Recycled Plastic": Material("plain", "made from post-consumer plastic"),
        "Polycarbonate": Material("glossy", "impact-resistant and light"),
        "Silicone": Material("plain", "grippy, flexible and easy to clean"),
        "Acetate": Material("glossy", "plant-based and hand-polished"),
        "Stainless Steel": Material("metal", "rust-proof and easy to keep clean"),
        "Aluminium": Material("metal", "light and strong"),
        "Titanium": Material("metal", "ultra-light and hypoallergenic"),
        "Chromoly Steel": Material("metal", "comfortable and easy to repair"),
        "Copper": Material("metal", "an excellent conductor of heat"),
        "Cast Iron": Material("speckle", "holds heat for a long time"),
        "Enamelled Steel": Material("glossy", "durable with a chip-resistant enamel"),
        "Carbon Fibre": Material("checker", "stiff and remarkably light"),
        "Ceramic": Material("glossy", "glazed and dishwasher safe"),
        "Porcelain": Material("glossy", "fine, thin-walled and bright"),
        "Stoneware": Material("speckle", "sturdy with a speckled glaze"),
        "Glass": Material("sheen", "clear and easy to clean"),
        "Frosted Glass": Material("speckle", "soft to the touch with a matte finish"),
        "Rattan": Material("weave", "hand-woven from natural cane"),
        "Jute": Material("weave", "a natural, renewable fibre"),
        "Natural Rubber": Material("ribbed", "grippy and biodegradable"),
        "TPE": Material("ribbed", "light, cushioning and latex-free"),
        "Cork": Material("speckle", "naturally antimicrobial and grippy when wet"),
    }
)

COLOURS: Mapping[str, RGB] = MappingProxyType(
    {
        "Black": (32, 32, 34),
        "White": (242, 242, 238),
        "Navy": (30, 44, 88),
        "Charcoal": (64, 66, 70),
        "Grey": (140, 142, 146),
        "Red": (196, 36, 40),
        "Burgundy": (114, 26, 46),
        "Olive": (110, 114, 52),
        "Forest Green": (34, 96, 60),
        "Sage": (150, 174, 140),
        "Mustard": (214, 164, 40),
        "Orange": (234, 114, 34),
        "Sky Blue": (108, 170, 226),
        "Teal": (0, 128, 128),
        "Pink": (236, 140, 172),
        "Beige": (214, 196, 160),
        "Brown": (118, 78, 48),
    }
)

BRANDS: tuple[Brand, ...] = (
    Brand("Nordwell", ("T-Shirts", "Jackets", "Dresses")),
    Brand("Kestrel", ("Sneakers", "T-Shirts", "Water Bottles", "Backpacks")),
    Brand("Alder & Finch", ("Sofas", "Rugs", "Lamps", "Vases")),
    Brand("Brightmoor", ("Lamps", "Kettles", "Mugs")),
    Brand("Vantor", ("Headphones", "Phone Cases", "Watches")),
    Brand("Halden", ("Watches", "Sunglasses", "Backpacks")),
    Brand("Copperleaf", ("Cookware", "Kettles", "Teapots")),
    Brand("Lumen & Oak", ("Lamps", "Office Chairs", "Sofas")),
    Brand("Terrapin", ("Tents", "Backpacks", "Water Bottles", "Jackets")),
    Brand("Velostra", ("Bicycles", "Water Bottles", "Sunglasses")),
    Brand("Solenne", ("Perfume", "Dresses", "Sunglasses")),
    Brand("Mizuka", ("Teapots", "Mugs", "Vases")),
    Brand("Greywater", ("Jackets", "Umbrellas", "Backpacks")),
    Brand("Pimlico", ("Umbrellas", "Dresses", "Mugs")),
    Brand("Asanta", ("Yoga Mats", "Water Bottles", "T-Shirts")),
    Brand("Ironvale", ("Cookware", "Kettles")),
    Brand("Fjordlys", ("Lamps", "Vases", "Rugs")),
    Brand("Corvid", ("Sneakers", "Jackets", "Phone Cases", "Headphones")),
    Brand("Marlowe & Co", ("Sofas", "Office Chairs", "Rugs")),
    Brand("Peakline", ("Tents", "Jackets", "Sneakers", "Bicycles")),
    Brand("Bellhaven", ("Perfume", "Vases")),
    Brand("Tidewell", ("Water Bottles", "Umbrellas", "Yoga Mats")),
    Brand("Oakhurst", ("Office Chairs", "Lamps")),
    Brand("Saffron Street", ("Dresses", "T-Shirts", "Rugs")),
    Brand("Quillon", ("Phone Cases", "Watches", "Headphones")),
    Brand("Emberly", ("Kettles", "Teapots", "Mugs", "Cookware")),
    Brand("Ridgeback", ("Backpacks", "Tents", "Bicycles")),
    Brand("Lunaria", ("Perfume", "Lamps", "Vases")),
    Brand("Strideon", ("Sneakers", "Yoga Mats", "T-Shirts")),
    Brand("Cobalt Row", ("Sunglasses", "Watches", "Jackets")),
    Brand("Hollis", ("Sofas", "Rugs")),
    Brand("Ventara", ("Umbrellas", "Sunglasses", "Phone Cases")),
    Brand("Mossgrove", ("Teapots", "Vases", "Mugs")),
    Brand("Arkwright", ("Cookware", "Office Chairs")),
    Brand("Pebble & Pine", ("Mugs", "Rugs", "Yoga Mats")),
    Brand("Zephyrine", ("Dresses", "Perfume", "Umbrellas")),
    Brand("Trailhund", ("Bicycles", "Tents", "Water Bottles")),
    Brand("Oxley", ("Headphones", "Phone Cases", "Kettles")),
    Brand("Verano", ("T-Shirts", "Dresses", "Sunglasses", "Sneakers")),
    Brand("Kalmar Home", ("Sofas", "Office Chairs", "Lamps", "Teapots")),
)

STYLE_WORDS: tuple[str, ...] = (
    "Classic",
    "Essential",
    "Urban",
    "Vintage",
    "Signature",
    "Everyday",
    "Studio",
    "Heritage",
    "Pro",
    "Minimal",
)
STYLE_WORD_PROBABILITY = 0.35

PRICE_ENDINGS: tuple[float, ...] = (0.99, 0.49, 0.95, 0.0)
PRICE_ENDING_WEIGHTS: tuple[float, ...] = (0.55, 0.2, 0.15, 0.1)

_LOWERCASE_TITLE_WORDS = frozenset({"de", "for", "of", "and"})
