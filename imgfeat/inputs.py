"""Inputs beyond a folder: tables that name images, and zip archives, listed as a folder is.

Owns: which kind an input is (`input_kind`: images, csv, parquet, delta or
zip), resolving a table's cells to image paths (`resolve_cell`, `resolved`:
relative paths against the table's folder, the same rule for featurize and for
train's labels), and the listing frame of a table's distinct images
(`list_table`) or of an archive's members (`list_archive`): the same
(path, modification_time, length) frame `sources.list_images` gives, so the
featurize, merge and commit code is one path whatever the input. Must not:
read Delta tables (the caller reads the table and passes the frame), decode,
featurize or write.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import uuid
from collections.abc import Iterator, Sequence

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from imgfeat import archive, sources
from imgfeat.errors import InputError
from imgfeat.readers import DEFAULT_LIMITS, ReadLimits, filesystem, local_path
from imgfeat.sources import LISTING_COLUMNS, Listing, stat_rows

#: Input kinds; the table kinds are those `labels.source` reads.
TABLE_KINDS = ("csv", "parquet", "delta")
_LISTING_SCHEMA = "path string, modification_time timestamp, length long"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")


def input_kind(uri: str, given: str = "auto") -> str:
    """`given`, or for auto: zip for .zip, csv for .csv, parquet for .parquet/.pq, delta for a
    folder with a `_delta_log`, else images (a folder, glob or URI of image files)."""
    if given != "auto":
        return given
    name = uri.lower().rstrip("/")
    if archive.is_archive(name):
        return "zip"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    return "delta" if _has_delta_log(uri) else "images"


def check_input(uri: str, kind: str, extensions: Sequence[str]) -> None:
    """Fail fast, before Spark starts: a folder of images as `sources.check_input` does; a local
    table or archive that does not exist (a Delta table folder holds no images, so it is not walked)."""
    if kind == "images":
        sources.check_input(uri, extensions)
        return
    local = local_path(uri)
    if local is not None and not os.path.exists(local):
        raise InputError(f"input path does not exist: {uri}")


def table_format(uri: str, given: str = "auto") -> str:
    """The table kind of a labels or tabular `source` (auto: by `input_kind`, else Parquet)."""
    kind = input_kind(uri, given)
    return kind if kind in (*TABLE_KINDS, "zip") else "parquet"


def table_folder(uri: str) -> str:
    """The folder a table's relative paths resolve against: the one that holds the table
    (a CSV file's folder, or the folder above a Parquet or Delta table's own), as a URI;
    for a zip, its CSV's folder inside it (a member key)."""
    local = local_path(uri)
    if local is not None and not uri.startswith("dbfs:"):
        return "file:" + os.path.dirname(os.path.abspath(local.rstrip("/")))
    return uri.rstrip("/").rpartition("/")[0]


def resolve_cell(cell: object, base: str) -> str | None:
    """The image a table cell names, as a listing key; None for an empty cell.

    A URI (`https://`, `s3://`, `file:` ...) is kept; an absolute path becomes
    `file:/path`; a relative one joins `base` (`table_folder`), with `.` and
    `..` folded so `./a.jpg` and `a.jpg` are one image, and one a folder
    listing gives the same key.
    """
    if cell is None or (isinstance(cell, float) and pd.isna(cell)):
        return None
    text = str(cell).strip()
    if not text:
        return None
    if archive.is_member_key(base):
        where, folder = archive.split_key(base)
        return archive.member_key(where, archive.resolve_member(text, folder))
    scheme = _SCHEME.match(text)
    if scheme and scheme.group(1).lower() != "file":
        return text
    if scheme or text.startswith("/"):
        local = local_path(text)
        assert local is not None  # a file: URI or a path
        return "file:" + posixpath.normpath(local)
    found = _SCHEME.match(base)
    if found is None or found.group(1).lower() == "file":
        return "file:" + posixpath.normpath(posixpath.join(local_path(base) or base, text))
    head, rest = base[: found.end()], base[found.end() :]
    slashes = "//" if rest.startswith("//") else ""  # s3://bucket/dir, or dbfs:/dir
    return head + slashes + posixpath.normpath(posixpath.join(rest[len(slashes) :], text))


def resolved(column: Column, base: str) -> Column:
    """`resolve_cell` over a string column, in the workers."""

    @F.pandas_udf("string")  # type: ignore[call-overload]
    def resolve(cells: pd.Series) -> pd.Series:
        return cells.map(lambda c: resolve_cell(c, base))

    return resolve(column.cast("string"))


def list_table(
    frame: DataFrame, uri: str, columns: Sequence[str], limits: ReadLimits, base: str | None = None
) -> Listing:
    """The distinct images a table's `columns` name (an empty cell names none; an image in many
    rows or columns is listed once), each stated in the workers (a remote one within `limits`)."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(f"{uri} lacks image column(s) {', '.join(missing)} (has {', '.join(frame.columns)})")
    cells = frame.select(F.explode(F.array(*[F.col(c).cast("string") for c in columns])).alias("cell"))
    paths = cells.select(resolved(F.col("cell"), base or table_folder(uri)).alias("path"))
    distinct = paths.where(F.col("path").isNotNull()).distinct()

    def stat(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            yield stat_rows(list(batch["path"]), limits)

    return _listed(distinct.mapInPandas(stat, _LISTING_SCHEMA))


def list_archive(
    spark: SparkSession,
    uri: str,
    extensions: Sequence[str],
    columns: Sequence[str],
    limits: ReadLimits,
    max_members: int,
) -> Listing:
    """An archive's images (`archive.list_members`: its one CSV's `columns`, else by
    extension), listed from its central directory on the driver."""
    rows = archive.list_members(uri, extensions, columns, limits, max_members)
    return _listed(spark.createDataFrame(rows, _LISTING_SCHEMA))


def archive_table(uri: str, limits: ReadLimits = DEFAULT_LIMITS) -> tuple[pd.DataFrame, str]:
    """The one CSV inside an archive (cells as strings), and its folder there as a member key:
    a labels source in a zip resolves its paths as featurize lists that zip's members."""
    name, rows = archive.read_csv(uri, limits)
    return rows, archive.member_key(archive.archive_uri(uri), posixpath.dirname(name))


def source_digest(uri: str, limits: ReadLimits) -> str:
    """A short content hash of a table or archive file (sha256 of its bytes, first 16 hex),
    or of a remote one's size and time; what the featurize run records as its input's version."""
    local = local_path(uri)
    digest = hashlib.sha256()
    if local is not None and os.path.isfile(local):
        with open(local, "rb") as handle:
            for block in iter(lambda: handle.read(2**20), b""):
                digest.update(block)
    else:
        digest.update(repr((uri, *stat_rows([uri], limits).iloc[0].tolist())).encode())
    return digest.hexdigest()[:16]


def _listed(frame: DataFrame) -> Listing:
    """`frame` cached and counted as a `Listing`. The literal column makes the plan this
    listing's own, so a stale cache of an earlier one (a run that died) is never reused."""
    spark = frame.sparkSession
    cores = max(1, spark.sparkContext.defaultParallelism)
    cached = frame.withColumn("_listing", F.lit(uuid.uuid4().hex)).coalesce(cores).cache()
    count = cached.count()
    return Listing(cached.select(*LISTING_COLUMNS), count, cached)


def _has_delta_log(uri: str) -> bool:
    local = local_path(uri)
    if local is not None:
        return os.path.isdir(os.path.join(local, "_delta_log"))
    if "*" in uri or "?" in uri:
        return False
    try:
        fs, path = filesystem(uri.rstrip("/") + "/_delta_log", DEFAULT_LIMITS)
        return bool(fs.isdir(path))
    except (OSError, ValueError, ImportError):
        return False
