"""A Hugging Face CLIP checkpoint as the encoder of both spaces (torch and transformers: imported only when used)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ranker.catalog.images import decode_image
from ranker.devices import device_name
from ranker.retrieval.encoding import EncoderInfo, ImageInput, batches, file_fingerprint, l2_normalise, preprocess_images


class ClipEncoder:
    """Any Hugging Face ``CLIPModel`` checkpoint: one shared space for text and pictures."""

    # OpenAI CLIP preprocessing, used when the checkpoint has no preprocessor_config.json.
    default_mean = (0.48145466, 0.4578275, 0.40821073)
    default_std = (0.26862954, 0.26130258, 0.27577711)

    def __init__(self, name_or_path: str | Path, *, device: str = "auto", batch_size: int = 64, max_length: int = 77):
        from transformers import AutoTokenizer, CLIPModel

        self.name_or_path = str(name_or_path)
        self.device = device_name(device)
        self.batch_size = batch_size
        self.model = CLIPModel.from_pretrained(self.name_or_path).to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(self.name_or_path)
        config = self.model.config
        self.max_length = min(max_length, int(config.text_config.max_position_embeddings))
        self.dim = int(config.projection_dim)
        self.image_size = int(config.vision_config.image_size)
        self.mean, self.std = self.default_mean, self.default_std
        local = Path(self.name_or_path)
        preprocessor = local / "preprocessor_config.json"
        if preprocessor.is_file():
            settings = json.loads(preprocessor.read_text())
            self.mean = tuple(settings.get("image_mean", self.mean))
            self.std = tuple(settings.get("image_std", self.std))
        weights = next((local / name for name in ("model.safetensors", "pytorch_model.bin") if (local / name).is_file()), None)
        fingerprint = file_fingerprint(weights) if weights else hashlib.sha256(config.to_json_string().encode()).hexdigest()[:16]
        self.info = EncoderInfo(id=f"clip:{local.name or self.name_or_path}", dim=self.dim, fingerprint=fingerprint)

    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str], *, progress: bool | None = None) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start, stop in batches(len(texts), self.batch_size, progress, "encoding text (CLIP)"):
            batch = self.tokenizer(list(texts[start:stop]), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
            batch = {key: value.to(self.device) for key, value in batch.items() if key in ("input_ids", "attention_mask")}
            out[start:stop] = _as_tensor(self.model.get_text_features(**batch)).float().cpu().numpy()
        return l2_normalise(out)

    @torch.inference_mode()
    def encode_images(self, images: Sequence[ImageInput], *, progress: bool | None = None) -> np.ndarray:
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        for start, stop in batches(len(images), self.batch_size, progress, "encoding images (CLIP)"):
            pixels = torch.from_numpy(preprocess_images([decode_image(image) for image in images[start:stop]], self.image_size, self.mean, self.std))
            out[start:stop] = _as_tensor(self.model.get_image_features(pixel_values=pixels.to(self.device))).float().cpu().numpy()
        return l2_normalise(out)


def _as_tensor(output: object) -> torch.Tensor:
    """transformers 5 may wrap projected features in a model output; take the embeddings."""
    if isinstance(output, torch.Tensor):
        return output
    for name in ("pooler_output", "text_embeds", "image_embeds"):
        value = getattr(output, name, None)
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(f"unexpected CLIP output type {type(output).__name__}")
