"""From image bytes to embeddings inside one process: the model cache and the batch pipeline.

Owns: the per-process model cache (a torch model, or an ONNX Runtime session
over a graph file), the device choice, and the pipeline that turns a stream
of image jobs into embeddings: decode and prepare in a thread pool while the
model runs on the previous batch. Used alike by Spark workers
(`imgfeat.featurize`), the pyspark.ml transformer and the served model
(`imgfeat.model`). Must not: import Spark, Delta, MLflow or torch at module
level (ONNX workers and the served model may have none), list or read files.

Every job yields exactly one `Prepared`: failures carry a `status` and an
`error`, never exceptions and never gaps.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from imgfeat.decode import decode_image, perceptual_hash
from imgfeat.errors import Status
from imgfeat.featurizers import Featurizer, FeaturizerSpec, load_featurizer
from imgfeat.featurizers.runtime import load_graph_featurizer
from imgfeat.readers import ReadLimits


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
    read: ReadLimits = ReadLimits()  # timeout, retries and byte cap of reading one image


@dataclass
class Prepared:
    """One image after read + hash + decode + prepare (the thread-pool half)."""

    content_sha256: str | None
    status: Status
    error: str | None
    width: int | None
    height: int | None
    pixels: np.ndarray | None  # uint8 (input_size, input_size, 3) when ok
    phash: int | None = None  # `decode.perceptual_hash` of the decoded image when ok


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


def mixed_precision(model: Featurizer, enabled: bool) -> AbstractContextManager[Any]:
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
    return Prepared(sha, Status.OK, None, decoded.width, decoded.height, pixels, perceptual_hash(decoded.image))


def embed_prepared(items: list[Prepared], model: Featurizer, autocast: bool = True) -> list[np.ndarray | None]:
    """Run the model on the ok items of a batch; others get None."""
    ok = [i for i, item in enumerate(items) if item.pixels is not None]
    out: list[np.ndarray | None] = [None] * len(items)
    if ok:
        with mixed_precision(model, autocast):
            vectors = model.embed(np.stack([cast(np.ndarray, items[i].pixels) for i in ok]))  # ok: pixels set
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
            while (
                not exhausted
                and len(inflight) < 2 * opts.batch_size
                and (not inflight or bytes_in_flight < opts.max_bytes_in_flight)
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
