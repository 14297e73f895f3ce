"""Gymnasium simulation of shoppers for training and evaluating ranking policies.

Importing ``envs`` registers the environments (``gymnasium.make("envs/SlateShopping-v0")``):

===================================  ========================================================
id                                   what
===================================  ========================================================
``envs/SlateShopping-v0``            demo shop, DBN-style clicks, K=100 candidates, L=10
``envs/SlateShoppingCascade-v0``     the same with the cascade click model
``envs/SlateShoppingPBM-v0``         the same with the position-based click model
``envs/SlateShoppingSmall-v0``       K=20, L=5, DBN: quick training runs and tests
``envs/SlateShoppingTiny-v0``        four items, two positions, best slate known (``envs.tiny``)
===================================  ========================================================

Every id takes keyword overrides: ``catalog`` (``"demo"``: the demo shop
``make serve`` builds under ``$RANKER_DATA_DIR`` or ``./data``, else the
compact demo world packaged with ``envs``, so a fresh install needs no prior
command; ``"compact"``; a data directory with a built index; or a
:class:`envs.catalog.SimCatalog`), ``n_candidates``,
``slate_size``, ``reward_weights``, ``purchase_value`` and any
:class:`envs.config.ShopperConfig` field. The user model is in
``envs/README.md``.
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

from envs.config import ConfigError, EnvConfig, ShopperConfig
from envs.shopping import InvalidActionError, SlateShoppingEnv
from envs.tiny import TINY_CONFIG

ENV_IDS: dict[str, dict[str, object]] = {
    "envs/SlateShopping-v0": {"catalog": "demo", "click_model": "dbn", "n_candidates": 100, "slate_size": 10},
    "envs/SlateShoppingCascade-v0": {"catalog": "demo", "click_model": "cascade", "n_candidates": 100, "slate_size": 10},
    "envs/SlateShoppingPBM-v0": {"catalog": "demo", "click_model": "pbm", "n_candidates": 100, "slate_size": 10},
    "envs/SlateShoppingSmall-v0": {"catalog": "demo", "click_model": "dbn", "n_candidates": 20, "slate_size": 5},
    "envs/SlateShoppingTiny-v0": {"catalog": "tiny", "click_model": "dbn", **TINY_CONFIG},
}

for _env_id, _kwargs in ENV_IDS.items():
    if _env_id not in registry:
        register(id=_env_id, entry_point="envs.shopping:SlateShoppingEnv", kwargs=dict(_kwargs))

__all__ = ["ENV_IDS", "ConfigError", "EnvConfig", "InvalidActionError", "ShopperConfig", "SlateShoppingEnv"]
