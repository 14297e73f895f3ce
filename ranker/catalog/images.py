"""Safe image decoding for catalog pictures and image queries.

Every image that enters the system goes through :func:`decode_image`, which
refuses oversized payloads, decompression bombs (judged from the header,
before any pixel is decoded) and corrupt files with an :class:`ImageError`
naming the field and what was wrong.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ranker.catalog.items import CatalogError, image_bytes

MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000  # 40 megapixels: above any product photo, far below a bomb


class ImageError(CatalogError):
    """An image that cannot be used (unreadable, corrupt, too large, a decompression bomb)."""


def decode_image(
    source: bytes | str | Path | Image.Image,
    *,
    field: str = "image",
    max_bytes: int = MAX_IMAGE_BYTES,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> Image.Image:
    """Decode ``source`` (bytes, a path, base64/data URI text, or a PIL image) to RGB."""
    if isinstance(source, Image.Image):
        _check_pixels(source.size, field, max_pixels)
        return source.convert("RGB")
    if isinstance(source, Path):
        source = str(source)
    if isinstance(source, str):
        try:
            payload = image_bytes(source)
        except CatalogError as exc:  # bad base64 or missing file: report it as this field's ImageError
            message = str(exc).replace("field 'image'", f"field '{field}'", 1)
            raise ImageError(message, field=field, value=exc.value) from None
    elif isinstance(source, (bytes, bytearray)):
        payload = bytes(source)
    else:
        raise ImageError(f"field '{field}': expected image bytes, base64 text or a path, got {type(source).__name__}", field=field)
    if len(payload) > max_bytes:
        raise ImageError(f"field '{field}': image is {len(payload):,} bytes, over the limit of {max_bytes:,}", field=field, value=len(payload))
    if not payload:
        raise ImageError(f"field '{field}': image is empty", field=field, value=0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            picture = Image.open(io.BytesIO(payload))
            _check_pixels(picture.size, field, max_pixels)
            picture.load()
            return picture.convert("RGB")
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"field '{field}': image rejected as a decompression bomb ({exc})", field=field) from None
    except UnidentifiedImageError:
        raise ImageError(f"field '{field}': not a recognised image format", field=field) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"field '{field}': corrupt or truncated image ({exc})", field=field) from None


def _check_pixels(size: tuple[int, int], field: str, max_pixels: int) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageError(f"field '{field}': image has no pixels ({width}x{height})", field=field, value=f"{width}x{height}")
    if width * height > max_pixels:
        raise ImageError(
            f"field '{field}': image is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,}",
            field=field,
            value=f"{width}x{height}",
        )
