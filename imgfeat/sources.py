"""Sources: which images exist, which of them are new, and how a worker reads one.

Owns: listing image files under a URI with Spark's `binaryFile` source
(metadata only: path, size, modification time; no bytes; zero-byte files,
which Spark's scans skip, are added back), the incremental
filter against what the table already holds, and reading one file's bytes
inside a worker. Must not: decode or featurize.

Why workers read the bytes themselves instead of taking binaryFile's
`content` column: a file deleted or unreadable between listing and reading
must become a `read_error` row, not a failed Spark task; unchanged files are
skipped before any byte is read; and memory is bounded by what a worker holds
in flight, not by an Arrow batch of whole files.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pandas as pd
from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from imgfeat.errors import InputError, Status

#: Columns of a listing frame (named as in the embeddings table).
LISTING_COLUMNS = ("path", "modification_time", "length")


@dataclass(frozen=True)
class Listing:
    """The image files under an input: a Spark frame of (path,
    modification_time, length) over a cached scan, and its row count.
    `release()` (or leaving a `with` block) frees the cache."""

    frame: DataFrame
    count: int
    cached: DataFrame

    def release(self) -> None:
        self.cached.unpersist()

    def __enter__(self) -> Listing:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def list_images(spark: SparkSession, uri: str, extensions: Iterable[str]) -> Listing:
    """All image files under `uri` (directory, glob or URI), recursively, listed now.

    Extensions match case-insensitively. Spark skips hidden files (`.x`, `_x`).
    Raises `InputError` if the location does not exist. The scan reads no
    bytes, so it runs as one task per core (Spark would plan one per ~32
    files) and is cached: later stages filter and repartition it cheaply.
    """
    exts = _normalized(extensions)
    check_input(uri, exts)
    pattern = r"\.(" + "|".join(exts) + r")$"
    reader = spark.read.format("binaryFile")
    if not any(ch in uri for ch in "*?["):
        reader = reader.option("recursiveFileLookup", "true")
    try:
        frame = reader.load(uri)
    except AnalysisException as exc:
        raise InputError(f"input not found or unreadable: {uri} ({_first_line(exc)})") from None
    cores = max(1, spark.sparkContext.defaultParallelism)
    scanned = frame.select(
        F.col("path"),
        F.col("modificationTime").alias("modification_time"),
        F.col("length"),
        F.lower(F.col("path")).rlike(pattern).alias("_image"),
        # Spark reuses a cached frame with an equal plan, and an earlier listing of
        # this folder still cached (a run that failed before `release`) would be
        # stale: this literal makes every listing's plan its own.
        F.lit(uuid.uuid4().hex).alias("_listing"),
    )
    cached = scanned.coalesce(cores).cache()
    counted = cached.agg(F.count("*"), F.sum(F.col("_image").cast("long"))).first()  # fills the cache
    assert counted is not None  # a global aggregate has exactly one row
    files, images = counted
    listing = Listing(cached.where("_image").drop("_image", "_listing"), int(images or 0), cached)
    index = frame._jdf.inputFiles()  # the file index's paths, a Java array: len() is one Py4J call
    if len(index) > files:  # zero-byte files: in the index, skipped by the scan
        whole = listing.frame.unionByName(_empty_files(frame, index, pattern)).coalesce(cores).cache()
        count = whole.count()  # before the release: the union reads the cached scan
        listing.release()
        listing = Listing(whole, count, whole)
    return listing


def _canonical(column: Column) -> Column:
    """A file URI as the scan writes it: the index says file:///x where the scan says file:/x."""
    return F.regexp_replace(column, r"^([A-Za-z][A-Za-z0-9+.-]*):///", "$1:/").alias("uri")


def _empty_files(frame: DataFrame, index: object, pattern: str) -> DataFrame:
    """The zero-byte image files under `frame`'s location, as listing rows.

    Spark's file index lists them but its scans skip them (only non-empty
    files get a split), so binaryFile never returns them and they would get
    no row. They are the `index` files (`frame`'s `inputFiles`, a Java array
    kept in the JVM) that the scan did not return; a worker stats each so its
    row has the same key on every run. Only planned when the index holds more
    files than the scan returned.
    """
    spark = frame.sparkSession
    jvm = spark.sparkContext._jvm
    assert jvm is not None  # set while the SparkContext is up
    files = jvm.scala.collection.immutable.ArraySeq.unsafeWrapArray(index)
    strings = jvm.org.apache.spark.sql.Encoders.STRING()
    index = DataFrame(spark._jsparkSession.createDataset(files, strings).toDF(), spark)
    missing = index.select(_canonical(F.col("value"))).where(F.lower("uri").rlike(pattern))
    scanned = frame.select(_canonical(F.col("_metadata.file_path")))
    schema = "path string, modification_time timestamp, length long"
    return missing.join(scanned, "uri", "left_anti").mapInPandas(_stat_uris, schema)


def _stat_uris(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """URIs → listing rows; a file gone since the listing keeps a null time
    (its read then fails: a read_error row, not a missing one)."""
    for batch in batches:
        paths = [_uri_to_path(u) for u in batch["uri"]]
        stats = [_stat(p) for p in paths]
        yield pd.DataFrame(
            {
                "path": paths,
                "modification_time": pd.to_datetime([t for t, _ in stats], utc=True),
                "length": pd.array([n for _, n in stats], dtype="Int64"),
            }
        )


def _uri_to_path(uri: str) -> str:
    """A Spark file URI (`file:/a%20b.jpg`) as Spark's listing writes the path (`file:/a b.jpg`)."""
    parts = urlsplit(uri)
    authority = f"//{parts.netloc}" if parts.netloc else ""
    return f"{parts.scheme}:{authority}{unquote(parts.path)}" if parts.scheme else unquote(uri)


def _stat(path: str) -> tuple[pd.Timestamp | None, int]:
    """(modification time to the millisecond, as Spark lists it; size) of a file, or (None, 0)."""
    try:
        local = local_path(path)
        if local is not None:
            st = os.stat(local)
            return pd.Timestamp(st.st_mtime_ns // 1_000_000, unit="ms", tz="UTC"), st.st_size
        import fsspec

        fs, key = fsspec.core.url_to_fs(_fsspec_url(path))
        info = fs.info(key)
    except (OSError, ValueError):
        return None, 0
    stamp = next((info[k] for k in ("mtime", "LastModified", "last_modified", "created") if info.get(k)), None)
    if stamp is None:
        return None, int(info.get("size") or 0)
    when = pd.Timestamp(stamp, unit="s") if isinstance(stamp, (int, float)) else pd.Timestamp(stamp)
    return (when.tz_localize("UTC") if when.tzinfo is None else when.tz_convert("UTC")), int(info.get("size") or 0)


def only_new(listing: DataFrame, existing: DataFrame | None) -> DataFrame:
    """Drop files the table already holds unchanged for this featurizer.

    `existing` has path, length, modification_time, status of the table rows
    with the current featurizer fingerprint. A file counts as unchanged when
    path, size and modification time all match; rows that failed to *read*
    last time are retried (that failure is usually transient). A file whose
    bytes changed shows a new size or time, is featurized again and its row
    replaced by the merge.
    """
    if existing is None:
        return listing
    keep = existing.where(F.col("status") != Status.READ_ERROR.value).select(*LISTING_COLUMNS)
    return listing.join(F.broadcast(keep), on=list(LISTING_COLUMNS), how="left_anti")


def read_bytes(path: str) -> bytes:
    """Read one listed file (a Spark path string) in a worker; raises OSError."""
    local = local_path(path)
    if local is not None:
        return Path(local).read_bytes()
    import fsspec  # remote stores: s3/gs/abfs/hdfs… through their fsspec driver

    with fsspec.open(_fsspec_url(path), "rb") as handle:
        return handle.read()


def _fsspec_url(path: str) -> str:
    """Hadoop's s3a:// and s3n:// are fsspec's s3://."""
    return path.replace("s3a://", "s3://", 1).replace("s3n://", "s3://", 1)


def local_path(path: str) -> str | None:
    """The local file behind a Spark path, or None for a remote store.

    Spark lists paths unescaped (`file:/data/café photo#1.jpg`), so they are
    split on the scheme only, never URL-parsed. DBFS is mounted at /dbfs.
    """
    scheme, sep, rest = path.partition(":")
    if not sep or len(scheme) == 1:  # no scheme, or a Windows drive letter
        return path
    scheme = scheme.lower()
    if scheme == "file":
        return "/" + rest.lstrip("/") if rest.startswith("/") else rest
    if scheme == "dbfs":
        return "/dbfs/" + rest.lstrip("/")
    return None


def check_input(uri: str, extensions: Iterable[str]) -> None:
    """Fail fast, without Spark, on a local input that is missing or holds no
    file with one of `extensions` (the walk stops at the first match).

    Conservative: hidden files count here though Spark skips them, so this
    never rejects what Spark would list; remote URIs and globs are left to
    the listing, which raises the same errors later.
    """
    local = local_path(uri)
    if local is None or any(ch in uri for ch in "*?["):
        return
    if not os.path.exists(local):
        raise InputError(f"input path does not exist: {uri}")
    if not os.path.isdir(local):
        return
    suffixes = tuple(f".{e}" for e in _normalized(extensions))
    for root, dirs, files in os.walk(local):
        if any(name.lower().endswith(suffixes) for name in files):
            return
        if any(os.path.islink(os.path.join(root, d)) for d in dirs):
            return  # not followed here (loops); the listing decides
    raise InputError(f"no images under {uri} (extensions: {', '.join(_normalized(extensions))})")


def sample_local_files(uri: str, extensions: Iterable[str], limit: int) -> list[str]:
    """Up to `limit` image files of a local input, found without Spark (the first
    ones `os.walk` meets, in sorted order); [] for a remote URI or a glob."""
    local = local_path(uri)
    if local is None or any(ch in uri for ch in "*?[") or limit < 1:
        return []
    if os.path.isfile(local):
        return [local]
    suffixes = tuple(f".{e}" for e in _normalized(extensions))
    found: list[str] = []
    for root, dirs, files in os.walk(local):
        dirs.sort()
        found += [
            os.path.join(root, n) for n in sorted(files) if n.lower().endswith(suffixes) and not n.startswith(".")
        ]
        if len(found) >= limit:
            break
    return found[:limit]


def _normalized(extensions: Iterable[str]) -> list[str]:
    return sorted({e.lower().lstrip(".") for e in extensions})


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
