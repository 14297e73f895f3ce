"""The demo shop's pictures: each product drawn as a category silhouette in its colour and material texture
(Pillow), deterministic from a seed."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from ranker.catalog.demo.tables import CATEGORY_BY_NAME, COLOURS, MATERIALS, RGB, RGBA
from ranker.catalog.demo.textures import texture
from ranker.catalog.items import Item


def render_item_image(item: Item, rng: np.random.Generator, size: int = 160) -> Image.Image:
    """Draw ``item`` as an RGB ``size`` x ``size`` picture.

    The category decides the silhouette, ``attributes["colour"]`` its fill and
    ``attributes["material"]`` the texture; ``rng`` adds small changes in
    placement, size, proportions, mirroring and rotation so that no two
    pictures are identical, as with real product photos.
    """
    category = CATEGORY_BY_NAME[item.category]
    colour = COLOURS[str(item.attributes["colour"])]
    material = MATERIALS[str(item.attributes["material"])]
    background = _background(size, rng)
    pen = _Pen(size, colour, rng)
    _SHAPES[category.shape](pen, rng)
    product = pen.compose(texture(material.texture, colour, size, rng))
    if rng.random() < 0.5:
        product = product.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    # Nearest-neighbour keeps this fast, and the drawing is not anti-aliased anyway.
    product = product.rotate(float(rng.uniform(-8.0, 8.0)), resample=Image.Resampling.NEAREST)
    _draw_shadow(background, product, size)
    background.paste(product, (0, 0), product)
    return background


def _attach_images(items: list[Item], seed: int, images_dir: Path, image_size: int, *, show_progress: bool) -> list[Item]:
    """Render and save a PNG per item; returns the items with ``image`` set.

    Each picture gets its own generator seeded by ``(seed, item number)``, so
    a picture does not depend on which other items were drawn before it.
    """
    images_dir.mkdir(parents=True, exist_ok=True)
    with_images = []
    for index, item in enumerate(tqdm(items, desc="rendering product images", unit="img", disable=not show_progress)):
        picture = render_item_image(item, np.random.default_rng((seed, index)), image_size)
        picture.save(images_dir / f"{item.item_id}.png", format="PNG", optimize=False, compress_level=3)
        relative = Path(images_dir.name, f"{item.item_id}.png").as_posix()
        with_images.append(item.model_copy(update={"image": relative}))
    return with_images


def _background(size: int, rng: np.random.Generator) -> Image.Image:
    """A light studio backdrop whose tint and top-to-bottom falloff vary a little."""
    base = np.array([246.0, 244.0, 240.0]) + rng.uniform(-8.0, 6.0, size=3)
    falloff = np.linspace(0.0, rng.uniform(6.0, 16.0), size)[:, None, None]
    column = np.clip(base[None, None, :] - falloff, 0, 255).astype(np.uint8)
    return Image.fromarray(column).resize((size, size), Image.Resampling.NEAREST)


def _draw_shadow(background: Image.Image, product: Image.Image, size: int) -> None:
    """A flat floor shadow under the product, so it sits on the backdrop instead of floating."""
    box = product.getchannel("A").getbbox()
    if box is None:
        return
    x0, _, x1, y1 = box
    inset, height = (x1 - x0) * 0.08, size * 0.035
    shade = tuple(int(c * 0.86) for c in background.getpixel((size // 2, min(size - 1, y1))))
    ImageDraw.Draw(background).ellipse((x0 + inset, y1 - height, x1 - inset, y1 + height), fill=shade)


class _Pen:
    """Draws one product in unit coordinates (0..1, y down) onto three layers.

    ``body`` is a mask of the parts that take the item's colour and material;
    ``under`` and ``over`` hold trim in fixed colours (soles, wheels, lenses,
    stands) behind and in front of it. Splitting them lets one texture fill
    every coloured part and gives the body a clean outline.
    """

    INK = 255
    CUT = 0

    def __init__(self, size: int, colour: RGB, rng: np.random.Generator):
        self.size = size
        scale = rng.uniform(0.80, 0.95)
        self.sx = scale * rng.uniform(0.95, 1.05)
        self.sy = scale * rng.uniform(0.95, 1.05)
        self.dx, self.dy = rng.uniform(-0.035, 0.035, size=2)
        self.colour = colour
        luminance = (0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]) / 255
        self.dark: RGBA = (*(int(c * 0.55) for c in colour), 255)
        self.trim: RGBA = (38, 38, 42, 255) if luminance > 0.45 else (236, 234, 228, 255)
        self.ink: RGBA = (40, 40, 44, 255)
        self.metal: RGBA = (168, 170, 176, 255)
        self.light: RGBA = (248, 248, 244, 255)
        self.lens: RGBA = (36, 40, 50, 255)
        self._under = Image.new("RGBA", (size, size), (0, 0, 0, 0))
        self._mask = Image.new("L", (size, size), 0)
        self._over = Image.new("RGBA", (size, size), (0, 0, 0, 0))
        self.under = ImageDraw.Draw(self._under)
        self.body = ImageDraw.Draw(self._mask)
        self.over = ImageDraw.Draw(self._over)

    def p(self, u: float, v: float) -> tuple[float, float]:
        return (self.size * (0.5 + (u - 0.5) * self.sx + self.dx), self.size * (0.5 + (v - 0.5) * self.sy + self.dy))

    def pts(self, *uv: float) -> list[tuple[float, float]]:
        return [self.p(uv[i], uv[i + 1]) for i in range(0, len(uv), 2)]

    def box(self, u0: float, v0: float, u1: float, v1: float) -> tuple[float, float, float, float]:
        return (*self.p(u0, v0), *self.p(u1, v1))

    def w(self, length: float) -> int:
        """A line width or radius given in unit lengths."""
        return max(1, round(length * self.size * self.sx))

    def compose(self, texture: Image.Image) -> Image.Image:
        """Under-layer, textured body with a darker outline, over-layer: one RGBA picture."""
        product = self._under.copy()
        product.paste(texture, (0, 0), self._mask)
        product.paste(self.dark, (0, 0, self.size, self.size), self._mask.filter(ImageFilter.FIND_EDGES))
        product.alpha_composite(self._over)
        return product


def _draw_tshirt(pen: _Pen, rng: np.random.Generator) -> None:
    hem = 0.86 + rng.uniform(-0.03, 0.03)
    sleeve = rng.uniform(-0.03, 0.03)
    pen.body.polygon(
        pen.pts(
            0.40,
            0.18,
            0.22,
            0.22,
            0.07,
            0.38 + sleeve,
            0.17,
            0.47 + sleeve,
            0.28,
            0.39,
            0.28,
            hem,
            0.72,
            hem,
            0.72,
            0.39,
            0.83,
            0.47 + sleeve,
            0.93,
            0.38 + sleeve,
            0.78,
            0.22,
            0.60,
            0.18,
        ),
        fill=pen.INK,
    )
    pen.body.chord(pen.box(0.40, 0.09, 0.60, 0.28), 0, 180, fill=pen.CUT)
    pen.over.arc(pen.box(0.40, 0.09, 0.60, 0.28), 0, 180, fill=pen.dark, width=pen.w(0.02))


def _draw_jacket(pen: _Pen, rng: np.random.Generator) -> None:
    hem = 0.88 + rng.uniform(-0.03, 0.03)
    pen.body.polygon(
        pen.pts(
            0.40,
            0.14,
            0.25,
            0.19,
            0.14,
            0.40,
            0.08,
            0.84,
            0.19,
            0.85,
            0.27,
            0.45,
            0.28,
            hem,
            0.72,
            hem,
            0.73,
            0.45,
            0.81,
            0.85,
            0.92,
            0.84,
            0.86,
            0.40,
            0.75,
            0.19,
            0.60,
            0.14,
        ),
        fill=pen.INK,
    )
    pen.over.polygon(pen.pts(0.40, 0.14, 0.50, 0.30, 0.60, 0.14, 0.56, 0.11, 0.50, 0.22, 0.44, 0.11), fill=pen.dark)
    pen.over.line(pen.pts(0.50, 0.30, 0.50, hem), fill=pen.trim, width=pen.w(0.018))
    for side in (0.34, 0.58):
        pen.over.line(pen.pts(side, 0.62, side + 0.08, 0.62), fill=pen.dark, width=pen.w(0.015))
    pen.over.rectangle(pen.box(0.28, hem - 0.04, 0.72, hem), fill=pen.dark)


def _draw_dress(pen: _Pen, rng: np.random.Generator) -> None:
    flare = rng.uniform(-0.05, 0.05)
    waist = 0.42 + rng.uniform(-0.03, 0.03)
    for strap in (0.40, 0.57):
        pen.body.rectangle(pen.box(strap, 0.08, strap + 0.03, 0.22), fill=pen.INK)
    pen.body.polygon(pen.pts(0.38, 0.20, 0.62, 0.20, 0.60, waist, 0.78 + flare, 0.90, 0.22 - flare, 0.90, 0.40, waist), fill=pen.INK)
    pen.over.rectangle(pen.box(0.40, waist - 0.02, 0.60, waist + 0.02), fill=pen.dark)
    for fold in (0.42, 0.50, 0.58):
        pen.over.line(pen.pts(fold, waist + 0.06, fold + (fold - 0.5) * 1.2, 0.86), fill=pen.dark, width=pen.w(0.008))


def _draw_sneaker(pen: _Pen, rng: np.random.Generator) -> None:
    tongue = 0.28 + rng.uniform(-0.04, 0.04)
    pen.body.polygon(
        pen.pts(0.12, 0.70, 0.12, 0.44, 0.16, 0.38, 0.28, 0.40, 0.36, 0.34, 0.41, tongue, 0.48, tongue + 0.02, 0.66, 0.44, 0.80, 0.50, 0.88, 0.58, 0.88, 0.70),
        fill=pen.INK,
    )
    pen.body.ellipse(pen.box(0.66, 0.48, 0.91, 0.75), fill=pen.INK)
    pen.over.rounded_rectangle(pen.box(0.10, 0.68, 0.92, 0.78), radius=pen.w(0.04), fill=pen.trim)
    pen.over.line(pen.pts(0.10, 0.73, 0.92, 0.73), fill=pen.dark, width=pen.w(0.01))
    pen.over.rectangle(pen.box(0.12, 0.44, 0.16, 0.62), fill=pen.dark)
    for step in range(4):
        t = (step + 0.5) / 4.5
        u, v = 0.48 + 0.18 * t, tongue + 0.06 + (0.40 - tongue) * t
        pen.over.line(pen.pts(u - 0.025, v - 0.03, u + 0.025, v + 0.03), fill=pen.light, width=pen.w(0.018))
    pen.over.line(pen.pts(0.22, 0.62, 0.45, 0.54, 0.66, 0.62), fill=pen.trim, width=pen.w(0.025), joint="curve")


def _draw_backpack(pen: _Pen, rng: np.random.Generator) -> None:
    pocket = rng.uniform(-0.04, 0.04)
    pen.under.arc(pen.box(0.40, 0.08, 0.60, 0.30), 180, 360, fill=pen.ink, width=pen.w(0.03))
    for strap in (0.19, 0.76):
        pen.under.rounded_rectangle(pen.box(strap, 0.30, strap + 0.05, 0.80), radius=pen.w(0.02), fill=pen.ink)
    pen.body.rounded_rectangle(pen.box(0.24, 0.18, 0.76, 0.90), radius=pen.w(0.12), fill=pen.INK)
    pen.over.rounded_rectangle(pen.box(0.32, 0.54 + pocket, 0.68, 0.84), radius=pen.w(0.05), outline=pen.dark, width=pen.w(0.02))
    pen.over.line(pen.pts(0.34, 0.62 + pocket, 0.66, 0.62 + pocket), fill=pen.trim, width=pen.w(0.012))
    pen.over.arc(pen.box(0.28, 0.22, 0.72, 0.60), 200, 340, fill=pen.trim, width=pen.w(0.012))


def _draw_mug(pen: _Pen, rng: np.random.Generator) -> None:
    height = rng.uniform(-0.06, 0.04)
    pen.body.ellipse(pen.box(0.58, 0.38, 0.84, 0.70), outline=pen.INK, width=pen.w(0.06))
    pen.body.rounded_rectangle(pen.box(0.22, 0.28 - height, 0.66, 0.84), radius=pen.w(0.05), fill=pen.INK)
    pen.over.ellipse(pen.box(0.22, 0.24 - height, 0.66, 0.34 - height), fill=pen.dark, outline=pen.light, width=pen.w(0.015))


def _draw_lamp(pen: _Pen, rng: np.random.Generator) -> None:
    shade = rng.uniform(-0.05, 0.05)
    pen.under.rectangle(pen.box(0.485, 0.40, 0.515, 0.86), fill=pen.ink)
    pen.under.ellipse(pen.box(0.32, 0.82, 0.68, 0.92), fill=pen.ink)
    pen.body.polygon(pen.pts(0.33 - shade, 0.12, 0.67 + shade, 0.12, 0.82 + shade, 0.46, 0.18 - shade, 0.46), fill=pen.INK)
    pen.over.ellipse(pen.box(0.30, 0.43, 0.70, 0.52), fill=(255, 236, 160, 255))
    pen.over.ellipse(pen.box(0.44, 0.44, 0.56, 0.51), fill=(255, 250, 220, 255))


def _draw_headphones(pen: _Pen, rng: np.random.Generator) -> None:
    spread = rng.uniform(-0.03, 0.03)
    pen.body.arc(pen.box(0.18 - spread, 0.10, 0.82 + spread, 0.80), 180, 360, fill=pen.INK, width=pen.w(0.07))
    pen.body.line(pen.pts(0.21 - spread, 0.45, 0.21 - spread, 0.50), fill=pen.INK, width=pen.w(0.07))
    pen.body.line(pen.pts(0.79 + spread, 0.45, 0.79 + spread, 0.50), fill=pen.INK, width=pen.w(0.07))
    for left in (0.10 - spread, 0.70 + spread):
        pen.body.rounded_rectangle(pen.box(left, 0.46, left + 0.20, 0.80), radius=pen.w(0.07), fill=pen.INK)
    pen.over.rounded_rectangle(pen.box(0.27 - spread, 0.50, 0.33 - spread, 0.76), radius=pen.w(0.03), fill=pen.ink)
    pen.over.rounded_rectangle(pen.box(0.67 + spread, 0.50, 0.73 + spread, 0.76), radius=pen.w(0.03), fill=pen.ink)


def _draw_watch(pen: _Pen, rng: np.random.Generator) -> None:
    angle = rng.uniform(0, 2 * np.pi)
    pen.body.rounded_rectangle(pen.box(0.40, 0.02, 0.60, 0.98), radius=pen.w(0.04), fill=pen.INK)
    for hole in (0.80, 0.86, 0.92):
        pen.over.ellipse(pen.box(0.485, hole, 0.515, hole + 0.03), fill=pen.dark)
    pen.over.rectangle(pen.box(0.72, 0.47, 0.77, 0.53), fill=pen.metal)
    pen.over.ellipse(pen.box(0.26, 0.28, 0.74, 0.72), fill=pen.metal, outline=pen.ink, width=pen.w(0.01))
    pen.over.ellipse(pen.box(0.31, 0.33, 0.69, 0.67), fill=pen.light)
    for tick in range(12):
        a = tick * np.pi / 6
        pen.over.line(pen.pts(0.5 + 0.15 * np.cos(a), 0.5 + 0.15 * np.sin(a), 0.5 + 0.18 * np.cos(a), 0.5 + 0.18 * np.sin(a)), fill=pen.ink, width=1)
    pen.over.line(pen.pts(0.5, 0.5, 0.5 + 0.13 * np.cos(angle), 0.5 + 0.13 * np.sin(angle)), fill=pen.ink, width=pen.w(0.015))
    pen.over.line(pen.pts(0.5, 0.5, 0.5 + 0.09 * np.cos(angle * 3), 0.5 + 0.09 * np.sin(angle * 3)), fill=pen.ink, width=pen.w(0.02))


def _draw_sofa(pen: _Pen, rng: np.random.Generator) -> None:
    back = rng.uniform(-0.04, 0.04)
    for leg in (0.14, 0.83):
        pen.under.rectangle(pen.box(leg, 0.74, leg + 0.03, 0.84), fill=pen.ink)
    pen.body.rounded_rectangle(pen.box(0.14, 0.28 + back, 0.86, 0.60), radius=pen.w(0.05), fill=pen.INK)
    pen.body.rectangle(pen.box(0.14, 0.56, 0.86, 0.76), fill=pen.INK)
    for arm in (0.06, 0.80):
        pen.body.rounded_rectangle(pen.box(arm, 0.42, arm + 0.14, 0.78), radius=pen.w(0.05), fill=pen.INK)
    pen.over.line(pen.pts(0.20, 0.58, 0.80, 0.58), fill=pen.dark, width=pen.w(0.012))
    for seam in (0.40, 0.60):
        pen.over.line(pen.pts(seam, 0.34 + back, seam, 0.74), fill=pen.dark, width=pen.w(0.012))


def _draw_pan(pen: _Pen, rng: np.random.Generator) -> None:
    handle = rng.uniform(-0.04, 0.04)
    pen.under.line(pen.pts(0.55, 0.50, 0.96, 0.46 + handle), fill=pen.ink, width=pen.w(0.06))
    pen.under.ellipse(pen.box(0.90, 0.435 + handle, 0.94, 0.475 + handle), fill=pen.light)
    pen.body.ellipse(pen.box(0.04, 0.22, 0.62, 0.80), fill=pen.INK)
    pen.over.ellipse(pen.box(0.10, 0.28, 0.56, 0.74), fill=pen.dark)
    pen.over.arc(pen.box(0.14, 0.32, 0.52, 0.70), 200, 260, fill=(255, 255, 255, 110), width=pen.w(0.02))


def _draw_yoga_mat(pen: _Pen, rng: np.random.Generator) -> None:
    length = rng.uniform(-0.06, 0.04)
    pen.body.rectangle(pen.box(0.12 - length, 0.36, 0.78, 0.64), fill=pen.INK)
    pen.body.ellipse(pen.box(0.04 - length, 0.36, 0.20 - length, 0.64), fill=pen.INK)
    pen.body.ellipse(pen.box(0.70, 0.36, 0.90, 0.64), fill=pen.INK)
    for ring in (0.0, 0.03, 0.06, 0.09):
        pen.over.ellipse(pen.box(0.70 + ring * 0.7, 0.36 + ring, 0.90 - ring * 0.7, 0.64 - ring), outline=pen.dark, width=1)
    for strap in (0.30, 0.56):
        pen.over.rectangle(pen.box(strap, 0.34, strap + 0.05, 0.66), fill=pen.ink)


def _draw_sunglasses(pen: _Pen, rng: np.random.Generator) -> None:
    tall = rng.uniform(-0.04, 0.04)
    lenses = (pen.box(0.10, 0.36 - tall, 0.46, 0.66 + tall), pen.box(0.54, 0.36 - tall, 0.90, 0.66 + tall))
    for lens in lenses:
        pen.over.ellipse(lens, fill=pen.lens)
        pen.body.ellipse(lens, outline=pen.INK, width=pen.w(0.05))
    pen.body.arc(pen.box(0.42, 0.38, 0.58, 0.56), 180, 360, fill=pen.INK, width=pen.w(0.04))
    pen.body.line(pen.pts(0.11, 0.44, 0.03, 0.40), fill=pen.INK, width=pen.w(0.04))
    pen.body.line(pen.pts(0.89, 0.44, 0.97, 0.40), fill=pen.INK, width=pen.w(0.04))
    for lens in (0.16, 0.60):
        pen.over.line(pen.pts(lens, 0.46, lens + 0.08, 0.40), fill=(255, 255, 255, 120), width=pen.w(0.02))


def _draw_office_chair(pen: _Pen, rng: np.random.Generator) -> None:
    back = rng.uniform(-0.04, 0.04)
    pen.under.rectangle(pen.box(0.47, 0.58, 0.53, 0.80), fill=pen.metal)
    for foot in ((0.16, 0.88), (0.84, 0.88), (0.32, 0.94), (0.68, 0.94)):
        pen.under.line(pen.pts(0.5, 0.80, *foot), fill=pen.ink, width=pen.w(0.03))
        pen.under.ellipse(pen.box(foot[0] - 0.03, foot[1], foot[0] + 0.03, foot[1] + 0.05), fill=pen.ink)
    pen.under.rectangle(pen.box(0.48, 0.40, 0.52, 0.54), fill=pen.ink)
    pen.body.rounded_rectangle(pen.box(0.30 - back, 0.06, 0.70 + back, 0.44), radius=pen.w(0.08), fill=pen.INK)
    pen.body.rounded_rectangle(pen.box(0.24, 0.50, 0.76, 0.60), radius=pen.w(0.04), fill=pen.INK)
    for arm in (0.20, 0.74):
        pen.over.line(pen.pts(arm + 0.03, 0.56, arm + 0.03, 0.44, arm + 0.08 * (1 if arm < 0.5 else -1) + 0.03, 0.44), fill=pen.ink, width=pen.w(0.025))


def _draw_bicycle(pen: _Pen, rng: np.random.Generator) -> None:
    seat_tube = 0.42 + rng.uniform(-0.03, 0.03)
    rear, front, crank = (0.22, 0.64), (0.78, 0.64), (0.47, 0.66)
    seat, head = (seat_tube, 0.36), (0.70, 0.36)
    for hub in (rear, front):
        pen.under.ellipse(pen.box(hub[0] - 0.18, hub[1] - 0.18, hub[0] + 0.18, hub[1] + 0.18), outline=pen.ink, width=pen.w(0.03))
        pen.under.ellipse(pen.box(hub[0] - 0.02, hub[1] - 0.02, hub[0] + 0.02, hub[1] + 0.02), fill=pen.metal)
    pen.body.line(pen.pts(*rear, *seat, *crank, *rear), fill=pen.INK, width=pen.w(0.035), joint="curve")
    pen.body.line(pen.pts(*seat, *head, *crank), fill=pen.INK, width=pen.w(0.035), joint="curve")
    pen.body.line(pen.pts(*head, *front), fill=pen.INK, width=pen.w(0.03))
    pen.over.polygon(pen.pts(seat[0] - 0.07, 0.30, seat[0] + 0.05, 0.30, seat[0] + 0.02, 0.33, seat[0] - 0.06, 0.33), fill=pen.ink)
    pen.over.line(pen.pts(seat[0] - 0.01, 0.33, *seat), fill=pen.ink, width=pen.w(0.015))
    pen.over.line(pen.pts(0.69, 0.36, 0.68, 0.28, 0.76, 0.27), fill=pen.ink, width=pen.w(0.02))
    pen.over.ellipse(pen.box(crank[0] - 0.04, crank[1] - 0.04, crank[0] + 0.04, crank[1] + 0.04), outline=pen.ink, width=pen.w(0.015))


def _draw_tent(pen: _Pen, rng: np.random.Generator) -> None:
    apex = 0.50 + rng.uniform(-0.06, 0.06)
    pen.under.line(pen.pts(0.02, 0.82, 0.98, 0.82), fill=pen.ink, width=pen.w(0.01))
    pen.under.line(pen.pts(apex, 0.18, 0.02, 0.82), fill=pen.ink, width=1)
    pen.under.line(pen.pts(apex, 0.18, 0.98, 0.82), fill=pen.ink, width=1)
    pen.body.polygon(pen.pts(0.10, 0.82, apex, 0.18, 0.90, 0.82), fill=pen.INK)
    pen.over.polygon(pen.pts(apex, 0.18, 0.90, 0.82, 0.74, 0.82), fill=pen.dark)
    pen.over.polygon(pen.pts(0.38, 0.82, apex - 0.02, 0.44, apex + 0.02, 0.44, 0.58, 0.82), fill=pen.ink)
    pen.over.line(pen.pts(apex, 0.18, apex, 0.44), fill=pen.trim, width=pen.w(0.012))


def _draw_perfume(pen: _Pen, rng: np.random.Generator) -> None:
    width = rng.uniform(-0.05, 0.05)
    pen.over.rectangle(pen.box(0.44, 0.30, 0.56, 0.40), fill=pen.metal)
    pen.over.rounded_rectangle(pen.box(0.38, 0.12, 0.62, 0.31), radius=pen.w(0.03), fill=pen.ink)
    pen.body.rounded_rectangle(pen.box(0.24 - width, 0.38, 0.76 + width, 0.88), radius=pen.w(0.06), fill=pen.INK)
    pen.over.rectangle(pen.box(0.36, 0.56, 0.64, 0.70), fill=pen.light, outline=pen.dark)
    pen.over.line(pen.pts(0.31 - width, 0.44, 0.31 - width, 0.82), fill=(255, 255, 255, 140), width=pen.w(0.025))


def _draw_teapot(pen: _Pen, rng: np.random.Generator) -> None:
    belly = rng.uniform(-0.04, 0.04)
    pen.body.ellipse(pen.box(0.10, 0.40, 0.34, 0.70), outline=pen.INK, width=pen.w(0.045))
    pen.body.polygon(pen.pts(0.66, 0.62, 0.88, 0.34, 0.93, 0.36, 0.80, 0.74), fill=pen.INK)
    pen.body.ellipse(pen.box(0.22 - belly, 0.34, 0.78 + belly, 0.86), fill=pen.INK)
    pen.body.chord(pen.box(0.34, 0.26, 0.66, 0.44), 180, 360, fill=pen.INK)
    pen.body.ellipse(pen.box(0.46, 0.20, 0.54, 0.28), fill=pen.INK)
    pen.over.arc(pen.box(0.34, 0.26, 0.66, 0.44), 180, 360, fill=pen.dark, width=pen.w(0.012))
    pen.over.line(pen.pts(0.34, 0.35, 0.66, 0.35), fill=pen.dark, width=pen.w(0.015))


def _draw_vase(pen: _Pen, rng: np.random.Generator) -> None:
    belly = 0.22 + rng.uniform(-0.06, 0.05)
    neck = 0.07 + rng.uniform(-0.02, 0.02)
    belly_at = rng.uniform(0.55, 0.70)
    steps = np.linspace(0.14, 0.90, 14)
    half = neck + (belly - neck) * np.sin(np.pi * np.clip((steps - 0.14) / (2 * (belly_at - 0.14)), 0, 1)) ** 2
    half = np.where(steps > belly_at, neck + (belly - neck) - (steps - belly_at) * 0.35, half)
    outline = [(0.5 - h, v) for v, h in zip(steps, half)] + [(0.5 + h, v) for v, h in zip(steps[::-1], half[::-1])]
    pen.body.polygon([pen.p(u, v) for u, v in outline], fill=pen.INK)
    pen.body.rounded_rectangle(pen.box(0.5 - neck - 0.03, 0.10, 0.5 + neck + 0.03, 0.16), radius=pen.w(0.02), fill=pen.INK)
    pen.over.ellipse(pen.box(0.5 - neck, 0.11, 0.5 + neck, 0.15), fill=pen.dark)


def _draw_rug(pen: _Pen, rng: np.random.Generator) -> None:
    tall = rng.uniform(-0.05, 0.05)
    for v in np.linspace(0.26 - tall, 0.74 + tall, 12):
        pen.under.line(pen.pts(0.06, v, 0.94, v), fill=(222, 210, 184, 255), width=1)
    pen.body.rectangle(pen.box(0.12, 0.22 - tall, 0.88, 0.78 + tall), fill=pen.INK)
    pen.over.rectangle(pen.box(0.16, 0.27 - tall, 0.84, 0.73 + tall), outline=pen.trim, width=pen.w(0.03))
    pen.over.polygon(pen.pts(0.50, 0.34 - tall, 0.68, 0.50, 0.50, 0.66 + tall, 0.32, 0.50), fill=pen.dark, outline=pen.trim)
    pen.over.polygon(pen.pts(0.50, 0.43, 0.57, 0.50, 0.50, 0.57, 0.43, 0.50), fill=pen.trim)


def _draw_kettle(pen: _Pen, rng: np.random.Generator) -> None:
    taper = rng.uniform(-0.03, 0.04)
    pen.under.rounded_rectangle(pen.box(0.18, 0.80, 0.74, 0.90), radius=pen.w(0.02), fill=pen.ink)
    pen.under.arc(pen.box(0.10, 0.26, 0.46, 0.78), 90, 270, fill=pen.ink, width=pen.w(0.06))
    pen.body.polygon(pen.pts(0.62, 0.28, 0.82, 0.20, 0.84, 0.25, 0.66, 0.44), fill=pen.INK)
    pen.body.polygon(pen.pts(0.32 + taper, 0.24, 0.64 - taper, 0.24, 0.72, 0.82, 0.22, 0.82), fill=pen.INK)
    pen.over.ellipse(pen.box(0.32 + taper, 0.20, 0.64 - taper, 0.28), fill=pen.dark)
    pen.over.rounded_rectangle(pen.box(0.36, 0.40, 0.42, 0.72), radius=pen.w(0.02), fill=(200, 225, 240, 200))


def _draw_phone_case(pen: _Pen, rng: np.random.Generator) -> None:
    width = rng.uniform(-0.04, 0.03)
    pen.body.rounded_rectangle(pen.box(0.30 - width, 0.08, 0.70 + width, 0.92), radius=pen.w(0.08), fill=pen.INK)
    pen.over.rounded_rectangle(pen.box(0.35 - width, 0.13, 0.52, 0.32), radius=pen.w(0.04), fill=pen.ink)
    for u, v in ((0.39 - width / 2, 0.17), (0.39 - width / 2, 0.24), (0.46, 0.205)):
        pen.over.ellipse(pen.box(u, v, u + 0.055, v + 0.055), fill=pen.metal, outline=pen.light)
    pen.over.ellipse(pen.box(0.46, 0.56, 0.54, 0.64), outline=pen.dark, width=pen.w(0.012))


def _draw_bottle(pen: _Pen, rng: np.random.Generator) -> None:
    width = rng.uniform(-0.03, 0.03)
    pen.over.arc(pen.box(0.45, 0.05, 0.55, 0.16), 180, 360, fill=pen.ink, width=pen.w(0.02))
    pen.over.rounded_rectangle(pen.box(0.40, 0.10, 0.60, 0.22), radius=pen.w(0.02), fill=pen.ink)
    pen.body.rounded_rectangle(pen.box(0.35 - width, 0.20, 0.65 + width, 0.94), radius=pen.w(0.08), fill=pen.INK)
    pen.over.line(pen.pts(0.35 - width, 0.30, 0.65 + width, 0.30), fill=pen.dark, width=pen.w(0.012))
    pen.over.line(pen.pts(0.42 - width, 0.36, 0.42 - width, 0.86), fill=(255, 255, 255, 120), width=pen.w(0.025))


def _draw_umbrella(pen: _Pen, rng: np.random.Generator) -> None:
    spread = rng.uniform(-0.04, 0.04)
    pen.under.line(pen.pts(0.5, 0.14, 0.5, 0.82), fill=pen.ink, width=pen.w(0.02))
    pen.under.arc(pen.box(0.5, 0.76, 0.64, 0.90), 0, 180, fill=pen.ink, width=pen.w(0.03))
    left, right = 0.06 - spread, 0.94 + spread
    pen.body.pieslice(pen.box(left, 0.16, right, 0.84), 180, 360, fill=pen.INK)
    scallop = (right - left) / 5
    for k in range(5):
        centre = left + scallop * (k + 0.5)
        pen.body.ellipse(pen.box(centre - scallop / 2, 0.46, centre + scallop / 2, 0.54), fill=pen.CUT)
    for k in range(1, 5):
        pen.over.line(pen.pts(0.5, 0.17, left + scallop * k, 0.49), fill=pen.dark, width=pen.w(0.008))
    pen.over.line(pen.pts(0.5, 0.10, 0.5, 0.17), fill=pen.ink, width=pen.w(0.015))


_SHAPES: Mapping[str, Callable[[_Pen, np.random.Generator], None]] = MappingProxyType(
    {
        "tshirt": _draw_tshirt,
        "jacket": _draw_jacket,
        "dress": _draw_dress,
        "sneaker": _draw_sneaker,
        "backpack": _draw_backpack,
        "mug": _draw_mug,
        "lamp": _draw_lamp,
        "headphones": _draw_headphones,
        "watch": _draw_watch,
        "sofa": _draw_sofa,
        "pan": _draw_pan,
        "yoga_mat": _draw_yoga_mat,
        "sunglasses": _draw_sunglasses,
        "office_chair": _draw_office_chair,
        "bicycle": _draw_bicycle,
        "tent": _draw_tent,
        "perfume": _draw_perfume,
        "teapot": _draw_teapot,
        "vase": _draw_vase,
        "rug": _draw_rug,
        "kettle": _draw_kettle,
        "phone_case": _draw_phone_case,
        "bottle": _draw_bottle,
        "umbrella": _draw_umbrella,
    }
)
