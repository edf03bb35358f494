"""Perceptual hashes for rows featurized before the table stored them (`imgfeat rehash`).

Owns: which rows lack a hash (`unhashed`: ok rows with a null `phash`) and hashing
them again from their files on the workers (`with_phash`). Must not: write the
table (`runs.rehash` stages and commits through `delta`, one version), featurize,
or track.

The hash comes from the fully decoded image; featurize hashes the image it decodes
for the model (a JPEG may be decoded at 1/2 .. 1/8 scale first), so the two can
differ by a bit or two, far inside `split.near_copy_distance`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from imgfeat import delta
from imgfeat.decode import decode_image, perceptual_hash
from imgfeat.errors import Status
from imgfeat.sources import read_bytes


def unhashed(spark: SparkSession, table: str) -> DataFrame:
    """The ok rows of `table` (latest version) without a perceptual hash, every column."""
    return delta.read_table(spark, table).where((F.col("status") == Status.OK.value) & F.col("phash").isNull())


def with_phash(rows: DataFrame, max_pixels: int) -> DataFrame:
    """`rows` with `phash` hashed from each row's file; null where the file no longer reads or decodes."""

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            batch["phash"] = pd.array([file_phash(p, max_pixels) for p in batch["path"]], dtype="Int64")
            yield batch

    return rows.mapInPandas(run, rows.schema)


def file_phash(path: str, max_pixels: int) -> int | None:
    """The perceptual hash of the image at `path`; None for a file gone or no longer an image."""
    try:
        data = read_bytes(path)
    except Exception:  # noqa: BLE001 - a vanished file stays unhashed, the rest go on
        return None
    decoded = decode_image(data, max_pixels=max_pixels)
    return None if decoded.image is None else perceptual_hash(decoded.image)
