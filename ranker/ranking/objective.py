"""What the policy optimises: the shop's choice of objective, one definition for every part.

A position's reward is ``w_click [click] + w_cart [add to cart] + w_purchase [purchase] * value``, with the
weights of :data:`ranker.interactions.REWARD_WEIGHTS` (0.1, 0.3, 1.0) and the purchase's ``value`` set by the
objective (``RANKER_OBJECTIVE``):

- ``purchases`` (default): every purchase is worth 1: conversion;
- ``revenue``: a purchase is worth its price relative to the catalog's median price (price-weighted purchases);
- ``mix``: half of each, ``0.5 + 0.5 * price / median``: conversion, with a lean toward revenue.

The simulator (``envs``, its ``purchase_value``), offline training (``ranker train --objective``), the online
learner (its rewards and its critic), the gate and the policy artifact (``manifest["objective"]``) all read
this module, so a policy is trained, gated and judged on one objective. numpy only.
"""

from __future__ import annotations

import numpy as np

OBJECTIVES = ("purchases", "revenue", "mix")
# the simulator's name for each objective's purchase value (envs.config.EnvConfig.purchase_value)
ENV_PURCHASE_VALUE = {"purchases": "flat", "revenue": "price", "mix": "mix"}


def purchase_values(objective: str, prices: np.ndarray, median_price: float) -> np.ndarray:
    """The value of a purchase of each item under ``objective``."""
    prices = np.asarray(prices, dtype=np.float64)
    if objective == "purchases":
        return np.ones(len(prices))
    relative = prices / max(float(median_price), 1e-9)
    if objective == "revenue":
        return relative
    if objective == "mix":
        return 0.5 + 0.5 * relative
    raise ValueError(f"objective: {objective!r} is not one of {', '.join(OBJECTIVES)}")


def objective_of_purchase_value(purchase_value: str) -> str:
    return {value: objective for objective, value in ENV_PURCHASE_VALUE.items()}[purchase_value]
