"""The batch score job's Spark plan, and where a model comes from.

Owns: resolving and downloading a model URI, shipping it to executors (one
loaded `imgfeat.model.ImageModel` per Python worker), and the score job's
plan: hash each input image, reuse the embeddings table's rows with the same
content hash and featurizer fingerprint, featurize only the rest, predict,
and land the rows in a scores Delta table through `imgfeat.delta` (its own
`SCORES` contract). Must not: decode or featurize itself (the model does, with
`imgfeat.inference`), train, or list files other than through
`imgfeat.sources`. The model itself (pyfunc, log, load) is `imgfeat.model`.
"""

from __future__ import annotations

import atexit
import hashlib
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from imgfeat import delta, tracking
from imgfeat.errors import InputError, Status
from imgfeat.featurize import WorkerOptions
from imgfeat.featurizers import FeaturizerSpec
from imgfeat.model import ImageModel, LoggedModel, load_image_model, log_model, model_booster, model_features
from imgfeat.progress import Reporter
from imgfeat.schema import table_schemas
from imgfeat.sources import read_bytes

#: Names this module exported before the served model moved to `imgfeat.model`.
__all__ = [
    "ImageModel",
    "LoggedModel",
    "load_image_model",
    "log_model",
    "model_booster",
    "model_features",
    "SCORES",
    "ResolvedModel",
    "resolve_model",
    "hash_files",
    "with_stored_embeddings",
    "score_rows",
    "ship_model",
]

_, _SCORES_SPARK, _SCORES_ARROW = table_schemas(
    "path string, content_sha256 string, model_name string, model_version string, prediction double, "
    "predicted_class string, probabilities map<string,double>, status string, error string, "
    "featurized boolean, novelty double, run_id string, scored_at timestamp"
)
#: The scores table: one row per (path, model_name, model_version), partitioned by model.
SCORES = delta.Contract(
    spark_schema=_SCORES_SPARK,
    arrow_schema=_SCORES_ARROW,
    key=("path", "model_name", "model_version"),
    partition_by=("model_name",),
)


# --------------------------------------------------------------------------- score job
@dataclass(frozen=True)
class ResolvedModel:
    uri: str  # what was asked for
    name: str  # registered name, or the URI for an unregistered model
    version: str  # registered version, or ""
    local_dir: str  # the model downloaded here


def resolve_model(uri: str) -> ResolvedModel:
    """`models:/NAME/VERSION`, `models:/NAME/latest`, `models:/NAME@alias`, `runs:/...`: download it."""
    from mlflow.exceptions import MlflowException

    name, ver, concrete = tracking.registered_version(uri)
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=concrete)
    except MlflowException as exc:
        raise InputError(f"cannot load model {uri}: {exc.message}") from None
    return ResolvedModel(uri, name, ver, local)


_WORKER_MODELS: dict[str, ImageModel] = {}
_WORKER_LOCK = threading.Lock()


def _worker_model(local_dir: str) -> ImageModel:
    """One loaded model per Python worker process (workers are reused across tasks)."""
    with _WORKER_LOCK:
        if local_dir not in _WORKER_MODELS:
            _WORKER_MODELS[local_dir] = load_image_model(local_dir)
        return _WORKER_MODELS[local_dir]


_HASHED = T.StructType(
    [
        T.StructField("path", T.StringType()),
        T.StructField("content_sha256", T.StringType()),
        T.StructField("read_error", T.StringType()),
    ]
)


def hash_files(listing: DataFrame) -> DataFrame:
    """path → content_sha256 (read in the workers; an unreadable file keeps its row)."""

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            shas: list[str | None] = []
            errors: list[str | None] = []
            for path in batch["path"]:
                try:
                    shas.append(hashlib.sha256(read_bytes(path)).hexdigest())
                    errors.append(None)
                except Exception as exc:
                    shas.append(None)
                    errors.append(f"{type(exc).__name__}: {exc}")
            yield pd.DataFrame({"path": batch["path"], "content_sha256": shas, "read_error": errors})

    return listing.select("path").mapInPandas(run, _HASHED)


def with_stored_embeddings(
    spark: SparkSession, hashed: DataFrame, table: str | None, specs: Sequence[FeaturizerSpec]
) -> DataFrame:
    """`hashed` + `emb_i` columns: the table's embedding of the same bytes by the same
    featurizer (fingerprint), or null."""
    out = hashed
    stored = None
    if table is not None and delta.table_version(spark, table) is not None:
        stored = delta.read_table(spark, table, partitions=[s.name for s in specs]).where(
            F.col("status") == Status.OK.value
        )
    for i, spec in enumerate(specs):
        if stored is None:
            out = out.withColumn(f"emb_{i}", F.lit(None).cast(T.ArrayType(T.FloatType())))
            continue
        mine = (
            stored.where(F.col("featurizer_fingerprint") == spec.fingerprint)
            .select("content_sha256", F.col("embedding").alias(f"emb_{i}"))
            .dropDuplicates(["content_sha256"])
        )
        out = out.join(mine, "content_sha256", "left")
    return out


def score_rows(
    frame: DataFrame,
    shipped: str,
    n_featurizers: int,
    opts: WorkerOptions,
    model_name: str,
    model_version: str,
    progress: Reporter = Reporter(),
) -> DataFrame:
    """Plan the scoring of `frame` (path, content_sha256, read_error, emb_i, tabular
    columns) by the model `ship_model` shipped as `shipped`; one row out per row in.

    Arrow hands a task up to 10,000 rows at once; they are scored a few model
    batches at a time so that `progress` hears of them as they finish.
    """
    schema = T.StructType([f for f in SCORES.spark_schema.fields if f.name not in ("run_id", "scored_at")])
    emb_cols = [f"emb_{i}" for i in range(n_featurizers)]
    chunk = 4 * opts.batch_size

    def chunks(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            for start in range(0, len(batch), chunk):
                yield batch.iloc[start : start + chunk]

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        model = _worker_model(_shipped(shipped))
        for batch in chunks(batches):
            batch = batch.reset_index(drop=True)
            rows = np.flatnonzero(batch["read_error"].isna().to_numpy())
            part = model.score(batch.iloc[rows], [list(batch[c].iloc[rows]) for c in emb_cols], opts, read_bytes)
            part.index = rows
            scored = part.reindex(range(len(batch)))
            unread = scored["status"].isna()
            yield pd.DataFrame(
                {
                    "path": batch["path"],
                    "content_sha256": batch["content_sha256"],
                    "model_name": model_name,
                    "model_version": model_version,
                    "prediction": scored["prediction"].astype("float64"),
                    "predicted_class": scored["predicted_class"].where(~unread, None),
                    "probabilities": [
                        dict(zip(model.features.classes, p, strict=True)) if isinstance(p, list) else None
                        for p in scored["probabilities"]
                    ],
                    "status": scored["status"].where(~unread, Status.READ_ERROR.value),
                    "error": scored["error"].where(~unread, batch["read_error"]),
                    "featurized": scored["featurized"].where(~unread, False).astype(bool),
                    "novelty": scored["novelty"].astype("float64"),
                }
            )
            progress.add(len(batch), int((scored["status"].fillna("") != Status.OK.value).sum()))

    return frame.mapInPandas(run, schema)


def ship_model(spark: SparkSession, local_dir: str) -> str:
    """Make the downloaded model available to every executor; returns its name for `_shipped`.

    Spark keys shipped files by base name, and every MLflow model folder is
    called `artifacts`: a second model in the same session would clash (Spark
    refuses a same-named file with other contents). So the folder ships under
    a name unique to the model, from a copy kept until the process exits.
    """
    name = "imgfeat-model-" + hashlib.sha256(str(Path(local_dir).resolve()).encode()).hexdigest()[:16]
    staging = Path(tempfile.mkdtemp(prefix="imgfeat-ship-"))
    atexit.register(shutil.rmtree, staging, True)
    shutil.copytree(local_dir, staging / name)
    spark.sparkContext.addFile(str(staging / name), recursive=True)
    return name


def _shipped(name: str) -> str:
    from pyspark import SparkFiles

    return SparkFiles.get(name)
