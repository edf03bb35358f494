"""Batch featurization inside Spark workers.

Owns: the Spark plan (`mapInPandas`, iterator form) that runs
`imgfeat.inference`'s pipeline over a listing of files — read, hash, decode
and prepare in a thread pool while the model runs on the previous batch —
shipping graph files to executors, and the per-task accounting (model loads,
peak memory, progress). Must not: list files, write tables, know about
tracking, or import torch at module level (workers that run ONNX graphs have
none).

Every input row yields exactly one output row: failures are rows with a
`status` and an `error`, never exceptions and never gaps.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
from pyspark import Accumulator, AccumulatorParam
from pyspark.sql import DataFrame, SparkSession

from imgfeat import faults
from imgfeat.featurizers import Featurizer, FeaturizerSpec
from imgfeat.inference import (
    Prepared,
    WorkerOptions,
    cached_featurizer,
    pick_device,
    pipelined,
    prepare_bytes,
    task_cores,
)
from imgfeat.progress import Reporter
from imgfeat.readers import DEFAULT_LIMITS, ReadLimits, read_status
from imgfeat.schema import WORKER_SPARK_SCHEMA
from imgfeat.sources import read_bytes

__all__ = [
    "WorkerOptions",
    "Prepared",
    "cached_featurizer",
    "pick_device",
    "pipelined",
    "prepare_bytes",
    "prepare_path",
]


def worker_featurizer(
    spec: FeaturizerSpec, opts: WorkerOptions, on_load: Callable[[], None] | None = None
) -> Featurizer:
    """This worker's featurizer for `opts`: the shipped ONNX graph when there is one
    (torch is not imported), else torch on `opts.device` with the task's cores as threads."""
    if opts.graph:
        return cached_featurizer(spec, "cpu", on_load, graph=shipped_file(opts.graph))
    import torch

    torch.set_num_threads(task_cores())
    return cached_featurizer(spec, pick_device(opts.device), on_load)


def ship_graph(spark: SparkSession, path: str) -> str:
    """Send a graph file to every executor (`SparkContext.addFile`, a file, never a
    pickled object); returns the name `WorkerOptions.graph` takes. The file's name
    carries its sha256, so a changed graph is never mistaken for a shipped one; a
    graph this session already ships is not added again."""
    name = os.path.basename(path)
    if not any(shipped.rsplit("/", 1)[-1] == name for shipped in spark.sparkContext.listFiles):
        spark.sparkContext.addFile(path)
    return name


def shipped_file(name: str) -> str:
    """The local copy of a file `ship_graph` sent (an absolute path is used as it is)."""
    if os.path.isabs(name):
        return name
    from pyspark import SparkFiles

    return SparkFiles.get(name)


class MaxParam(AccumulatorParam):
    """Accumulator that keeps the largest value added (for peak memory)."""

    def zero(self, value: float) -> float:
        return 0.0

    def addInPlace(self, value1: float, value2: float) -> float:
        return max(value1, value2)


def reset_peak_rss() -> None:
    """Restart this process's RSS high-water mark, so the next reading covers
    this task only, not the reused worker's whole life (Linux; else a no-op)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def peak_rss_mib() -> float:
    """Peak resident memory of this process since `reset_peak_rss`, in MiB."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource  # no /proc: the process's lifetime peak (bytes on macOS, else kB)

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)


def prepare_path(path: str, model: Featurizer, max_pixels: int, limits: ReadLimits = DEFAULT_LIMITS) -> Prepared:
    """Read an image (within `limits`) then `prepare_bytes`; a failed read is a row with the
    status `readers.read_status` gives (read_error, too_large, unsupported)."""
    try:
        data = read_bytes(path, limits)
    except Exception as exc:
        return Prepared(None, read_status(exc), f"{type(exc).__name__}: {exc}", None, None, None)
    return prepare_bytes(data, model, max_pixels)


def featurize_listing_batches(
    batches: Iterator[pd.DataFrame],
    spec: FeaturizerSpec,
    opts: WorkerOptions,
    loads: Accumulator | None = None,
    peak_rss: Accumulator | None = None,
    progress: Reporter = Reporter(),
) -> Iterator[pd.DataFrame]:
    """mapInPandas body: listing rows (path, modification_time, length) → worker rows.

    `peak_rss` (a `MaxParam` accumulator) gets this task's peak worker RSS in MiB;
    `progress` hears of every batch done.
    """
    reset_peak_rss()
    model = worker_featurizer(spec, opts, _counter(loads))
    for listing in batches:
        if listing.empty:
            continue
        rows = listing.to_dict("records")
        limits = opts.read
        jobs = ((int(r["length"] or 0), _bind(prepare_path, r["path"], model, opts.max_pixels, limits)) for r in rows)
        start = 0
        for items, vectors in pipelined(jobs, model, opts):
            chunk = listing.iloc[start : start + len(items)]
            start += len(items)
            yield _rows(chunk, items, vectors, spec)
            progress.add(len(items), sum(v is None for v in vectors))
            faults.die_once(faults.KILL_WORKER)  # test hook: a no-op unless its variable is set
    if peak_rss is not None:
        peak_rss.add(peak_rss_mib())


def _rows(
    listing: pd.DataFrame,
    items: list[Prepared],
    vectors: list[np.ndarray | None],
    spec: FeaturizerSpec,
) -> pd.DataFrame:
    ok = [v is not None for v in vectors]
    return pd.DataFrame(
        {
            "path": listing["path"].to_numpy(),
            "content_sha256": [i.content_sha256 for i in items],
            "length": listing["length"].to_numpy(),
            "modification_time": listing["modification_time"].to_numpy(),
            "featurizer": spec.name,
            "featurizer_fingerprint": spec.fingerprint,
            "embedding": vectors,
            "dim": pd.array([spec.dim if k else None for k in ok], dtype="Int32"),
            "status": [i.status.value for i in items],
            "error": [i.error for i in items],
            "width": pd.array([i.width for i in items], dtype="Int32"),
            "height": pd.array([i.height for i in items], dtype="Int32"),
            "phash": pd.array([i.phash for i in items], dtype="Int64"),
        }
    )


def featurize_listing(
    listing: DataFrame,
    spec: FeaturizerSpec,
    opts: WorkerOptions,
    *,
    files_per_partition: int = 256,
    loads: Accumulator | None = None,
    peak_rss: Accumulator | None = None,
    count: int | None = None,
    progress: Reporter = Reporter(),
) -> DataFrame:
    """Plan (lazily) the featurization of a listing frame; one row out per row in.

    The listing is repartitioned so every core gets work and no task holds
    more than `files_per_partition` files (balance, and bounded retry cost).
    Round-robin, not by a hash of the path: every task gets the same number of
    files (±1), so no core idles at the end waiting for a larger partition.
    `loads` counts model loads; `peak_rss` (`MaxParam`) gets the workers' peak RSS in MiB.
    `count` is the listing's row count when the caller knows it (else counted here).
    `progress` hears of every batch of images done.
    """
    spark = listing.sparkSession
    n = listing.count() if count is None else count
    cores = spark.sparkContext.defaultParallelism
    parts = max(1, min(max(cores, -(-n // files_per_partition)), n or 1))
    spec_, opts_, loads_, peak_, progress_ = spec, opts, loads, peak_rss, progress  # only small objects

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        return featurize_listing_batches(batches, spec_, opts_, loads_, peak_, progress_)

    return listing.repartition(parts).mapInPandas(run, WORKER_SPARK_SCHEMA)


def _bind(fn: Callable[..., Prepared], *args: Any) -> Callable[[], Prepared]:
    return lambda: fn(*args)


def _counter(acc: Accumulator | None) -> Callable[[], None] | None:
    return None if acc is None else (lambda: acc.add(1))
