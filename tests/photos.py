"""Small real photos for tests, written at test time (nothing binary committed)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

#: scikit-image sample photos: name → colour photo loader name.
PHOTOS = ("chelsea", "astronaut", "coffee", "rocket", "immunohistochemistry", "retina")


def load_photo(name: str) -> Image.Image:
    import skimage.data

    loader = getattr(skimage.data, name)
    array = loader()
    if isinstance(array, tuple):  # stereo pairs return (left, right, disparity)
        array = array[0]
    return Image.fromarray(array).convert("RGB")


def write_photos(dest: Path, size: int = 160) -> Path:
    """Write each photo as JPEG and the first two also as PNG; returns `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(PHOTOS):
        img = load_photo(name)
        img.thumbnail((size, size))
        img.save(dest / f"{name}.jpg", quality=90)
        if i < 2:
            img.save(dest / f"{name}.png")
    return dest
