"""Image bytes → fully loaded RGB image plus a row status.

Owns: format sniffing, the decompression-bomb guard, JPEG draft (DCT-domain)
downscaling, EXIF orientation, and every pixel-mode conversion to 8-bit RGB
(16-bit and float scaling, alpha composited on white, CMYK/LAB/YCbCr/HSV,
first frame of multi-frame files). `decode_image` never raises for bad data:
each failure becomes a `Status` and a one-line reason.

Must not: resize to the model's input, normalise, featurize, read files or
URLs, or touch PIL's process-wide settings (`Image.MAX_IMAGE_PIXELS`,
`ImageFile.LOAD_TRUNCATED_IMAGES`, warning filters). It runs in a thread
pool, so every call works only on its own objects.

Policy choices, so that numbers do not change silently:
- 16-bit and 32-bit integer gray ("I;16*", "I") with values in 0..65535 are
  scaled by 1/257 (65535 → 255), not clipped; other integer ranges are
  min-max stretched to 0..255.
- Float gray ("F"): values within 0..1 are multiplied by 255; values within
  0..255 are kept; anything else is min-max stretched. NaN/inf become 0.
- Transparency of any kind is composited on white.
- ICC profiles are not applied (pixels are taken as sRGB).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

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
_HEIF_BRANDS = frozenset(
    {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}
)
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_HAVE_AVIF = bool(features.check_module("avif"))

# Register every PIL plugin once, at import, so that calls from worker threads
# only read the registry (PIL otherwise fills it lazily on first open).
Image.init()


@dataclass(frozen=True)
class Decoded:
    """Result of `decode_image`; exactly one of `image` / `error` is set."""

    status: Status  # Status.OK or an error status
    error: str | None  # human-readable reason; None when ok
    image: Image.Image | None  # mode "RGB", loaded, EXIF orientation applied; None unless ok
    width: int | None  # original full-resolution size after EXIF orientation; None if header unreadable
    height: int | None


def decode_image(
    data: bytes, *, draft_size: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Decoded:
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
        opened = _open(io.BytesIO(data), data)
        if isinstance(opened, Decoded):
            return opened
        return _decode_opened(opened, draft_size, max_pixels)
    except Exception as exc:  # noqa: BLE001 - last resort: bad data must not kill the batch
        return _fail(Status.DECODE_ERROR, f"cannot decode: {_describe(exc)}")


def _decode_opened(im: Image.Image, draft_size: int | None, max_pixels: int) -> Decoded:
    """Guard, draft, load, convert and orient an image whose header was read."""
    fmt = im.format or "image"
    width, height = im.size  # header size, before any draft
    pixels = width * height
    if pixels > max_pixels:
        return Decoded(
            Status.TOO_LARGE,
            f"{fmt} is {width}x{height} = {pixels:,} pixels, over the limit of "
            f"{max_pixels:,} (max_pixels)",
            None,
            *_oriented_size(im, width, height),
        )
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


def _open(fp: io.BytesIO, data: bytes) -> Image.Image | Decoded:
    """Identify the format and read the header, like `Image.open` minus its bomb check.

    `Image.open` applies PIL's process-wide MAX_IMAGE_PIXELS: it warns above
    ~89 Mpx and raises above ~179 Mpx, before we can see the size. Calling the
    registered plugin factories ourselves keeps our own per-call `max_pixels`
    the only guard (larger or smaller than PIL's), reports the real
    dimensions, and leaves PIL's global limit untouched for other code.
    """
    prefix = data[:16]
    failures: list[tuple[str, BaseException | str]] = []
    for fmt in list(Image.ID):
        factory, accept = Image.OPEN[fmt]
        try:
            verdict = accept(prefix) if accept else True
            if isinstance(verdict, str):  # e.g. "... because AVIF support not installed"
                failures.append((fmt, verdict))
                continue
            if not verdict:
                continue
            fp.seek(0)
            return factory(fp, "")
        except Exception as exc:  # noqa: BLE001 - this plugin refused; try the next
            failures.append((fmt, exc))
    return _unidentified(data, failures)


def _unidentified(data: bytes, failures: list[tuple[str, BaseException | str]]) -> Decoded:
    """Explain why no plugin could open the file, as decode_error or unsupported."""
    for fmt, err in failures:
        if isinstance(err, Image.DecompressionBombError):
            return _fail(Status.TOO_LARGE, f"{fmt}: {err}")
    container = _sniff_container(data)
    if container:
        return _fail(Status.UNSUPPORTED, container)
    for fmt, err in failures:
        text = err if isinstance(err, str) else str(err)
        if _UNSUPPORTED_RE.search(text):
            return _fail(Status.UNSUPPORTED, f"unsupported {fmt}: {text}")
    if failures:
        fmt, err = failures[0]
        return _fail(Status.DECODE_ERROR, f"corrupt {fmt} header: {_describe(err)}")
    return _fail(Status.DECODE_ERROR, f"not an image (starts with {data[:16]!r})")


def _sniff_container(data: bytes) -> str | None:
    """Name image formats that PIL (as installed) cannot open, from their magic bytes."""
    head = data[:64]
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _HEIF_BRANDS:
            return f"HEIF/HEIC image (brand {brand.decode('latin-1')!r}): no HEIF decoder installed (pillow-heif)"
        if brand in _AVIF_BRANDS and not _HAVE_AVIF:
            return f"AVIF image (brand {brand.decode('latin-1')!r}): no AVIF decoder in this Pillow build"
    if head.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")):
        return "JPEG XL image: no JPEG XL decoder installed"
    if head.startswith(b"\x76\x2f\x31\x01"):
        return "OpenEXR image: not supported"
    if head.startswith((b"#?RADIANCE", b"#?RGBE")):
        return "Radiance HDR image: not supported"
    text = data[:1024].lstrip().lower()
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in text):
        return "SVG vector image: not supported"
    return None


def _classify_load_error(exc: BaseException, fmt: str) -> tuple[Status, str]:
    """Map an exception raised while decoding pixels to a status and reason."""
    if isinstance(exc, Image.DecompressionBombError):
        return Status.TOO_LARGE, f"{fmt}: {exc}"
    if isinstance(exc, MemoryError):
        return Status.TOO_LARGE, f"out of memory decoding {fmt}"
    text = str(exc)
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
            a = _stretch(a, lo, hi)
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
    """One line: the exception's message, or its type when it has none."""
    if isinstance(exc, str):
        return exc
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _fail(status: Status, reason: str) -> Decoded:
    return Decoded(status, reason, None, None, None)
