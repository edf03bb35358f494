"""Image bytes → fully loaded RGB image plus a row status.

Owns: format sniffing, the decompression-bomb guard, JPEG draft (DCT-domain)
downscaling, EXIF orientation, and every pixel-mode conversion to 8-bit RGB
(16-bit and float scaling, alpha composited on white, CMYK/LAB/YCbCr/HSV,
first frame of multi-frame files), and the image's perceptual hash
(`perceptual_hash`, from the decoded pixels). `decode_image` never raises for
bad data: each failure becomes a `Status` and a one-line reason.

Must not: resize to the model's input, normalise, featurize, read files or
URLs, or touch PIL's process-wide settings (`Image.MAX_IMAGE_PIXELS`,
`ImageFile.LOAD_TRUNCATED_IMAGES`, warning filters). It runs in a thread
pool, so every call works only on its own objects.

Policy choices, so that numbers do not change silently:
- 16-bit and 32-bit integer gray ("I;16*", "I") with values in 0..65535 are
  scaled by 1/257 (65535 → 255), not clipped; other integer ranges are
  min-max stretched to 0..255.
- Float gray ("F"): values within 0..1 are multiplied by 255; values within
  0..255 are kept; anything else is min-max stretched. NaN/inf count as 0.
- Transparency of any kind is composited on white.
- ICC profiles are not applied (pixels are taken as sRGB).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, features

from imgfeat.errors import Status

DEFAULT_MAX_PIXELS = 100_000_000  # decompression-bomb guard

_ORIENTATION_TAG = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_DRAFT_FORMATS = frozenset({"JPEG", "MPO"})  # MPO = camera JPEG with extra frames
_INT_GRAY = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "I;16S", "I;16LS", "I;16BS"})
_PREMULTIPLIED = {"RGBa": "RGBA", "La": "LA"}
# Words in PIL's messages that mean "a valid file this build cannot decode".
_UNSUPPORTED_RE = re.compile(
    r"not supported|unsupported|not available|not yet supported|not installed"
    r"|unknown pixel mode|unknown data organization|unknown compression",
    re.IGNORECASE,
)
# ISO-BMFF `ftyp` major brands of still-image containers (HEIF family, AVIF).
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_HAVE_AVIF = bool(features.check_module("avif"))

# Register every PIL plugin once, at import, so that calls from worker threads
# only read the registry (PIL otherwise fills it lazily on first open).
# preinit first puts the common formats (BMP, GIF, JPEG, PPM, PNG) early.
Image.preinit()
Image.init()


@dataclass(frozen=True)
class Decoded:
    """Result of `decode_image`; exactly one of `image` / `error` is set."""

    status: Status  # Status.OK or an error status
    error: str | None  # human-readable reason; None when ok
    image: Image.Image | None  # mode "RGB", loaded, EXIF orientation applied; None unless ok
    width: int | None  # original full-resolution size after EXIF orientation; None if header unreadable
    height: int | None


def decode_image(data: bytes, *, draft_size: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Decoded:
    """Decode `data` into an RGB image; any bad input becomes a status, never an exception.

    `draft_size`: for JPEG, let libjpeg decode at 1/2, 1/4 or 1/8 scale while
    both sides stay >= draft_size (the caller resizes afterwards); this is
    most of the decode time saved on large photos. `width`/`height` always
    report the full-resolution, EXIF-oriented size.
    `max_pixels`: files whose header claims more pixels are refused as
    `too_large` before any pixel memory is allocated.
    """
    if not data:
        return _fail(Status.DECODE_ERROR, "empty file (0 bytes)")
    try:
        opened = _open(io.BytesIO(data), data, max_pixels)
        if isinstance(opened, Decoded):
            return opened
        return _decode_opened(opened, draft_size, max_pixels)
    except Exception as exc:  # noqa: BLE001 - last resort: bad data must not kill the batch
        return _fail(Status.DECODE_ERROR, f"cannot decode: {_describe(exc)}")


#: pHash geometry: the image as a 32x32 gray square, its DCT's top-left 8x8 low frequencies.
_PHASH_SIDE, _PHASH_LOW = 32, 8


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix: `D @ X @ D.T` is X's 2-D DCT (scipy's `dct(norm="ortho")`), no scipy needed."""
    k = np.arange(n)
    d = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n))
    d[0] /= np.sqrt(2.0)
    return d


_DCT = _dct_matrix(_PHASH_SIDE)


def perceptual_hash(image: Image.Image) -> int:
    """The 64-bit DCT perceptual hash of an image, as a signed int64 (a table's `bigint`).

    imagehash's `phash`: grayscale, 32x32 Lanczos, 2-D DCT, each of the top-left 8x8
    coefficients (DC included) against their median, bits row-major, first bit highest.
    Why: resizing, re-encoding, a small crop or a brightness change move few bits
    (copies sit at Hamming distance 0-4, distinct photos at 12 and more; bench/README.md),
    so near-copies are found by Hamming distance where the model's embedding cannot
    separate them. About a millisecond: the image is shrunk before any arithmetic.
    """
    gray = np.asarray(image.convert("L").resize((_PHASH_SIDE, _PHASH_SIDE), Image.Resampling.LANCZOS), np.float64)
    low = (_DCT @ gray @ _DCT.T)[:_PHASH_LOW, :_PHASH_LOW].ravel()
    bits = low > np.median(low)
    value = int("".join("1" if b else "0" for b in bits), 2)
    return value - (1 << 64) if value >= 1 << 63 else value


def _decode_opened(im: Image.Image, draft_size: int | None, max_pixels: int) -> Decoded:
    """Guard, draft, load, convert and orient an image whose header was read."""
    fmt = im.format or "image"
    width, height = im.size  # header size, before any draft
    if width * height > max_pixels:
        return _too_large(fmt, *_oriented_size(im, width, height), max_pixels)
    try:
        if draft_size and fmt in _DRAFT_FORMATS:
            im.draft("RGB", (draft_size, draft_size))
        im.load()  # frame 0 of multi-frame files: open() leaves us there
        rgb = _to_rgb(im)
    except Exception as exc:  # noqa: BLE001 - classified below, never re-raised
        status, reason = _classify_load_error(exc, fmt)
        return Decoded(status, reason, None, *_oriented_size(im, width, height))
    orientation = _orientation(im)
    if orientation in _TRANSPOSE:
        rgb = rgb.transpose(_TRANSPOSE[orientation])
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return Decoded(Status.OK, None, rgb, width, height)


def _open(fp: io.BytesIO, data: bytes, max_pixels: int) -> Image.Image | Decoded:
    """Identify the format and read the header, like `Image.open` minus its bomb check.

    `Image.open` applies PIL's process-wide MAX_IMAGE_PIXELS: it warns above
    ~89 Mpx and raises above ~179 Mpx, before we can see the size. Calling the
    registered plugin factories ourselves keeps our own per-call `max_pixels`
    the only guard (larger or smaller than PIL's), reports the real
    dimensions, and leaves PIL's global limit untouched for other code.
    WebP is measured before opening: PIL's WebP opener allocates the whole
    canvas, so its header is the last moment to refuse a bomb.
    """
    prefix = bytes(data[:16])
    webp = _webp_size(data)
    if webp and webp[0] * webp[1] > max_pixels:
        return _too_large("WEBP", *webp, max_pixels)
    failures: list[tuple[str, BaseException | str]] = []
    for fmt, factory, accept in _plugins():
        if accept is not None:
            try:
                verdict = accept(prefix)
            except Exception:  # noqa: BLE001 - e.g. a prefix too short to test
                continue
            if isinstance(verdict, str):  # e.g. "... because AVIF support not installed"
                failures.append((fmt, verdict))
                continue
            if not verdict:
                continue
        try:
            fp.seek(0)
            return factory(fp, "")
        except Exception as exc:  # noqa: BLE001 - this plugin refused; try the next
            if accept is not None:  # catch-all plugins (no magic test) explain nothing
                failures.append((fmt, exc))
    return _unidentified(data, failures)


def _plugins() -> list[tuple[str, Any, Any]]:
    """Registered openers, those that test magic bytes first.

    Plugins without an `accept` test (IM, IMT, IPTC, PCD, SPIDER, TGA) would
    otherwise be tried, and fail, before JPEG on every file once all plugins
    are registered; trying them last is faster and lets magic bytes win.
    Rebuilt only when the registry grows (e.g. pillow-heif registering late);
    two threads rebuilding at once compute the same list, so no lock.
    """
    global _plugin_cache
    count, ordered = _plugin_cache
    if count != len(Image.ID):
        openers = [(fmt, *Image.OPEN[fmt]) for fmt in list(Image.ID)]
        ordered = [o for o in openers if o[2] is not None] + [o for o in openers if o[2] is None]
        _plugin_cache = (len(openers), ordered)
    return ordered


_plugin_cache: tuple[int, list[tuple[str, Any, Any]]] = (-1, [])


def _too_large(fmt: str, width: int, height: int, max_pixels: int) -> Decoded:
    """Refusal of a decompression bomb (or just a huge image), with its size."""
    reason = f"{fmt} is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,} (max_pixels)"
    return Decoded(Status.TOO_LARGE, reason, None, width, height)


def _webp_size(data: bytes) -> tuple[int, int] | None:
    """Canvas size from a WebP header (VP8X, VP8L or VP8 chunk); None if not WebP."""
    head = bytes(data[:30])
    if len(head) < 30 or head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        return None
    chunk = head[12:16]
    if chunk == b"VP8X":
        return 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little")
    if chunk == b"VP8L" and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        return int.from_bytes(head[26:28], "little") & 0x3FFF, int.from_bytes(head[28:30], "little") & 0x3FFF
    return None


def _unidentified(data: bytes, failures: list[tuple[str, BaseException | str]]) -> Decoded:
    """Explain why no plugin could open the file, as decode_error or unsupported."""
    for fmt, err in failures:
        if isinstance(err, Image.DecompressionBombError):
            return _fail(Status.TOO_LARGE, f"{fmt} too large: {err}")
    container = _sniff_container(data)
    if container:
        return _fail(Status.UNSUPPORTED, container)
    for fmt, err in failures:
        text = _first_line(str(err))
        if _UNSUPPORTED_RE.search(text):
            return _fail(Status.UNSUPPORTED, f"unsupported {fmt}: {text}")
    if failures:
        fmt, err = failures[0]
        return _fail(Status.DECODE_ERROR, f"corrupt {fmt} header: {_describe(err)}")
    return _fail(Status.DECODE_ERROR, f"not an image (starts with {bytes(data[:16])!r})")


def _sniff_container(data: bytes) -> str | None:
    """Name image formats that PIL (as installed) cannot open, from their magic bytes."""
    head = bytes(data[:1024])
    if head[4:8] == b"ftyp":
        brand = head[8:12].decode("latin-1")
        if head[8:12] in _HEIF_BRANDS:
            return f"HEIF/HEIC image (brand {brand!r}): no HEIF decoder installed (pillow-heif)"
        if head[8:12] in _AVIF_BRANDS and not _HAVE_AVIF:
            return f"AVIF image (brand {brand!r}): no AVIF decoder in this Pillow build"
    if head.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")):
        return "JPEG XL image: no JPEG XL decoder installed"
    if head.startswith(b"\x76\x2f\x31\x01"):
        return "OpenEXR image: not supported"
    if head.startswith((b"#?RADIANCE", b"#?RGBE")):
        return "Radiance HDR image: not supported"
    text = head.lstrip().lower()
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in text):
        return "SVG vector image: not supported"
    return None


def _classify_load_error(exc: BaseException, fmt: str) -> tuple[Status, str]:
    """Map an exception raised while decoding pixels to a status and reason."""
    if isinstance(exc, Image.DecompressionBombError):  # e.g. a GIF frame bigger than its header
        return Status.TOO_LARGE, f"{fmt} too large: {exc}"
    if isinstance(exc, MemoryError):
        return Status.TOO_LARGE, f"out of memory decoding {fmt}"
    text = _first_line(str(exc))
    if _UNSUPPORTED_RE.search(text):
        return Status.UNSUPPORTED, f"unsupported {fmt}: {text}"
    if "truncated" in text.lower() or isinstance(exc, EOFError):
        return Status.DECODE_ERROR, f"truncated {fmt}: {text or type(exc).__name__}"
    return Status.DECODE_ERROR, f"corrupt {fmt}: {_describe(exc)}"


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB without clipping high-depth data."""
    mode = im.mode
    if mode in _INT_GRAY or mode == "F":
        return Image.fromarray(_gray_to_uint8(np.asarray(im), mode)).convert("RGB")
    if mode in _PREMULTIPLIED:
        im = im.convert(_PREMULTIPLIED[mode])
        mode = im.mode
    if im.has_transparency_data:
        return _on_white(im if mode == "RGBA" else im.convert("RGBA"))
    if mode == "RGB":
        return im
    return im.convert("RGB")  # 1, L, P, CMYK, YCbCr, LAB (via ImageCms), HSV, RGBX


def _gray_to_uint8(a: np.ndarray, mode: str) -> np.ndarray:
    """Scale one high-depth gray band to uint8 (see the module docstring for the rule)."""
    if mode == "F":
        a = a.astype(np.float32, copy=False)
        finite = np.isfinite(a)
        if not finite.all():
            a = np.where(finite, a, 0.0).astype(np.float32)
        lo, hi = float(a.min()), float(a.max())
        if lo >= 0.0 and hi <= 1.0:
            a = a * 255.0
        elif not (lo >= 0.0 and hi <= 255.0):
            a = _stretch(a.astype(np.float64), lo, hi)  # float64: hi - lo may overflow float32
        return np.rint(a).astype(np.uint8)
    lo, hi = int(a.min()), int(a.max())
    if lo >= 0 and hi <= 0xFFFF:
        return ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)  # round(v / 257)
    return np.rint(_stretch(a.astype(np.float64), lo, hi)).astype(np.uint8)


def _stretch(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Min-max map `a` onto 0..255 (a constant image becomes 0)."""
    if hi <= lo:
        return np.zeros_like(a)
    return (a - lo) * (255.0 / (hi - lo))


def _on_white(rgba: Image.Image) -> Image.Image:
    """Composite straight-alpha RGBA over a white background."""
    out = Image.new("RGB", rgba.size, (255, 255, 255))
    out.paste(rgba, (0, 0), rgba)  # an RGBA mask means "use its alpha band"
    return out


def _orientation(im: Image.Image) -> int:
    """EXIF (or XMP) orientation 1..8; 1 when absent or unreadable."""
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
        return value if isinstance(value, int) and 1 <= value <= 8 else 1
    except Exception:  # noqa: BLE001 - broken EXIF must not fail a good image
        return 1


def _oriented_size(im: Image.Image, width: int, height: int) -> tuple[int, int]:
    """Header size, swapped for orientations 5-8 when EXIF is readable without decoding."""
    if "exif" not in im.info and not hasattr(im, "tag_v2"):
        return width, height  # e.g. PNG: its EXIF may follow the pixel data
    return (height, width) if _orientation(im) in (5, 6, 7, 8) else (width, height)


def _describe(exc: BaseException | str) -> str:
    """One line: the exception's type and message (a plain string as is)."""
    if isinstance(exc, str):
        return _first_line(exc)
    text = _first_line(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _first_line(text: str) -> str:
    """Table cells hold one line; PIL messages occasionally carry several."""
    lines = text.strip().splitlines()
    return lines[0] if lines else ""


def _fail(status: Status, reason: str) -> Decoded:
    """A result with no image and no size (the header was never read)."""
    return Decoded(status, reason, None, None, None)
