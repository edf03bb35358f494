"""Near-copies by perceptual hash, and the split that keeps them with their originals."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pyspark.sql import functions as F

from imgfeat import cv, nearcopy
from imgfeat.config import SplitConfig
from imgfeat.decode import decode_image, perceptual_hash
from imgfeat.dev.copies import KINDS, planted_copy
from imgfeat.dev.samples import spark_path, write_labeled_photos

#: Classes of the planted set (retina tiles are left out: two of its tiles share one layout, a look-alike
#: at distance 2 that no perceptual hash can tell from a copy; bench/README.md).
CLASSES = ("brick", "cat", "coffee", "grass", "rocket")
#: The default `split.near_copy_distance`.
DISTANCE = SplitConfig().near_copy_distance


def reference_phash(image: Image.Image) -> int:
    """imagehash's phash, written out with scipy's DCT: the definition `perceptual_hash` follows."""
    from scipy.fftpack import dct

    pixels = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    low = dct(dct(pixels, axis=0, norm="ortho"), axis=1, norm="ortho")[:8, :8]
    bits = (low > np.median(low)).ravel()
    value = sum(1 << (63 - i) for i, b in enumerate(bits) if b)
    return value - (1 << 64) if value >= 1 << 63 else value


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, list[tuple[str, str]]]:
    """Labeled photos, plus planted copies of three of them (every kind but the 5 % crop, which
    moves up to 12 bits on these small tiles: bench/README.md) and one byte-identical copy.
    Returns the folder and the (original, copy) pairs as Spark lists the paths."""
    root = write_labeled_photos(tmp_path_factory.mktemp("planted"), classes=CLASSES, per_class=6)
    pairs = []
    for original in (root / "cat" / "cat_0001.jpg", root / "coffee" / "coffee_0002.jpg", root / "rocket" / "rocket_0003.jpg"):
        for kind in KINDS:
            if kind == "cropped":
                continue
            copy = original.with_name(f"{original.stem}_{kind}.jpg")
            planted_copy(Image.open(original).convert("RGB"), kind).save(copy, quality=90)
            pairs.append((spark_path(original), spark_path(copy)))
    same = root / "grass" / "grass_0000_bytes.jpg"
    same.write_bytes((root / "grass" / "grass_0000.jpg").read_bytes())
    pairs.append((spark_path(root / "grass" / "grass_0000.jpg"), spark_path(same)))
    return root, pairs


def _hashed_rows(root: Path) -> list[tuple[str, str, int, float]]:
    """(path, content_sha256, phash, label_index) of every photo, hashed as featurize hashes them."""
    rows = []
    for p in sorted(root.glob("*/*.jpg")):
        data = p.read_bytes()
        decoded = decode_image(data, draft_size=256)
        assert decoded.image is not None
        label = float(CLASSES.index(p.parent.name))
        rows.append((spark_path(p), hashlib.sha256(data).hexdigest(), perceptual_hash(decoded.image), label))
    return rows


def test_perceptual_hash_of_a_decoded_image_equals_the_reference(photos):
    for path in sorted(photos.glob("*.*")):
        decoded = decode_image(path.read_bytes())
        assert decoded.image is not None
        assert perceptual_hash(decoded.image) == reference_phash(decoded.image), path.name


def test_bands_cover_the_hash_so_every_pair_within_the_distance_shares_one():
    for distance in (0, 3, 8, 20):
        cut = nearcopy.bands(distance)
        assert len(cut) == distance + 1 and sum(w for _, w in cut) == 64
        assert [s for s, _ in cut] == list(itertools.accumulate([0] + [w for _, w in cut][:-1]))


@pytest.fixture(scope="module")
def planted_rows(spark, planted):
    """The planted set's rows as featurize would store them (path, content_sha256, phash) plus label_index."""
    hashed = _hashed_rows(planted[0])
    rows = spark.createDataFrame(hashed, "path string, content_sha256 string, phash bigint, label_index double").cache()
    yield rows, {r[0]: r[2] for r in hashed}
    rows.unpersist()


def test_the_search_lists_every_planted_copy_and_no_distinct_photo(planted, planted_rows):
    pairs = planted[1]
    rows, hashes = planted_rows
    found = {(r.path_a, r.path_b): r.distance for r in nearcopy.near_pairs(rows, "path", DISTANCE).collect()}
    groups: dict[str, set[str]] = {}
    for original, copy in pairs:
        groups.setdefault(original, {original}).add(copy)
    expected = {tuple(sorted(p)) for g in groups.values() for p in itertools.combinations(g, 2)}
    assert set(found) == expected  # every copy (with its original and its fellow copies), nothing else
    assert all(d == nearcopy.hamming(hashes[a], hashes[b]) for (a, b), d in found.items())
    exact = {(r.path_a, r.path_b) for r in nearcopy.exact_pairs(rows, "path").collect()}
    assert exact == {tuple(sorted(pairs[-1]))}


def test_copies_share_their_originals_split_and_fold(planted, planted_rows):
    pairs, (rows, _) = planted[1], planted_rows
    for seed in (0, 1):  # a copy beside its original, whichever way the groups fall
        marked = cv.with_split(rows, SplitConfig(folds=3, seed=seed), True).cache()
        where = {r.path: (r.split, r.fold) for r in marked.collect()}
        assert all(where[a] == where[b] for a, b in pairs), seed
        assert cv.grouped_images(marked) == len(pairs) + 4  # each copy, and each of the 4 originals
        marked.unpersist()
    without = cv.with_split(rows.drop("phash"), SplitConfig(folds=3), True)
    assert cv.grouped_images(without) == 2  # by bytes alone: the byte-identical pair only


def test_folds_and_test_are_stratified_within_one_image_and_repeatable(spark):
    """Single images (no copies): every class's test share and fold shares within one image of proportional."""
    sizes = {0.0: 41, 1.0: 17, 2.0: 9, 3.0: 5}
    rows = [(f"/x/{c}_{i}.jpg", hashlib.sha256(f"{c}/{i}".encode()).hexdigest(), c) for c, n in sizes.items() for i in range(n)]
    frame = spark.createDataFrame(rows, "path string, content_sha256 string, label_index double").repartition(3)
    split = SplitConfig(test=0.2, folds=4, seed=3)
    marked = cv.with_split(frame, split, stratify=True).cache()
    assert marked.where("(split = 'test') != (fold is null)").count() == 0 and marked.count() == len(rows)
    counts = {(r.label_index, r.g): r["count"] for r in marked.groupBy("label_index", F.coalesce(F.col("fold").cast("string"), "split").alias("g")).count().collect()}
    for c, n in sizes.items():
        test = counts.get((c, "test"), 0)
        assert abs(test - split.test * n) < 1, (c, test)
        for fold in range(4):
            assert abs(counts.get((c, str(fold)), 0) - (n - test) / 4) < 1, (c, fold, counts)
    again = {r.path: (r.split, r.fold) for r in cv.with_split(frame.repartition(5), split, stratify=True).collect()}
    assert again == {r.path: (r.split, r.fold) for r in marked.collect()}  # same rows and seed, same split
    other = {r.path: r.fold for r in cv.with_split(frame, SplitConfig(test=0.2, folds=4, seed=4), True).collect()}
    assert other != {p: f for p, (_, f) in again.items()}
    marked.unpersist()


def test_a_table_without_phash_still_appends_and_rehash_fills_it_in_one_commit(spark, photos, tmp_path):
    """A table written before the column (its old schema, by delta-rs) takes a run's rows through
    the writer (the column merged in, one version); `imgfeat rehash` then hashes its old ok rows
    from their files, as one version across featurizers."""
    from datetime import datetime, timezone

    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    from imgfeat import delta
    from imgfeat.config import FeaturizeConfig, load_config
    from imgfeat.rehash import file_phash
    from imgfeat.runs import rehash_run
    from imgfeat.schema import TABLE_ARROW_SCHEMA, TABLE_SPARK_SCHEMA

    files = [*sorted(photos.glob("*.jpg"))[:3], tmp_path / "gone.jpg"]  # the last one's file is gone
    now = datetime.now(timezone.utc)

    def row(i: int, path: Path, featurizer: str, phash: int | None) -> dict:
        return {"path": spark_path(path), "content_sha256": f"{i:064x}", "length": 1, "modification_time": now,
                "featurizer": featurizer, "featurizer_fingerprint": featurizer, "embedding": [0.0], "dim": 1,
                "status": "ok", "error": None, "width": 1, "height": 1, "phash": phash, "run_id": "r",
                "featurized_at": now}

    old = pa.schema([f for f in TABLE_ARROW_SCHEMA if f.name != "phash"])
    table = str(tmp_path / "table")
    rows = [row(i, p, "a" if i % 2 else "b", None) for i, p in enumerate(files)]
    write_deltalake(table, pa.Table.from_pylist(rows, schema=old), partition_by=["featurizer"])

    new = spark.createDataFrame([row(9, photos / "chelsea.png", "a", 42)], TABLE_SPARK_SCHEMA)
    assert delta.commit(spark, delta.stage(new, table, "run"), table, "a", "run", {}).version == 1
    stored = {r.path: r.phash for r in delta.read_table(spark, table).collect()}
    assert stored == {**{spark_path(p): None for p in files}, spark_path(photos / "chelsea.png"): 42}

    cfg = load_config(FeaturizeConfig, overrides=["tracking.enabled=false"], table=table)
    done = rehash_run(cfg, spark)
    assert (done.filled, done.unreadable, done.version) == (3, 1, 2)  # both featurizers' rows: one version
    stored = {r.path: r.phash for r in delta.read_table(spark, table).collect()}
    hashes = {spark_path(p): file_phash(str(p), 10**8) for p in files}  # None for the gone file
    assert stored == {**hashes, spark_path(photos / "chelsea.png"): 42} and list(hashes.values()).count(None) == 1
    again = rehash_run(cfg, spark)
    assert (again.filled, again.committed, DeltaTable(table).version()) == (0, False, 2)  # nothing left to do
