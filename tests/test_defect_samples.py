"""The defect set: balanced labels, deterministic files, tiles that share no source pixel."""

from __future__ import annotations

import csv
import hashlib

import numpy as np
from PIL import Image

from imgfeat.dev.defect_samples import DEFECT_KINDS, DEFECT_TEXTURES, _tiles, write_defect_photos
from imgfeat.dev.samples import spark_path


def _read(dest):
    with open(dest / "labels.csv") as f:
        return list(csv.DictReader(f))


def test_labels_are_balanced_and_list_every_file_once(tmp_path):
    dest = write_defect_photos(tmp_path / "d", n=40, seed=3)
    rows = _read(dest)
    assert len(rows) == 40 == len(list(dest.glob("*/*.jpg")))
    assert sum(int(r["defect"]) for r in rows) == 20
    assert {r["texture"] for r in rows} == set(DEFECT_TEXTURES)
    assert {r["kind"] for r in rows if r["defect"] == "1"} <= set(DEFECT_KINDS)
    assert all(r["kind"] == "none" for r in rows if r["defect"] == "0")
    for r in rows:
        assert r["path"] == spark_path(r["file"]) and f"/{r['texture']}/" in r["file"]
        assert Image.open(r["file"]).mode == "RGB"


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    def digests(dest):
        return [hashlib.sha256(open(r["file"], "rb").read()).hexdigest() for r in _read(dest)]

    a = digests(write_defect_photos(tmp_path / "a", n=12, seed=0))
    assert a == digests(write_defect_photos(tmp_path / "b", n=12, seed=0))
    assert len(set(a)) == 12
    assert not set(a) & set(digests(write_defect_photos(tmp_path / "c", n=12, seed=1)))


def test_tiles_of_one_photo_never_overlap():
    for texture in DEFECT_TEXTURES:
        tiles = _tiles(texture, 150, np.random.default_rng(0))
        covered = np.zeros((512, 512), dtype=int)
        for left, top, side in tiles:
            covered[top : top + side, left : left + side] += 1
        assert len(tiles) == 150 and covered.max() == 1
