"""A four-item shop whose best slate is known by hand (``envs/SlateShoppingTiny-v0``).

One user wants trail shoe A. B is a different, cheaper shoe (cosine 0.85 to
A); C is a near-duplicate of A (cosine 0.98); D is a lamp. All preferences
are fixed (no brand, quality or budget noise), so with two positions the best
slate is ``[A, B]``: C next to A loses most of its attraction to the
near-duplicate discount, and D is irrelevant.
"""

from __future__ import annotations

import numpy as np

from envs.catalog import SimCatalog

TINY_CONFIG = {
    "n_candidates": 4,
    "slate_size": 2,
    "n_users": 1,
    "brand_affinity_scale": 0.0,
    "quality_scale": 0.0,
    "budget_spread": 0.0,
    "session_budget_noise": 0.0,
    "price_sensitivity_mean": 1.0,
    "price_sensitivity_shape": 1e9,
    "patience_mean": 0.9,
    "patience_concentration": 1e9,
    "history_impressions": 0.0,
}


def _unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def tiny_catalog() -> SimCatalog:
    a = _unit(1, 0, 0, 0)
    b = _unit(0.85, np.sqrt(1 - 0.85**2), 0, 0)
    c = _unit(0.98, 0, np.sqrt(1 - 0.98**2), 0)
    d = _unit(0.1, 0, 0, np.sqrt(1 - 0.01))
    return SimCatalog(
        item_ids=["A", "B", "C", "D"],
        titles=["Trail Runner Shoe", "Road Runner Shoe", "Trail Runner Shoe (copy)", "Desk Lamp"],
        category_codes=np.array([0, 0, 0, 1]),
        category_names=["Shoes", "Lamps"],
        brand_codes=np.array([0, 1, 0, 2]),
        brand_names=["Ridge", "Velo", "Lumen"],
        prices=np.array([80.0, 70.0, 80.0, 30.0]),
        text=np.stack([a, b, c, d]),
        has_image=np.zeros(4, dtype=bool),
        image=None,
        image_in_text=None,
        query_texts=["trail runner shoe"],
        query_items=np.array([0]),
        query_text=_unit(0.95, 0.2, 0.1, 0.05)[None, :],
        source="tiny",
    )
