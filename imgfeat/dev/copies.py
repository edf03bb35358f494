"""Planted near-copies of a photo, as thumbnailers, re-uploads and light edits make them.

Owns: the copy kinds the perceptual-hash threshold is measured on (bench/phash_thresholds.py)
and the near-copy tests plant (tests/test_nearcopy.py), so both mean the same copies.
Must not: import Spark or torch, or write files (callers save the images).
"""

from __future__ import annotations

import io

from PIL import Image, ImageEnhance

#: Copy kinds: what a thumbnailer, a re-upload, a light crop or an exposure edit does to a photo.
KINDS = ("resized", "reencoded", "cropped", "brighter", "darker")


def planted_copy(image: Image.Image, kind: str) -> Image.Image:
    """`image` (RGB) changed as `kind` says, decoded back from its new JPEG bytes where one is written:
    resized to 90 % and saved at JPEG quality 80; re-saved at quality 70; 5 % cropped off
    (2.5 % each side); brightness +10 % or -10 %."""
    w, h = image.size
    if kind == "resized":
        return _jpeg(image.resize((round(w * 0.9), round(h * 0.9)), Image.Resampling.BICUBIC), 80)
    if kind == "reencoded":
        return _jpeg(image, 70)
    if kind == "cropped":
        dx, dy = round(w * 0.025), round(h * 0.025)
        return image.crop((dx, dy, w - dx, h - dy))
    if kind in ("brighter", "darker"):
        return ImageEnhance.Brightness(image).enhance(1.1 if kind == "brighter" else 0.9)
    raise ValueError(f"unknown copy kind {kind!r}; known: {', '.join(KINDS)}")


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    """`image` after a round trip through JPEG at `quality`."""
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")
