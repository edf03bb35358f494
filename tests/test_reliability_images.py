"""Bad, odd and equivalent image files through the whole featurize job.

tests/test_decode.py checks `decode_image` alone; here the same files go
through Spark workers into the Delta table, with the real default weights:
every file is exactly one row with the status the generator expects and a
readable error, and the same picture stored two ways embeds the same.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from deltalake import DeltaTable

from imgfeat.config import DEFAULT_EXTENSIONS, FeaturizeConfig, load_config
from imgfeat.errors import Status
from imgfeat.runs import featurize_run
from imgfeat.sources import local_path
from tests.imagegen import EXPECTED_SIZES, make_equivalent_pairs, make_odd_images


@pytest.fixture(scope="module")
def odd_run(spark, tmp_path_factory):
    """One job over a folder of odd files plus equivalent pairs; returns
    (expected status by name, pairs, summary, rows by file name)."""
    root = tmp_path_factory.mktemp("odd")
    expected = make_odd_images(root / "in" / "odd")
    # Above the model's 256 px resize, as photos are: at the 128x80 default a
    # q95 JPEG is upscaled 3.2x, and even PNG vs that JPEG falls to cosine 0.984.
    pairs = make_equivalent_pairs(root / "in" / "pairs", size=(512, 320))
    cfg = load_config(
        FeaturizeConfig,
        overrides=["tracking.enabled=false", "featurizer.batch_size=8"],
        input=str(root / "in"),
        table=str(root / "emb"),
        # .svg is not an image extension by default; listed here so it must become a row.
        **{"read.extensions": (*DEFAULT_EXTENSIONS, "svg")},
    )
    summary = featurize_run(cfg, spark)
    rows = DeltaTable(str(root / "emb")).to_pyarrow_table().to_pylist()
    by_name = {Path(local_path(r["path"])).name: r for r in rows}
    assert len(by_name) == len(rows), "two rows for one file name"
    return expected, pairs, summary, by_name, rows


def test_every_odd_file_is_one_row_with_its_status(odd_run):
    expected, pairs, summary, by_name, rows = odd_run
    pair_files = {name for pair in pairs for name in pair}
    assert set(by_name) == set(expected) | pair_files
    assert len(rows) == summary.listed == len(expected) + len(pair_files)
    assert all(os.path.isfile(local_path(r["path"])) for r in rows), "paths must name the files (spaces, é)"

    wrong = {name: (by_name[name]["status"], want.value) for name, want in expected.items()
             if by_name[name]["status"] != want.value}
    assert not wrong, f"status (got, want): {wrong}"
    want_counts = Counter(s.value for s in expected.values())
    want_counts[Status.OK.value] += len(pair_files)
    assert summary.counts == dict(want_counts) and summary.committed and summary.version == 0


def test_ok_rows_have_embeddings_and_bad_rows_a_readable_error(odd_run):
    expected, _, _, by_name, _ = odd_run
    for name, want in expected.items():
        row = by_name[name]
        if want is Status.OK:
            assert row["error"] is None, name
            vector = np.asarray(row["embedding"], dtype=np.float32)
            assert row["dim"] == 1280 and vector.shape == (1280,) and np.isfinite(vector).all(), name
            assert (row["width"], row["height"]) == EXPECTED_SIZES[name], name
        else:
            error = row["error"]
            assert row["embedding"] is None and row["dim"] is None, name
            assert isinstance(error, str) and 10 <= len(error) <= 300, (name, error)
            assert "\n" not in error and "Traceback" not in error, (name, error)
            assert row["content_sha256"] is not None, name  # bytes were read, only decoding failed
    assert "100000" in by_name["bomb.png"]["error"]  # says how big the image claims to be


def test_same_picture_stored_differently_embeds_the_same(odd_run):
    _, pairs, _, by_name, _ = odd_run
    cosines = {}
    for a, b in pairs:
        va, vb = (np.asarray(by_name[n]["embedding"], dtype=np.float64) for n in (a, b))
        cosines[(a, b)] = float(va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb)))
    low = {pair: round(c, 4) for pair, c in cosines.items() if not c >= 0.99}
    assert not low, f"cosine < 0.99: {low}"
    # Not trivially 1: different photos are far apart in the same embedding space.
    ref = np.asarray(by_name["rgb.png"]["embedding"], dtype=np.float64)  # astronaut, not the cat
    cat = np.asarray(by_name["pair.png"]["embedding"], dtype=np.float64)
    assert ref @ cat / (np.linalg.norm(ref) * np.linalg.norm(cat)) < 0.9
