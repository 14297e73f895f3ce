"""Safe image decoding: formats and sources accepted, bad and hostile images refused."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ranker.catalog.images import MAX_IMAGE_PIXELS, ImageError, decode_image
from ranker.catalog.items import CatalogError


def encode(picture: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def noise_image(seed: int, size: tuple[int, int] = (24, 16), mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4}.get(mode)
    shape = (size[1], size[0]) if channels is None else (size[1], size[0], channels)
    return Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8), mode=mode)


@pytest.fixture(scope="module")
def bomb_png() -> bytes:
    """A 12000x12000 one-bit PNG: 144 Mpx that compress to a few KB."""
    data = encode(Image.new("1", (12_000, 12_000)), "PNG", optimize=False)
    assert len(data) < 100_000
    return data


# ------------------------------------------------------------------ accepted
def test_decode_png_bytes_exact_pixels() -> None:
    original = noise_image(seed=1)
    decoded = decode_image(encode(original, "PNG"))
    assert decoded.mode == "RGB"
    assert decoded.size == (24, 16)
    assert np.array_equal(np.asarray(decoded), np.asarray(original))


def test_decode_jpeg_bytes() -> None:
    original = Image.new("RGB", (32, 20), (10, 120, 240))
    decoded = decode_image(encode(original, "JPEG", quality=95))
    assert decoded.mode == "RGB" and decoded.size == (32, 20)
    assert np.abs(np.asarray(decoded).astype(int) - [10, 120, 240]).max() <= 4


def test_decode_grayscale_jpeg_becomes_rgb() -> None:
    decoded = decode_image(encode(Image.new("L", (16, 16), 77), "JPEG", quality=95))
    assert decoded.mode == "RGB"
    pixels = np.asarray(decoded).astype(int)
    assert np.abs(pixels - 77).max() <= 2


@pytest.mark.parametrize("as_path", [True, False], ids=["Path", "str"])
def test_decode_from_file(tmp_path: Path, as_path: bool) -> None:
    original = noise_image(seed=2)
    path = tmp_path / "photo.png"
    path.write_bytes(encode(original))
    decoded = decode_image(path if as_path else str(path))
    assert np.array_equal(np.asarray(decoded), np.asarray(original))


@pytest.mark.parametrize("prefix", ["data:image/png;base64,", ""], ids=["data_uri", "raw_base64"])
def test_decode_base64(prefix: str) -> None:
    original = noise_image(seed=3)
    text = prefix + base64.b64encode(encode(original)).decode()
    decoded = decode_image(text)
    assert np.array_equal(np.asarray(decoded), np.asarray(original))


def test_decode_pil_rgba_drops_alpha() -> None:
    original = noise_image(seed=4, mode="RGBA")
    decoded = decode_image(original)
    assert decoded.mode == "RGB" and decoded.size == original.size
    assert np.array_equal(np.asarray(decoded), np.asarray(original)[:, :, :3])


def test_decode_pil_grayscale_replicates_channels() -> None:
    original = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8), mode="L")
    decoded = np.asarray(decode_image(original))
    assert decoded.shape == (8, 8, 3)
    for channel in range(3):
        assert np.array_equal(decoded[:, :, channel], np.asarray(original))


def test_decode_rgba_png_bytes() -> None:
    original = noise_image(seed=5, mode="RGBA")
    decoded = decode_image(encode(original))
    assert decoded.mode == "RGB"
    assert np.array_equal(np.asarray(decoded), np.asarray(original)[:, :, :3])


def test_limits_are_inclusive() -> None:
    data = encode(Image.new("RGB", (100, 100)))
    assert decode_image(data, max_bytes=len(data), max_pixels=10_000).size == (100, 100)


# ------------------------------------------------------------------ rejected
def _png() -> bytes:
    return encode(noise_image(seed=6, size=(64, 64)))


# (case id, source maker, keyword arguments, fragments of the message)
BAD_SOURCES: list[tuple[str, Callable[[], object], dict, list[str]]] = [
    ("empty_bytes", lambda: b"", {}, ["image is empty"]),
    ("random_bytes", lambda: np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(), {}, ["not a recognised image format"]),
    ("text_bytes", lambda: b"<html>not an image</html>", {}, ["not a recognised image format"]),
    ("truncated_png", lambda: _png()[: len(_png()) // 2], {}, ["corrupt or truncated"]),
    ("png_header_only", lambda: _png()[:40], {}, []),
    ("truncated_jpeg", lambda: encode(noise_image(seed=7, size=(64, 64)), "JPEG")[:300], {}, ["corrupt or truncated"]),
    ("over_max_bytes", lambda: _png(), {"max_bytes": 1_000}, ["bytes, over the limit of 1,000"]),
    ("over_max_pixels", lambda: encode(Image.new("RGB", (200, 200))), {"max_pixels": 10_000}, ["200x200 = 40,000 pixels, over the limit of 10,000"]),
    ("pil_over_max_pixels", lambda: Image.new("RGB", (200, 200)), {"max_pixels": 10_000}, ["200x200", "over the limit of 10,000"]),
    ("pil_no_pixels", lambda: Image.new("RGB", (0, 0)), {}, ["no pixels", "0x0"]),
    ("bad_base64_uri", lambda: "data:image/png;base64,@@not base64@@", {}, ["not valid base64"]),
    ("missing_file", lambda: "/nonexistent/dir/photo.png", {}, ["file not found"]),
    ("missing_file_path", lambda: Path("/nonexistent/dir/photo.png"), {}, ["file not found"]),
]


@pytest.mark.parametrize("case, make_source, kwargs, fragments", BAD_SOURCES, ids=[row[0] for row in BAD_SOURCES])
def test_bad_image_rejected_naming_the_field(case: str, make_source: Callable[[], object], kwargs: dict, fragments: list[str]) -> None:
    source = make_source()
    with pytest.raises(ImageError) as caught:
        decode_image(source, field="query.image", **kwargs)
    message = str(caught.value)
    assert "field 'query.image'" in message
    assert caught.value.field == "query.image"
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    # an ImageError is a CatalogError, so catalog loaders and the API catch it as one
    assert isinstance(caught.value, CatalogError)


def test_default_field_name() -> None:
    with pytest.raises(ImageError, match=r"^field 'image': image is empty"):
        decode_image(b"")


def test_over_max_bytes_checked_before_decoding() -> None:
    # Not an image at all, but over the byte limit: the size is what is reported.
    with pytest.raises(ImageError, match="over the limit of 10"):
        decode_image(b"\x00" * 11, max_bytes=10)


def test_decompression_bomb_rejected_at_header(bomb_png: bytes) -> None:
    assert 12_000 * 12_000 > MAX_IMAGE_PIXELS
    started = time.perf_counter()
    with pytest.raises(ImageError) as caught:
        decode_image(bomb_png, field="query.image")
    elapsed = time.perf_counter() - started
    message = str(caught.value)
    assert "field 'query.image'" in message
    assert "bomb" in message or "over the limit" in message
    # Decoding 144 Mpx (then an RGB copy of 432 MB) takes seconds; the header check takes microseconds.
    assert elapsed < 1.0, elapsed


def test_decompression_bomb_rejected_with_a_larger_limit(bomb_png: bytes) -> None:
    # Raising max_pixels does not switch off Pillow's own bomb guard.
    with pytest.raises(ImageError, match="decompression bomb"):
        decode_image(bomb_png, max_pixels=10**9)


def test_image_between_our_limit_and_pillows_is_rejected_by_our_limit() -> None:
    # 64 Mpx: above MAX_IMAGE_PIXELS (40 Mpx), below Pillow's own warning threshold (~89 Mpx).
    data = encode(Image.new("1", (8_000, 8_000)))
    started = time.perf_counter()
    with pytest.raises(ImageError, match=r"8000x8000 = 64,000,000 pixels, over the limit of 40,000,000"):
        decode_image(data)
    assert time.perf_counter() - started < 1.0


def test_unsupported_source_type_is_an_image_error():
    with pytest.raises(ImageError, match="query.image"):
        decode_image(12345, field="query.image")  # type: ignore[arg-type]
