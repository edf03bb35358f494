"""Memory: a folder of big camera photos goes through the job in bounded
worker memory, and the run reports its workers' peak RSS.

24 photos of 6000x4000 (24 Mpx, ~14 MB JPEGs: 340 MB encoded, 1.7 GB as RGB
pixels) with `read.max_bytes_per_batch` = 16 MiB and 4 decode threads. A
worker holds only the files its threads are decoding, and decodes JPEGs in
draft mode (the decoder scales by 1/8 before any pixel is stored), so the
big photos must cost it about what small ones do: torch and the model
dominate (~1 GiB here).

Measured on our 2-core dev machine, peak RSS of the busiest worker: small
photos 986-1035 MiB over repeated runs (allocator noise ~50 MiB); the big
photos 946-978 MiB; the big photos with draft mode switched off in the
workers 1194 MiB. The bound, small + 2 full decodes (138 MiB), separates them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgfeat.config import FeaturizeConfig, load_config
from tests.imagegen import photo

N, SIZE = 24, (6000, 4000)
MAX_BYTES = 16 * 1024 * 1024
#: One 6000x4000 RGB image decoded in full (no draft mode): 69 MiB.
FULL_DECODE_MIB = SIZE[0] * SIZE[1] * 3 / 2**20


def _big_photos(dest: Path) -> Path:
    """N noisy 24 Mpx JPEGs (noise keeps them camera-sized), written in seconds:
    one is encoded, the rest are hard links to it (a file each for Spark)."""
    dest.mkdir(parents=True)
    pixels = np.asarray(photo(SIZE))
    noise = np.random.default_rng(0).integers(0, 48, pixels.shape, dtype=np.uint8)
    Image.fromarray(pixels + noise).save(dest / "big_00.jpg", quality=95)
    for i in range(1, N):
        os.link(dest / "big_00.jpg", dest / f"big_{i:02d}.jpg")
    return dest


def _run(spark, inputs: Path, table: Path):
    from imgfeat.runs import featurize_run

    cfg = load_config(
        FeaturizeConfig,
        overrides=[
            "tracking.enabled=false", "featurizer.batch_size=8",
            f"read.max_bytes_per_batch={MAX_BYTES}", "read.decode_threads=4",
        ],
        input=str(inputs),
        table=str(table),
    )
    return featurize_run(cfg, spark)


@pytest.mark.slow
def test_big_photos_stay_within_small_photo_memory(spark, photos, tmp_path):
    big = _big_photos(tmp_path / "big")
    assert (big / "big_00.jpg").stat().st_size > 10 * 2**20
    small = tmp_path / "small"
    for i in range(3):  # 24 small files too, in the same shape of run
        shutil.copytree(photos, small / str(i))

    # Small first: it also loads the model into the workers the big run reuses.
    base = _run(spark, small, tmp_path / "emb_small")
    summary = _run(spark, big, tmp_path / "emb_big")
    print(f"\nworker peak RSS: small photos {base.worker_peak_rss_mib:.0f} MiB, "
          f"24 x 6000x4000 photos {summary.worker_peak_rss_mib:.0f} MiB")
    print(summary.line())

    assert summary.counts == {"ok": N} and base.counts == {"ok": 24}
    assert f"worker peak RSS {summary.worker_peak_rss_mib:.0f} MiB" in summary.line()
    assert base.worker_peak_rss_mib > 100  # a real reading: torch and a model are in there
    # Four threads, each holding one file and its 1/8 draft decode: ~60 MiB
    # at most, within allocator noise. Full decodes (4 x 69 MiB and their
    # conversions) or every file's bytes held at once (24 x 14 MB) exceed it.
    assert summary.worker_peak_rss_mib < base.worker_peak_rss_mib + FULL_DECODE_MIB
