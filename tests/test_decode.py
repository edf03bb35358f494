"""decode_image: statuses, sizes, draft, pixel-mode conversions, bombs, equivalence."""

from __future__ import annotations

import io
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from imgfeat.decode import DEFAULT_MAX_PIXELS, Decoded, decode_image
from imgfeat.errors import Status
from tests.imagegen import (
    BASE_SIZE,
    EXPECTED_SIZES,
    gradient16,
    make_equivalent_pairs,
    make_odd_images,
    photo,
)


@pytest.fixture(scope="module")
def odd(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Status]]:
    folder = tmp_path_factory.mktemp("odd")
    return folder, make_odd_images(folder)


@pytest.fixture(scope="module")
def big_jpeg() -> tuple[Image.Image, bytes]:
    """A ~1600x1200 photo, the size where draft decoding pays off."""
    im = photo((1600, 1200))
    return im, _encode(im, "JPEG", quality=90)


def _encode(im: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def _pixels(d: Decoded) -> np.ndarray:
    assert d.status is Status.OK, d.error
    assert d.image is not None and d.image.mode == "RGB"
    return np.asarray(d.image).astype(np.int16)


def _decode_file(folder: Path, name: str, **kw: object) -> Decoded:
    return decode_image((folder / name).read_bytes(), **kw)  # type: ignore[arg-type]


def test_statuses_match_expected(odd: tuple[Path, dict[str, Status]]) -> None:
    folder, expected = odd
    got = {name: _decode_file(folder, name).status for name in expected}
    assert got == expected
    # Every status the generator promises is exercised.
    assert set(expected.values()) >= {Status.OK, Status.DECODE_ERROR, Status.UNSUPPORTED, Status.TOO_LARGE}


def test_ok_results_are_rgb_with_original_size(odd: tuple[Path, dict[str, Status]]) -> None:
    folder, expected = odd
    ok = [n for n, s in expected.items() if s is Status.OK]
    assert set(ok) == set(EXPECTED_SIZES)
    for name in ok:
        d = _decode_file(folder, name)
        assert d.error is None and d.image is not None, name
        assert d.image.mode == "RGB", name
        assert (d.width, d.height) == EXPECTED_SIZES[name] == d.image.size, name


def test_failures_carry_readable_reasons(odd: tuple[Path, dict[str, Status]]) -> None:
    folder, expected = odd
    for name, status in expected.items():
        if status is not Status.OK:
            d = _decode_file(folder, name)
            assert d.image is None and d.error and "\n" not in d.error, name
    assert _decode_file(folder, "truncated.jpg").error.startswith(  # type: ignore[union-attr]
        "truncated JPEG: image file is truncated"
    )
    assert _decode_file(folder, "page.png").error == "not an image (starts with b'<html><body><h1>')"
    assert _decode_file(folder, "empty.jpg").error == "empty file (0 bytes)"
    assert "HEIF" in _decode_file(folder, "fake.heic").error  # type: ignore[operator]
    # A header that was read still reports its size; garbage reports none.
    assert (_decode_file(folder, "truncated.png").width, _decode_file(folder, "truncated.png").height) == BASE_SIZE
    assert _decode_file(folder, "text.jpg").width is None


def test_truncated_jpeg_is_never_accepted(odd: tuple[Path, dict[str, Status]]) -> None:
    folder, _ = odd
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    for name in ("truncated.jpg", "truncated_tail.jpg"):
        assert _decode_file(folder, name, draft_size=32).status is Status.DECODE_ERROR


def test_exif_orientation_swaps_size_and_rotates_pixels(odd: tuple[Path, dict[str, Status]]) -> None:
    folder, _ = odd
    raw = Image.open(folder / "exif_rot6.jpg")
    assert raw.size == (BASE_SIZE[1], BASE_SIZE[0])  # stored sideways
    upright = _pixels(_decode_file(folder, "rgb.jpg"))
    for name in ("exif_rot6.jpg", "exif_rot3.jpg"):
        d = _decode_file(folder, name)
        assert (d.width, d.height) == BASE_SIZE
        assert np.abs(_pixels(d) - upright).mean() < 4, name  # same picture, right way up


def test_draft_downsamples_but_reports_original_size(big_jpeg: tuple[Image.Image, bytes]) -> None:
    _, data = big_jpeg
    t0 = time.perf_counter()
    full = decode_image(data)
    t1 = time.perf_counter()
    draft = decode_image(data, draft_size=224)
    t2 = time.perf_counter()
    print(f"\n1600x1200 JPEG: full decode {1000 * (t1 - t0):.1f} ms, draft 224 {1000 * (t2 - t1):.1f} ms")
    assert full.image is not None and full.image.size == (1600, 1200)
    assert draft.image is not None and draft.status is Status.OK
    w, h = draft.image.size
    assert (w, h) == (400, 300)  # 1/4 scale: 1/8 would make the short side 150 < 224
    assert min(w, h) >= 224
    assert (draft.width, draft.height) == (1600, 1200)


def test_draft_with_exif_rotation_and_mpo(big_jpeg: tuple[Image.Image, bytes]) -> None:
    im, _ = big_jpeg
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways = _encode(im.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=90, exif=exif.tobytes())
    d = decode_image(sideways, draft_size=224)
    assert (d.width, d.height) == (1600, 1200)
    assert d.image is not None and d.image.size == (400, 300)
    # Phone cameras write MPO (JPEG + extra frames); draft must work there too.
    mpo = _encode(im, "MPO", save_all=True, append_images=[im.rotate(180)], quality=90)
    assert Image.open(io.BytesIO(mpo)).format == "MPO"
    d = decode_image(mpo, draft_size=224)
    assert d.image is not None and d.image.size == (400, 300) and (d.width, d.height) == (1600, 1200)
    assert np.abs(_pixels(d) - np.asarray(im.resize((400, 300))).astype(np.int16)).mean() < 4  # frame 0


def test_draft_ignored_for_small_and_non_jpeg(odd: tuple[Path, dict[str, Status]]) -> None:
    folder, _ = odd
    for name in ("wide.jpg", "rgb.png", "rgb.jpg"):
        d = _decode_file(folder, name, draft_size=224)
        assert d.image is not None and d.image.size == EXPECTED_SIZES[name], name


def test_16bit_gray_is_scaled_not_clipped(odd: tuple[Path, dict[str, Status]]) -> None:
    folder, _ = odd
    assert Image.open(folder / "gray16.png").mode == "I;16"
    px = _pixels(_decode_file(folder, "gray16.png"))
    expected = np.round(gradient16() / 257.0)
    assert np.array_equal(px[..., 0], expected) and np.array_equal(px[..., 0], px[..., 2])
    assert px.min() == 0 and px.max() == 255
    assert len(np.unique(px)) == 256  # clipping would leave ~2 levels
    # 16-bit RGB PNGs open as 8-bit RGB; the ramp must survive too.
    rgb = _pixels(_decode_file(folder, "rgb16.png"))
    assert rgb[0, 0].tolist() == [0, 255, 0] and rgb[0, -1].tolist() == [255, 0, 255]


def test_32bit_int_gray_in_16bit_range_is_scaled() -> None:
    im = Image.fromarray(gradient16().astype(np.int32))
    assert im.mode == "I"
    px = _pixels(decode_image(_encode(im, "TIFF")))
    assert px.min() == 0 and px.max() == 255 and len(np.unique(px)) == 256


@pytest.mark.parametrize(
    ("lo", "hi", "expect_lo", "expect_hi"),
    [(0.0, 1.0, 0, 255), (0.0, 200.0, 0, 200), (-5.0, 1000.0, 0, 255)],
)
def test_float_gray_policy(lo: float, hi: float, expect_lo: int, expect_hi: int) -> None:
    ramp = np.tile(np.linspace(lo, hi, 64, dtype=np.float32), (2, 1))
    px = _pixels(decode_image(_encode(Image.fromarray(ramp, "F"), "TIFF")))
    assert (px.min(), px.max()) == (expect_lo, expect_hi)
    assert np.all(np.diff(px[0, :, 0]) >= 0)  # monotone ramp stays monotone


def test_alpha_is_composited_on_white(odd: tuple[Path, dict[str, Status]]) -> None:
    folder, _ = odd
    base = _pixels(_decode_file(folder, "photo.bmp"))
    for name in ("rgba.png", "gray_alpha.png", "palette_transparent.png"):
        px = _pixels(_decode_file(folder, name))
        assert np.all(px[:16, :16] == 255), name  # fully transparent → white
        assert np.abs(px[30:] - (base[30:] if name != "gray_alpha.png" else px[30:])).mean() < 4, name
    rgba = _pixels(_decode_file(folder, "rgba.png"))
    half = (base[16:24].astype(np.float64) * 128 + 255 * 127) / 255  # alpha 128 over white
    assert np.abs(rgba[16:24] - half).max() <= 1


def test_first_frame_of_animations(odd: tuple[Path, dict[str, Status]]) -> None:
    folder, _ = odd
    base = _pixels(_decode_file(folder, "photo.bmp"))
    for name in ("animated.gif", "animated.webp", "multipage.tif"):
        px = _pixels(_decode_file(folder, name))
        assert np.abs(px - base).mean() < 5, name  # frame 1 is the negative: diff ~70


def test_colour_modes_match_rgb(odd: tuple[Path, dict[str, Status]]) -> None:
    folder, _ = odd
    base = _pixels(_decode_file(folder, "photo.bmp"))
    for name in ("cmyk.jpg", "lab.tif", "rgb.jpg", "lossy.webp", "palette.png"):
        assert np.abs(_pixels(_decode_file(folder, name)) - base).mean() < 5, name
    gray = _pixels(_decode_file(folder, "gray.png"))
    assert np.array_equal(gray[..., 0], gray[..., 1])


def test_bomb_refused_before_any_pixel_allocation(
    odd: tuple[Path, dict[str, Status]], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, _ = odd

    def no_alloc(*args: object, **kwargs: object) -> None:
        raise AssertionError("pixel memory allocated for a bomb")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_alloc)
    monkeypatch.setattr(Image.core, "new", no_alloc)
    t0 = time.perf_counter()
    d = _decode_file(folder, "bomb.png")
    assert time.perf_counter() - t0 < 1.0
    assert d.status is Status.TOO_LARGE, d.error
    assert (d.width, d.height) == (100_000, 100_000)
    assert "100000x100000" in d.error and f"{DEFAULT_MAX_PIXELS:,}" in d.error  # type: ignore[operator]
    assert _decode_file(folder, "bomb.jpg").status is Status.TOO_LARGE
    webp = _decode_file(folder, "bomb.webp")
    assert webp.status is Status.TOO_LARGE and (webp.width, webp.height) == (12_000, 12_000)


def test_max_pixels_is_ours_not_pils(odd: tuple[Path, dict[str, Status]], monkeypatch: pytest.MonkeyPatch) -> None:
    """Our per-call limit decides, both ways; PIL's global limit neither warns nor refuses."""
    folder, _ = odd
    data = (folder / "rgb.jpg").read_bytes()
    pixels = BASE_SIZE[0] * BASE_SIZE[1]
    assert decode_image(data, max_pixels=pixels - 1).status is Status.TOO_LARGE
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pixels // 4)  # PIL would raise here
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert decode_image(data, max_pixels=pixels).status is Status.OK
    assert Image.MAX_IMAGE_PIXELS == pixels // 4  # untouched by decode


def test_thread_pool_gives_same_results(odd: tuple[Path, dict[str, Status]]) -> None:
    folder, expected = odd
    names = sorted(expected) * 2
    blobs = [(folder / n).read_bytes() for n in names]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda b: decode_image(b, draft_size=64), blobs))
    for name, d in zip(names, results, strict=True):
        assert d.status is expected[name], name
        if d.status is Status.OK:
            again = decode_image((folder / name).read_bytes(), draft_size=64)
            assert np.array_equal(np.asarray(d.image), np.asarray(again.image)), name


def test_equivalent_pairs_decode_alike(tmp_path: Path) -> None:
    pairs = make_equivalent_pairs(tmp_path)
    assert len(pairs) >= 5
    for a, b in pairs:
        pa, pb = _pixels(_decode_file(tmp_path, a)), _pixels(_decode_file(tmp_path, b))
        assert pa.shape == pb.shape, (a, b)
        assert np.abs(pa - pb).mean() < 3, (a, b)
