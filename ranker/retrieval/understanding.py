"""From a parsed query to a search: what is embedded, which filters apply, which are relaxed, what the features see.

:mod:`ranker.retrieval.query_intent` reads a query's intent; this module applies it, for serving
(:meth:`ranker.serving.RankingService.rank`):

- the *rest* of the text is embedded (the whole text when nothing is left, as for a query that only names a colour);
- a parsed price range is *hard*: a retrieval filter, merged with the request's own filters (the tighter bound
  wins);
- named categories are a *strong preference*: ``Filters.prefer_categories``, whose items the engine lifts by its
  ``category_boost`` (log-odds of a category match) while items of other categories still rank when their text
  or picture matches better. A shop's taxonomy is never perfect: uncategorised ("General"), miscategorised and
  multi-category items are common. A deployment that wants a wall sets ``RANKER_CATEGORY_MATCH=filter`` (the
  engine then filters on them); a request's own ``filters.categories`` is always a wall and wins over the
  parsed ones;
- brands and colours are *soft*: only features (:class:`ranker.ranking.features.QueryIntent`);
- a parsed constraint that leaves no candidate is *relaxed*: dropped, price first, then category (only a wall can
  leave none), and the response says which (``query.relaxed``). A parsed price that leaves no item of the
  preferred categories is relaxed too when that brings them back ("sunglasses under 20" in a shop whose
  sunglasses all cost more shows sunglasses, as the wall did, not whatever else costs under 20). The request's
  own filters are never relaxed: a shop that filters gets what it asked for, even nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ranker.retrieval.engine import Filters
from ranker.retrieval.intent import NO_INTENT, QueryIntent
from ranker.retrieval.query_intent import ParsedQuery

RELAXABLE = ("price", "category")  # the parsed hard constraints, in the order they are given up
T = TypeVar("T")


@dataclass
class Understood:
    """A query after parsing: the parse, the text to embed, and what the search did with the constraints."""

    parsed: ParsedQuery | None  # None: parsing off, or no text
    text: str | None  # what the text encoder sees
    relaxed: list[str] = field(default_factory=list)  # parsed constraints dropped because nothing satisfied them

    @classmethod
    def of(cls, text: str | None, parsed: ParsedQuery | None) -> Understood:
        return cls(parsed, (parsed.text or text) if parsed is not None and parsed.has_intent else text)

    def filters(self, request: Filters | None, relaxed: tuple[str, ...] = ()) -> Filters | None:
        """The request's filters with the parsed constraints not in ``relaxed`` merged in (categories as a preference)."""
        parsed = self.parsed
        if parsed is None:
            return request
        price_min, price_max = (request.price_min, request.price_max) if request else (None, None)
        if "price" not in relaxed:
            price_min = _tighter(price_min, parsed.price_min, max)
            price_max = _tighter(price_max, parsed.price_max, min)
            if price_min is not None and price_max is not None and price_min > price_max:  # the parse contradicts the request
                price_min, price_max = (request.price_min, request.price_max) if request else (None, None)
        categories = request.categories if request else None
        preferred = None
        if categories is None and parsed.categories and "category" not in relaxed:
            preferred = tuple(parsed.categories)
        merged = Filters(categories=categories, price_min=price_min, price_max=price_max, prefer_categories=preferred)
        return merged if merged.any() else None

    def search(self, run: Callable[[Filters | None], list[T]], request: Filters | None, category_of: Callable[[T], str] | None = None) -> list[T]:
        """``run`` with the merged filters; when nothing is found, again with parsed constraints relaxed, one
        and then both (recorded in :attr:`relaxed`). With ``category_of`` (default: ``found.item.category``, as
        for :class:`ranker.retrieval.engine.Candidate`), a parsed price that leaves no item of the preferred
        categories is relaxed when that finds some."""
        found: list[T] = []
        tried: set[Filters | None] = set()
        for size in range(len(RELAXABLE) + 1):
            for dropped in itertools.combinations(RELAXABLE, size):
                filters = self.filters(request, dropped)
                if filters in tried:
                    continue
                tried.add(filters)
                found = run(filters)
                if found:
                    self.relaxed = [name for name in dropped if self._constrains(name)]
                    return self._preferred_over_price(found, filters, run, request, category_of)
        return found

    def _preferred_over_price(
        self, found: list[T], filters: Filters | None, run: Callable[[Filters | None], list[T]], request: Filters | None, category_of: Callable[[T], str] | None
    ) -> list[T]:
        """``found``, unless a parsed price left none of the preferred categories and dropping it finds some."""
        preferred = set(filters.prefer_categories or ()) if filters is not None else set()
        if not preferred or "price" in self.relaxed or not self._constrains("price"):
            return found
        category = category_of or (lambda candidate: candidate.item.category)  # type: ignore[attr-defined]
        if any(category(candidate) in preferred for candidate in found):
            return found
        without_price = self.filters(request, ("price",))
        if without_price == filters:  # the request's own bounds, never relaxed
            return found
        again = run(without_price)
        if any(category(candidate) in preferred for candidate in again):
            self.relaxed = ["price"]
            return again
        return found

    def _constrains(self, name: str) -> bool:
        parsed = self.parsed
        if parsed is None:
            return False
        return parsed.price_min is not None or parsed.price_max is not None if name == "price" else bool(parsed.categories)

    @property
    def intent(self) -> QueryIntent:
        """What the features see: the price range still applied, the brands and colours named."""
        parsed = self.parsed
        if parsed is None or not parsed.has_intent:
            return NO_INTENT
        price = "price" not in self.relaxed
        return QueryIntent(
            price_min=parsed.price_min if price else None,
            price_max=parsed.price_max if price else None,
            brands=tuple(parsed.brands),
            colours=tuple(parsed.colours),
        )

    def to_json(self) -> dict[str, Any]:
        """The response's ``query`` object and the event log's record of the parse."""
        return {"text": self.text, "parsed": self.parsed.to_json() if self.parsed is not None else None, "relaxed": list(self.relaxed)}


def _tighter(first: float | None, second: float | None, pick: Callable[[float, float], float]) -> float | None:
    if first is None:
        return second
    return first if second is None else pick(first, second)
