"""The rehash job: fill the perceptual hash of rows featurized before the table stored it.

Owns: the order of a rehash run (rows lacking a hash read, hashed on the workers,
staged, committed as ONE table version across featurizers) and its summary. Must
not: hash images itself (`imgfeat.rehash` does), parse arguments, or print anything
but progress. Not tracked in MLflow: it changes no embedding, only fills a column.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from imgfeat import delta, rehash
from imgfeat.config import FeaturizeConfig
from imgfeat.errors import InputError
from imgfeat.session import get_spark


@dataclass
class RehashSummary:
    """What a rehash run did; `line()` is what users see."""

    table: str
    filled: int
    unreadable: int  # ok rows whose file no longer reads or decodes: left without a hash
    version: int | None
    committed: bool
    seconds: float = 0.0

    def line(self) -> str:
        landed = f"version {self.version}" if self.committed else f"unchanged at version {self.version}"
        return (
            f"rehash: {self.filled} rows of {self.table} got a perceptual hash ({self.unreadable} files unreadable, "
            f"left without); table {landed}; {self.seconds:.1f} s"
        )


def rehash_run(cfg: FeaturizeConfig, spark: SparkSession | None = None) -> RehashSummary:
    """Hash every ok row of `cfg.table` that lacks a `phash` from its file, in one commit (a
    rerun finds nothing left to do; a crash leaves no version). `cfg.read.max_pixels` applies."""
    started = time.monotonic()
    if not delta.may_exist(cfg.table):
        raise InputError(f"no embeddings table at {cfg.table}: nothing to rehash")
    delta.check_writable(cfg.table)
    spark = spark or get_spark(cfg.spark)
    rows = rehash.unhashed(spark, cfg.table).cache()
    try:
        wanted = rows.count()
        hashed = rehash.with_phash(rows, cfg.read.max_pixels).where(F.col("phash").isNotNull())
        run_id = uuid.uuid4().hex
        staged = delta.stage(hashed, cfg.table, run_id)
        filled = sum(delta.staged_counts(staged).values())
        commit = delta.commit(spark, staged, cfg.table, None, run_id, {"job": "rehash", "rows": filled})
    finally:
        rows.unpersist()
    return RehashSummary(
        cfg.table, filled, wanted - filled, commit.version, commit.committed, time.monotonic() - started
    )
