"""`make bench-scale`: the costs that grow with the embeddings table, on one synthetic table.

    .venv/bin/python bench/scale.py [--rows 1000000 | --ten-million] [--sample 5000] [--out bench/out/commit]

The table is `bench/commit.py`'s (1280-d float32 rows, random paths, built once in
chunks and cached under `--out/scale/base-<rows>`), with efficientnet_lite0's real
fingerprint so that train reads it. On it, one after the other, each figure with the
load average beside it:

- `listing`: `sources.list_images` over a folder of rows x 1.01 one-byte `.jpg` files
  (made once, cached): what every run pays before it knows what is new;
- `anti-join`: the table's keys (`delta.existing_keys`) against a listing of every
  row plus 1 % new files (`sources.only_new`), counted: must find exactly the 1 %;
- `commit`: a run of 1 % new rows landed by `delta.commit` (`commit.time_commit`);
- `table read via driver`: the whole table through delta-rs → Arrow → Spark
  (`delta.read_table`, what jobs do here without delta-spark jars), counted;
- `near-duplicates`: `insights.near_duplicates` (the insights defaults) over the
  table's embeddings read as Parquet by the executors (as delta-spark reads);
- `train`: `train.cross_validate` with labels for a `--sample` of rows (two
  classes): the read of the table, the label join, the split and the fold fits.

Prints `name: value` lines; bench/README.md ("Scale") records them and extrapolates.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/commit.py, as `python bench/scale.py` runs

from commit import DIM, base_table, label, time_commit  # noqa: E402

STAGES = ("listing", "anti-join", "commit", "table read via driver", "near-duplicates", "train")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="table rows (default 1M)")
    parser.add_argument("--ten-million", action="store_true", help="10M rows (~50 GB of table, hours to build)")
    parser.add_argument("--sample", type=int, default=5000, help="labeled rows train's folds fit on")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=100, help="XGBoost rounds per fold fit")
    parser.add_argument("--out", type=Path, default=Path("bench/out/commit"))
    parser.add_argument("--driver-memory", default="8g")
    parser.add_argument("--skip", default="", help=f"comma-separated stages to leave out: {', '.join(STAGES)}")
    args = parser.parse_args()
    rows = 10_000_000 if args.ten_million else args.rows
    skip = {s for s in args.skip.split(",") if s}
    if skip - set(STAGES):
        parser.error(f"unknown stage(s) {sorted(skip - set(STAGES))}; known: {', '.join(STAGES)}")

    from imgfeat.config import FeaturizerConfig, SparkConfig
    from imgfeat.featurizers.resolve import resolve_spec
    from imgfeat.session import get_spark

    out = args.out / "scale"
    fingerprint = resolve_spec(FeaturizerConfig(weights="random")).fingerprint  # what train resolves
    say("load average at start", _load())
    cached = (out / f"base-{rows}" / "_delta_log").is_dir()
    path, seconds = timed(lambda: base_table(out, rows, fingerprint))
    say(
        "table",
        f"{rows:,} rows x {DIM} float32, {_files(path)} data files, {_size(path) / 2**30:.1f} GiB "
        f"({'cached' if cached else f'built in {seconds:.0f} s'})",
    )
    spark = get_spark(
        SparkConfig(
            master="local[2]",
            app_name="imgfeat-bench-scale",
            conf={
                "spark.driver.memory": args.driver_memory,
                "spark.sql.shuffle.partitions": "16",
            },
        )
    )
    spark.range(1).count()
    folder, seconds = timed(lambda: files_folder(out, rows + rows // 100))
    say("files", f"{rows + rows // 100:,} one-byte .jpg files in {folder} (ready in {seconds:.0f} s)")
    stages: dict[str, Callable[[], str]] = {
        "listing": lambda: listing(spark, folder, rows + rows // 100),
        "anti-join": lambda: anti_join(spark, path, rows, fingerprint),
        "commit": lambda: commit(path, out / "work", rows, fingerprint),
        "table read via driver": lambda: driver_read(spark, path, rows),
        "near-duplicates": lambda: near_duplicates(spark, path),
        "train": lambda: train_folds(spark, path, args.sample, args.folds, args.rounds, out),
    }
    for name, stage in stages.items():
        if name not in skip:
            measure(name, stage)
    say("load average at end", _load())
    return 0


def commit(table: Path, work: Path, rows: int, fingerprint: str) -> str:
    """A run of 1 % new rows into a private copy of the table (`commit.time_commit` checks it)."""
    time_commit(table, work, rows, rows // 100, 0, f"scale-{label(rows)}", fingerprint)
    shutil.rmtree(work, ignore_errors=True)
    return f"1 % = {rows // 100:,} new rows, one version"


def listing(spark: Any, folder: Path, files: int) -> str:
    from imgfeat import sources

    with sources.list_images(spark, str(folder), ["jpg"]) as found:
        assert found.count == files, found.count
        return f"{found.count:,} files"


def files_folder(out: Path, n: int) -> Path:
    """`n` one-byte `.jpg` files in 256 folders, made once (`COMPLETE` marks a finished set)."""
    folder = out / f"files-{n}"
    if not (folder / "COMPLETE").exists():
        shutil.rmtree(folder, ignore_errors=True)
        for sub in range(256):
            (folder / f"{sub:02x}").mkdir(parents=True)
        for i in range(n):
            (folder / f"{i % 256:02x}" / f"{i}.jpg").write_bytes(b"x")
        (folder / "COMPLETE").write_text(f"{n}\n")
    return folder


def anti_join(spark: Any, table: Path, rows: int, fingerprint: str) -> str:
    """What an incremental run does once listed: the table's keys against the listing."""
    from pyspark.sql import functions as F

    from imgfeat import delta, sources

    existing = delta.existing_keys(spark, str(table), fingerprint)
    assert existing is not None
    new = rows // 100
    fresh = spark.range(new).select(
        F.concat(F.lit("file:/data/new/"), F.col("id").cast("string"), F.lit(".jpg")).alias("path"),
        F.current_timestamp().alias("modification_time"),
        F.lit(1).cast("long").alias("length"),
    )
    listed = existing.select(*sources.LISTING_COLUMNS).unionByName(fresh)
    found = sources.only_new(listed, existing).count()
    assert found == new, (found, new)
    return f"{found:,} new of {rows + new:,}"


def driver_read(spark: Any, table: Path, rows: int) -> str:
    from imgfeat import delta

    counted = delta.read_table(spark, str(table)).count()
    assert counted == rows, counted
    return f"{counted:,} rows"


def near_duplicates(spark: Any, table: Path) -> str:
    from deltalake import DeltaTable
    from pyspark.sql import functions as F

    from imgfeat import insights
    from imgfeat.config import InsightsConfig

    nd = InsightsConfig().near_duplicates
    rows = spark.read.parquet(*DeltaTable(str(table)).file_uris()).select("path", F.col("embedding").alias("emb_0"))
    units = insights.with_units(rows, ["emb_0"])
    found = insights.near_duplicates(units, nd.threshold, nd.bits, nd.tables, seed=0).count()
    return f"{found} pairs at cosine >= {nd.threshold} ({nd.bits} bits x {nd.tables} tables; random rows: ~none)"


def train_folds(spark: Any, table: Path, sample: int, folds: int, rounds: int, out: Path) -> str:
    """`train.cross_validate` on `sample` labeled rows of the whole table (labels: a CSV)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.dataset as ds
    from deltalake import DeltaTable

    from imgfeat import train
    from imgfeat.config import TrainConfig, load_config

    paths = ds.dataset(DeltaTable(str(table)).file_uris()[:1]).head(sample, columns=["path"]).column("path")
    labels = out / "labels.csv"
    pacsv.write_csv(pa.table({"path": paths, "y": [f"c{i % 2}" for i in range(len(paths))]}), labels)
    cfg = load_config(
        TrainConfig,
        None,
        [
            f"labels.source={labels}",
            "labels.label=y",
            f"split.folds={folds}",
            f"xgboost={{n_estimators: {rounds}}}",
            "featurizers=[{name: efficientnet_lite0, weights: random}]",
        ],
        table=str(table),
    )
    only = spark.createDataFrame([(p,) for p in paths.to_pylist()], "path string")
    scores, _ = train.cross_validate(spark, cfg, only)
    accuracy = scores.mean().get("accuracy", float("nan"))
    return f"{len(paths):,} labeled rows, {folds} folds x {rounds} rounds, cv accuracy {accuracy:.2f} (random labels)"


def measure(name: str, fn: Callable[[], Any]) -> None:
    before = _load()
    result, seconds = timed(fn)
    say(f"{name} s", f"{seconds:.1f} ({result}; load average {before} → {_load()})")


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    result = fn()
    return result, time.monotonic() - started


def say(name: str, value: str) -> None:
    print(f"{name}: {value}", flush=True)


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _files(table: Path) -> int:
    return sum(1 for _ in table.rglob("*.parquet"))


def _size(table: Path) -> int:
    return sum(p.stat().st_size for p in table.rglob("*.parquet"))


if __name__ == "__main__":
    sys.exit(main())
