"""The featurize job end to end: files → Spark workers → one Delta version."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from deltalake import DeltaTable
from PIL import Image

from imgfeat.config import FeaturizeConfig, load_config
from imgfeat.decode import decode_image
from imgfeat.featurizers import load_featurizer, resolve_featurizer
from imgfeat.runs import featurize_run
from imgfeat.schema import TABLE_ARROW_SCHEMA, TABLE_SPARK_SCHEMA


def _cfg(input_dir: Path, table: Path, **sets: object) -> FeaturizeConfig:
    overrides = [f"{k}={v}" for k, v in sets.items()]
    return load_config(
        FeaturizeConfig,
        overrides=["tracking.enabled=false", *overrides],
        input=str(input_dir),
        table=str(table),
    )


def _rows(table: Path) -> list[dict]:
    return DeltaTable(str(table)).to_pyarrow_table().to_pylist()


def test_one_row_per_file_schema_and_reference_embeddings(spark, inputs, tmp_path):
    table = tmp_path / "emb"
    summary = featurize_run(_cfg(inputs, table, **{"featurizer.batch_size": 3}), spark)

    files = sorted(p for p in inputs.rglob("*") if p.is_file())
    dt = DeltaTable(str(table))
    arrow = dt.to_pyarrow_table()
    assert arrow.num_rows == len(files) == summary.listed
    assert arrow.schema.names == TABLE_ARROW_SCHEMA.names
    for name in TABLE_ARROW_SCHEMA.names:
        assert arrow.schema.field(name).type == TABLE_ARROW_SCHEMA.field(name).type, name
    assert dt.metadata().partition_columns == ["featurizer"]
    assert summary.committed and summary.version == 0 == dt.version()
    assert summary.counts == {"ok": len(files)}

    # Spark reads the same table through the contract schema.
    from imgfeat.delta import read_table

    frame = read_table(spark, str(table))
    assert frame.schema == TABLE_SPARK_SCHEMA and frame.count() == len(files)

    # Each embedding equals a direct single-process forward pass (max abs 1e-4).
    spec = resolve_featurizer("efficientnet_lite0")
    model = load_featurizer(spec)
    by_name = {Path(r["path"]).name: r for r in arrow.to_pylist()}
    for f in files:
        row = by_name[f.name]
        assert row["status"] == "ok" and row["error"] is None
        assert row["dim"] == 1280 and len(row["embedding"]) == 1280
        decoded = decode_image(f.read_bytes(), draft_size=spec.resize_size)
        ref = model.embed(model.prepare(decoded.image)[None])[0]
        np.testing.assert_allclose(np.asarray(row["embedding"], np.float32), ref, atol=1e-4, rtol=0)
        with Image.open(f) as im:
            assert (row["width"], row["height"]) == im.size
        assert row["featurizer_fingerprint"] == spec.fingerprint
        assert row["run_id"] == summary.run_id


def test_rerun_adds_nothing_and_new_files_land_in_one_version(spark, inputs, tmp_path):
    table = tmp_path / "emb"
    cfg = _cfg(inputs, table)
    first = featurize_run(cfg, spark)
    n = len(_rows(table))

    again = featurize_run(cfg, spark)
    assert not again.committed and again.version == first.version
    assert again.featurized == 0 and again.skipped == n
    assert again.model_loads == 0 and again.worker_peak_rss_mib == 0  # no Python worker ran
    assert not (table / "_imgfeat_staging").exists() or not any((table / "_imgfeat_staging").iterdir())
    assert len(_rows(table)) == n and DeltaTable(str(table)).version() == first.version

    sub = inputs / "new" / "deeper"
    sub.mkdir(parents=True)
    for i, src in enumerate(sorted(inputs.glob("*.jpg"))[:3]):
        img = Image.open(src).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        img.save(sub / f"flipped {i}.JPG", quality=85)  # upper-case ext, space in name
    third = featurize_run(cfg, spark)
    assert third.committed and third.version == first.version + 1
    assert third.counts == {"ok": 3}
    rows = _rows(table)
    assert len(rows) == n + 3
    assert len({r["path"] for r in rows}) == n + 3


def test_changed_bytes_replace_the_row(spark, inputs, tmp_path):
    table = tmp_path / "emb"
    cfg = _cfg(inputs, table)
    featurize_run(cfg, spark)
    before = {r["path"]: r for r in _rows(table)}

    target = inputs / "coffee.jpg"
    Image.open(target).rotate(90, expand=True).save(target, quality=70)
    summary = featurize_run(cfg, spark)
    after = {r["path"]: r for r in _rows(table)}

    assert summary.counts == {"ok": 1} and len(after) == len(before)
    changed = [p for p in after if after[p]["content_sha256"] != before[p]["content_sha256"]]
    assert len(changed) == 1 and changed[0].endswith("coffee.jpg")
    assert after[changed[0]]["embedding"] != before[changed[0]]["embedding"]


def test_model_loads_once_per_worker_not_per_batch(spark, inputs, tmp_path):
    summary = featurize_run(
        _cfg(inputs, tmp_path / "emb", **{"featurizer.batch_size": 1, "featurizer.weights": "random"}),
        spark,
    )
    batches = summary.featurized  # batch size 1: one batch per image
    assert batches >= 6
    # local[2]: at most two Python workers, each loads the model once (a worker
    # reused from an earlier test with the same model loads zero times).
    assert summary.model_loads <= 2 < batches


def test_commit_records_run_metadata(spark, inputs, tmp_path):
    from imgfeat.delta import run_metadata

    table = tmp_path / "emb"
    summary = featurize_run(_cfg(inputs, table), spark)
    meta = run_metadata(spark, str(table), summary.version)
    assert meta["imgfeat.run_id"] == summary.run_id
    assert meta["imgfeat.featurizer_fingerprint"] == summary.fingerprint
    assert '"ok": ' in meta["imgfeat.counts"]
    assert "torch" in meta["imgfeat.versions"]


def test_a_listing_left_cached_by_a_failed_run_never_goes_stale(spark, inputs):
    from imgfeat.sources import list_images

    leaked = list_images(spark, str(inputs), ["jpg"])  # as if the run died before releasing it
    first = sorted(inputs.glob("*.jpg"))
    first[0].unlink()
    shutil.copy(first[1], inputs / "added.jpg")
    (inputs / "empty.jpg").write_bytes(b"")

    again = list_images(spark, str(inputs), ["jpg"])
    paths = sorted(r["path"].rsplit("/", 1)[1] for r in again.frame.collect())
    assert paths == sorted([p.name for p in first[1:]] + ["added.jpg", "empty.jpg"])
    assert again.count == len(paths)
    again.release()
    leaked.release()
