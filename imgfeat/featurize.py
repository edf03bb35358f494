"""Batch featurization inside Spark workers.

Owns: the per-worker model cache (a torch model, or an ONNX Runtime session
over a graph shipped as a file), the pipeline that turns a stream of files
(or of image bytes) into embedding rows — read, hash, decode and prepare in a
thread pool while the model runs on the previous batch — and the Spark plan
(`mapInPandas`, iterator form) that runs it. Must not: list files, write
tables, know about tracking, or import torch at module level (workers that run
ONNX graphs have none).

Every input row yields exactly one output row: failures are rows with a
`status` and an `error`, never exceptions and never gaps.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from collections import deque
from contextlib import nullcontext
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterable, Iterator

import numpy as np
import pandas as pd
from pyspark import Accumulator, AccumulatorParam
from pyspark.sql import DataFrame, SparkSession

from imgfeat import faults
from imgfeat.decode import decode_image
from imgfeat.errors import Status
from imgfeat.featurizers import Featurizer, FeaturizerSpec, load_featurizer
from imgfeat.featurizers.runtime import load_graph_featurizer
from imgfeat.progress import Reporter
from imgfeat.schema import WORKER_SPARK_SCHEMA
from imgfeat.sources import read_bytes


@dataclass(frozen=True)
class WorkerOptions:
    """What a worker needs besides the featurizer spec; small and picklable."""

    batch_size: int = 32
    max_bytes_in_flight: int = 64 * 1024 * 1024
    max_pixels: int = 100_000_000
    decode_threads: int = 0  # 0 = the task's cores
    device: str = "auto"
    autocast: bool = True  # on CUDA: run the network in bf16 (fp16 without bf16 support)
    graph: str | None = None  # an exported ONNX graph to run instead of torch (`ship_graph`'s name, or a path)


@dataclass
class Prepared:
    """One image after read + hash + decode + prepare (the thread-pool half)."""

    content_sha256: str | None
    status: Status
    error: str | None
    width: int | None
    height: int | None
    pixels: np.ndarray | None  # uint8 (input_size, input_size, 3) when ok


# --------------------------------------------------------------------------
# Per-worker model cache.
#
# Spark reuses Python workers across tasks (spark.python.worker.reuse, on by
# default), so a module-level cache keeps one model per process for the
# worker's life instead of one per batch or per task — the same reasoning as
# pyspark.ml's model_cache. The key is the featurizer fingerprint plus the
# device, so two featurizers in one job each load once. A lock makes
# concurrent first calls from threads of one worker load only once.
# --------------------------------------------------------------------------
_MODELS: dict[tuple[str, str], Featurizer] = {}
_MODELS_LOCK = threading.Lock()


def cached_featurizer(
    spec: FeaturizerSpec, device: str, on_load: Callable[[], None] | None = None, graph: str | None = None
) -> Featurizer:
    """The worker's model for `spec` on `device` (or, given a `graph` file, an
    ONNX Runtime session with the task's cores as threads), built on first use only."""
    key = (spec.fingerprint, f"onnxruntime:{graph}" if graph else device)
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is None:
            if graph:
                model = load_graph_featurizer(spec, graph, task_cores())
            else:
                model = load_featurizer(spec, device=device)
            _MODELS[key] = model
            if on_load is not None:
                on_load()
        return model


def worker_featurizer(spec: FeaturizerSpec, opts: WorkerOptions, on_load: Callable[[], None] | None = None) -> Featurizer:
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


def pick_device(requested: str) -> str:
    """`auto` → this task's GPU when Spark assigned one (or CUDA is visible), else CPU."""
    if requested == "cpu":
        return "cpu"
    import torch

    if not torch.cuda.is_available():
        if requested == "cuda":
            raise RuntimeError("device: cuda requested but CUDA is not available on this worker")
        return "cpu"
    from pyspark import TaskContext

    ctx = TaskContext.get()
    gpus = ctx.resources().get("gpu") if ctx is not None else None
    if gpus is not None and gpus.addresses:
        return f"cuda:{gpus.addresses[0]}"
    return "cuda:0"


def mixed_precision(model: Featurizer, enabled: bool) -> ContextManager[Any]:
    """Autocast for a model on a CUDA device: bf16 where the GPU has it, else fp16.

    Tensor cores and half the memory traffic, about twice the images per second;
    embeddings differ from fp32 in the third significant digit. A no-op on CPU
    (fp32 stays exact there) and when `enabled` is False. `embed` returns float32.
    """
    device = getattr(model, "device", None)
    if not enabled or device is None or device.type != "cuda":
        return nullcontext()
    import torch

    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def task_cores() -> int:
    """Cores Spark gave this task (spark.task.cpus), 1 outside a task."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    try:
        return max(1, int(ctx.cpus())) if ctx is not None else max(1, (os.cpu_count() or 1))
    except Exception:
        return 1


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


# --------------------------------------------------------------------------
# The pure per-image and per-batch work.
# --------------------------------------------------------------------------
def prepare_bytes(data: bytes, model: Featurizer, max_pixels: int) -> Prepared:
    """Hash, decode (draft-downscaled) and prepare one image; never raises."""
    sha = hashlib.sha256(data).hexdigest()
    decoded = decode_image(data, draft_size=model.spec.resize_size, max_pixels=max_pixels)
    if decoded.status is not Status.OK or decoded.image is None:
        return Prepared(sha, decoded.status, decoded.error, decoded.width, decoded.height, None)
    try:
        pixels = model.prepare(decoded.image)
    except Exception as exc:  # a resize of a pathological image must not kill the task
        return Prepared(sha, Status.DECODE_ERROR, f"resize failed: {exc}", decoded.width, decoded.height, None)
    return Prepared(sha, Status.OK, None, decoded.width, decoded.height, pixels)


def prepare_path(path: str, model: Featurizer, max_pixels: int) -> Prepared:
    """Read a file then `prepare_bytes`; an unreadable file is a `read_error` row."""
    try:
        data = read_bytes(path)
    except Exception as exc:
        return Prepared(None, Status.READ_ERROR, f"{type(exc).__name__}: {exc}", None, None, None)
    return prepare_bytes(data, model, max_pixels)


def embed_prepared(items: list[Prepared], model: Featurizer, autocast: bool = True) -> list[np.ndarray | None]:
    """Run the model on the ok items of a batch; others get None."""
    ok = [i for i, item in enumerate(items) if item.pixels is not None]
    out: list[np.ndarray | None] = [None] * len(items)
    if ok:
        with mixed_precision(model, autocast):
            vectors = model.embed(np.stack([items[i].pixels for i in ok]))
        for row, i in enumerate(ok):
            out[i] = vectors[row]
    return out


def pipelined(
    jobs: Iterable[tuple[int, Callable[[], Prepared]]],
    model: Featurizer,
    opts: WorkerOptions,
) -> Iterator[tuple[list[Prepared], list[np.ndarray | None]]]:
    """Run `jobs` (cost in bytes, work) in a thread pool, in order, and embed
    them `batch_size` at a time while the pool prepares the next batch.

    At most two batches are in flight, and at most `max_bytes_in_flight`
    encoded bytes (a single file bigger than that still goes through, alone).
    """
    threads = opts.decode_threads or task_cores()
    inflight: deque[tuple[int, Future[Prepared]]] = deque()
    bytes_in_flight = 0
    pending = iter(jobs)
    exhausted = False
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="imgfeat-decode") as pool:
        while True:
            while not exhausted and len(inflight) < 2 * opts.batch_size and (
                not inflight or bytes_in_flight < opts.max_bytes_in_flight
            ):
                nxt = next(pending, None)
                if nxt is None:
                    exhausted = True
                    break
                cost, work = nxt
                inflight.append((cost, pool.submit(work)))
                bytes_in_flight += cost
            if not inflight:
                return
            batch: list[Prepared] = []
            while inflight and len(batch) < opts.batch_size:
                cost, future = inflight.popleft()
                bytes_in_flight -= cost
                batch.append(future.result())
            yield batch, embed_prepared(batch, model, opts.autocast)


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
        jobs = (
            (int(r["length"] or 0), _bind(prepare_path, r["path"], model, opts.max_pixels))
            for r in rows
        )
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
