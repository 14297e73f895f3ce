"""A Metarank-style history of a shop, invented for demos, tests and the import benchmark.

Shoppers search the catalog through the engine (its real retrieval order, ``slate_size`` results), each from a
pool of phrases drawn from the items (``"<colour> <category>"`` or ``"<brand> <category>"``), chosen Zipf-like so
a few queries are common and many are rare, as in search logs. A shopper examines position t with probability
``1/(t+1)``; an examined item is clicked with probability ``p_match`` when its category is the query's and
``p_other`` otherwise (times 1.5 for the shopper's favourite category); a click goes to the cart with 30%
and a cart to a purchase with 50%. The file starts with an ``item`` event for every catalog item, then the
rankings, each followed by its interactions (a few seconds later; the importer orders by time). Everything follows from ``seed``.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np

from ranker.retrieval.engine import SearchEngine

START_TS_MS = 1_788_000_000_000  # 2026-08-29, UTC


def write_demo_history(
    engine: SearchEngine,
    path: Path,
    *,
    n_rankings: int = 1000,
    n_users: int = 300,
    n_queries: int = 200,
    slate_size: int = 24,
    p_match: float = 0.35,
    p_other: float = 0.03,
    seed: int = 0,
) -> dict[str, int]:
    """Write the history to ``path`` (JSON lines); returns how many events of each kind it holds."""
    rng = np.random.default_rng(seed)
    items = engine.store.items()
    names = np.array(sorted({item.category for item in items}))
    queries, query_category = [], []
    for index in rng.choice(len(items), size=n_queries, replace=len(items) < n_queries):
        item = items[int(index)]
        qualifier = item.colour or item.brand or item.title.split()[0]
        queries.append(f"{qualifier} {item.category}".lower())
        query_category.append(item.category)
    results = [[candidate.item.item_id for candidate in engine.search(text, k=slate_size)] for text in queries]
    category_of = {item.item_id: item.category for item in items}
    favourite = rng.choice(names, size=n_users)
    popularity = 1.0 / np.arange(1, n_queries + 1) ** 1.1
    popularity /= popularity.sum()
    tally = {"item": 0, "ranking": 0, "interaction": 0}
    lines: list[str] = []
    for item in items:
        fields = [{"name": "title", "value": item.title}, {"name": "price", "value": item.price}, {"name": "category", "value": item.category}]
        fields += [{"name": name, "value": value} for name, value in (("brand", item.brand), ("color", item.colour)) if value]
        lines.append(json.dumps({"event": "item", "id": f"item-{item.item_id}", "item": item.item_id, "timestamp": str(START_TS_MS), "fields": fields}))
        tally["item"] += 1
    ts = START_TS_MS
    for _ in range(n_rankings):
        ts += int(rng.integers(200, 4000))
        user = int(rng.integers(n_users))
        query = int(rng.choice(n_queries, p=popularity))
        slate = results[query]
        ranking_id = str(uuid.UUID(int=int(rng.integers(2**63)) << 64 | tally["ranking"]))
        lines.append(
            json.dumps(
                {
                    "event": "ranking",
                    "id": ranking_id,
                    "timestamp": str(ts),
                    "user": f"user-{user}",
                    "session": f"session-{user}-{ts // 1_800_000}",
                    "fields": [{"name": "query", "value": queries[query]}],
                    "items": [{"id": item_id} for item_id in slate],
                }
            )
        )
        tally["ranking"] += 1
        for position, item_id in enumerate(slate):
            if rng.random() >= 1.0 / (position + 1):
                continue
            p = p_match if category_of[item_id] == query_category[query] else p_other
            if rng.random() >= p * (1.5 if category_of[item_id] == favourite[user] else 1.0):
                continue
            kinds = ["click"]
            if rng.random() < 0.3:
                kinds.append("add_to_cart")
                if rng.random() < 0.5:
                    kinds.append("purchase")
            for offset, kind in enumerate(kinds):
                event = {"event": "interaction", "id": f"{ranking_id}-{position}-{kind}", "ranking": ranking_id, "user": f"user-{user}"}
                event.update({"session": f"session-{user}-{ts // 1_800_000}", "timestamp": str(ts + 5000 * (offset + 1)), "type": kind, "item": item_id})
                lines.append(json.dumps(event))
                tally["interaction"] += 1
    Path(path).write_text("\n".join(lines) + "\n")
    return tally
