"""The demo shop's material textures: each material drawn as a small numpy pattern (weave, knit, metal, grain, ...)
that shades a product's colour."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

import numpy as np
from PIL import Image

from ranker.catalog.demo.tables import RGB


def texture(kind: str, colour: RGB, size: int, rng: np.random.Generator) -> Image.Image:
    """The item's colour with a material pattern added on top (additive, so it shows on black and white)."""
    shading = (48.0 * _PATTERNS[kind](size, rng)).astype(np.int16)
    pixels = shading[:, :, None] + np.asarray(colour, dtype=np.int16)[None, None, :]
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _grid(size: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Row and column coordinates (broadcastable) and the pixel unit of a 160 px picture."""
    y, x = np.ogrid[0:size, 0:size]
    return y.astype(np.float32), x.astype(np.float32), size / 160.0


def _full(pattern: np.ndarray, size: int) -> np.ndarray:
    return np.broadcast_to(pattern, (size, size)).astype(np.float32)


def _weave(size: int, rng: np.random.Generator) -> np.ndarray:
    y, x, u = _grid(size)
    cell = max(2.0, 3 * u)
    return _full(0.35 * ((np.floor(x / cell) + np.floor(y / cell)) % 2) - 0.2 + 0.15 * np.sin(y / (5 * u)), size)


def _knit(size: int, rng: np.random.Generator) -> np.ndarray:
    y, x, u = _grid(size)
    period = 6 * u
    return _full(0.55 * np.sin(2 * np.pi * (y / period + np.abs((x / period) % 1.0 - 0.5))), size)


def _twill(size: int, rng: np.random.Generator) -> np.ndarray:
    y, x, u = _grid(size)
    lines = 0.45 * np.sin(2 * np.pi * (x + y) / (5 * u) + rng.uniform(0, 2 * np.pi))
    return _full(lines, size) + 0.2 * rng.standard_normal((size, size)).astype(np.float32)


def _stripes(size: int, rng: np.random.Generator) -> np.ndarray:
    y, x, u = _grid(size)
    width = 9 * u
    return _full(np.where(np.floor((x + rng.uniform(0, 2 * width)) / width) % 2 == 0, 0.7, -0.25), size)


def _sheen(size: int, rng: np.random.Generator) -> np.ndarray:
    y, x, u = _grid(size)
    diagonal = (x + y) / (2 * size)
    centre = rng.uniform(0.3, 0.45)
    return _full(1.5 * np.exp(-(((diagonal - centre) / 0.07) ** 2)) - 0.8 * diagonal + 0.2, size)


def _metal(size: int, rng: np.random.Generator) -> np.ndarray:
    y, x, u = _grid(size)
    brushed = 0.25 * rng.standard_normal((size, 1)).astype(np.float32)
    centre = rng.uniform(0.3, 0.45)
    return _full(brushed + 1.4 * np.exp(-(((x / size - centre) / 0.09) ** 2)) - 0.5 * (x / size), size)


def _glossy(size: int, rng: np.random.Generator) -> np.ndarray:
    y, x, u = _grid(size)
    centre = rng.uniform(0.33, 0.42)
    highlight = 1.6 * np.exp(-(((x / size - centre) / 0.035) ** 2)) * (y < 0.8 * size)
    return _full(highlight - 0.6 * np.abs(x / size - 0.5) + 0.1, size)


def _speckle(size: int, rng: np.random.Generator) -> np.ndarray:
    noise = rng.random((size, size), dtype=np.float32)
    return np.where(noise < 0.1, -1.0, np.where(noise > 0.94, 0.8, 0.0)).astype(np.float32)


def _ripstop(size: int, rng: np.random.Generator) -> np.ndarray:
    y, x, u = _grid(size)
    cell = 8 * u
    return _full(np.where(((x % cell) < u) | ((y % cell) < u), -0.7, 0.1), size)


def _dots(size: int, rng: np.random.Generator) -> np.ndarray:
    y, x, u = _grid(size)
    cell = 6 * u
    holes = ((x % cell) - cell / 2) ** 2 + ((y % cell) - cell / 2) ** 2 < (1.6 * u) ** 2
    return _full(np.where(holes, -0.9, 0.15), size)


def _plain(size: int, rng: np.random.Generator) -> np.ndarray:
    y, x, u = _grid(size)
    return _full(0.2 - 0.4 * (y / size), size)


def _quilt(size: int, rng: np.random.Generator) -> np.ndarray:
    y, x, u = _grid(size)
    period = 14 * u
    return _full(0.7 * np.cos(2 * np.pi * y / period) - 0.1, size)


def _grain(size: int, rng: np.random.Generator) -> np.ndarray:
    y, x, u = _grid(size)
    waves = np.sin(2 * np.pi * y / (7 * u) + 2.5 * np.sin(x / (22 * u) + rng.uniform(0, 2 * np.pi)))
    return _full(0.5 * waves, size)


def _ribbed(size: int, rng: np.random.Generator) -> np.ndarray:
    y, x, u = _grid(size)
    return _full(0.45 * np.sin(2 * np.pi * y / (4 * u)), size)


def _velvet(size: int, rng: np.random.Generator) -> np.ndarray:
    y, x, u = _grid(size)
    cx, cy = rng.uniform(0.3, 0.5, size=2) * size
    distance = np.sqrt((x - cx) ** 2 + (y - cy) ** 2) / size
    return _full(0.8 - 1.8 * distance, size)


def _checker(size: int, rng: np.random.Generator) -> np.ndarray:
    y, x, u = _grid(size)
    cell = 4 * u
    return _full(0.6 * ((np.floor(x / cell) + np.floor(y / cell)) % 2) - 0.3 + 0.3 * np.sin((x - y) / (2 * u)), size)


_PATTERNS: Mapping[str, Callable[[int, np.random.Generator], np.ndarray]] = MappingProxyType(
    {
        "weave": _weave,
        "knit": _knit,
        "twill": _twill,
        "stripes": _stripes,
        "sheen": _sheen,
        "metal": _metal,
        "glossy": _glossy,
        "speckle": _speckle,
        "grid": _ripstop,
        "dots": _dots,
        "plain": _plain,
        "quilt": _quilt,
        "grain": _grain,
        "ribbed": _ribbed,
        "velvet": _velvet,
        "checker": _checker,
    }
)
