"""Sources: which images exist, which of them are new, and how a worker reads one.

Owns: listing image files under a URI with Spark's `binaryFile` source
(metadata only: path, size, modification time; no bytes; zero-byte files,
which Spark's scans skip, are added back), the listing frame's shape
(`Listing`, `stat_rows`: tables and archives are listed into it by
`imgfeat.inputs`), the incremental filter against what the table already
holds, and reading one listed image's bytes inside a worker (`read_bytes`: a
file, a URL or a zip member, through `imgfeat.readers` and `imgfeat.archive`).
Must not: decode or featurize.

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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import pandas as pd
from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from imgfeat import archive
from imgfeat.errors import InputError, Status
from imgfeat.readers import DEFAULT_LIMITS, ReadLimits, read_file, stat
from imgfeat.readers import local_path as local_path  # where callers have always found it

#: Columns of a listing frame (named as in the embeddings table).
LISTING_COLUMNS = ("path", "modification_time", "length")
_STAT_THREADS = 16  # paths a listing task states at once (HEAD requests, for URLs)


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
        yield stat_rows([_uri_to_path(u) for u in batch["uri"]])


def stat_rows(paths: list[str], limits: ReadLimits = DEFAULT_LIMITS) -> pd.DataFrame:
    """Listing rows (path, modification_time, length) of `paths`, each stated now
    (one that cannot be: a null time and length 0, so its read makes the row)."""
    with ThreadPoolExecutor(max_workers=max(1, min(_STAT_THREADS, len(paths)))) as pool:
        stats = list(pool.map(lambda p: stat(p, limits), paths))  # remote ones wait on the network
    return pd.DataFrame(
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


def only_new(listing: DataFrame, existing: DataFrame | None) -> DataFrame:
    """Drop files the table already holds unchanged for this featurizer.

    `existing` has path, length, modification_time, status of the table rows
    with the current featurizer fingerprint. A file counts as unchanged when
    path, size and modification time all match (a null time, e.g. a URL whose
    server sends no Last-Modified, matches a null time); rows that failed to
    *read* last time are retried (that failure is usually transient). A file
    whose bytes changed shows a new size or time, is featurized again and its
    row replaced by the merge.
    """
    if existing is None:
        return listing
    keep = existing.where(F.col("status") != Status.READ_ERROR.value).select(
        *[F.col(c).alias(f"_kept_{c}") for c in LISTING_COLUMNS]
    )
    same = [listing[c].eqNullSafe(keep[f"_kept_{c}"]) for c in LISTING_COLUMNS]
    return listing.join(F.broadcast(keep), on=same, how="left_anti")


def read_bytes(path: str, limits: ReadLimits = DEFAULT_LIMITS) -> bytes:
    """Read one listed image (a Spark path, a URL or a zip member's key) in a worker.

    Raises `readers.TooLarge` past `limits.max_bytes`, `readers.Refused` for a
    name imgfeat will not read, OSError otherwise (`readers.read_status` maps them).
    """
    if archive.is_member_key(path):
        return archive.read_member(path, limits)
    return read_file(path, limits)


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
