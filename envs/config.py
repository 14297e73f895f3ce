"""Configuration of the shopper simulation, validated by pydantic.

Every number the simulated shoppers follow lives here, with its default; the
equations that use them are in ``envs/README.md``. A configuration that
cannot work raises :class:`ConfigError` naming the parameter and its value.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ranker.interactions import EVENT_TYPES, REWARD_WEIGHTS, EventType

Probability = Field(ge=0.0, le=1.0)
QUERY_MODES = ("text", "image", "text+image")


class ConfigError(ValueError):
    """A simulator configuration that cannot work; the message names the parameter and its value."""

    def __init__(self, message: str, *, parameter: str, value: Any = None):
        super().__init__(message)
        self.parameter = parameter
        self.value = value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class ShopperConfig(_Strict):
    """The user model: population, utilities, click model, purchases and abandonment."""

    # population
    n_users: int = Field(2000, ge=1, description="simulated users in the world")
    interest_concentration: float = Field(0.3, gt=0, description="Dirichlet concentration of category interests (small: few categories per user)")
    brand_affinity_scale: float = Field(0.8, ge=0, description="std of a user's affinity for each brand")
    price_sensitivity_mean: float = Field(1.5, ge=0, description="mean of lambda_u, the utility lost per unit of log(price / budget) above budget")
    price_sensitivity_shape: float = Field(2.0, gt=0, description="Gamma shape of lambda_u")
    budget_spread: float = Field(0.35, ge=0, description="std of the user's log budget around the category's median price")
    session_budget_noise: float = Field(0.2, ge=0, description="std of the per-session log budget around the user's")
    patience_mean: float = Field(0.85, ge=0, le=1, description="mean of gamma_u, the chance to go on to the next position")
    patience_concentration: float = Field(12.0, gt=0, description="Beta concentration of gamma_u")
    activity_spread: float = Field(1.0, ge=0, description="std of the log activity of users (how often each one shops)")
    history_sessions_per_user: float = Field(
        0.0,
        ge=0,
        description="sessions per user played before the first episode (envs.history): returning users arrive with profiles, as the item counters arrive warm",
    )
    # items
    quality_scale: float = Field(0.6, ge=0, description="std of the latent item quality q_i that all users share")
    popularity_spread: float = Field(1.0, ge=0, description="std of log popularity: how often an item is what users look for")
    history_impressions: float = Field(150.0, ge=0, description="mean impressions per item before the simulation starts (warm counters)")
    cold_item_share: float = Field(
        0.25,
        ge=0,
        le=1,
        description="share of items that start with no history at all (new in the shop), as a live shop's counters do: worlds mix cold and warm items",
    )
    # utility
    relevance_weight: float = Field(8.0, ge=0, description="utility per unit of cosine between an item's text and the intended item's")
    category_weight: float = Field(1.0, ge=0, description="utility of being in the intended category")
    click_threshold: float = Field(8.5, description="tau_click: attraction = sigmoid(utility - tau_click)")
    cart_threshold: float = Field(8.0, description="tau_cart: P(add to cart | click) = sigmoid(utility - tau_cart)")
    purchase_threshold: float = Field(8.0, description="tau_buy: P(purchase | cart) = sigmoid(utility - tau_buy - price penalty)")
    # slate composition
    duplicate_threshold: float = Field(0.9, ge=0, lt=1, description="cosine above which an earlier item makes this one a near-duplicate")
    duplicate_penalty: float = Field(0.8, ge=0, le=1, description="share of attraction lost at cosine 1 to an item placed above")
    # examination
    click_model: Literal["pbm", "cascade", "dbn"] = Field("dbn", description="position-based, cascade, or dynamic Bayesian network")
    position_bias: float = Field(1.0, ge=0, description="eta of the position-based examination curve theta_k = (k + 1) ** -eta")
    examination: tuple[float, ...] | None = Field(None, description="explicit theta_k per position (position-based model); overrides position_bias")
    # queries
    query_modes: dict[str, float] = Field(
        default_factory=lambda: {"text": 0.7, "text+image": 0.2, "image": 0.1}, description="share of sessions per query kind when the catalog has pictures"
    )
    image_query_noise: float = Field(0.6, ge=0, description="norm of the noise added to the picture a user searches with")
    # stated intent ("red running shoes under 60")
    intent_share: float = Field(
        0.3, ge=0, le=1, description="share of text sessions whose query also states a price limit, a colour or a brand (the bank's intent phrases)"
    )
    intent_price_penalty: float = Field(4.0, ge=0, description="utility lost by an item priced above the limit the shopper typed")
    intent_colour_penalty: float = Field(2.0, ge=0, description="utility lost by an item of another colour than the one the shopper typed")
    intent_brand_penalty: float = Field(2.0, ge=0, description="utility lost by an item of another brand than the one the shopper typed")

    @field_validator("examination")
    @classmethod
    def _probabilities(cls, value: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if value is not None:
            if not value:
                raise ValueError("must list at least one probability")
            for position, theta in enumerate(value):
                if not 0.0 <= theta <= 1.0:
                    raise ValueError(f"theta at position {position} is {theta}, outside [0, 1]")
        return value

    @field_validator("query_modes")
    @classmethod
    def _modes(cls, value: dict[str, float]) -> dict[str, float]:
        for mode, share in value.items():
            if mode not in QUERY_MODES:
                raise ValueError(f"unknown query mode {mode!r}; use {', '.join(QUERY_MODES)}")
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"share of {mode!r} is {share}, outside [0, 1]")
        if value.get("text", 0.0) + value.get("text+image", 0.0) <= 0:
            raise ValueError("text or text+image needs a share above 0 (catalogs without pictures use those)")
        return value


RewardKind = EventType


class EnvConfig(_Strict):
    """The environment: slate shape, reward and the shopper model."""

    n_candidates: int = Field(100, ge=1, description="K: candidates retrieved per session, the action space")
    slate_size: int = Field(10, ge=1, description="L: positions in the slate, steps per episode")
    reward_weights: dict[str, float] = Field(default_factory=lambda: dict(REWARD_WEIGHTS), description="reward per outcome of the item just placed")
    purchase_value: Literal["flat", "price", "mix"] = Field(
        "flat",
        description="the objective (ranker.ranking.objective): flat = purchases, price = revenue (price / the catalog's median price), mix = half of each",
    )
    parse_queries: bool = Field(
        True,
        description="read the query's intent with the service's parser (ranker.retrieval.query_intent): a price range filters the candidates, "
        "brands and colours become features; False: the whole phrase is embedded as text, as a service without parsing would",
    )
    shopper: ShopperConfig = Field(default_factory=ShopperConfig)

    @field_validator("reward_weights")
    @classmethod
    def _weights(cls, value: dict[str, float]) -> dict[str, float]:
        for kind, weight in value.items():
            if kind not in EVENT_TYPES:
                raise ValueError(f"unknown outcome {kind!r}; use click, add_to_cart or purchase")
            if weight < 0:
                raise ValueError(f"weight of {kind!r} is {weight}; weights must be >= 0")
        return {kind: float(value.get(kind, 0.0)) for kind in EVENT_TYPES}

    @model_validator(mode="after")
    def _slate_fits(self) -> EnvConfig:
        if self.slate_size > self.n_candidates:
            raise ValueError(f"slate_size={self.slate_size} is more than n_candidates={self.n_candidates} (K must be >= L)")
        theta = self.shopper.examination
        if theta is not None and len(theta) < self.slate_size:
            raise ValueError(f"shopper.examination lists {len(theta)} positions for slate_size={self.slate_size}")
        return self


class SessionConfig(_Strict):
    """What a shopper does after a page without a purchase (:class:`envs.session.SessionShoppingEnv`); the rates and
    their sources are in that class's docstring and ``envs/README.md``."""

    max_pages: int = Field(5, ge=1, description="H: pages a session shows at most (page-ons and rephrasings both open a page)")
    page_on_rate: float = Field(0.25, ge=0, le=1, description="P(the shopper asks for the next page of the same query | no purchase on this page)")
    rephrase_rate: float = Field(0.15, ge=0, le=1, description="P(the shopper types a phrase nearer what they want | no purchase on this page)")
    page_discount: float = Field(1.0, ge=0, le=1, description="the reward of page p is weighted by page_discount ** (p - 1)")

    @model_validator(mode="after")
    def _rates(self) -> SessionConfig:
        if self.page_on_rate + self.rephrase_rate > 1.0:
            raise ValueError(f"page_on_rate + rephrase_rate = {self.page_on_rate + self.rephrase_rate} is more than 1 (leaving takes the rest)")
        return self


def make_session_config(**kwargs: Any) -> SessionConfig:
    """A :class:`SessionConfig`; raises :class:`ConfigError` naming the first bad parameter and its value."""
    try:
        return SessionConfig(**kwargs)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = ".".join(str(part) for part in error["loc"]) or "rephrase_rate"  # the only cross-field check
        value = error.get("input") if error["loc"] else kwargs.get("rephrase_rate")
        raise ConfigError(f"{name}: {error['msg'].removeprefix('Value error, ')} (got {value!r})", parameter=name, value=value) from None


def make_config(**kwargs: Any) -> EnvConfig:
    """An :class:`EnvConfig` from keyword arguments; shopper fields may be given flat or as ``shopper={...}``.

    Raises :class:`ConfigError` naming the first bad parameter and its value.
    """
    shopper = kwargs.pop("shopper", None) or {}
    shopper = shopper.model_dump() if isinstance(shopper, ShopperConfig) else dict(shopper)
    for name in list(kwargs):
        if name in ShopperConfig.model_fields:
            shopper[name] = kwargs.pop(name)
    try:
        return EnvConfig(**kwargs, shopper=ShopperConfig(**shopper))
    except ValidationError as exc:
        error = exc.errors()[0]
        name = ".".join(str(part) for part in error["loc"]) or "slate_size"  # the only cross-field check
        value = error.get("input")
        if not error["loc"]:
            value = kwargs.get("slate_size")
        message = error["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{name}: {message} (got {value!r})", parameter=name, value=value) from None
