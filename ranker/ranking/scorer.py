"""The policy network's weights as serving holds them: numpy arrays from the artifact, and the forward pass in numpy.

A serving process never imports torch (DESIGN.md, "Processes and defaults"): it reads ``policy.safetensors`` with
``safetensors.numpy`` and scores with :meth:`PolicyNetwork.forward`, the scorer half of
:class:`ranker.ranking.network.SlateNet` (the standardisations, two ReLU layers over each candidate's features, the
mean of the available candidates' features and the context, then a linear score; the value head is training's
only). A trainer that asks for the torch module (:meth:`PolicyNetwork.module`) gets a ``SlateNet`` built from the
same arrays on first use, and from then on that module is the weights' one source: whatever the trainer changes
is what :meth:`arrays` returns and the artifact saves.

One :class:`PolicyNetwork` may back several :class:`~ranker.ranking.policy.RankingPolicy` objects (a head-only
update shares its parent's network), so the numpy weights and the module are cached here, once per process.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ranker.ranking.standardise import CLIP, inverse_scales

SCORER_LAYERS = ("encoder.0", "encoder.2", "score")  # the SlateNet layers the score passes through, in order


class PolicyNetwork:
    """A :class:`~ranker.ranking.network.SlateNet`'s weights: numpy ``arrays`` (loaded from an artifact) or a live
    torch ``module`` (training), with the numpy forward pass that serving runs."""

    def __init__(self, architecture: dict[str, int], arrays: dict[str, np.ndarray] | None = None, module: Any = None):
        if arrays is None and module is None:
            raise ValueError("PolicyNetwork: give the weights' arrays or a SlateNet module")
        self._architecture = {key: int(value) for key, value in architecture.items()}
        self._arrays = arrays
        self._module = module
        self._weights: list[tuple[np.ndarray, np.ndarray]] | None = None

    @classmethod
    def of(cls, module: Any) -> PolicyNetwork:
        """The weights of a torch ``SlateNet`` (the module stays their source)."""
        return cls(module.architecture(), module=module)

    @property
    def n_features(self) -> int:
        return self._architecture["n_features"]

    @property
    def n_context(self) -> int:
        return self._architecture["n_context"]

    @property
    def hidden(self) -> int:
        return self._architecture["hidden"]

    def architecture(self) -> dict[str, int]:
        return dict(self._architecture)

    @property
    def has_module(self) -> bool:
        """Whether the torch module was built (then it, not the loaded arrays, holds the weights)."""
        return self._module is not None

    def module(self) -> Any:
        """The torch ``SlateNet`` (built from the arrays on first use: this imports torch)."""
        if self._module is None:
            from ranker.ranking.network import SlateNet

            self._module = SlateNet.from_arrays(self._architecture, self._arrays or {})
            self._arrays = None  # the module holds the weights now: a trainer's changes must be what serves and saves
            self._weights = None
        return self._module

    def arrays(self) -> dict[str, np.ndarray]:
        """Every weight and buffer by its ``state_dict`` name, float32 (what ``policy.safetensors`` holds)."""
        if self._module is not None:
            return self._module.arrays()
        return dict(self._arrays or {})

    def numpy_weights(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The standardisations as (mean, 1/scale) and the scorer's layers as (W^T, b), computed once."""
        if self._weights is None:
            arrays = self.arrays()
            weights = [(arrays[f"{name}.mean"].astype(np.float32), inverse_scales(arrays[f"{name}.scale"])) for name in ("feature_inputs", "context_inputs")]
            weights += [
                (np.ascontiguousarray(arrays[f"{layer}.weight"].T, dtype=np.float32), arrays[f"{layer}.bias"].astype(np.float32)) for layer in SCORER_LAYERS
            ]
            self._weights = weights
        return self._weights

    def forward(self, features: np.ndarray, context: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The network's scores [K] and its standardised features [K, F] (what the Bayesian head reads)."""
        (feature_mean, feature_inverse), (context_mean, context_inverse), (w1, b1), (w2, b2), (w3, b3) = self.numpy_weights()
        features = np.clip((np.asarray(features, dtype=np.float32) - feature_mean) * feature_inverse, -CLIP, CLIP)
        context = np.clip((np.asarray(context, dtype=np.float32) - context_mean) * context_inverse, -CLIP, CLIP)
        weights = np.asarray(mask, dtype=np.float32)[:, None]
        summary = (features * weights).sum(axis=0) / max(float(weights.sum()), 1.0)
        k = len(features)
        inputs = np.concatenate([features, np.broadcast_to(summary, (k, len(summary))), np.broadcast_to(context, (k, len(context)))], axis=1)
        hidden = np.maximum(inputs @ w1 + b1, 0.0)
        hidden = np.maximum(hidden @ w2 + b2, 0.0)
        return (hidden @ w3 + b3)[:, 0], features
