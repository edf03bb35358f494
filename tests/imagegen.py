"""Odd and equivalent image files, written at test time (no binaries committed).

`make_odd_images` covers what real photo folders contain: broken, fake,
huge-header, exotic-mode, animated and oddly named files, each with the
status `decode_image` must give it. `make_equivalent_pairs` writes the same
picture stored two ways, for tests that the decoded pixels (and later the
embeddings) agree. Everything is built from small scikit-image photos so
the whole set takes well under a second.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from imgfeat.errors import Status

#: Base photo size (w, h); multiples of 16 so JPEG blocks stay aligned when rotated.
BASE_SIZE = (128, 80)

#: Full-resolution, EXIF-oriented (width, height) of every file that decodes.
EXPECTED_SIZES: dict[str, tuple[int, int]] = {
    "rgb.jpg": BASE_SIZE,
    "progressive.jpg": BASE_SIZE,
    "rgb.png": (96, 96),
    "cmyk.jpg": BASE_SIZE,
    "gray.jpg": BASE_SIZE,
    "gray.png": BASE_SIZE,
    "bilevel.png": BASE_SIZE,
    "gray16.png": (256, 4),
    "rgb16.png": (256, 4),
    "float.tif": (256, 4),
    "lab.tif": BASE_SIZE,
    "multipage.tif": BASE_SIZE,
    "palette.png": BASE_SIZE,
    "palette_transparent.png": BASE_SIZE,
    "rgba.png": BASE_SIZE,
    "gray_alpha.png": BASE_SIZE,
    "animated.gif": BASE_SIZE,
    "animated.webp": BASE_SIZE,
    "lossy.webp": BASE_SIZE,
    "photo.bmp": BASE_SIZE,
    "wide.png": (4000, 12),
    "wide.jpg": (4000, 12),
    "one_pixel.png": (1, 1),
    "one_pixel.jpg": (1, 1),
    "exif_rot6.jpg": BASE_SIZE,  # stored 80x128, displayed 128x80
    "exif_rot3.jpg": BASE_SIZE,
    "café photo.jpg": BASE_SIZE,
    "UPPER.JPG": BASE_SIZE,
    "UPPER.PNG": BASE_SIZE,
    "png_named.jpg": BASE_SIZE,
}


def photo(size: tuple[int, int] = BASE_SIZE, name: str = "chelsea") -> Image.Image:
    """A real photo (scikit-image sample, bundled, no download) resized to `size`."""
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB").resize(size, Image.Resampling.BILINEAR)


def png_bytes(width: int, height: int, bit_depth: int, color_type: int, raw: bytes) -> bytes:
    """A PNG written by hand: lets us store 16-bit RGB and lie in the header."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def gradient16(width: int = 256, height: int = 4) -> np.ndarray:
    """uint16 horizontal ramp covering 0..65535 exactly."""
    row = np.round(np.linspace(0, 65535, width)).astype(np.uint16)
    return np.tile(row, (height, 1))


def _encode(im: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _rgb16_png(rgb8: np.ndarray) -> bytes:
    """8-bit RGB array stored as a 16-bit RGB PNG (v * 257), filter 0 per row."""
    big = (rgb8.astype(">u2") * 257).astype(">u2")
    raw = b"".join(b"\x00" + big[y].tobytes() for y in range(big.shape[0]))
    return png_bytes(big.shape[1], big.shape[0], 16, 2, raw)


def _with_transparent_corner(im: Image.Image) -> Image.Image:
    """RGBA copy: top-left 16x16 fully transparent, a half-alpha band below it."""
    rgba = im.convert("RGBA")
    alpha = np.full((im.height, im.width), 255, np.uint8)
    alpha[:16, :16] = 0
    alpha[16:24, :] = 128
    rgba.putalpha(Image.fromarray(alpha))
    return rgba


def _palette_with_transparency(im: Image.Image) -> Image.Image:
    """P image (255 colours) whose index 255 is transparent, used in the top-left 16x16."""
    p = im.quantize(colors=255)
    px = np.asarray(p).copy()
    px[:16, :16] = 255
    out = Image.fromarray(px, "P")
    palette = p.getpalette()[: 255 * 3] + [0, 0, 0]
    out.putpalette(palette)
    out.info["transparency"] = 255
    return out


def _tiff_float64() -> bytes | None:
    """A valid float64 TIFF, which Pillow cannot open (written by tifffile)."""
    try:
        import tifffile
    except ImportError:  # pragma: no cover - tifffile ships with scikit-image
        return None
    buf = io.BytesIO()
    tifffile.imwrite(buf, gradient16().astype(np.float64) / 65535.0)
    return buf.getvalue()


def _jpeg_claiming(jpeg: bytes, width: int, height: int) -> bytes:
    """Rewrite the SOF dimensions of a baseline JPEG (a header-only bomb)."""
    i = jpeg.index(b"\xff\xc0")
    out = bytearray(jpeg)
    out[i + 5 : i + 9] = struct.pack(">HH", height, width)
    return bytes(out)


def _webp_canvas_header(width: int, height: int) -> bytes:
    """A WebP extended (VP8X) header claiming a canvas, with no image data."""
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00" * 4
    vp8x += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x


def make_odd_images(dir: Path) -> dict[str, Status]:
    """Write odd and ordinary image files into `dir`; return file name → expected status."""
    dir.mkdir(parents=True, exist_ok=True)
    base = photo()
    square = photo((96, 96), "astronaut")
    jpeg = _encode(base, "JPEG", quality=90)
    png = _encode(base, "PNG")
    g16 = gradient16()
    files: dict[str, tuple[bytes, Status]] = {}

    def add(name: str, data: bytes, status: Status = Status.OK) -> None:
        files[name] = (data, status)

    add("rgb.jpg", jpeg)
    add("progressive.jpg", _encode(base, "JPEG", quality=90, progressive=True))
    add("rgb.png", _encode(square, "PNG"))
    add("cmyk.jpg", _encode(base.convert("CMYK"), "JPEG", quality=90))  # Adobe, inverted
    add("gray.jpg", _encode(base.convert("L"), "JPEG", quality=90))
    add("gray.png", _encode(base.convert("L"), "PNG"))
    add("bilevel.png", _encode(base.convert("1"), "PNG"))
    add("gray16.png", _encode(Image.fromarray(g16), "PNG"))  # opens as I;16
    ramp8 = (g16 // 257).astype(np.uint8)
    add("rgb16.png", _rgb16_png(np.stack([ramp8, ramp8[:, ::-1], ramp8], axis=-1)))
    add("float.tif", _encode(Image.fromarray(g16.astype(np.float32) / 65535.0, "F"), "TIFF"))
    add("lab.tif", _encode(base.convert("LAB"), "TIFF"))
    add("multipage.tif", _encode(base, "TIFF", save_all=True, append_images=[base.rotate(180)]))
    add("palette.png", _encode(base.quantize(colors=64), "PNG"))
    add("palette_transparent.png", _encode(_palette_with_transparency(base), "PNG"))
    add("rgba.png", _encode(_with_transparent_corner(base), "PNG"))
    add("gray_alpha.png", _encode(_with_transparent_corner(base).convert("LA"), "PNG"))
    frames = [base, Image.eval(base, lambda v: 255 - v)]
    add("animated.gif", _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0))
    add("animated.webp", _encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100, quality=90))
    add("lossy.webp", _encode(base, "WEBP", quality=90))
    add("photo.bmp", _encode(base, "BMP"))
    wide = photo((4000, 12))
    add("wide.png", _encode(wide, "PNG"))
    add("wide.jpg", _encode(wide, "JPEG", quality=90))
    add("one_pixel.png", _encode(base.resize((1, 1)), "PNG"))
    add("one_pixel.jpg", _encode(base.resize((1, 1)), "JPEG"))
    # Stored sideways; orientation 6 means "rotate 90° clockwise to display".
    add("exif_rot6.jpg", _encode(base.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=90, exif=_exif(6)))
    add("exif_rot3.jpg", _encode(base.rotate(180), "JPEG", quality=90, exif=_exif(3)))
    add("café photo.jpg", jpeg)
    add("UPPER.JPG", jpeg)
    add("UPPER.PNG", png)
    add("png_named.jpg", png)

    add("truncated.jpg", jpeg[: len(jpeg) // 2], Status.DECODE_ERROR)
    add("truncated_tail.jpg", jpeg[:-12], Status.DECODE_ERROR)  # only the last bytes lost
    add("truncated.png", png[: len(png) // 2], Status.DECODE_ERROR)
    add("header_only.jpg", jpeg[:3], Status.DECODE_ERROR)
    add("empty.jpg", b"", Status.DECODE_ERROR)
    add("text.jpg", b"hello, this is a text file and not a photo\n", Status.DECODE_ERROR)
    add("page.png", b"<html><body><h1>404 Not Found</h1></body></html>\n", Status.DECODE_ERROR)
    random = np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    add("random.jpg", b"\x00" + random, Status.DECODE_ERROR)  # leading 0: no magic by chance
    heic = (
        struct.pack(">I", 24) + b"ftypheic" + b"\x00\x00\x00\x00" + b"mif1heic"
        + struct.pack(">I", 32) + b"meta" + b"\x00" * 24
    )
    add("fake.heic", heic, Status.UNSUPPORTED)
    add("drawing.svg", b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>\n', Status.UNSUPPORTED)
    f64 = _tiff_float64()
    if f64 is not None:
        add("float64.tif", f64, Status.UNSUPPORTED)
    # 100000 x 100000 RGB claimed by a 70-byte file (30 GB if decoded).
    add("bomb.png", png_bytes(100_000, 100_000, 8, 2, b"\x00" * 301), Status.TOO_LARGE)
    add("bomb.jpg", _jpeg_claiming(jpeg, 65_000, 65_000), Status.TOO_LARGE)
    # 144 Mpx: under PIL's own error limit, yet PIL's WebP opener would allocate the canvas.
    add("bomb.webp", _webp_canvas_header(12_000, 12_000), Status.TOO_LARGE)

    for name, (data, _) in files.items():
        (dir / name).write_bytes(data)
    return {name: status for name, (_, status) in files.items()}


def make_equivalent_pairs(dir: Path, size: tuple[int, int] = BASE_SIZE) -> list[tuple[str, str]]:
    """Write the same picture stored two ways; return pairs of file names in `dir`.

    Decoded, each pair should be near-identical (small mean abs difference),
    and so should their embeddings — compare those at a `size` above the
    model's input (e.g. 512x320): a thumbnail is upscaled, JPEG artifacts
    with it. `size` should be multiples of 16 (JPEG blocks under rotation).
    """
    dir.mkdir(parents=True, exist_ok=True)
    base = photo(size)
    gray = base.convert("L")
    g16 = (np.asarray(gray).astype(np.uint16) * 257).astype(np.uint16)
    rgb8 = np.asarray(base)
    files = {
        "pair_rgb.jpg": _encode(base, "JPEG", quality=95),
        "pair_cmyk.jpg": _encode(base.convert("CMYK"), "JPEG", quality=95),
        "pair.png": _encode(base, "PNG"),
        "pair.bmp": _encode(base, "BMP"),
        "pair_lossless.webp": _encode(base, "WEBP", lossless=True),
        "pair_upright.jpg": _encode(base, "JPEG", quality=95),
        "pair_exif6.jpg": _encode(base.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95, exif=_exif(6)),
        "pair_gray8.png": _encode(gray, "PNG"),
        "pair_gray16.png": _encode(Image.fromarray(g16), "PNG"),
        "pair_rgb16.png": _rgb16_png(rgb8),
    }
    for name, data in files.items():
        (dir / name).write_bytes(data)
    return [
        ("pair_rgb.jpg", "pair_cmyk.jpg"),
        ("pair.png", "pair.bmp"),
        ("pair.png", "pair_lossless.webp"),
        ("pair_upright.jpg", "pair_exif6.jpg"),
        ("pair_gray8.png", "pair_gray16.png"),
        ("pair.png", "pair_rgb16.png"),
    ]
