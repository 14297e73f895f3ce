"""The simulator's view of a catalog: item attributes, cached embeddings and a query bank.

A :class:`SimCatalog` is made once from a built search index (the real item
vectors of ``ranker index build``), plus a bank of queries written from item
titles and encoded with the same text encoder the service uses. Sessions then
retrieve candidates from these cached embeddings with the service's own
channel calibration and fusion (:mod:`ranker.retrieval.fusion`: the index's
fitted :class:`~ranker.retrieval.fusion.Calibration`, carried in the saved
catalog), exactly and without FAISS, so an environment step never runs an
encoder and the channel scores the policy sees mean the same as live.

Saved as one ``.npz`` (no pickles) under ``DATA_DIR/sim/``; it is rebuilt when
the index is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from envs.config import ConfigError
from envs.intents import PARSED, PLAIN, STATED, IntentBank, stated_phrase
from ranker.ranking.profile import price_level
from ranker.retrieval.fusion import CHANNELS, Calibration, fuse_scores

SIM_CATALOG_VERSION = 2  # 2: colours and the intent bank (envs.intents)
PHOTO_NOISE_SEED = 7
VECTOR_FIELDS = ("text", "image", "image_in_text", "query_text")  # the embeddings: what a half-precision save shrinks


@dataclass
class Retrieved:
    """Top-K candidates of one query: catalog rows in fused-score order, with the channel scores."""

    rows: np.ndarray  # [k] int (fewer than k when a price filter leaves fewer items)
    fused: np.ndarray  # [k] the uncalibrated fusion of the raw cosines (the policy's retrieval_score; the order is the calibrated fusion's)
    channels: dict[str, np.ndarray]  # channel -> [k] raw cosines, NaN where the item lacks that part


@dataclass
class SimCatalog:
    """Item arrays (row i is one item) and the query bank."""

    item_ids: list[str]
    titles: list[str]
    category_codes: np.ndarray  # [n] int into category_names
    category_names: list[str]
    brand_codes: np.ndarray  # [n] int into brand_names
    brand_names: list[str]
    prices: np.ndarray  # [n] float64
    text: np.ndarray  # [n, d] unit rows
    has_image: np.ndarray  # [n] bool
    image: np.ndarray | None  # [n, d_image] unit rows (zeros without a picture); None: no pictures at all
    image_in_text: np.ndarray | None  # [n, d]
    query_texts: list[str]
    query_items: np.ndarray  # [q] row of the item each query was written for
    query_text: np.ndarray  # [q, d]
    source: str = "arrays"
    calibration: Calibration = field(default_factory=Calibration)  # the index's channel calibration (uncalibrated: raw cosines)
    colour_codes: np.ndarray | None = None  # [n] int into colour_names, -1: no colour (None: nobody knows)
    colour_names: list[str] = field(default_factory=list)
    intents: IntentBank | None = None  # per bank row (envs.intents); None: plain phrases only
    _cache: dict[tuple[Any, ...], Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        n = len(self.item_ids)
        if n == 0:
            raise ConfigError("catalog: has no items", parameter="catalog", value=self.source)
        for name in ("titles", "category_codes", "brand_codes", "prices", "text", "has_image"):
            if len(getattr(self, name)) != n:
                raise ConfigError(f"catalog: {name} has {len(getattr(self, name))} rows for {n} items", parameter="catalog", value=self.source)
        if self.text.ndim != 2 or not np.all(np.isfinite(self.text)):
            raise ConfigError("catalog: text embeddings missing or not finite", parameter="catalog", value=self.source)
        if len(self.query_texts) == 0 or len(self.query_items) != len(self.query_texts) or len(self.query_text) != len(self.query_texts):
            raise ConfigError("catalog: the query bank is empty or inconsistent", parameter="catalog", value=self.source)
        if self.image is None or not self.has_image.any():
            self.image = self.image_in_text = None
        if self.colour_codes is None:
            self.colour_codes = np.full(n, -1, dtype=np.int64)
        if self.intents is None:
            self.intents = IntentBank.plain(len(self.query_texts))
        try:
            self.intents.check(len(self.query_texts))
        except ValueError as exc:
            raise ConfigError(f"catalog: {exc}", parameter="catalog", value=self.source) from None
        self.queries_of_item = _rows_by_item(self.query_items, self.intents.kind == PLAIN, n)  # what a session samples
        self.stated_queries_of_item = _rows_by_item(self.query_items, self.intents.kind == STATED, n)
        # per-row names as arrays, so a session gathers K of them at once
        self.item_id_array = np.array(self.item_ids, dtype=object)
        self.category_of_row = np.array(self.category_names, dtype=object)[self.category_codes]
        self.brand_of_row = np.array(self.brand_names, dtype=object)[self.brand_codes]
        self.colour_of_row = np.array(list(self.colour_names) + [""], dtype=object)[self.colour_codes]  # -1 reads the last: ""
        self.median_price = float(np.median(self.prices))
        self.category_median_price = np.array(
            [
                np.median(self.prices[self.category_codes == code]) if np.any(self.category_codes == code) else self.median_price
                for code in range(len(self.category_names))
            ]
        )
        self.price_level_of_row = price_level(self.prices, self.category_median_price[self.category_codes])  # the profile's price levels

    # ----------------------------------------------------------- properties
    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def has_pictures(self) -> bool:
        return self.image is not None

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "items": self.n_items,
            "with_picture": int(self.has_image.sum()),
            "queries": len(self.query_texts),
            "categories": len(self.category_names),
            "brands": len(self.brand_names),
        }

    def nearest_typed_phrase(self, chunk: int = 512) -> np.ndarray:
        """[n] per item, the bank row of the typed phrase (plain or stated, any item's) whose text vector is nearest
        the item's text vector; computed once."""
        if "nearest_phrase" not in self._cache:
            typed = np.flatnonzero(self.intents.kind != PARSED)  # type: ignore[union-attr]
            phrases = self.query_text[typed]
            nearest = np.empty(self.n_items, dtype=np.int64)
            for start in range(0, self.n_items, chunk):
                nearest[start : start + chunk] = typed[np.argmax(self.text[start : start + chunk] @ phrases.T, axis=1)]
            self._cache["nearest_phrase"] = nearest
        return self._cache["nearest_phrase"]

    # ------------------------------------------------------------ retrieval
    def photos(self, noise: float) -> tuple[np.ndarray, np.ndarray]:
        """The pictures users search with, one per item: (image, image_in_text) vectors plus fixed noise.

        A user looking for item i photographs something like it: i's vectors
        plus noise of norm ``noise`` drawn from i's row alone, renormalised.
        The same item always gives the same photo, so retrieval can be cached.
        """
        assert self.image is not None and self.image_in_text is not None
        key = ("photos", noise)
        if key not in self._cache:
            out = []
            for salt, vectors in enumerate((self.image, self.image_in_text)):
                jitter = np.random.default_rng([PHOTO_NOISE_SEED, salt]).standard_normal(vectors.shape).astype(np.float32)
                photo = vectors + noise * jitter / np.linalg.norm(jitter, axis=1, keepdims=True)
                out.append(photo / np.linalg.norm(photo, axis=1, keepdims=True))
            self._cache[key] = (out[0], out[1])
        return self._cache[key]

    def retrieve(self, query: int, mode: str, k: int, *, image_noise: float = 0.6) -> Retrieved:
        """Top ``k`` items for bank query ``query`` in ``mode`` (text, image or text+image); a parsed twin's price
        range filters the items first, unless no item is in it (relaxed, as the service does)."""
        rows, fused, channels = self.retrieval_table(mode, k, image_noise=image_noise)
        found = int(np.isfinite(fused[query]).sum())
        return Retrieved(rows=rows[query, :found], fused=fused[query, :found], channels={name: values[query, :found] for name, values in channels.items()})

    def retrieval_table(self, mode: str, k: int, *, image_noise: float = 0.6, chunk: int = 256) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Top ``k`` (rows, fused, channel scores) for every bank query in ``mode``, computed once in batches."""
        key = ("table", mode, k, image_noise)
        if key in self._cache:
            return self._cache[key]
        if "image" in mode and not self.has_pictures:
            raise ConfigError(f"query_modes: {mode!r} needs a catalog with pictures", parameter="query_modes", value=mode)
        k = min(k, self.n_items)
        n_queries = len(self.query_texts)
        rows = np.empty((n_queries, k), dtype=np.int64)
        fused_top = np.empty((n_queries, k), dtype=np.float64)
        channels_top: dict[str, np.ndarray] = {}
        items = {"text": self.text, "image": self.image, "image_in_text": self.image_in_text}
        photo, photo_in_text = self.photos(image_noise) if "image" in mode else (None, None)
        low, high = self.intents.price_bounds()  # type: ignore[union-attr]
        for start in range(0, n_queries, chunk):
            batch = np.arange(start, min(start + chunk, n_queries))
            parts: dict[str, np.ndarray] = {}
            if "text" in mode:
                parts["text"] = self.query_text[batch]
            if photo is not None and photo_in_text is not None:
                owners = self.query_items[batch]
                parts["image"], parts["image_in_text"] = photo[owners], photo_in_text[owners]
            per_channel: dict[str, np.ndarray] = {}
            for channel, (part, index_name) in CHANNELS.items():
                if part not in parts or items[index_name] is None:
                    continue
                similarity = (parts[part] @ items[index_name].T).astype(np.float64)
                if index_name != "text":
                    similarity[:, ~self.has_image] = np.nan
                per_channel[channel] = similarity
            raw_fused = fuse_scores(per_channel, (len(batch), self.n_items))  # what the features read (as live)
            fused = fuse_scores(self.calibration.apply(per_channel), (len(batch), self.n_items), self.calibration)  # the order
            outside = (self.prices[None, :] < low[batch, None]) | (self.prices[None, :] > high[batch, None])
            outside &= ~outside.all(axis=1, keepdims=True)  # a range no item is in is relaxed
            fused[outside] = -np.inf
            top = np.argpartition(-fused, k - 1, axis=1)[:, :k] if k < self.n_items else np.tile(np.arange(k), (len(batch), 1))
            top.sort(axis=1)  # ties in the score go to the lower row
            top = np.take_along_axis(top, np.argsort(-np.take_along_axis(fused, top, 1), axis=1, kind="stable"), 1)
            found = np.isfinite(np.take_along_axis(fused, top, 1))
            rows[batch], fused_top[batch] = top, np.where(found, np.take_along_axis(raw_fused, top, 1), -np.inf)
            for channel, similarity in per_channel.items():
                channels_top.setdefault(channel, np.empty((n_queries, k)))[batch] = np.take_along_axis(similarity, top, 1)
        self._cache[key] = (rows, fused_top, channels_top)
        return self._cache[key]

    # -------------------------------------------------------------- storage
    def save(self, path: Path, *, vector_dtype: type = np.float32, compress: bool = False) -> Path:
        """Write one ``.npz`` (no pickles). ``vector_dtype=np.float16`` halves the embeddings (the packaged compact
        world, :mod:`envs.compact`); :meth:`load` reads them back as unit float32 rows."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {
            "item_ids": np.array(self.item_ids, dtype=str),
            "titles": np.array(self.titles, dtype=str),
            "category_codes": self.category_codes,
            "category_names": np.array(self.category_names, dtype=str),
            "brand_codes": self.brand_codes,
            "brand_names": np.array(self.brand_names, dtype=str),
            "prices": self.prices,
            "text": self.text,
            "has_image": self.has_image,
            "query_texts": np.array(self.query_texts, dtype=str),
            "query_items": self.query_items,
            "query_text": self.query_text,
            "colour_codes": self.colour_codes,
            "colour_names": np.array(self.colour_names, dtype=str),
            **self.intents.arrays(),  # type: ignore[union-attr]
            "meta": np.array(json.dumps({"version": SIM_CATALOG_VERSION, "source": self.source, "calibration": self.calibration.to_json()})),
        }
        if self.image is not None and self.image_in_text is not None:
            arrays["image"], arrays["image_in_text"] = self.image, self.image_in_text
        for name in VECTOR_FIELDS:
            if name in arrays:
                arrays[name] = np.asarray(arrays[name], dtype=vector_dtype)
        temporary = path.with_suffix(".tmp.npz")
        (np.savez_compressed if compress else np.savez)(temporary, **arrays)
        os.replace(temporary, path)
        return path

    @classmethod
    def load(cls, path: Path) -> SimCatalog:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("version") != SIM_CATALOG_VERSION:
                raise ConfigError(
                    f"catalog: {path} is simulator catalog version {meta.get('version')}, expected {SIM_CATALOG_VERSION}", parameter="catalog", value=str(path)
                )
            return cls(
                item_ids=data["item_ids"].tolist(),
                titles=data["titles"].tolist(),
                category_codes=data["category_codes"],
                category_names=data["category_names"].tolist(),
                brand_codes=data["brand_codes"],
                brand_names=data["brand_names"].tolist(),
                prices=data["prices"],
                text=_vectors(data["text"]),
                has_image=data["has_image"],
                image=_vectors(data["image"]) if "image" in data else None,
                image_in_text=_vectors(data["image_in_text"]) if "image_in_text" in data else None,
                query_texts=data["query_texts"].tolist(),
                query_items=data["query_items"],
                query_text=_vectors(data["query_text"]),
                source=meta.get("source", str(path)),
                calibration=Calibration.from_json(meta.get("calibration")),
                colour_codes=data["colour_codes"],
                colour_names=data["colour_names"].tolist(),
                intents=IntentBank.from_arrays(data),
            )


def _vectors(stored: np.ndarray) -> np.ndarray:
    """Embeddings as the simulator uses them: float32; rows stored at half precision are made unit again (zero rows,
    items without a picture, stay zero)."""
    if stored.dtype == np.float32:
        return stored
    vectors = stored.astype(np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=vectors, where=norms > 0)


# ------------------------------------------------------------------ building
def query_variants(title: str, category: str, rng: np.random.Generator, n: int) -> list[str]:
    """Up to ``n`` distinct search phrases a shopper might type for an item.

    The last two title words (the product noun in most shops) with each other
    word kept at random, or the category name with one title word. Lower case.
    """
    words = title.lower().split()
    head, noun = words[:-2], words[-2:]
    variants: list[str] = []
    for attempt in range(4 * n):
        if attempt % 2 == 0:
            kept = [word for word in head if rng.random() < 0.35]
            phrase = " ".join(kept + noun)
        else:
            phrase = f"{words[int(rng.integers(len(words)))]} {category.lower()}"
        if phrase not in variants:
            variants.append(phrase)
        if len(variants) == n:
            break
    return variants


def build_sim_catalog(
    engine: Any, *, queries_per_item: int = 2, seed: int = 0, source: str = "engine", encode_texts: Callable[[list[str]], np.ndarray] | None = None
) -> SimCatalog:
    """A :class:`SimCatalog` from a built :class:`ranker.retrieval.engine.SearchEngine` (its real vectors).

    ``encode_texts`` encodes the query bank (default: the engine's text encoder); a caller that rebuilds
    the world as the catalog changes passes a caching one, so only new phrases meet the encoder.
    """
    keys = np.sort(engine.store.keys())
    if len(keys) == 0:
        raise ConfigError(f"catalog: the index at {source} has no items", parameter="catalog", value=source)
    items = [engine.store.item_for_key(int(key)) for key in keys]
    text, present = engine.indexes["text"].vectors_for(keys)
    if not present.all():
        raise ConfigError(f"catalog: {int((~present).sum())} items of {source} have no text embedding; rebuild the index", parameter="catalog", value=source)
    image, has_image = engine.indexes["image"].vectors_for(keys)
    image_in_text, _ = engine.indexes["image_in_text"].vectors_for(keys)
    categories = sorted({item.category or "uncategorised" for item in items})
    brands = sorted({item.brand or "unbranded" for item in items})
    colour_of = [item.colour for item in items]
    colours = sorted({colour for colour in colour_of if colour})
    rng = np.random.default_rng(seed)
    texts: list[str] = []
    owners: list[int] = []
    rows: list[dict[str, Any]] = []
    for row, item in enumerate(items):
        for phrase in query_variants(item.title, item.category or "", rng, queries_per_item):
            texts.append(phrase)
            owners.append(row)
            rows.append({})
    intent_rng = np.random.default_rng([seed, 1])  # a stream of its own: the plain phrases stay those of a bank without intent
    for row, item in enumerate(items):
        base = query_variants(item.title, item.category or "", intent_rng, 1)[0]
        phrase, asked = stated_phrase(base, colour=colour_of[row], brand=item.brand, price=float(item.price or 0.0), rng=intent_rng)
        texts.append(phrase)
        owners.append(row)
        codes = {"asked_colour": (colours, asked.get("asked_colour")), "asked_brand": (brands, asked.get("asked_brand"))}
        rows.append(
            {"kind": STATED, **{k: v for k, v in asked.items() if k == "asked_price_max"}, **{k: names.index(v) for k, (names, v) in codes.items() if v}}
        )
    _add_parsed_twins(engine, texts, owners, rows, brands, colours)
    query_text = encode_texts(texts) if encode_texts else engine.encoders.encode_texts(texts, progress=len(texts) > 2000)
    return SimCatalog(
        item_ids=[item.item_id for item in items],
        titles=[item.title for item in items],
        category_codes=np.array([categories.index(item.category or "uncategorised") for item in items]),
        category_names=categories,
        brand_codes=np.array([brands.index(item.brand or "unbranded") for item in items]),
        brand_names=brands,
        prices=np.array([item.price if item.price is not None else 0.0 for item in items], dtype=np.float64),
        text=text,
        has_image=has_image,
        image=image if has_image.any() else None,
        image_in_text=image_in_text if has_image.any() else None,
        query_texts=texts,
        query_items=np.array(owners, dtype=np.int64),
        query_text=np.asarray(query_text, dtype=np.float32),
        source=source,
        calibration=engine.calibration,
        colour_codes=np.array([colours.index(colour) if colour else -1 for colour in colour_of], dtype=np.int64),
        colour_names=colours,
        intents=IntentBank.from_rows(rows),
    )


def _add_parsed_twins(engine: Any, texts: list[str], owners: list[int], rows: list[dict[str, Any]], brands: list[str], colours: list[str]) -> None:
    """Run the service's parser over every typed phrase; each one with an intent gains a twin row: the rest of its
    text (the whole phrase when nothing is left), the price range read, the first brand and colour read."""
    from ranker.retrieval.query_intent import QueryParser

    parser = QueryParser(engine.query_vocabulary)
    brand_code = {name.casefold(): code for code, name in enumerate(brands)}
    colour_code = {name.casefold(): code for code, name in enumerate(colours)}
    for index in range(len(texts)):
        parsed = parser.parse(texts[index])
        if not parsed.has_intent:
            continue
        rows[index]["parsed"] = len(texts)
        twin: dict[str, Any] = {"kind": PARSED, "price_min": parsed.price_min, "price_max": parsed.price_max}
        twin = {key: value for key, value in twin.items() if value is not None}
        for key, names, codes in (("brand", parsed.brands, brand_code), ("colour", parsed.colours, colour_code)):
            known = [codes[name.casefold()] for name in names if name.casefold() in codes]
            if known:
                twin[key] = known[0]
        texts.append(parsed.text or texts[index])
        owners.append(owners[index])
        rows.append(twin)


def _rows_by_item(query_items: np.ndarray, selected: np.ndarray, n_items: int) -> dict[int, np.ndarray]:
    """item row -> the bank rows written for it, among the ``selected`` rows."""
    chosen = np.flatnonzero(selected)
    order = chosen[np.argsort(query_items[chosen], kind="stable")]
    bounds = np.searchsorted(query_items[order], np.arange(n_items + 1))
    return {row: order[bounds[row] : bounds[row + 1]] for row in range(n_items) if bounds[row + 1] > bounds[row]}


def sim_catalog_path(data_dir: Path, *, queries_per_item: int = 2, seed: int = 0) -> Path:
    """Where the simulator catalog of ``data_dir`` is cached: named after the index build it came from."""
    from ranker.retrieval.fusion import read_manifest

    manifest = read_manifest(Path(data_dir)) or {}
    stamp = json.dumps([manifest.get("built_at"), manifest.get("saved_at"), manifest.get("count"), queries_per_item, seed, SIM_CATALOG_VERSION])
    return Path(data_dir) / "sim" / f"catalog-{hashlib.sha256(stamp.encode()).hexdigest()[:12]}.npz"


def demo_data_dir() -> Path:
    """Where the demo shop lives: ``$RANKER_DATA_DIR``, else ``./data`` (as for ``make serve``)."""
    return Path(os.environ.get("RANKER_DATA_DIR", "data"))
