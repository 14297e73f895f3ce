"""Click models: who looks at which position of a slate.

Each model answers two questions at a position: is it examined, and after it,
does the user go on? The outcome of an examined item (click, add to cart,
purchase) comes from the shopper model (``envs.shoppers``); the click model
only decides examination, so the three models share one utility model.

========== =========================== ===================================
model      P(examine position t)       after position t
========== =========================== ===================================
``pbm``    theta_t, independent        (no stopping)
``cascade`` 1 at t = 0; the user        stops after a click, else goes on
           goes on while scanning      with probability gamma
``dbn``    as cascade                  stops after a purchase (satisfied),
                                       else goes on with probability gamma
========== =========================== ===================================

``theta_t = (t + 1) ** -eta`` by default (``position_bias`` = eta), or an
explicit list. gamma is the user's patience. For the scanning models the
marginal examination follows ``e_0 = 1, e_{t+1} = e_t * c_t`` with the
continuation ``c_t`` of :meth:`ClickModel.continuation`.
"""

from __future__ import annotations

import numpy as np

from envs.config import ConfigError


class ClickModel:
    """Examination and continuation; subclasses differ in both."""

    name = "base"
    scans = True  # the user reads top-down and may stop

    def examined(self, position: int, active: bool, rng: np.random.Generator) -> bool:
        return active

    def goes_on(self, clicked: bool, purchased: bool, patience: float, rng: np.random.Generator) -> bool:
        raise NotImplementedError

    def continuation(self, attraction: np.ndarray, cart: np.ndarray, purchase: np.ndarray, patience: float) -> np.ndarray:
        """P(the user examines the next position | examined this one), per item."""
        raise NotImplementedError

    def examination(self, attraction: np.ndarray, cart: np.ndarray, purchase: np.ndarray, patience: float) -> np.ndarray:
        """Marginal P(examine position t) for a slate whose items (in order) have these probabilities."""
        continuation = self.continuation(attraction, cart, purchase, patience)
        return np.concatenate([[1.0], np.cumprod(continuation[:-1])])


class PositionBased(ClickModel):
    """PBM: position t is examined with probability theta_t, whatever happened above it."""

    name = "pbm"
    scans = False

    def __init__(self, theta: np.ndarray):
        self.theta = np.asarray(theta, dtype=np.float64)

    def examined(self, position: int, active: bool, rng: np.random.Generator) -> bool:
        return bool(rng.random() < self.theta[position])

    def goes_on(self, clicked: bool, purchased: bool, patience: float, rng: np.random.Generator) -> bool:
        return True

    def continuation(self, attraction: np.ndarray, cart: np.ndarray, purchase: np.ndarray, patience: float) -> np.ndarray:
        return np.ones(len(attraction))

    def examination(self, attraction: np.ndarray, cart: np.ndarray, purchase: np.ndarray, patience: float) -> np.ndarray:
        return self.theta[: len(attraction)].copy()


class Cascade(ClickModel):
    """Cascade with abandonment: scan down, stop at the first click, else go on with probability gamma."""

    name = "cascade"

    def goes_on(self, clicked: bool, purchased: bool, patience: float, rng: np.random.Generator) -> bool:
        return not clicked and bool(rng.random() < patience)

    def continuation(self, attraction: np.ndarray, cart: np.ndarray, purchase: np.ndarray, patience: float) -> np.ndarray:
        return patience * (1.0 - attraction)


class DependentClick(ClickModel):
    """DBN-style: several clicks per session; a purchase satisfies and ends it, else go on with gamma."""

    name = "dbn"

    def goes_on(self, clicked: bool, purchased: bool, patience: float, rng: np.random.Generator) -> bool:
        return not purchased and bool(rng.random() < patience)

    def continuation(self, attraction: np.ndarray, cart: np.ndarray, purchase: np.ndarray, patience: float) -> np.ndarray:
        return patience * (1.0 - attraction * cart * purchase)


def examination_curve(slate_size: int, *, position_bias: float = 1.0, examination: tuple[float, ...] | None = None) -> np.ndarray:
    """theta_t for t < slate_size: the explicit list, else (t + 1) ** -position_bias."""
    if examination is not None:
        return np.asarray(examination[:slate_size], dtype=np.float64)
    return (np.arange(slate_size) + 1.0) ** -position_bias


def make_click_model(name: str, slate_size: int, *, position_bias: float = 1.0, examination: tuple[float, ...] | None = None) -> ClickModel:
    if name == "pbm":
        return PositionBased(examination_curve(slate_size, position_bias=position_bias, examination=examination))
    if name == "cascade":
        return Cascade()
    if name == "dbn":
        return DependentClick()
    raise ConfigError(f"click_model: unknown click model {name!r}; use pbm, cascade or dbn", parameter="click_model", value=name)
