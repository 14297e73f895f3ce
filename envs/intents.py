"""Stated intent in the simulator: shoppers who type "red running shoes under 60", and what the parser reads.

The query bank of a :class:`envs.catalog.SimCatalog` holds three kinds of rows (:data:`PLAIN`, :data:`STATED`,
:data:`PARSED`):

- *plain* phrases written from an item's title (``query_variants``);
- *stated* phrases: a plain phrase plus a price limit, a colour or a brand the shopper asks for
  (:func:`stated_phrase`). The shopper holds to what they typed: their utilities lose
  ``intent_*_penalty`` for items over the limit, of another colour or of another brand
  (:meth:`envs.shoppers.World.utilities`);
- *parsed* twins: every typed phrase (plain or stated) in which the service's own parser
  (:class:`ranker.retrieval.query_intent.QueryParser`, run on the catalog's vocabulary when the bank is built) finds
  an intent gets a twin row: the rest of the text (encoded like any query), the price range it read (a retrieval
  filter, relaxed when no item satisfies it) and the first brand and colour it read (features). With
  ``parse_queries=True`` (the default) a session retrieves and builds features from the twin, as the service
  does; with ``False`` it embeds the whole typed phrase, as a service without parsing would.

What the shopper meant (``asked_*``) and what the parser read are kept apart, so a parser's mistakes cost the
simulated shop what they would cost a real one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from ranker.retrieval.intent import NO_INTENT, QueryIntent

PLAIN, STATED, PARSED = 0, 1, 2
PRICE_SHARE, COLOUR_SHARE, BRAND_SHARE = 0.6, 0.5, 0.3  # how often a stated phrase names each (at least one)
PRICE_WORDS = ("under {}", "below {}", "under ${}", "less than {} eur", "up to {}", "max {} euro", "cheaper than {}")


@dataclass
class IntentBank:
    """Per query-bank row: its kind, what the shopper asked for, and the parser's reading (-1 / NaN: none)."""

    kind: np.ndarray  # [q] PLAIN, STATED or PARSED
    asked_price_max: np.ndarray  # [q] the limit a stated phrase names
    asked_colour: np.ndarray  # [q] colour code a stated phrase names
    asked_brand: np.ndarray  # [q] brand code a stated phrase names
    parsed: np.ndarray  # [q] row of a typed phrase's parsed twin
    price_min: np.ndarray  # [q] the range the parser read (twins only)
    price_max: np.ndarray
    colour: np.ndarray  # [q] the colour code the parser read (twins only)
    brand: np.ndarray  # [q] the brand code the parser read (twins only)

    @classmethod
    def plain(cls, n_queries: int) -> IntentBank:
        """A bank of plain phrases only (no intent anywhere)."""
        none, nan = np.full(n_queries, -1, dtype=np.int64), np.full(n_queries, np.nan)
        return cls(np.zeros(n_queries, dtype=np.int64), nan.copy(), none.copy(), none.copy(), none.copy(), nan.copy(), nan.copy(), none.copy(), none.copy())

    @classmethod
    def from_rows(cls, rows: list[dict[str, Any]]) -> IntentBank:
        """From one dict per bank row (missing keys: none)."""
        bank = cls.plain(len(rows))
        for index, row in enumerate(rows):
            for name, value in row.items():
                getattr(bank, name)[index] = value
        return bank

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays under ``intent_*`` names, for saving with the catalog."""
        return {f"intent_{f.name}": getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_arrays(cls, data: Any) -> IntentBank:
        return cls(**{f.name: np.asarray(data[f"intent_{f.name}"]) for f in fields(cls)})

    def __len__(self) -> int:
        return len(self.kind)

    def check(self, n_queries: int) -> None:
        for f in fields(self):
            if len(getattr(self, f.name)) != n_queries:
                raise ValueError(f"intent bank: {f.name} has {len(getattr(self, f.name))} rows for {n_queries} queries")

    def price_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """[q] lower and upper bounds of the retrieval filter (-inf / inf: none)."""
        return np.nan_to_num(self.price_min, nan=-np.inf), np.nan_to_num(self.price_max, nan=np.inf)

    def intent(self, row: int, brand_names: list[str], colour_names: list[str]) -> QueryIntent:
        """The :class:`QueryIntent` the features see for bank ``row`` (a parsed twin; nothing for a typed phrase)."""
        if self.kind[row] != PARSED:
            return NO_INTENT
        low, high = self.price_min[row], self.price_max[row]
        return QueryIntent(
            price_min=None if math.isnan(low) else float(low),
            price_max=None if math.isnan(high) else float(high),
            brands=(brand_names[self.brand[row]],) if self.brand[row] >= 0 else (),
            colours=(colour_names[self.colour[row]],) if self.colour[row] >= 0 else (),
        )


def round_limit(price: float, rng: np.random.Generator) -> int:
    """A price limit a shopper would type for an item costing ``price``: 0-60% above it, rounded up to a round number."""
    raw = price * (1.0 + 0.6 * rng.random())
    step = 5 if raw < 100 else 10 if raw < 1000 else 50
    return int(math.ceil(raw / step) * step)


def stated_phrase(base: str, *, colour: str, brand: str, price: float, rng: np.random.Generator) -> tuple[str, dict[str, Any]]:
    """``base`` with a stated price limit, colour or brand (at least one), and what was stated.

    Returns the phrase and ``{"asked_price_max": ..., "asked_colour": name, "asked_brand": name}`` (only the keys
    stated; names as the catalog spells them).
    """
    draws = rng.random(3)
    wants = [draws[0] < PRICE_SHARE, bool(colour) and draws[1] < COLOUR_SHARE, bool(brand) and draws[2] < BRAND_SHARE]
    if not any(wants):
        wants[int(rng.integers(3)) if colour and brand else 0] = True
    asked: dict[str, Any] = {}
    words = base
    if wants[1]:
        asked["asked_colour"] = colour
        if colour.lower() not in words.split():
            words = f"{colour.lower()} {words}"
    if wants[2]:
        asked["asked_brand"] = brand
        if brand.lower() not in words:
            words = f"{brand.lower()} {words}"
    if wants[0]:
        limit = round_limit(price, rng)
        asked["asked_price_max"] = float(limit)
        words = f"{words} {PRICE_WORDS[int(rng.integers(len(PRICE_WORDS)))].format(limit)}"
    return words, asked
