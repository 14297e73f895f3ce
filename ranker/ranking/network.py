"""The ranking policy's network in torch: what training, the learner and the CUDA path run.

Serving never imports this module: :class:`ranker.ranking.policy.RankingPolicy` scores in numpy from the
artifact's arrays (:mod:`ranker.ranking.scorer`), and builds a :class:`SlateNet` from them only when a trainer asks
for ``policy.net``. Code that trains imports from here (``from ranker.ranking.network import SlateNet``); nothing
below imports this module back, so loading a policy never loads torch.

:class:`SlateNet` scores every candidate with one shared network from the candidate's features, the context and a
summary of the candidates still available (a DeepSets mean), so permuting the candidates permutes the scores. A
value head reads the mean of the candidates' hidden states.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ranker.ranking.schema import CONTEXT_FEATURES, FEATURES
from ranker.ranking.standardise import CLIP, CONSTANT_STD, MIN_SCALE, MIN_SCORE_SPREAD, inverse_scales


class Standardiser(nn.Module):
    """Per-column ``(x - mean) / scale``; the identity until :meth:`fit` (:mod:`ranker.ranking.standardise`)."""

    mean: torch.Tensor
    scale: torch.Tensor

    def __init__(self, n_columns: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_columns))
        self.register_buffer("scale", torch.ones(n_columns))

    def fit(self, rows: np.ndarray) -> Standardiser:
        """Set the statistics from ``rows`` [N, n_columns] (finite values; at least one row)."""
        values = np.asarray(rows, dtype=np.float64).reshape(-1, len(self.mean))
        if not len(values):
            raise ValueError("rows: no rows to fit the standardisation on")
        if not np.isfinite(values).all():
            raise ValueError("rows: non-finite values; standardisation needs finite features")
        with torch.no_grad():
            self.mean.copy_(torch.as_tensor(values.mean(axis=0)))
            std = values.std(axis=0)
            self.scale.copy_(torch.as_tensor(np.where(std < CONSTANT_STD, np.inf, np.maximum(std, MIN_SCALE))))
        return self

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return ((values - self.mean) / self.scale).clamp(-CLIP, CLIP)

    def numpy(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, 1 / scale) as float32 arrays, for serving's numpy forward pass."""
        return self.mean.detach().cpu().numpy().astype(np.float32), inverse_scales(self.scale.detach().cpu().numpy())


class SlateNet(nn.Module):
    """Shared per-candidate scorer and a pooled value head, over standardised inputs (:mod:`ranker.ranking.standardise`:
    the statistics are fitted before training and stored with the weights)."""

    def __init__(self, n_features: int = len(FEATURES), n_context: int = len(CONTEXT_FEATURES), hidden: int = 128):
        super().__init__()
        self.n_features, self.n_context, self.hidden = n_features, n_context, hidden
        self.feature_inputs = Standardiser(n_features)
        self.context_inputs = Standardiser(n_context)
        self.encoder = nn.Sequential(
            nn.Linear(2 * n_features + n_context, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
        )
        self.score = nn.Linear(hidden, 1)
        self.value = nn.Sequential(nn.Linear(hidden + n_context, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        with torch.no_grad():  # start near the uniform policy
            self.score.weight.mul_(0.01)
            self.score.bias.zero_()

    def forward(self, features: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features [B, K, F], context [B, C], mask [B, K] (1 = available) -> scores [B, K], values [B]."""
        features, context = self.feature_inputs(features), self.context_inputs(context)
        weights = mask.unsqueeze(-1)
        count = weights.sum(dim=1).clamp(min=1.0)
        summary = (features * weights).sum(dim=1) / count  # [B, F]: the candidates still available
        k = features.shape[1]
        inputs = torch.cat([features, summary.unsqueeze(1).expand(-1, k, -1), context.unsqueeze(1).expand(-1, k, -1)], dim=-1)
        hidden = self.encoder(inputs)
        scores = self.score(hidden).squeeze(-1)
        pooled = (hidden * weights).sum(dim=1) / count
        values = self.value(torch.cat([pooled, context], dim=-1)).squeeze(-1)
        return scores, values

    def architecture(self) -> dict[str, int]:
        return {"n_features": self.n_features, "n_context": self.n_context, "hidden": self.hidden}

    def arrays(self) -> dict[str, np.ndarray]:
        """The state dict as float32 numpy arrays (what the artifact's safetensors file holds)."""
        return {name: tensor.detach().cpu().contiguous().numpy() for name, tensor in self.state_dict().items()}

    @classmethod
    def from_arrays(cls, architecture: dict[str, int], arrays: dict[str, np.ndarray]) -> SlateNet:
        """A network in eval mode with the artifact's arrays as its weights (strict: every name must match)."""
        net = cls(**architecture)
        net.load_state_dict({name: torch.from_numpy(np.array(value, copy=True)) for name, value in arrays.items()})
        return net.eval()


def masked_log_softmax(scores: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log P(pick k) over the available candidates; -inf where masked."""
    logits = scores / temperature
    return torch.log_softmax(logits.masked_fill(mask <= 0, float("-inf")), dim=-1)


def normalised_scores_t(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """:func:`ranker.ranking.policy.normalised_scores` for a batch [B, K] in torch (differentiable: the gradient of a
    pure rescale is 0)."""
    weights = (mask > 0).to(scores.dtype)
    count = weights.sum(dim=-1, keepdim=True).clamp(min=1.0)
    mean = (scores * weights).sum(dim=-1, keepdim=True) / count
    centred = (scores - mean) * weights
    spread = ((centred**2).sum(dim=-1, keepdim=True) / count).sqrt()
    return torch.where(spread > MIN_SCORE_SPREAD, centred / spread.clamp(min=MIN_SCORE_SPREAD), torch.zeros_like(centred))


def logged_log_softmax(scores: torch.Tensor, mask: torch.Tensor, temperatures: torch.Tensor, normalised: torch.Tensor) -> torch.Tensor:
    """[B, K] the log-probabilities a ranking's decisions were sampled with: the scores standardised where the event
    says so (``normalised`` [B] bool, :data:`ranker.ranking.policy.SCORE_SCALE`; rankings logged before it: raw), over
    ``temperatures`` [B]."""
    scores = torch.where(normalised[:, None], normalised_scores_t(scores, mask), scores)
    return masked_log_softmax(scores / temperatures[:, None], mask)
