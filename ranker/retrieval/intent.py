"""What a parsed query asks of the items: :class:`QueryIntent` (a price range, brands, colours).

Retrieval produces it (:mod:`ranker.retrieval.query_intent` parses the text, :mod:`ranker.retrieval.understanding`
keeps the reading that finds items) and ranking reads it (:mod:`ranker.ranking.features`' intent columns), so it
lives here, in the lower of the two stages; ``ranker.ranking.features`` re-exports it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class QueryIntent:
    """What a parsed query asks of the items, as the features read it (names compared case-insensitively).

    A price range is also a hard filter on retrieval; brands and colours are soft: only features.
    """

    price_min: float | None = None
    price_max: float | None = None
    brands: tuple[str, ...] = ()
    colours: tuple[str, ...] = ()

    @property
    def has_price(self) -> bool:
        return self.price_min is not None or self.price_max is not None

    def price_distance(self, log_price: np.ndarray) -> np.ndarray:
        """[n] log distance of each price to the range's nearest bound: > 0 outside the range, <= 0 inside."""
        distances = []
        if self.price_max is not None:
            distances.append(log_price - math.log(max(self.price_max, 0.01)))
        if self.price_min is not None:
            distances.append(math.log(max(self.price_min, 0.01)) - log_price)
        return np.maximum.reduce(distances) if len(distances) > 1 else distances[0]


NO_INTENT = QueryIntent()
