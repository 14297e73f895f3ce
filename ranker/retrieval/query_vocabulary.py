"""The names a query parser understands, kept from the catalog as it changes: brands, colours, categories and
per-category prices.

:class:`QueryVocabulary` counts every name per item (so a name leaves when its last item goes) and keeps each
category's prices sorted (so "cheap" and "premium" read a quantile without a sort). Matching tables (exact forms
and a delete-1 neighbourhood for typos, SymSpell-style) are rebuilt lazily, only when a name appears or disappears,
not on every price change. Pure Python; thread-safe for one writer and many readers.
"""

from __future__ import annotations

import bisect
import re
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from ranker.catalog.items import Item

KINDS = ("brand", "colour", "category")
COLOUR_ATTRIBUTES = ("colour", "color")
BULK_SORT = 64
"""A batch of at least this many items appends its prices and sorts once; a smaller one inserts each in place."""
FUZZY_MIN_LENGTH = 5
"""Words shorter than this match exactly (a typo in "red" or "mug" is another word); longer ones allow one edit."""

_NAME_TOKEN = re.compile(r"[^\W_]+|&")
_WORD = re.compile(r"[^\W_]+")

ALIASES: dict[str, str] = {"gray": "grey", "navyblue": "navy", "tshirt": "tshirts", "teeshirt": "tshirts"}
"""Spelling variants of a name (compact form -> compact form of the name); used only when the name is known."""


def compact(words: Iterable[str]) -> str:
    """The matching key of a run of words: lower-case letters and digits, joined without separators.

    "T-Shirts", "t shirts" and "tshirts" share the key "tshirts", so hyphens and spaces never decide a match."""
    return "".join(words)


def stems(key: str) -> tuple[str, ...]:
    """The key and its possible singulars: "watches" -> watch/watche, "backpacks" -> backpack, "batteries" -> battery."""
    forms = [key]
    if len(key) > 3 and key.endswith("s") and not key.endswith("ss"):
        forms.append(key[:-1])
        if key.endswith("es"):
            forms.append(key[:-2])
        if key.endswith("ies"):
            forms.append(key[:-3] + "y")
    return tuple(forms)


def deletes(key: str) -> set[str]:
    """Every string one character shorter than ``key``."""
    return {key[:i] + key[i + 1 :] for i in range(len(key))}


def within_one_edit(a: str, b: str) -> bool:
    """True when ``a`` and ``b`` differ by at most one insertion, deletion, substitution or adjacent transposition."""
    if a == b:
        return True
    la, lb = len(a), len(b)
    if abs(la - lb) > 1:
        return False
    i = 0
    while i < min(la, lb) and a[i] == b[i]:
        i += 1
    if la == lb:
        if a[i + 1 :] == b[i + 1 :]:
            return True
        return i + 1 < la and a[i] == b[i + 1] and a[i + 1] == b[i] and a[i + 2 :] == b[i + 2 :]
    return a[i + 1 :] == b[i:] if la > lb else a[i:] == b[i + 1 :]


def name_keys(name: str) -> list[tuple[str, int]]:
    """The matching keys of a catalog name with the number of words each spans: "Alder & Finch" gives
    ("alderfinch", 2) and ("alderandfinch", 3)."""
    tokens = [token.lower() for token in _NAME_TOKEN.findall(name)]
    dropped = [token for token in tokens if token != "&"]
    spelled = ["and" if token == "&" else token for token in tokens]
    return sorted({(compact(dropped), len(dropped)), (compact(spelled), len(spelled))} - {("", 0)})


@dataclass(frozen=True)
class MatchTables:
    """What the parser looks names up in, for one state of the vocabulary's names."""

    exact: dict[str, tuple[tuple[str, str], ...]]  # key form -> ((kind, catalog spelling), ...)
    neighbours: dict[str, frozenset[str]]  # a delete-1 variant -> the key forms it came from (length >= 5)
    max_words: int  # the most words a name spans

    def lookup(self, key: str) -> tuple[tuple[str, str], ...]:
        """Exact match of ``key`` or one of its singulars."""
        for form in stems(key):
            found = self.exact.get(form)
            if found:
                return found
        return ()

    def fuzzy(self, key: str) -> tuple[tuple[str, str], ...]:
        """The one name within one edit of ``key`` (length >= 5 on both sides); nothing when none or ambiguous."""
        if len(key) < FUZZY_MIN_LENGTH:
            return ()
        candidates: set[str] = set(self.neighbours.get(key, ()))
        for variant in deletes(key):
            if variant in self.exact and len(variant) >= FUZZY_MIN_LENGTH:
                candidates.add(variant)
            candidates.update(self.neighbours.get(variant, ()))
        names = {self.exact[form] for form in candidates if within_one_edit(key, form)}
        return next(iter(names)) if len(names) == 1 else ()


class QueryVocabulary:
    """Brands, colours (item attribute ``colour`` or ``color``), categories and per-category sorted prices, counted
    per item so :meth:`add` and :meth:`remove` can follow a catalog's upserts and deletes.

    Names compare case-insensitively; the catalog spelling reported is the one most items use.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._names: dict[str, dict[str, Counter[str]]] = {kind: {} for kind in KINDS}  # kind -> fold -> spellings
        self._prices: dict[str, list[float]] = {}  # category fold -> sorted prices
        self._all_prices: list[float] = []
        self._words: Counter[str] = Counter()  # catalog words (>= 4 letters): never taken for a typo
        self._names_version = 0
        self._tables: tuple[int, MatchTables] | None = None

    @classmethod
    def from_items(cls, items: Iterable[Item]) -> QueryVocabulary:
        vocabulary = cls()
        vocabulary.add(items)
        return vocabulary

    # ---------------------------------------------------------------- writes
    def add(self, items: Iterable[Item]) -> None:
        """Count ``items`` in (a replaced item must be :meth:`remove`d first, with its old fields)."""
        self._update(items, +1)

    def remove(self, items: Iterable[Item]) -> None:
        """Count ``items`` out; a name whose count reaches zero is no longer understood."""
        self._update(items, -1)

    def clear(self) -> None:
        with self._lock:
            for kind in KINDS:
                self._names[kind].clear()
            self._prices.clear()
            self._all_prices.clear()
            self._words.clear()
            self._names_version += 1

    # ----------------------------------------------------------------- reads
    def names(self, kind: str) -> list[str]:
        """The catalog spellings of one kind ("brand", "colour" or "category"), sorted."""
        with self._lock:
            return sorted(self._spelling(spellings) for spellings in self._names[kind].values())

    def is_catalog_word(self, word: str) -> bool:
        """True when ``word`` (lower-case) or one of its singulars occurs in titles or descriptions."""
        return any(self._words.get(form, 0) > 0 for form in stems(word))

    def price_quantile(self, q: float, categories: Iterable[str] = ()) -> float | None:
        """The ``q`` quantile (linear interpolation) of the prices in ``categories`` (all items when empty);
        None when there are no such prices."""
        folds = [name.casefold() for name in categories]
        with self._lock:
            if not folds:
                prices = self._all_prices
            elif len(folds) == 1:
                prices = self._prices.get(folds[0], [])
            else:
                prices = sorted(price for fold in set(folds) for price in self._prices.get(fold, []))
            if not prices:
                return None
            position = q * (len(prices) - 1)
            low = int(position)
            high = min(low + 1, len(prices) - 1)
            return prices[low] + (prices[high] - prices[low]) * (position - low)

    def tables(self) -> MatchTables:
        """The matching tables for the current names (rebuilt only after a name appeared or disappeared)."""
        cached = self._tables
        if cached is not None and cached[0] == self._names_version:
            return cached[1]
        with self._lock:
            version = self._names_version
            exact: dict[str, list[tuple[str, str]]] = {}
            max_words = 1
            for kind in KINDS:
                for spellings in self._names[kind].values():
                    name = self._spelling(spellings)
                    for key, n_words in name_keys(name):
                        max_words = max(max_words, n_words)
                        for form in stems(key):
                            entries = exact.setdefault(form, [])
                            if (kind, name) not in entries:
                                entries.append((kind, name))
            for alias, target in ALIASES.items():
                if target in exact and alias not in exact:
                    exact[alias] = exact[target]
            frozen = {form: tuple(entries) for form, entries in exact.items()}
            neighbours: dict[str, set[str]] = {}
            for form in frozen:
                if len(form) >= FUZZY_MIN_LENGTH and not any(ch.isdigit() for ch in form):
                    for variant in deletes(form):
                        neighbours.setdefault(variant, set()).add(form)
            tables = MatchTables(frozen, {k: frozenset(v) for k, v in neighbours.items()}, max_words)
            self._tables = (version, tables)
            return tables

    # ------------------------------------------------------------- internals
    def _update(self, items: Iterable[Item], sign: int) -> None:
        items = list(items)
        bulk = len(items) >= BULK_SORT
        with self._lock:
            changed = False
            touched: set[str] = set()
            for item in items:
                colour = next((item.attributes[key] for key in COLOUR_ATTRIBUTES if isinstance(item.attributes.get(key), str)), "")
                for kind, name in (("brand", item.brand), ("colour", colour), ("category", item.category)):
                    changed |= self._count(kind, str(name).strip(), sign)
                fold = item.category.casefold()
                prices = self._prices.setdefault(fold, [])
                if sign > 0 and bulk:
                    prices.append(item.price)
                    self._all_prices.append(item.price)
                    touched.add(fold)
                elif sign > 0:
                    bisect.insort(prices, item.price)
                    bisect.insort(self._all_prices, item.price)
                else:
                    _remove_sorted(prices, item.price)
                    _remove_sorted(self._all_prices, item.price)
                    if not prices:
                        del self._prices[fold]
                for word in _WORD.findall(f"{item.title} {item.description}".lower()):
                    if len(word) >= 4:
                        self._words[word] += sign
                        if self._words[word] <= 0:
                            del self._words[word]
            if touched:  # a bulk add appended unsorted: one sort per batch, not one insort per item
                for fold in touched:
                    self._prices[fold].sort()
                self._all_prices.sort()
            if changed:
                self._names_version += 1

    def _count(self, kind: str, name: str, sign: int) -> bool:
        """Count one name in or out; True when the set of names (or a spelling) changed."""
        if not name:
            return False
        fold = name.casefold()
        spellings = self._names[kind].get(fold)
        if spellings is None:
            if sign < 0:
                return False
            spellings = self._names[kind][fold] = Counter()
        before = self._spelling(spellings) if spellings else None
        spellings[name] += sign
        if spellings[name] <= 0:
            del spellings[name]
        if not spellings:
            del self._names[kind][fold]
            return True
        return self._spelling(spellings) != before

    @staticmethod
    def _spelling(spellings: Counter[str]) -> str:
        """The spelling most items use (ties: the first in sort order, so it is stable)."""
        return min(spellings, key=lambda name: (-spellings[name], name))


def _remove_sorted(values: list[float], value: float) -> None:
    at = bisect.bisect_left(values, value)
    if at < len(values) and values[at] == value:
        del values[at]
