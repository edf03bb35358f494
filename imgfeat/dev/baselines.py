"""What `imgfeat bench` measures the Spark job against: a tuned single-process
PyTorch loop (the bar to beat), the naive per-batch pandas UDF others ship, and
`pyspark.ml.functions.predict_batch_udf`. Each runs the same featurizer spec on
the same images and returns its seconds; `imgfeat.dev.bench` reports them.
"""

from __future__ import annotations

import dataclasses
import io
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from imgfeat.decode import decode_image
from imgfeat.dev.measure import cores, timed
from imgfeat.featurizers import Featurizer, FeaturizerSpec, load_featurizer
from imgfeat.featurizers.backbone import build_network


# ------------------------------------------------------ the tuned hand loop
def tuned_loop(paths: Sequence[Path], spec: FeaturizerSpec, dest: Path, batch: int = 64) -> tuple[float, float]:
    """The bar to beat: one process, torch threads = cores, draft decode in a
    thread pool of `cores` threads preparing batch i+1 while the model runs
    batch i, `inference_mode`, the same featurizer; writes Parquet.
    Returns (model load seconds, seconds from then to the file written).
    """
    torch.set_num_threads(cores())
    model, load_s = timed(lambda: load_featurizer(spec))
    started = time.perf_counter()
    chunks = [list(paths[i : i + batch]) for i in range(0, len(paths), batch)]
    vectors: list[np.ndarray] = []
    with ThreadPoolExecutor(cores()) as pool:
        ahead = _submit(pool, chunks[0], model)
        for i in range(len(chunks)):
            ready = np.stack([f.result() for f in ahead])
            ahead = _submit(pool, chunks[i + 1], model) if i + 1 < len(chunks) else []
            vectors.extend(model.embed(ready))
    embedding = pa.array(vectors, type=pa.list_(pa.float32()))
    pq.write_table(pa.table({"path": [str(p) for p in paths], "embedding": embedding}), dest)
    return load_s, time.perf_counter() - started


def _submit(pool: ThreadPoolExecutor, chunk: list[Path], model: Featurizer) -> list[Future[np.ndarray]]:
    return [pool.submit(prepare_path, p, model) for p in chunk]


def prepare_path(path: Path, model: Featurizer) -> np.ndarray:
    decoded = decode_image(path.read_bytes(), draft_size=model.spec.resize_size)
    if decoded.image is None:
        raise ValueError(f"{path}: {decoded.error}")
    return model.prepare(decoded.image)


# -------------------------------------------------------- Spark baselines
def naive_udf(spark: Any, inputs: str, spec: FeaturizerSpec, dest: str, batch: int = 10) -> float:
    """What is commonly shipped: a scalar pandas UDF over binaryFile `content`,
    Arrow batches of `batch` rows, the model rebuilt for every batch, full-size
    decode, NCHW eager, torch's default threads. Returns seconds.
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    plain = dataclasses.replace(spec, fold_bn=False)
    resize = Featurizer(plain)  # preprocessing only: same resize and crop as imgfeat

    # pyspark's stubs match a Series-to-Series pandas_udf given its return type alone to no overload
    @F.pandas_udf(T.ArrayType(T.FloatType()))  # type: ignore[call-overload]
    def embed(contents: pd.Series) -> pd.Series:
        from PIL import Image

        net = build_network(plain).eval()
        images = [resize.prepare(Image.open(io.BytesIO(c)).convert("RGB")) for c in contents]
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255)
        mean, std = torch.tensor(plain.mean).view(1, 3, 1, 1), torch.tensor(plain.std).view(1, 3, 1, 1)
        with torch.no_grad():
            out = net((x - mean) / std)
        return pd.Series(list(out.numpy()))

    frame = spark.read.format("binaryFile").load(inputs)
    with _conf(spark, "spark.sql.execution.arrow.maxRecordsPerBatch", str(batch)):
        _, seconds = timed(
            lambda: frame.select("path", embed("content").alias("embedding")).write.mode("overwrite").parquet(dest)
        )
    return seconds


def predict_batch(spark: Any, inputs: str, spec: FeaturizerSpec, dest: str, batch: int = 64) -> float:
    """`pyspark.ml.functions.predict_batch_udf` over binaryFile `content`: its
    per-worker model cache, the same featurizer and draft decode as imgfeat,
    decode done in the predict function (not overlapped). Returns seconds.
    """
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql import types as T

    def make_predict_fn() -> Callable[[np.ndarray], np.ndarray]:
        model = load_featurizer(spec)

        def predict(contents: np.ndarray) -> np.ndarray:
            images = [decode_image(c, draft_size=spec.resize_size).image for c in contents]
            return model.embed(
                np.stack([model.prepare(cast(Image.Image, im)) for im in images])
            )  # the bench's photos decode

        return predict

    udf = predict_batch_udf(make_predict_fn, return_type=T.ArrayType(T.FloatType()), batch_size=batch)
    frame = spark.read.format("binaryFile").load(inputs)
    _, seconds = timed(
        lambda: frame.select("path", udf("content").alias("embedding")).write.mode("overwrite").parquet(dest)
    )
    return seconds


class _conf:
    """Set a runtime Spark conf for a block, then restore it."""

    def __init__(self, spark: Any, key: str, value: str) -> None:
        self.spark, self.key, self.value = spark, key, value

    def __enter__(self) -> None:
        self.old = self.spark.conf.get(self.key, None)
        self.spark.conf.set(self.key, self.value)

    def __exit__(self, *exc: object) -> None:
        if self.old is None:
            self.spark.conf.unset(self.key)
        else:
            self.spark.conf.set(self.key, self.old)
