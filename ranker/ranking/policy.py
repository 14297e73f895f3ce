"""The ranking policy: a permutation-equivariant scorer, a Plackett-Luce slate policy, and its artifact.

The network (:class:`ranker.ranking.network.SlateNet`, torch, for training)
scores every candidate with one shared network from the candidate's
features, the context and a summary of the candidates still available (a
DeepSets mean), so permuting the candidates permutes the scores. A masked
softmax over the scores picks the item for each position; sampled position
by position that is a Plackett-Luce distribution over slates.

This module is numpy only: serving imports no torch (DESIGN.md). The weights
are read with ``safetensors.numpy`` and scored by
:class:`ranker.ranking.scorer.PolicyNetwork`; ``policy.net`` builds the torch
module from them when a trainer asks. ``SlateNet`` and the torch helpers
(``masked_log_softmax``, ``normalised_scores_t``, ``logged_log_softmax``) are
imported from :mod:`ranker.ranking.network` by the code that trains.

Serving (:class:`RankingPolicy`):

- ``greedy``: one forward pass on the request's features, sorted by score;
- ``sample`` with a temperature: position by position with the slate
  features updated after each placement (as in training), returning each
  position's log-probability for online learning and off-policy estimates.

Sampling reads the scores *standardised over the candidates still available*
(:func:`normalised_scores`), and the temperature is in those units: a policy
whose scores are all multiplied by a constant samples exactly as before. So
an online update cannot "improve" by sharpening its scores, which the
entropy-targeted temperature would divide away at serving; only a change of
the scores' shape reaches the shoppers. With a calibrated Bayesian head
(:mod:`ranker.ranking.head`), the served scores are the head's, drawn once
per request (Thompson sampling); the log-probabilities are those of the
slate actually sampled.

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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from safetensors.numpy import load_file, save_file

from ranker.ranking.features import Observation, SlateFeatures, feature_schema, schema_hash
from ranker.ranking.head import HEAD_FILE, BayesianHead, HeadError
from ranker.ranking.scorer import PolicyNetwork
from ranker.ranking.standardise import MIN_SCORE_SPREAD

if TYPE_CHECKING:
    from ranker.ranking.network import SlateNet

ARTIFACT_FORMAT = "ranker-policy"
ARTIFACT_FORMAT_VERSION = 1
WEIGHTS_FILE = "policy.safetensors"
MANIFEST_FILE = "manifest.json"


class PolicyError(ValueError):
    """A policy artifact that cannot be used here (missing, tampered with, or built for another schema)."""


SCORE_SCALE = "z"  # logged with every ranking: its temperatures are in units of standardised scores (normalised_scores)


def normalised_scores(scores: np.ndarray, available: np.ndarray) -> np.ndarray:
    """[..., K] ``(score - mean) / std`` over the available candidates of each row (0 elsewhere): what sampling
    reads, so the served distribution does not change when every score is scaled or shifted (module docstring)."""
    available = np.asarray(available, dtype=bool)
    values = np.where(available, np.asarray(scores, dtype=np.float64), 0.0)
    count = np.maximum(available.sum(axis=-1, keepdims=True), 1)
    mean = values.sum(axis=-1, keepdims=True) / count
    centred = np.where(available, values - mean, 0.0)
    spread = np.sqrt((centred**2).sum(axis=-1, keepdims=True) / count)
    return np.where(spread > MIN_SCORE_SPREAD, centred / np.maximum(spread, MIN_SCORE_SPREAD), 0.0)


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


def temperatures_for_entropy(scores: np.ndarray, available: np.ndarray, target: float, *, rounds: int = 40, start: np.ndarray | None = None) -> np.ndarray:
    """[N] :func:`temperature_for_entropy` for every row of ``scores`` [N, K] (``available`` [N, K]): the gate judges
    thousands of logged decisions as serving would sample them. The same root, found by safeguarded Newton steps
    on ``u = log(1/T)`` (``dH/du = -Var_p(score / T)``) inside a bracket that bisection keeps, all rows at once;
    it agrees with the grid solver to far below the entropy's own tolerance (tested). ``start`` [N]: temperatures to
    begin from (a nearby solution converges in a few steps)."""
    scores = np.asarray(scores, dtype=np.float64)
    available = np.asarray(available, dtype=bool)
    counts = available.sum(axis=1)
    spread = np.where(available, scores, -np.inf).max(axis=1, initial=-np.inf) - np.where(available, scores, np.inf).min(axis=1, initial=np.inf)
    out = np.ones(len(scores))
    solvable = (counts >= 2) & (spread >= 1e-9)
    if not solvable.any():
        return out
    z, mask = scores[solvable], available[solvable]
    goal = np.minimum(target, MAX_ENTROPY_SHARE * np.log(counts[solvable]))
    low, high = -np.log(TEMPERATURE_RANGE[1]), -np.log(TEMPERATURE_RANGE[0])  # u = log(1/T): entropy falls as u grows
    lower, upper = np.full(len(z), low), np.full(len(z), high)
    u = np.zeros(len(z)) if start is None else np.clip(-np.log(np.asarray(start, dtype=np.float64)[solvable]), low, high)
    active = np.arange(len(z))  # rows still being solved
    for _ in range(rounds):
        zs, ms = z[active], mask[active]
        logits = np.where(ms, zs * np.exp(u[active])[:, None], -np.inf)
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        norm = weights.sum(axis=1)
        p = weights / norm[:, None]
        safe = np.where(ms, logits, 0.0)
        mean = (p * safe).sum(axis=1)
        entropy = np.log(norm) - mean
        variance = (p * safe**2).sum(axis=1) - mean**2
        gap = entropy - goal[active]
        solving = np.abs(gap) > 1e-10  # rows at the root stay where they are
        active, gap, variance = active[solving], gap[solving], variance[solving]
        if not len(active):
            break
        above = gap > 0  # too flat: u must grow
        lower[active] = np.where(above, u[active], lower[active])
        upper[active] = np.where(above, upper[active], u[active])
        newton = u[active] + gap / np.maximum(variance, 1e-300)
        inside = (newton > lower[active]) & (newton < upper[active])
        u[active] = np.where(inside, newton, 0.5 * (lower[active] + upper[active]))
    out[solvable] = np.exp(-u)
    return out


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
    scores: np.ndarray  # [K] the first pass's scores (the head's, when it serves)
    log_probs: list[float] | None = None
    temperature: float | None = None  # the first position's, in standardised-score units (SCORE_SCALE)
    temperatures: list[float] | None = None  # each position's (entropy-targeted sampling)


class RankingPolicy:
    """A trained policy network with its manifest (and Bayesian head): ranks requests, saves and loads itself.

    ``net``: a torch :class:`~ranker.ranking.network.SlateNet` (training) or a :class:`PolicyNetwork` (the
    artifact's arrays, as :meth:`load` reads them). Serving scores in numpy either way; the ``net`` attribute gives
    the torch module, built from the arrays on first use (which imports torch: trainers only)."""

    def __init__(self, net: SlateNet | PolicyNetwork, manifest: dict[str, Any] | None = None, head: BayesianHead | None = None):
        self.network = net if isinstance(net, PolicyNetwork) else PolicyNetwork.of(net.eval())
        self.manifest: dict[str, Any] = {} if manifest is None else manifest
        self.head = head  # the Bayesian head (ranker.ranking.head); None or inactive: the network's scores serve

    @property
    def net(self) -> SlateNet:
        """The torch network (training, the learner's updates); serving never needs it."""
        return self.network.module()

    def numpy_weights(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The standardisations as (mean, 1/scale) and the scorer's layers as (W^T, b): serving runs the small MLP
        in numpy (:mod:`ranker.ranking.scorer`)."""
        return self.network.numpy_weights()

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
        return self.forward(features, context, mask)[0]

    def forward(self, features: np.ndarray, context: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The network's scores [K] and its standardised features [K, F] (what the head reads), in numpy."""
        return self.network.forward(features, context, mask)

    def serving_head(self) -> BayesianHead | None:
        """The head when it changes what serves (calibrated), else None."""
        return self.head if self.head is not None and self.head.active else None

    def served_scores(self, features: np.ndarray, context: np.ndarray, mask: np.ndarray, theta: np.ndarray | None = None) -> np.ndarray:
        """[K] the scores a slate is composed from: the network's, or with a serving head ``theta . phi`` (``theta``:
        a draw, :meth:`BayesianHead.draw`; None: the posterior mean)."""
        scores, standardised = self.forward(features, context, mask)
        head = self.serving_head()
        if head is None:
            return scores
        return head.scores(normalised_scores(scores, np.asarray(mask) > 0), standardised, head.mean if theta is None else theta)

    def act(self, observation: dict[str, np.ndarray]) -> int:
        """The argmax action for a simulator observation (``features``, ``context``, ``mask``): the served scores
        at the posterior mean."""
        scores = self.served_scores(observation["features"], observation["context"], observation["mask"])
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

        ``temperature`` None or 0: greedy, one forward pass, sorted (by the head's
        posterior mean when it serves). Otherwise sampled position by position
        from the masked softmax of the standardised scores
        (:func:`normalised_scores`) at that temperature, with the slate features
        updated after each placement; a serving head is drawn once first
        (Thompson sampling). With ``target_entropy`` (nats), each position's
        temperature is the one that gives its distribution that entropy
        (:func:`temperature_for_entropy`), and each is returned in
        ``temperatures``. ``bonus`` [K] is added to the tempered logits when
        sampling (:func:`cold_start_bonus`); the returned log-probabilities are
        those of the distribution actually sampled from.
        """
        slate = SlateFeatures(observation, slate_size)
        context = observation.context
        head = self.serving_head()
        rng = rng or np.random.default_rng()
        theta = head.draw(rng) if head is not None and temperature else None  # greedy: the posterior mean
        first = self.served_scores(slate.features, context, slate.available.astype(np.float32), theta)
        n_valid = int(observation.valid.sum())
        length = min(slate_size, n_valid)
        if not temperature:
            order = np.argsort(-np.where(observation.valid, first, -np.inf), kind="stable")[:length]
            return Ranking(slots=[int(slot) for slot in order], scores=first)
        slots: list[int] = []
        log_probs: list[float] = []
        temperatures: list[float] = []
        scores = first
        for position in range(length):
            if position:
                scores = self.served_scores(slate.features, context, slate.available.astype(np.float32), theta)
            standardised = normalised_scores(scores, slate.available)
            if target_entropy:
                temperature = temperature_for_entropy(standardised, slate.available, target_entropy)
            temperatures.append(float(temperature))
            logits = np.where(slate.available, standardised / temperature + (0.0 if bonus is None else bonus), -np.inf)
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
        save_file(self.network.arrays(), str(directory / (WEIGHTS_FILE + ".tmp")))  # then renamed: a reader never sees half a file
        os.replace(directory / (WEIGHTS_FILE + ".tmp"), directory / WEIGHTS_FILE)
        self.manifest = {
            "format": ARTIFACT_FORMAT,
            "format_version": ARTIFACT_FORMAT_VERSION,
            "version": manifest.pop("version", None) or self.manifest.get("version") or new_version(),
            "parent": manifest.pop("parent", self.manifest.get("parent")),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "feature_schema": feature_schema(),
            "schema_hash": schema_hash(),
            "architecture": self.network.architecture(),
            "weights": {"file": WEIGHTS_FILE, "sha256": sha256_of(directory / WEIGHTS_FILE)},
            **{key: value for key, value in self.manifest.items() if key in ("training", "evaluation")},
            **manifest,
        }
        if self.head is not None:
            self.manifest["head"] = {**self.head.save(directory), "sha256": sha256_of(directory / HEAD_FILE)}
        else:
            self.manifest.pop("head", None)
            (directory / HEAD_FILE).unlink(missing_ok=True)
        temporary = directory / (MANIFEST_FILE + ".tmp")
        temporary.write_text(json.dumps(self.manifest, indent=2, default=_json_default))
        os.replace(temporary, directory / MANIFEST_FILE)
        return directory

    @classmethod
    def load(cls, directory: Path, *, reuse: RankingPolicy | None = None) -> RankingPolicy:
        """The artifact in ``directory``. ``reuse``: a loaded policy whose network to share when the weights are the
        same file (a head update changes only ``head.safetensors``)."""
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
        if reuse is not None and reuse.manifest.get("weights", {}).get("sha256") == expected:
            network = reuse.network  # a head update: the same network, loaded once per process
        else:
            network = PolicyNetwork(_architecture(manifest), arrays=_checked_arrays(load_file(str(weights)), _architecture(manifest), directory))
        head = None
        if "head" in manifest:
            head_file = directory / HEAD_FILE
            if not head_file.exists() or manifest["head"].get("sha256") != sha256_of(head_file):
                raise PolicyError(f"policy: {head_file} is missing or does not match the sha256 in its manifest; refusing to load it")
            try:
                head = BayesianHead.load(
                    directory, network.n_features, meta={key: value for key, value in manifest["head"].items() if key in ("rows_added", "skipped", "solve")}
                )
            except (HeadError, OSError, KeyError, ValueError) as exc:
                raise PolicyError(f"policy: {directory} (version {manifest.get('version')}): {exc}") from None
        return cls(net=network, manifest=manifest, head=head)


def _architecture(manifest: dict[str, Any]) -> dict[str, int]:
    """The network's shape as the manifest records it (SlateNet's defaults for what it leaves out)."""
    from ranker.ranking.features import CONTEXT_FEATURES, FEATURES

    return {"n_features": len(FEATURES), "n_context": len(CONTEXT_FEATURES), "hidden": 128, **manifest.get("architecture", {})}


def _checked_arrays(arrays: dict[str, np.ndarray], architecture: dict[str, int], directory: Path) -> dict[str, np.ndarray]:
    """The weights file's arrays, when the scorer's are there in the shapes ``architecture`` gives them (the torch
    module's strict load checks the rest when a trainer builds it)."""
    f, c, h = architecture["n_features"], architecture["n_context"], architecture["hidden"]
    expected = {
        "feature_inputs.mean": (f,),
        "feature_inputs.scale": (f,),
        "context_inputs.mean": (c,),
        "context_inputs.scale": (c,),
        "encoder.0.weight": (h, 2 * f + c),
        "encoder.0.bias": (h,),
        "encoder.2.weight": (h, h),
        "encoder.2.bias": (h,),
        "score.weight": (1, h),
        "score.bias": (1,),
    }
    wrong = [name for name, shape in expected.items() if name not in arrays or tuple(arrays[name].shape) != shape]
    if wrong:
        raise PolicyError(f"policy: {directory}: the weights do not fit its architecture {architecture} ({', '.join(wrong)})")
    return {name: np.asarray(array, dtype=np.float32) for name, array in arrays.items()}


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
