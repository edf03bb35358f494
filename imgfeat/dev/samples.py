"""Real sample photos for the demo, tests and benchmarks, made offline.

Owns: turning the real photographs that ship inside packages this project
already installs (scikit-image's ``skimage.data`` photos, its ``lfw_subset``
faces / non-faces, scikit-learn's two sample JPEGs) into

- a small *labeled* photo folder, ``dest/<label>/<name>.<fmt>`` plus
  ``dest/labels.csv`` (`write_labeled_photos`), and
- a large folder of realistic-size JPEGs for throughput benchmarks
  (`write_bench_photos`),

both deterministic for a given seed (the same seed gives the same files with
the same Pillow / libjpeg build), whatever the number of worker processes.

Must not: reach the network (no ``pooch`` fetchers, no model / data hubs; only
sources that are files inside installed wheels), commit or ship binaries,
import Spark or torch, or draw synthetic pictures (noise, shapes, digits):
odd, broken and exotic files are ``tests/imagegen.py``'s job.

No PyPI package was found that ships a labeled set of natural photos inside
its wheel (the "cats / dogs / cifar / flowers / imagenet" dataset packages
only hold download code), so the labeled classes are built from single real photos:
each class is **non-overlapping tiles** of one photo (each tile then rotated /
flipped and colour-jittered, and written once), except ``face`` / ``nonface``,
which are scikit-image's 100 + 100 real 25x25 crops from Labeled Faces in the
Wild, upscaled, each used once. No two images share a source pixel, so a split
of the images (e.g. by content hash) cannot leak one region of a photo into
both train and test, as overlapping random crops would. Classes are named
after what the photo shows; see `LABELED_CLASSES`.
"""

from __future__ import annotations

import csv
import functools
import math
import os
import zlib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageEnhance

#: label -> (source photo, what it shows). Every source ships inside scikit-image
#: (a dev dependency) or scikit-learn (a main dependency).
LABELED_CLASSES: dict[str, tuple[str, str]] = {
    "cat": ("chelsea", "a tabby cat (skimage chelsea, 451x300)"),
    "coffee": ("coffee", "a cup of coffee on a saucer (skimage coffee, 600x400)"),
    "rocket": ("rocket", "a rocket on its launch pad (skimage rocket, 640x427)"),
    "astronaut": ("astronaut", "an astronaut portrait with a flag (skimage astronaut, 512x512)"),
    "motorcycle": ("motorcycle", "a motorcycle in a room (skimage stereo_motorcycle left, 741x500)"),
    "temple": ("china", "a Chinese temple (sklearn china.jpg, 640x427)"),
    "flower": ("flower", "a flower close-up (sklearn flower.jpg, 640x427)"),
    "galaxies": ("hubble_deep_field", "the Hubble deep field (skimage, 1000x872)"),
    "tissue": ("immunohistochemistry", "stained tissue under a microscope (skimage, 512x512)"),
    "retina": ("retina", "a fundus photo of a retina (skimage, 1411x1411)"),
    "brick": ("brick", "a brick wall texture, grey (skimage brick, 512x512)"),
    "grass": ("grass", "a grass texture, grey (skimage grass, 512x512)"),
    "gravel": ("gravel", "a gravel texture, grey (skimage gravel, 512x512)"),
    "face": ("lfw_faces", "100 real 25x25 face crops from LFW (skimage lfw_subset)"),
    "nonface": ("lfw_nonfaces", "100 real 25x25 non-face crops (skimage lfw_subset)"),
}

#: Default labeled subset: three real texture photos (brick wall, grass, gravel).
#: ImageNet CNN embeddings separate them (~100% held-out, even when train and
#: test crops come from disjoint parts of the photos) while 16x16 grey pixels sit
#: near chance (~40%). Object classes ("cat", "coffee", "rocket", ...) are
#: separable from raw pixels too (~98%), since each is crops of one photo.
DEFAULT_CLASSES: tuple[str, ...] = ("brick", "grass", "gravel")

#: Colour photos used for benchmark images (all ship inside installed wheels).
BENCH_SOURCES: tuple[str, ...] = (
    "chelsea",
    "astronaut",
    "coffee",
    "rocket",
    "motorcycle",
    "china",
    "flower",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
)

#: Benchmark image sizes (width, height), landscape; a quarter come out portrait.
BENCH_SIZES: tuple[tuple[int, int], ...] = (
    (640, 480),
    (800, 600),
    (1024, 768),
    (1280, 720),
    (1280, 960),
    (1440, 1080),
    (1600, 1200),
)

_FORMATS = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "bmp": "BMP", "tif": "TIFF", "tiff": "TIFF"}
_TEXTURES = frozenset({"brick", "grass", "gravel"})
_INLINE_BELOW = 64  # fewer bench images than this are written in-process
_MIN_TILE = 24  # smallest labeled tile side, in source pixels


def spark_path(path: Path) -> str:
    """The ``path`` value Spark's ``binaryFile`` source lists for a local file.

    Spark prints local files as ``file:/abs/path`` (one slash), not the
    ``file:///abs/path`` form of `Path.as_uri`.
    """
    return "file:" + str(Path(path).absolute())


def write_labeled_photos(
    dest: Path,
    *,
    classes: Sequence[str] | None = None,
    per_class: int = 100,
    seed: int = 0,
    fmt: str = "jpg",
) -> Path:
    """Write ``per_class`` real photos per class as ``dest/<class>/<class>_<i>.<fmt>``.

    Also writes ``dest/labels.csv`` with columns ``path`` (as Spark's
    ``binaryFile`` lists it, ``file:/abs/...``), ``file`` (plain absolute path)
    and ``label``, one row per image, sorted by label then name. Images are
    160-256 px on the long side. Photo classes are ``per_class``
    non-overlapping tiles of their photo (the more tiles, the smaller each:
    512x512 textures give 51 px tiles at 100 per class), so ``per_class`` is
    at most the number of tiles of side >= 24 px the photo holds (and 100 for
    ``face`` / ``nonface``). A class's images depend only on (seed, class,
    per_class), not on which other classes are asked for. Returns ``dest``.
    """
    dest = Path(dest).absolute()
    classes = tuple(DEFAULT_CLASSES if classes is None else classes)
    unknown = [c for c in classes if c not in LABELED_CLASSES]
    if unknown:
        raise ValueError(f"unknown classes {unknown}; known: {sorted(LABELED_CLASSES)}")
    if len(set(classes)) != len(classes):
        raise ValueError(f"duplicate classes in {classes}")
    if per_class < 1:
        raise ValueError("per_class must be >= 1")
    ext, pil_format = _format(fmt)

    rows: list[tuple[str, str, str]] = []
    for label in sorted(classes):
        folder = dest / label
        folder.mkdir(parents=True, exist_ok=True)
        class_key = zlib.crc32(label.encode())
        regions = _regions(label, per_class, np.random.default_rng([seed, class_key]))
        for i, region in enumerate(regions):
            rng = np.random.default_rng([seed, class_key, i])
            image = _labeled_image(label, region, rng)
            out = folder / f"{label}_{i:04d}.{ext}"
            _save(image, out, pil_format)
            rows.append((spark_path(out), str(out), label))

    with open(dest / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("path", "file", "label"))
        writer.writerows(rows)
    return dest


def write_bench_photos(dest: Path, n: int = 2000, *, seed: int = 0, workers: int | None = None) -> list[Path]:
    """Write ``n`` realistic-size JPEGs (quality 90) as ``dest/bench_<i>.jpg``.

    Each is a random crop of a real colour photo (see `BENCH_SOURCES`),
    resized to one of `BENCH_SIZES` (640x480 up to 1600x1200, a quarter
    portrait), flipped half the time, with mild colour jitter and sensor-like
    grain so the JPEGs compress like camera photos rather than smooth
    upscales. Image ``i`` depends only on (seed, i), so the output is the same
    whatever ``workers`` is (default: all CPUs; 1 writes in-process).
    Returns the paths in index order.
    """
    dest = Path(dest).absolute()
    dest.mkdir(parents=True, exist_ok=True)
    if n < 0:
        raise ValueError("n must be >= 0")
    paths = [dest / f"bench_{i:05d}.jpg" for i in range(n)]
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers <= 1 or n < _INLINE_BELOW:
        for i in range(n):
            _write_bench_one(str(dest), seed, i)
        return paths
    chunk = max(1, math.ceil(n / (workers * 8)))
    spans = [(start, min(n, start + chunk)) for start in range(0, n, chunk)]
    # spawn: safe next to a JVM / torch threads in the parent, unlike fork.
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        list(pool.map(_write_bench_span, [str(dest)] * len(spans), [seed] * len(spans), spans))
    return paths


# --- sources -----------------------------------------------------------------------


@functools.cache
def _source(name: str) -> Image.Image:
    """A source photo as an RGB (or L for grey textures) PIL image; cached per process."""
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        return Image.fromarray(load_sample_image(f"{name}.jpg"))
    import skimage.data

    if name == "motorcycle":
        array = skimage.data.stereo_motorcycle()[0]
    else:
        array = getattr(skimage.data, name)()
    return Image.fromarray(np.ascontiguousarray(array))


@functools.cache
def _lfw() -> np.ndarray:
    """scikit-image's LFW subset: 200 x 25 x 25 uint8, faces first, then non-faces."""
    import skimage.data

    return np.round(skimage.data.lfw_subset() * 255).astype(np.uint8)


# --- labeled images ----------------------------------------------------------------


#: Where a labeled image comes from: an LFW crop index, or a (left, top, side) tile of a photo.
Region = int | tuple[int, int, int]


def _regions(label: str, count: int, rng: np.random.Generator) -> list[Region]:
    """`count` distinct sources for a class: LFW crop indices, or tile boxes of its photo.

    Tiles are the cells of the finest grid of equal squares that has at least
    `count` cells; a random `count` of them are used, each once.
    """
    source = LABELED_CLASSES[label][0]
    if source in ("lfw_faces", "lfw_nonfaces"):
        if count > 100:
            raise ValueError(f"{label}: at most 100 distinct images (LFW crops), asked for {count}")
        return [int(i) for i in rng.permutation(100)[:count]]
    width, height = _source(source).size
    side = math.isqrt(width * height // count)
    while side >= _MIN_TILE and (width // side) * (height // side) < count:
        side -= 1
    if side < _MIN_TILE:
        raise ValueError(f"{label}: the {width}x{height} photo holds fewer than {count} tiles of {_MIN_TILE} px")
    cols = width // side
    cells = rng.permutation((height // side) * cols)[:count]
    return [(int(c % cols) * side, int(c // cols) * side, side) for c in cells]


def _labeled_image(label: str, region: Region, rng: np.random.Generator) -> Image.Image:
    if isinstance(region, int):
        return _lfw_image(LABELED_CLASSES[label][0] == "lfw_nonfaces", region, rng)
    left, top, side = region
    long_side = int(rng.integers(160, 257))
    image = _source(LABELED_CLASSES[label][0]).resize(
        (long_side, long_side), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side)
    )
    if label in _TEXTURES:
        image = image.rotate(90 * int(rng.integers(4)))
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return _jitter(image.convert("RGB"), rng, strength=0.25)


def _lfw_image(nonface: bool, crop: int, rng: np.random.Generator) -> Image.Image:
    array = _lfw()[100 * int(nonface) + crop]
    small = Image.fromarray(array).convert("RGB")
    side = int(rng.integers(96, 161))
    image = _random_crop(small, rng, scale=(0.7, 1.0), ratio=(0.9, 1.1), long_side=side)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return _jitter(image, rng, strength=0.2)


# --- benchmark images --------------------------------------------------------------


def _write_bench_span(dest: str, seed: int, span: tuple[int, int]) -> None:
    for i in range(*span):
        _write_bench_one(dest, seed, i)


def _write_bench_one(dest: str, seed: int, index: int) -> None:
    rng = np.random.default_rng([seed, 0xBE7C, index])
    photo = _source(BENCH_SOURCES[int(rng.integers(len(BENCH_SOURCES)))]).convert("RGB")
    width, height = BENCH_SIZES[int(rng.integers(len(BENCH_SIZES)))]
    if rng.random() < 0.25:
        width, height = height, width
    box = _crop_box(photo.size, rng, scale=(0.3, 1.0), ratio=(width / height, width / height))
    image = photo.resize((width, height), Image.Resampling.BICUBIC, box=box)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    image = _point_jitter(image, rng, strength=0.15)
    image = _grain(image, rng)
    image.save(Path(dest) / f"bench_{index:05d}.jpg", "JPEG", quality=90)


# --- helpers -------------------------------------------------------------------------


def _format(fmt: str) -> tuple[str, str]:
    ext = fmt.lower().lstrip(".")
    if ext not in _FORMATS:
        raise ValueError(f"unsupported fmt {fmt!r}; one of {sorted(_FORMATS)}")
    return ext, _FORMATS[ext]


def _save(image: Image.Image, path: Path, pil_format: str) -> None:
    options = {"quality": 90} if pil_format in ("JPEG", "WEBP") else {}
    image.save(path, pil_format, **options)


def _crop_box(
    size: tuple[int, int],
    rng: np.random.Generator,
    *,
    scale: tuple[float, float],
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[float, float, float, float]:
    """A random (left, top, right, bottom) box: area fraction in `scale`, w/h in `ratio`."""
    width, height = size
    area = width * height * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
    w = min(float(width), math.sqrt(area * aspect))
    h = min(float(height), w / aspect)
    w = min(w, h * aspect)  # keep the aspect when the height was clipped
    left = rng.uniform(0, width - w)
    top = rng.uniform(0, height - h)
    return (left, top, left + w, top + h)


def _random_crop(
    image: Image.Image,
    rng: np.random.Generator,
    *,
    scale: tuple[float, float],
    long_side: int,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Image.Image:
    box = _crop_box(image.size, rng, scale=scale, ratio=ratio)
    w, h = box[2] - box[0], box[3] - box[1]
    k = long_side / max(w, h)
    size = (max(1, round(w * k)), max(1, round(h * k)))
    return image.resize(size, Image.Resampling.BICUBIC, box=box)


def _jitter(image: Image.Image, rng: np.random.Generator, *, strength: float) -> Image.Image:
    """Brightness, contrast and saturation each scaled by a factor in 1 +/- strength."""
    lo, hi = 1 - strength, 1 + strength
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(lo, hi))
    image = ImageEnhance.Contrast(image).enhance(rng.uniform(lo, hi))
    return ImageEnhance.Color(image).enhance(rng.uniform(lo, hi))


def _point_jitter(image: Image.Image, rng: np.random.Generator, *, strength: float) -> Image.Image:
    """Brightness / contrast / white-balance jitter as one per-channel lookup table (fast)."""
    ramp = np.arange(256, dtype=np.float64)
    contrast = rng.uniform(1 - strength, 1 + strength)
    brightness = rng.uniform(1 - strength, 1 + strength)
    lut = []
    for gain in rng.uniform(1 - strength / 3, 1 + strength / 3, size=3):
        channel = ((ramp - 128) * contrast + 128) * brightness * gain
        lut.extend(np.clip(np.round(channel), 0, 255).astype(int).tolist())
    return image.point(lut)


def _grain(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Add mild Gaussian luma noise (sigma ~3.5 levels), like a camera sensor's.

    A random window of one cached noise field, added in C: ~20 ms at 1600x1200,
    against ~130 ms for fresh numpy noise.
    """
    field = _noise_field()
    left = int(rng.integers(field.width - image.width + 1))
    top = int(rng.integers(field.height - image.height + 1))
    window = field.crop((left, top, left + image.width, top + image.height))
    return ImageChops.add(image, window, scale=1.0, offset=-128)


@functools.cache
def _noise_field() -> Image.Image:
    side = max(max(size) for size in BENCH_SIZES) + 256
    noise = np.random.default_rng(0x6A1).normal(128.0, 3.5, size=(side, side))
    return Image.fromarray(np.clip(np.round(noise), 0, 255).astype(np.uint8)).convert("RGB")
