"""A harder real labeled set: tiles of real texture photos, half with a small drawn defect.

Owns: `write_defect_photos`, the set the train and select measurements use
beside the demo's easy textures (which every featurizer separates at ~100 %).
Each image is one **non-overlapping** tile of a real grey texture photo that
ships inside scikit-image (brick wall, grass, gravel, the Moon's surface;
`DEFECT_TEXTURES`), rotated / flipped and lightly jittered, written once; about
half the tiles get one small defect drawn into them (`DEFECT_KINDS`): a thin
bright scratch, a dark jagged crack, a soft stain, or a chipped-off patch.
A defect covers a few percent of the image at most and is drawn at the tile's
own sharpness (blurred like the upscaled photo around it), so a person sees it
when looking and a network must find a small local change on a busy texture.

Lives beside `imgfeat.dev.samples`, not in it: `samples` promises pictures with no
synthetic drawing at all, and a drawn defect is synthetic (on real pixels).
Same rules otherwise: offline (files inside installed wheels), deterministic
per seed, no two images share a source pixel (a split by content hash cannot
put two views of one region on both sides), no Spark or torch.
"""

from __future__ import annotations

import csv
import math
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from imgfeat.dev.samples import _jitter, _source, spark_path

#: Grey texture photos (512x512, in scikit-image's wheel), named by what they show.
DEFECT_TEXTURES: dict[str, str] = {"brick": "brick", "grass": "grass", "gravel": "gravel", "regolith": "moon"}
#: What can be wrong with a tile; "none" is the clean half.
DEFECT_KINDS: tuple[str, ...] = ("scratch", "crack", "stain", "chip")

_SIDE = (112, 161)  # output side range, px (the tiles are ~41 px: a 3-4x upscale)


def write_defect_photos(dest: Path, *, n: int = 600, seed: int = 0) -> Path:
    """Write `n` tiles as ``dest/<texture>/<texture>_<i>.jpg`` and ``dest/labels.csv``.

    labels.csv columns: ``path`` (as Spark's binaryFile lists it, ``file:/abs``),
    ``file`` (plain absolute path), ``defect`` (1 / 0: exactly ``n // 2`` have
    one), ``texture`` (the categorical column) and ``kind`` (the defect drawn,
    or ``none``). Textures take turns (``n / 4`` each); a texture's tiles are
    the cells of the finest grid of its photo with enough cells, each used once.
    The same (n, seed) gives the same files. Returns ``dest``.
    """
    dest = Path(dest).absolute()
    if n < 2:
        raise ValueError("n must be >= 2")
    names = sorted(DEFECT_TEXTURES)
    per_texture = {t: len(range(i, n, len(names))) for i, t in enumerate(names)}
    tiles = {t: _tiles(t, per_texture[t], np.random.default_rng([seed, zlib.crc32(t.encode())])) for t in names}
    flawed = set(np.random.default_rng([seed, 0xDEF]).permutation(n)[: n // 2].tolist())
    rows = []
    for i in range(n):
        texture = names[i % len(names)]
        rng = np.random.default_rng([seed, 0xDEF, i])
        image = _tile_image(texture, tiles[texture][i // len(names)], rng)
        kind = DEFECT_KINDS[int(rng.integers(len(DEFECT_KINDS)))] if i in flawed else "none"
        if kind != "none":
            image = _DRAW[kind](image, rng)
        folder = dest / texture
        folder.mkdir(parents=True, exist_ok=True)
        out = folder / f"{texture}_{i:04d}.jpg"
        image.save(out, "JPEG", quality=90)
        rows.append((spark_path(out), str(out), int(kind != "none"), texture, kind))
    with open(dest / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("path", "file", "defect", "texture", "kind"))
        writer.writerows(rows)
    return dest


def _tiles(texture: str, count: int, rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """`count` distinct (left, top, side) cells of the texture's photo, in random order."""
    width, height = _source(DEFECT_TEXTURES[texture]).size
    side = math.isqrt(width * height // max(count, 1))
    while (width // side) * (height // side) < count:
        side -= 1
    cols = width // side
    cells = rng.permutation((height // side) * cols)[:count]
    return [(int(c % cols) * side, int(c // cols) * side, side) for c in cells]


def _tile_image(texture: str, tile: tuple[int, int, int], rng: np.random.Generator) -> Image.Image:
    left, top, side = tile
    out = int(rng.integers(*_SIDE))
    image = _source(DEFECT_TEXTURES[texture]).resize(
        (out, out), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side)
    )
    image = image.rotate(90 * int(rng.integers(4)))
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return _jitter(image.convert("RGB"), rng, strength=0.2)


# --- defects: each draws a mask on a blank layer, then blends it into the photo ---------------


def _blend(image: Image.Image, mask: Image.Image, tone: float, blur: float) -> Image.Image:
    """Pull the pixels under `mask` toward `tone` (a multiple of the local colour: < 1 darker,
    > 1 lighter), the mask softened by `blur` px so the edge is as sharp as the photo."""
    alpha = np.asarray(mask.filter(ImageFilter.GaussianBlur(blur)), dtype=np.float32)[..., None] / 255
    pixels = np.asarray(image, dtype=np.float32)
    target = np.clip(pixels * tone if tone <= 1 else pixels + (255 - pixels) * (tone - 1), 0, 255)
    return Image.fromarray(np.round(pixels * (1 - alpha) + target * alpha).astype(np.uint8))


def _point(side: int, rng: np.random.Generator, margin: float = 0.15) -> np.ndarray:
    return rng.uniform(margin * side, (1 - margin) * side, size=2)


def _scratch(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A thin, slightly bent bright line, 20-35 % of the side long."""
    side = image.width
    start, angle = _point(side, rng), rng.uniform(0, math.pi)
    length = side * rng.uniform(0.2, 0.35)
    bend = rng.uniform(-0.08, 0.08) * length
    direction = np.array([math.cos(angle), math.sin(angle)])
    normal = np.array([-direction[1], direction[0]])
    points = [start + direction * length * t + normal * bend * math.sin(math.pi * t) for t in np.linspace(0, 1, 8)]
    mask = Image.new("L", image.size)
    ImageDraw.Draw(mask).line([tuple(p) for p in points], fill=int(rng.uniform(150, 210)), width=1)
    return _blend(image, mask, tone=rng.uniform(1.5, 1.7), blur=0.5)


def _crack(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A dark jagged line: a random walk of short segments, 15-30 % of the side end to end."""
    side = image.width
    point, angle = _point(side, rng), rng.uniform(0, 2 * math.pi)
    steps = int(rng.integers(6, 11))
    step = side * rng.uniform(0.15, 0.3) / steps
    points = [tuple(point)]
    for _ in range(steps):
        angle += rng.normal(0, 0.6)
        point = np.clip(point + step * np.array([math.cos(angle), math.sin(angle)]), 0, side - 1)
        points.append(tuple(point))
    mask = Image.new("L", image.size)
    ImageDraw.Draw(mask).line(points, fill=int(rng.uniform(170, 230)), width=int(rng.integers(1, 3)))
    return _blend(image, mask, tone=rng.uniform(0.3, 0.45), blur=0.6)


def _stain(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A soft darker blob, 6-10 % of the side across."""
    side = image.width
    cx, cy = _point(side, rng)
    rx, ry = side * rng.uniform(0.03, 0.05, size=2)
    mask = Image.new("L", image.size)
    ImageDraw.Draw(mask).ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=int(rng.uniform(150, 200)))
    return _blend(image, mask, tone=rng.uniform(0.45, 0.6), blur=side * 0.012)


def _chip(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A small irregular patch of material gone: flat and lighter, with a dark rim."""
    side = image.width
    centre = _point(side, rng)
    radius = side * rng.uniform(0.025, 0.045)
    angles = np.sort(rng.uniform(0, 2 * math.pi, size=int(rng.integers(5, 8))))
    polygon = [tuple(centre + radius * rng.uniform(0.6, 1.2) * np.array([math.cos(a), math.sin(a)])) for a in angles]
    rim = Image.new("L", image.size)
    ImageDraw.Draw(rim).polygon(polygon, outline=170, width=1)
    image = _blend(image, rim, tone=0.45, blur=0.5)
    fill = Image.new("L", image.size)
    ImageDraw.Draw(fill).polygon(polygon, fill=int(rng.uniform(150, 200)))
    return _blend(image, fill, tone=rng.uniform(1.3, 1.5), blur=0.6)


_DRAW = {"scratch": _scratch, "crack": _crack, "stain": _stain, "chip": _chip}
