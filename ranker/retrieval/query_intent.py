"""Query understanding (English): price, brand, colour and category intent taken out of a search text.

"red kestrel running shoes under 50" parses to ``colours=("Red",)``, ``brands=("Kestrel",)``,
``price_max=50.0`` and the text "running shoes" that still goes to the text encoder.

**Price.** A price needs a cue: a word ("under 50", "below $30", "less than 20", "up to 80", "max 40", "over 100",
"above 60", "more than 20", "at least 20", "between 20 and 40", "from 20 to 40") or a currency ("20-40 eur",
"$100+", "10 eur or less", "€20 to €40"; $, €, £, eur, euro(s), usd, dollar(s), gbp). A bare number is never a price, and neither is a
number followed by a unit ("up to 4 persons", "over 40 mm"), so "iphone 15 case", "size 42 boots", "2 person tent",
"4k monitor", "100% cotton" and "pack of 3" stay text. An amount that is negative ("under -5"), written in
exponent form ("under 1e309") or above :data:`MAX_PRICE` is not a price either: it stays text.
Words without numbers read the price quantiles of the named categories (the whole catalog when none is named):
"cheap", "budget", "affordable", "inexpensive", "bargain", "low cost" set ``price_max`` to the 25th percentile;
"premium", "luxury", "expensive", "high end", "designer" set ``price_min`` to the 75th. An explicit amount wins over
such a word.

**Names.** Brands, colours and categories of the catalog (:class:`QueryVocabulary`) match case-insensitively,
across spaces and hyphens ("t shirt", "tshirt", "T-Shirts"), "&" or "and" ("alder and finch"), in the singular
or plural, and with one typo (insertion, deletion, substitution or adjacent transposition) in words of at least 5
letters, unless the typed word occurs in the catalog's titles or descriptions ("cases" is not a typo of "vases")
or is a common English word ("while" is not "white"). The longest name wins ("forest green" over "green").
A category counts only when its own name is typed ("mugs", "yoga mat"); nouns inside it ("running shoes" for
Sneakers) are left to the text encoder, because a named category lifts its items (a strong preference).

**The rest.** Price phrases, price words, brands and colours leave the text (with a connector right before them:
"in red", "by Halden", "for under 50"); category words stay, since the text encoder retrieves well on them.
Only the first :data:`MAX_PARSE_CHARS` characters (cut at a space) and :data:`MAX_PARSE_TOKENS` words are parsed;
the rest is kept as text unparsed. :meth:`QueryParser.parse` never raises on a ``str``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from ranker.retrieval.query_vocabulary import QueryVocabulary, compact

__all__ = ["MAX_PARSE_CHARS", "MAX_PARSE_TOKENS", "MAX_PRICE", "ParsedQuery", "QueryParser", "QueryVocabulary"]

MAX_PARSE_CHARS = 256
MAX_PARSE_TOKENS = 48
MAX_PRICE = 1e9
CHEAP_QUANTILE = 0.25
PREMIUM_QUANTILE = 0.75

_NUMBER = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?k?"
_CURRENCY_WORD = r"(?:eur|euros?|usd|dollars?|bucks|gbp|quid)"
_SIGN = r"[$€£]"
_UNIT = (
    r"(?:%|percent|cm|mm|m|km|l|ml|litres?|liters?|kg|g|lbs?|oz|inch(?:es)?|ft|\"|gb|tb|mb|mah|w|watts?|v|volts?|hz|k|"
    r"people|persons?|pers|seats?|seater|pcs|pieces?|pack|packs|x|years?|yrs?|months?|hours?|h|mins?|minutes?|"
    r"days?|atm|bar|person|man|players?|cups?|slices?|speed|gears?|st|nd|rd|th)"
)
_AMOUNT = rf"(?:{_SIGN}\s?(?P<{{n}}s>{_NUMBER})|(?P<{{n}}>{_NUMBER})(?:\s?(?P<{{n}}c>{_SIGN}|{_CURRENCY_WORD}\b))?)(?![\w.,]*\d)"


def _amount(name: str) -> str:
    return _AMOUNT.replace("{n}", name)


_NOT_UNIT = rf"(?!\s?{_UNIT}\b)"
_MAX_CUES = r"under|below|beneath|less\s+than|cheaper\s+than|up\s*to|upto|max(?:imum)?|at\s+most|no\s+more\s+than|not\s+over|within|budget(?:\s+of)?|<=?"
_MIN_CUES = r"over|above|more\s+than|at\s+least|min(?:imum)?|starting\s+(?:at|from)|from|greater\s+than|upwards\s+of|>=?"
_RANGE_START = r"between|from|range|priced|price|(?=[$€£\d])"
_RANGE_JOIN = r"\s*(?:-|–|to|and)\s*"
_SUFFIX_MIN = r"\s?(?:\+|and\s+(?:up|above|over)|or\s+more)"
_SUFFIX_MAX = r"\s?(?:or\s+(?:less|under|below|cheaper)|and\s+(?:under|below)|max|tops)"

_PRICE_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern, re.IGNORECASE))
    for kind, pattern in (
        ("range", rf"(?<![\w.$€£-])(?:(?P<cue>{_RANGE_START})\s*)?{_amount('a')}{_RANGE_JOIN}{_amount('b')}{_NOT_UNIT}"),
        ("max", rf"(?<![\w.-])(?:{_MAX_CUES})\s*:?\s*{_amount('a')}{_NOT_UNIT}"),
        ("min", rf"(?<![\w.-])(?:{_MIN_CUES})\s*:?\s*{_amount('a')}{_NOT_UNIT}"),
        ("min_suffix", rf"(?<![\w.$€£-]){_amount('a')}{_SUFFIX_MIN}(?![\w])"),
        ("max_suffix", rf"(?<![\w.$€£-]){_amount('a')}{_SUFFIX_MAX}(?![\w])"),
    )
)

_QUANTILE_WORDS: dict[str, float] = {
    "cheap": CHEAP_QUANTILE,
    "cheaper": CHEAP_QUANTILE,
    "cheapest": CHEAP_QUANTILE,
    "budget": CHEAP_QUANTILE,
    "affordable": CHEAP_QUANTILE,
    "inexpensive": CHEAP_QUANTILE,
    "bargain": CHEAP_QUANTILE,
    "lowcost": CHEAP_QUANTILE,
    "premium": PREMIUM_QUANTILE,
    "luxury": PREMIUM_QUANTILE,
    "luxurious": PREMIUM_QUANTILE,
    "expensive": PREMIUM_QUANTILE,
    "highend": PREMIUM_QUANTILE,
    "designer": PREMIUM_QUANTILE,
}
_QUANTILE_PHRASES = {("low", "cost"): "lowcost", ("high", "end"): "highend"}

_CONNECTORS = frozenset({"in", "by", "from", "for", "with", "of", "and", "or", "the", "a", "an", "priced", "price", "costing", "at", "color", "colour"})
_COMMON_WORDS = frozenset(
    "about above after again along alive among another around based being below black block bring brown could doing "
    "during every first found great green house large later least light might never night other place plain quite "
    "right shall short since small smart sound still their there these thing think those three times under until "
    "using water where which while white whole whose within would write wrong young ".split()
)
"""Common English words of >= 5 letters never taken for a typo of a name (an exact match still counts)."""

_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)?")


@dataclass(frozen=True)
class ParsedQuery:
    """A search text split into structured intent and the unparsed rest."""

    text: str
    """The unparsed rest, whitespace-collapsed ("" when nothing is left)."""
    price_min: float | None = None
    """A lower price bound ("over 100", "between 20 and 40", "premium")."""
    price_max: float | None = None
    """An upper price bound ("under 50", "below $30", "cheap")."""
    price_phrase: str | None = None
    """The words that said it, as typed ("under 50"); several phrases are joined by a space."""
    brands: tuple[str, ...] = ()
    """Catalog spellings of the brands named, in order of appearance."""
    colours: tuple[str, ...] = ()
    """Catalog spellings of the colours named."""
    categories: tuple[str, ...] = ()
    """Catalog spellings of the categories named."""
    price_quantile: float | None = None
    """The catalog quantile a price word read (0.25 for "cheap", 0.75 for "premium"); None for an amount typed."""
    truncated: bool = False
    """True when the text was longer than the parser reads (:data:`MAX_PARSE_CHARS`, :data:`MAX_PARSE_TOKENS`)."""

    @property
    def has_intent(self) -> bool:
        """True when anything beyond plain text was understood."""
        return self.price_min is not None or self.price_max is not None or bool(self.brands or self.colours or self.categories)

    def to_json(self) -> dict[str, Any]:
        """The ``query.parsed`` object of the API response and the ranking event (JSON types only)."""
        return {
            "text": self.text,
            "price_min": self.price_min,
            "price_max": self.price_max,
            "price_phrase": self.price_phrase,
            "price_quantile": self.price_quantile,
            "brands": list(self.brands),
            "colours": list(self.colours),
            "categories": list(self.categories),
            "truncated": self.truncated,
        }


@dataclass
class _Token:
    start: int
    end: int
    lower: str
    removed: bool = False
    in_price: bool = False


class QueryParser:
    """Parses search texts against a :class:`QueryVocabulary`; follows the vocabulary as it changes."""

    def __init__(self, vocabulary: QueryVocabulary):
        self.vocabulary = vocabulary

    def parse(self, text: str) -> ParsedQuery:
        """Split ``text`` into intent and the rest (see the module docstring); never raises on a ``str``."""
        if not isinstance(text, str):
            raise TypeError(f"text: must be a string, got {type(text).__name__}")
        head, tail = _cut(text)
        tokens = [_Token(match.start(), match.end(), match.group().lower()) for match in _TOKEN.finditer(head)]
        truncated = bool(tail) or len(tokens) > MAX_PARSE_TOKENS
        if len(tokens) > MAX_PARSE_TOKENS:
            tail = head[tokens[MAX_PARSE_TOKENS].start :] + tail
            head = head[: tokens[MAX_PARSE_TOKENS].start]
            tokens = tokens[:MAX_PARSE_TOKENS]
        removed: list[tuple[int, int]] = []
        price_min, price_max, phrases = self._prices(head, tokens, removed)
        found = self._names(tokens, removed)
        quantile, quantile_phrase, word_tokens = self._price_words(head, tokens)
        price_quantile = None
        explicit = price_min is not None or price_max is not None
        bound = None if quantile is None or explicit else self.vocabulary.price_quantile(quantile, found["category"])
        if quantile is not None and bound is not None:
            price_quantile = quantile
            phrases.append(quantile_phrase)
            if quantile <= 0.5:
                price_max = round(bound, 6)
            else:
                price_min = round(bound, 6)
        if explicit or bound is not None:  # price words leave the text once a price is known (else they stay)
            for token in word_tokens:
                token.removed = True
                removed.append((token.start, token.end))
        _drop_connectors(tokens, removed)
        rest = _remove(head, removed) + tail  # the tail starts at the space the cut was made at, if any
        return ParsedQuery(
            text=" ".join(rest.split()).strip(" ,;:-/"),
            price_min=price_min,
            price_max=price_max,
            price_phrase=" ".join(phrases) if phrases else None,
            brands=tuple(found["brand"]),
            colours=tuple(found["colour"]),
            categories=tuple(found["category"]),
            price_quantile=price_quantile,
            truncated=truncated,
        )

    # ------------------------------------------------------------- internals
    def _prices(self, head: str, tokens: list[_Token], removed: list[tuple[int, int]]) -> tuple[float | None, float | None, list[str]]:
        """Explicit price phrases: the first of each kind counts; their spans leave the text."""
        price_min: float | None = None
        price_max: float | None = None
        spans: list[tuple[int, int]] = []
        for kind, pattern in _PRICE_PATTERNS:
            for match in pattern.finditer(head):
                if any(match.start() < end and start < match.end() for start, end in spans):
                    continue
                first = _value(match, "a")
                if first is None:
                    continue
                if kind == "range":
                    second = _value(match, "b")
                    has_cue = bool(match.group("cue")) and match.group("cue").strip() != ""
                    has_currency = any(match.group(group) for group in ("as", "ac", "bs", "bc"))
                    if second is None or not (has_cue or has_currency) or price_min is not None or price_max is not None:
                        continue
                    low, high = sorted((first, second))
                    price_min, price_max = low, high
                elif kind.endswith("_suffix") and not (match.group("as") or match.group("ac")):
                    continue  # "10 and up", "3 or less" need a currency: they may be a size or a count
                elif kind.startswith("max"):
                    if price_max is not None:
                        continue
                    price_max = first
                else:
                    if price_min is not None:
                        continue
                    price_min = first
                spans.append((match.start(), match.end()))
        if price_min is not None and price_max is not None and price_min > price_max:
            price_min, price_max = price_max, price_min
        spans.sort()
        for start, end in spans:
            removed.append((start, end))
            for token in tokens:
                if token.start < end and start < token.end:
                    token.removed = token.in_price = True
        return price_min, price_max, [" ".join(head[start:end].split()) for start, end in spans]

    def _names(self, tokens: list[_Token], removed: list[tuple[int, int]]) -> dict[str, list[str]]:
        """Brands, colours and categories: longest exact match at each word, then one-typo matches."""
        tables = self.vocabulary.tables()
        found: dict[str, list[str]] = {"brand": [], "colour": [], "category": []}
        i = 0
        while i < len(tokens):
            if tokens[i].in_price:
                i += 1
                continue
            run = 0
            while run < tables.max_words and i + run < len(tokens) and not tokens[i + run].in_price:
                run += 1
            matched = 0
            for fuzzy in (False, True):
                for length in range(run, 0, -1):
                    span = tokens[i : i + length]
                    key = compact(token.lower for token in span)
                    if fuzzy:
                        if any(ch.isdigit() for ch in key) or not any(self._may_be_typo(token.lower) for token in span):
                            continue
                        entries = tables.fuzzy(key)
                    else:
                        entries = tables.lookup(key)
                    if entries:
                        for kind, name in entries:
                            if name not in found[kind]:
                                found[kind].append(name)
                        if any(kind != "category" for kind, _ in entries):
                            removed.append((span[0].start, span[-1].end))
                            for token in span:
                                token.removed = True
                        matched = length
                        break
                if matched:
                    break
            i += matched or 1
        return found

    def _may_be_typo(self, word: str) -> bool:
        return len(word) >= 3 and word not in _COMMON_WORDS and not word.isdigit() and not self.vocabulary.is_catalog_word(word)

    def _price_words(self, head: str, tokens: list[_Token]) -> tuple[float | None, str, list[_Token]]:
        """The first price word ("cheap", "high end") with its words as typed, and the words of every price word."""
        quantile: float | None = None
        phrase = ""
        found: list[_Token] = []
        i = 0
        while i < len(tokens):
            token = tokens[i]
            word, span = token.lower, [token]
            if i + 1 < len(tokens) and (token.lower, tokens[i + 1].lower) in _QUANTILE_PHRASES:
                word, span = _QUANTILE_PHRASES[(token.lower, tokens[i + 1].lower)], tokens[i : i + 2]
            if word in _QUANTILE_WORDS and not any(t.removed for t in span):
                if quantile is None:
                    quantile, phrase = _QUANTILE_WORDS[word], " ".join(head[span[0].start : span[-1].end].split())
                found.extend(span)
            i += len(span)
        return quantile, phrase, found


def _value(match: re.Match[str], name: str) -> float | None:
    """The amount a price group holds; None when it is not a plausible price (over :data:`MAX_PRICE`)."""
    raw = match.group(f"{name}s") or match.group(name)
    if raw is None:
        return None
    thousands = raw.lower().endswith("k")
    try:
        value = float(raw.lower().rstrip("k").replace(",", "")) * (1000 if thousands else 1)
    except ValueError:
        return None
    return value if math.isfinite(value) and 0 <= value <= MAX_PRICE else None


def _cut(text: str) -> tuple[str, str]:
    """The part parsed (at most :data:`MAX_PARSE_CHARS`, cut at a space when there is one) and the rest."""
    if len(text) <= MAX_PARSE_CHARS:
        return text, ""
    cut = text.rfind(" ", 0, MAX_PARSE_CHARS + 1)
    cut = cut if cut > 0 else MAX_PARSE_CHARS
    return text[:cut], text[cut:]


def _drop_connectors(tokens: list[_Token], removed: list[tuple[int, int]]) -> None:
    """A connector right before a removed phrase goes with it ("in red", "by Halden", "for under 50")."""
    for i in range(len(tokens) - 2, -1, -1):
        token = tokens[i]
        if not token.removed and token.lower in _CONNECTORS and tokens[i + 1].removed and tokens[i + 1].start - token.end <= 3:
            token.removed = True
            removed.append((token.start, token.end))


def _remove(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` without ``spans`` (each replaced by a space, so words around them stay apart)."""
    if not spans:
        return text
    pieces, at = [], 0
    for start, end in sorted(spans):
        if start > at:
            pieces.append(text[at:start])
        at = max(at, end)
    pieces.append(text[at:])
    return " ".join(pieces)
