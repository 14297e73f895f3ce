"""The real encoders: shapes, normalisation, semantics, the label bridge and the CLIP path."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from ranker.catalog.images import ImageError
from ranker.devices import resolve_device
from ranker.retrieval.encoders import ClipEncoders, LabelBridge, imagenet_label_names, load_encoders


def disc(colour: str, size: int = 180) -> Image.Image:
    picture = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(picture).ellipse((30, 30, size - 30, size - 30), fill=colour)
    return picture


def stripes(colour: str, size: int = 180) -> Image.Image:
    picture = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(picture)
    for x in range(0, size, 20):
        draw.rectangle((x, 0, x + 9, size), fill=colour)
    return picture


def test_device_auto_is_cpu_without_cuda():
    import torch

    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_text_vectors_are_unit_float32_rows(encoders):
    vectors = encoders.encode_texts(["red running shoes", "a ceramic coffee mug", ""])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert vectors.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_text_similarity_follows_meaning(encoders):
    query, related, unrelated = encoders.encode_texts(["running shoes", "lightweight sneakers for jogging", "stainless steel saucepan"])
    assert query @ related > query @ unrelated + 0.2


def test_text_encoding_does_not_depend_on_batch(encoders):
    texts = ["wool sweater", "a much longer description of a leather office chair with wheels", "tent"]
    together = encoders.encode_texts(texts)
    alone = np.stack([encoders.encode_texts([text])[0] for text in texts])
    np.testing.assert_allclose(together, alone, atol=1e-4)


def test_pictures_embed_in_both_spaces(encoders):
    vectors = encoders.encode_pictures([disc("red"), stripes("blue")])
    assert vectors.image.shape == (2, 1280) and vectors.in_text.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors.image, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors.in_text, axis=1), 1.0, atol=1e-5)


def test_similar_pictures_are_closer_than_different_ones(encoders):
    vectors = encoders.encode_pictures([disc("red"), disc("darkred", size=200), stripes("blue")]).image
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]


def test_class_probabilities_sum_to_one(encoders):
    embedded = encoders.image.encode([disc("orange")])
    assert embedded.probabilities.shape == (1, 1000)
    assert embedded.probabilities.sum() == pytest.approx(1.0, abs=1e-4)


def test_label_bridge_is_the_probability_weighted_label_mix(encoders):
    bridge: LabelBridge = encoders.bridge
    probabilities = np.zeros((1, 1000), dtype=np.float32)
    probabilities[0, [1, 2]] = [0.75, 0.25]  # goldfish, great white shark
    mixed = bridge.to_text_space(probabilities)[0]
    expected = 0.75 * bridge.label_embeddings[1] + 0.25 * bridge.label_embeddings[2]
    np.testing.assert_allclose(mixed, expected / np.linalg.norm(expected), atol=1e-5)
    fish = encoders.encode_texts(["an aquarium fish"])[0]
    chair = encoders.encode_texts(["an office chair"])[0]
    assert mixed @ fish > mixed @ chair


def test_imagenet_labels_are_complete():
    names = imagenet_label_names()
    assert len(names) == 1000 and names[1] == "goldfish"


def test_corrupt_picture_is_a_clear_error(encoders):
    with pytest.raises(ImageError, match="image"):
        encoders.encode_pictures([b"definitely not a picture"])


def test_tiny_clip_checkpoint_loads_and_shares_one_space(tiny_clip_dir):
    clip = ClipEncoders(tiny_clip_dir, device="cpu")
    assert clip.text_dim == clip.image_dim == 16
    texts = clip.encode_texts(["red shoe", "blue mug"])
    pictures = clip.encode_pictures([disc("red"), stripes("blue")])
    assert texts.shape == (2, 16) and pictures.image.shape == (2, 16)
    np.testing.assert_array_equal(pictures.image, pictures.in_text)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    assert clip.describe()["text"]["id"].startswith("clip:")


def test_unknown_encoder_spec_names_the_value():
    with pytest.raises(ValueError, match="'word2vec'"):
        load_encoders("word2vec")


@pytest.mark.parametrize("texts", [["mug"], ["a", "a much longer text " * 12, "medium sized text"], ["x"] * 9])
def test_traced_text_model_matches_eager_model(encoders, texts):
    import torch

    text = encoders.text
    batch = text.tokenizer(texts, padding=True, truncation=True, max_length=text.max_length, return_tensors="pt")
    with torch.inference_mode():
        eager = text.model(**batch).last_hidden_state
        traced = text._forward(batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(traced, eager, atol=1e-4, rtol=1e-4)


def test_the_serving_tokenizer_gives_the_ids_of_transformers_tokenizer(encoders, demo_items):
    """ONNX serving tokenises with the `tokenizers` library (no transformers import): the same ids and mask, batch by batch."""
    text = encoders.text
    texts = [item.text_for_embedding() for item in demo_items[:120]] + ["Blue WOOL sweater, size M", "Café crème brûlée 50€", "中文 テスト", "word " * 80, "x"]
    for start in range(0, len(texts), 25):
        chunk = texts[start : start + 25]
        ids, mask = text.tokenize(chunk)
        reference = text.tokenizer(chunk, padding=True, truncation=True, max_length=text.max_length, return_tensors="np")
        np.testing.assert_array_equal(ids, reference["input_ids"])
        np.testing.assert_array_equal(mask, reference["attention_mask"])
    assert ids.dtype == mask.dtype == np.int64 and text.tokenize(["word " * 80])[0].shape == (1, text.max_length)
