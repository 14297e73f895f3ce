"""The ranking policy: a permutation-equivariant scorer, a Plackett-Luce slate policy, and its artifact.

:class:`SlateNet` scores every candidate with one shared network from the
candidate's features, the context and a summary of the candidates still
available (a DeepSets mean), so permuting the candidates permutes the scores.
A masked softmax over the scores picks the item for each position; sampled
position by position that is a Plackett-Luce distribution over slates. A
value head reads the mean of the candidates' hidden states.

Serving (:class:`RankingPolicy`):

- ``greedy``: one forward pass on the request's features, sorted by score;
- ``sample`` with a temperature: position by position with the slate
  features updated after each placement (as in training), returning each
  position's log-probability for online learning and off-policy estimates.

Artifact: a directory with ``policy.safetensors`` and ``manifest.json``
(version, parent, creation time, feature schema and its hash, architecture,
training configuration, evaluation results, the weights' sha256). Loading
checks the hash of the weights and refuses another feature schema; nothing
is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ranker.ranking.features import CONTEXT_FEATURES, FEATURES, Observation, SlateFeatures, feature_schema, schema_hash
from ranker.ranking.standardise import CLIP, Standardiser

ARTIFACT_FORMAT = "ranker-policy"
ARTIFACT_FORMAT_VERSION = 1
WEIGHTS_FILE = "policy.safetensors"
MANIFEST_FILE = "manifest.json"


class PolicyError(ValueError):
    """A policy artifact that cannot be used here (missing, tampered with, or built for another schema)."""


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


def masked_log_softmax(scores: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log P(pick k) over the available candidates; -inf where masked."""
    logits = scores / temperature
    return torch.log_softmax(logits.masked_fill(mask <= 0, float("-inf")), dim=-1)


MAX_ENTROPY_SHARE = 0.8  # a position's entropy target is at most this share of log(candidates still available)
TEMPERATURE_RANGE = (1e-3, 1e3)


def entropies(scores: np.ndarray, temperatures: np.ndarray) -> np.ndarray:
    """[G] the entropy (nats) of softmax(scores / T) for each of ``temperatures`` [G]."""
    z = scores[None, :] / temperatures[:, None]
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -(np.exp(log_p) * log_p).sum(axis=1)


def temperature_for_entropy(scores: np.ndarray, available: np.ndarray, target: float) -> float:
    """The temperature at which the softmax over the available candidates' ``scores`` has entropy ``target`` nats
    (capped at ``MAX_ENTROPY_SHARE * log(n)``, so a few candidates are not made uniform). Entropy rises with the
    temperature, so three refining grids over log T bracket it, and the last bracket is interpolated."""
    values = np.asarray(scores, dtype=np.float64)[np.asarray(available, dtype=bool)]
    if len(values) < 2 or np.ptp(values) < 1e-9:
        return 1.0  # no choice, or every choice alike: any temperature gives the same distribution
    target = min(target, MAX_ENTROPY_SHARE * np.log(len(values)))
    low, high = np.log(TEMPERATURE_RANGE[0]), np.log(TEMPERATURE_RANGE[1])
    for size in (25, 9, 9):
        grid = np.linspace(low, high, size)
        h = entropies(values, np.exp(grid))
        index = int(np.clip(np.searchsorted(h, target), 1, size - 1))
        low, high = grid[index - 1], grid[index]
    h_low, h_high = entropies(values, np.exp(np.array([low, high])))
    share = 0.0 if h_high - h_low < 1e-12 else float(np.clip((target - h_low) / (h_high - h_low), 0.0, 1.0))
    return float(np.exp(low + share * (high - low)))


def cold_start_bonus(impressions: np.ndarray, n_slots: int, *, bonus: float, impressions_for_warm: int) -> np.ndarray:
    """[n_slots] logit bonuses for items with few impressions: ``bonus * max(0, 1 - impressions / impressions_for_warm)``.

    Cold-start exploration: while sampling, a new item's logit is raised by up to ``bonus`` (fading linearly to
    0 at ``impressions_for_warm`` impressions), so a product the policy has no history for is shown often enough to
    be learned about. The bonus is part of the logging policy only: the logged propensities include it, and the
    learner's importance weights correct for it, so the policy learns as if it had not been there.
    """
    out = np.zeros(n_slots, dtype=np.float64)
    share = 1.0 - np.asarray(impressions, dtype=np.float64) / max(impressions_for_warm, 1)
    out[: len(share)] = bonus * np.clip(share, 0.0, 1.0)
    return out


@dataclass
class Ranking:
    """A composed slate: candidate slots in display order, their scores and (when sampled) log-probabilities."""

    slots: list[int]
    scores: np.ndarray  # [K] the first pass's scores
    log_probs: list[float] | None = None
    temperature: float | None = None  # the first position's
    temperatures: list[float] | None = None  # each position's (entropy-targeted sampling)


@dataclass
class RankingPolicy:
    """A trained :class:`SlateNet` with its manifest: ranks requests, saves and loads itself."""

    net: SlateNet
    manifest: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.net.eval()
        self._weights: list[tuple[np.ndarray, np.ndarray]] | None = None

    def numpy_weights(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The standardisations as (mean, 1/scale) and the scorer's layers as (W^T, b): serving runs the small MLP
        without torch's per-op overhead."""
        if self._weights is None:
            layers = [self.net.encoder[0], self.net.encoder[2], self.net.score]
            self._weights = [self.net.feature_inputs.numpy(), self.net.context_inputs.numpy()]
            self._weights += [(layer.weight.detach().cpu().numpy().T.copy(), layer.bias.detach().cpu().numpy().copy()) for layer in layers]
        return self._weights

    @property
    def version(self) -> str:
        return str(self.manifest.get("version", "unsaved"))

    @property
    def objective(self) -> str:
        """What it was trained to optimise (:mod:`ranker.ranking.objective`); artifacts from before the choice: purchases."""
        return str(self.manifest.get("objective", "purchases"))

    # ---------------------------------------------------------------- acting
    def scores(self, features: np.ndarray, context: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Scores [K] for one observation: :meth:`SlateNet.forward`'s scores, computed in numpy."""
        (feature_mean, feature_inverse), (context_mean, context_inverse), (w1, b1), (w2, b2), (w3, b3) = self.numpy_weights()
        features = np.clip((np.asarray(features, dtype=np.float32) - feature_mean) * feature_inverse, -CLIP, CLIP)
        context = np.clip((np.asarray(context, dtype=np.float32) - context_mean) * context_inverse, -CLIP, CLIP)
        weights = np.asarray(mask, dtype=np.float32)[:, None]
        summary = (features * weights).sum(axis=0) / max(float(weights.sum()), 1.0)
        k = len(features)
        inputs = np.concatenate([features, np.broadcast_to(summary, (k, len(summary))), np.broadcast_to(context, (k, len(context)))], axis=1)
        hidden = np.maximum(inputs @ w1 + b1, 0.0)
        hidden = np.maximum(hidden @ w2 + b2, 0.0)
        return (hidden @ w3 + b3)[:, 0]

    def act(self, observation: dict[str, np.ndarray]) -> int:
        """The argmax action for a simulator observation (``features``, ``context``, ``mask``)."""
        scores = self.scores(observation["features"], observation["context"], observation["mask"])
        return int(np.argmax(np.where(observation["mask"].astype(bool), scores, -np.inf)))

    def __call__(self, env: Any, observation: dict[str, np.ndarray]) -> int:  # the envs.policies interface
        return self.act(observation)

    def rank(
        self,
        observation: Observation,
        slate_size: int,
        *,
        temperature: float | None = None,
        rng: np.random.Generator | None = None,
        target_entropy: float | None = None,
        bonus: np.ndarray | None = None,
    ) -> Ranking:
        """Compose a slate of ``slate_size`` from a request's features.

        ``temperature`` None or 0: greedy, one forward pass, sorted. Otherwise
        sampled position by position from the masked softmax at that
        temperature, with the slate features updated after each placement.
        With ``target_entropy`` (nats), each position's temperature is the one
        that gives its distribution that entropy (:func:`temperature_for_entropy`),
        and each is returned in ``temperatures``. ``bonus`` [K] is added to the
        tempered logits when sampling (:func:`cold_start_bonus`); the returned
        log-probabilities are those of the distribution actually sampled from.
        """
        slate = SlateFeatures(observation, slate_size)
        context = observation.context
        first = self.scores(slate.features, context, slate.available.astype(np.float32))
        n_valid = int(observation.valid.sum())
        length = min(slate_size, n_valid)
        if not temperature:
            order = np.argsort(-np.where(observation.valid, first, -np.inf), kind="stable")[:length]
            return Ranking(slots=[int(slot) for slot in order], scores=first)
        rng = rng or np.random.default_rng()
        slots: list[int] = []
        log_probs: list[float] = []
        temperatures: list[float] = []
        scores = first
        for position in range(length):
            if position:
                scores = self.scores(slate.features, context, slate.available.astype(np.float32))
            if target_entropy:
                temperature = temperature_for_entropy(scores, slate.available, target_entropy)
            temperatures.append(float(temperature))
            logits = np.where(slate.available, scores / temperature + (0.0 if bonus is None else bonus), -np.inf)
            log_p = logits - (logits.max() + np.log(np.exp(logits - logits.max()).sum()))
            cumulative = np.cumsum(np.exp(log_p))  # masked slots add 0, so side="right" never lands on one
            slot = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
            slots.append(slot)
            log_probs.append(float(log_p[slot]))
            slate.place(slot)
        return Ranking(
            slots=slots,
            scores=first,
            log_probs=log_probs,
            temperature=temperatures[0] if temperatures else temperature,
            temperatures=temperatures if target_entropy else None,
        )

    # --------------------------------------------------------------- storage
    def save(self, directory: Path, **manifest: Any) -> Path:
        """Write the artifact; ``manifest`` entries (training, evaluation, parent, version) are recorded."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in self.net.state_dict().items()}
        save_file(tensors, str(directory / (WEIGHTS_FILE + ".tmp")))  # then renamed: a reader never sees half a file
        os.replace(directory / (WEIGHTS_FILE + ".tmp"), directory / WEIGHTS_FILE)
        self.manifest = {
            "format": ARTIFACT_FORMAT,
            "format_version": ARTIFACT_FORMAT_VERSION,
            "version": manifest.pop("version", None) or self.manifest.get("version") or new_version(),
            "parent": manifest.pop("parent", self.manifest.get("parent")),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "feature_schema": feature_schema(),
            "schema_hash": schema_hash(),
            "architecture": self.net.architecture(),
            "weights": {"file": WEIGHTS_FILE, "sha256": sha256_of(directory / WEIGHTS_FILE)},
            **{key: value for key, value in self.manifest.items() if key in ("training", "evaluation")},
            **manifest,
        }
        temporary = directory / (MANIFEST_FILE + ".tmp")
        temporary.write_text(json.dumps(self.manifest, indent=2, default=_json_default))
        os.replace(temporary, directory / MANIFEST_FILE)
        return directory

    @classmethod
    def load(cls, directory: Path) -> RankingPolicy:
        directory = Path(directory)
        manifest_file = directory / MANIFEST_FILE
        if not manifest_file.exists():
            raise PolicyError(f"policy: no {MANIFEST_FILE} in {directory}")
        try:
            manifest = json.loads(manifest_file.read_text())
        except json.JSONDecodeError as exc:
            raise PolicyError(f"policy: {manifest_file} is not valid JSON ({exc})") from None
        if manifest.get("format") != ARTIFACT_FORMAT:
            raise PolicyError(f"policy: {directory} is not a ranker policy artifact (format {manifest.get('format')!r})")
        if manifest.get("schema_hash") != schema_hash():
            raise PolicyError(
                f"policy: {directory} (version {manifest.get('version')}) was trained on feature schema {manifest.get('schema_hash')} "
                f"(version {manifest.get('feature_schema', {}).get('version')}), but this service builds schema {schema_hash()} "
                f"(version {feature_schema()['version']}); retrain it with `ranker train`"
            )
        weights = directory / manifest.get("weights", {}).get("file", WEIGHTS_FILE)
        if not weights.exists():
            raise PolicyError(f"policy: weights file {weights} is missing")
        expected = manifest.get("weights", {}).get("sha256")
        if expected != sha256_of(weights):
            raise PolicyError(f"policy: {weights} does not match the sha256 in its manifest (corrupt or modified); refusing to load it")
        net = SlateNet(**manifest.get("architecture", {}))
        net.load_state_dict(load_file(str(weights)))
        return cls(net=net, manifest=manifest)


def new_version() -> str:
    return time.strftime("v%Y%m%d-%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
