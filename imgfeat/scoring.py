"""One model that scores raw images, and the batch score job's Spark plan.

Owns: `ImageModel`, the MLflow pyfunc that bundles the featurizer spec(s) and
weights with the booster and the `FeatureSpec` (input: image bytes in
`content` or a `path`, plus the model's tabular columns; output: `prediction`,
`predicted_class`, `probabilities`, `novelty`, `status`, `error`); logging and
registering it; and the score job's plan: hash each input image, reuse the
embeddings table's rows with the same content hash and featurizer
fingerprint, featurize only the rest, predict, and land the rows in a scores
Delta table through `imgfeat.delta` (its own `SCORES` contract). Must not:
decode or featurize itself (it calls `imgfeat.featurize`'s worker functions),
train, or list files other than through `imgfeat.sources`.

Classification follows Spark ML: `prediction` is the class index (a double)
into the model's classes, `predicted_class` its name. Regression:
`prediction` is the value; `predicted_class` and `probabilities` are null.
`novelty` (0..100, `imgfeat.novelty`) says how unlike the training images an
image is; null for a model logged without a novelty reference.
"""

from __future__ import annotations

import atexit
import hashlib
import shutil
import tempfile
import threading
import zipfile
from dataclasses import dataclass, replace
from importlib.metadata import PackageNotFoundError, requires, version
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from imgfeat import delta, tracking
from imgfeat.errors import InputError, Status
from imgfeat.featurize import (
    Prepared,
    WorkerOptions,
    cached_featurizer,
    pick_device,
    pipelined,
    prepare_bytes,
    prepare_path,
)
from imgfeat.featurizers import Featurizer, FeaturizerSpec, load_featurizer
from imgfeat.featurizers.featurizer import ProjectedFeaturizer
from imgfeat.featurizers.runtime import prefer_graph
from imgfeat.featurizers.weights import read_verified, source_kind
from imgfeat.progress import Reporter
from imgfeat.novelty import NoveltyReference
from imgfeat.sources import read_bytes
from imgfeat.features import FeatureSpec, predict_output
from imgfeat.train import TrainResult

#: The file of this package logged as the model's code ("models from code"): it names `ImageModel`.
MODEL_CODE = "model_code.py"
#: Artifact names inside the logged model.
FEATURES_ARTIFACT, BOOSTER_ARTIFACT, NOVELTY_ARTIFACT = "features", "booster", "novelty"
OUTPUT_COLUMNS = ("prediction", "predicted_class", "probabilities", "novelty", "status", "error")

_SCORES = (
    ("path", T.StringType(), pa.string()),
    ("content_sha256", T.StringType(), pa.string()),
    ("model_name", T.StringType(), pa.string()),
    ("model_version", T.StringType(), pa.string()),
    ("prediction", T.DoubleType(), pa.float64()),
    ("predicted_class", T.StringType(), pa.string()),
    ("probabilities", T.MapType(T.StringType(), T.DoubleType()), pa.map_(pa.string(), pa.float64())),
    ("status", T.StringType(), pa.string()),
    ("error", T.StringType(), pa.string()),
    ("featurized", T.BooleanType(), pa.bool_()),
    ("novelty", T.DoubleType(), pa.float64()),
    ("run_id", T.StringType(), pa.string()),
    ("scored_at", T.TimestampType(), pa.timestamp("us", tz="UTC")),
)
#: The scores table: one row per (path, model_name, model_version), partitioned by model.
SCORES = delta.Contract(
    spark_schema=T.StructType([T.StructField(n, s, True) for n, s, _ in _SCORES]),
    arrow_schema=pa.schema([pa.field(n, a, True) for n, _, a in _SCORES]),
    key=("path", "model_name", "model_version"),
    partition_by=("model_name",),
)


def _artifact(kind: str, i: int) -> str:
    return f"{kind}_{i}"


# ------------------------------------------------------------------------- the pyfunc
class ImageModel(mlflow.pyfunc.PythonModel):
    """Raw image (bytes or path) + tabular columns → prediction, as an MLflow pyfunc.

    Every input row yields one output row; an image that cannot be read or
    decoded gets a status and an error instead of a prediction.
    """

    def load_context(self, context: Any) -> None:
        self.load(context.artifacts)

    def load(self, artifacts: Mapping[str, str]) -> None:
        """Build the booster and the featurizers from the model's artifact files."""
        import xgboost

        self.features = FeatureSpec.from_json(Path(artifacts[FEATURES_ARTIFACT]).read_text())
        self.booster = xgboost.Booster()
        self.booster.load_model(artifacts[BOOSTER_ARTIFACT])
        self.featurizers = [_load_bundled(spec, artifacts, i) for i, spec in enumerate(self.features.featurizers)]
        reference = artifacts.get(NOVELTY_ARTIFACT)
        self.novelty = NoveltyReference.load(reference) if reference else None

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """The pyfunc answer; a request lacking a needed column is a client error
        (HTTP 400 from `mlflow models serve`), and a row without a prediction has
        None there, so the JSON answer is strict (null, not NaN)."""
        from mlflow.exceptions import MlflowException

        try:
            out = self.score(model_input)[list(OUTPUT_COLUMNS)]
        except InputError as exc:
            raise MlflowException.invalid_parameter_value(str(exc)) from None
        for name in out.columns[out.dtypes.map(pd.api.types.is_float_dtype)]:  # prediction, novelty
            out[name] = out[name].astype(object).where(out[name].notna(), None)
        return out

    def score(
        self,
        frame: pd.DataFrame,
        stored: Sequence[Sequence[np.ndarray | None]] | None = None,
        opts: WorkerOptions = WorkerOptions(),
    ) -> pd.DataFrame:
        """Score `frame` (a `content` or `path` column + tabular columns).

        `stored[i][r]`, when given and not None, is row r's embedding by the
        i-th featurizer (from the embeddings table): that image is not
        featurized again. Adds a `featurized` column: True where any
        featurizer ran on the row.
        """
        missing = [c for c in self.features.columns if c not in frame.columns]
        if "content" not in frame.columns and "path" not in frame.columns:
            missing.insert(0, "content or path")
        if missing:
            raise InputError(f"model input lacks column(s): {', '.join(missing)}")
        frame = frame.reset_index(drop=True)
        n = len(frame)
        status = [Status.OK.value] * n
        error: list[str | None] = [None] * n
        featurized = np.zeros(n, dtype=bool)
        vectors: list[list[np.ndarray | None]] = []
        for i, model in enumerate(self.featurizers):
            have = list(stored[i]) if stored is not None else [None] * n
            todo = [r for r in range(n) if have[r] is None and status[r] == Status.OK.value]
            for r, item, vector in _featurize_rows(frame, todo, model, opts):
                have[r] = vector
                if item.status is not Status.OK:
                    status[r], error[r] = item.status.value, item.error
            featurized[todo] = True
            vectors.append(have)
        ok = [r for r in range(n) if status[r] == Status.OK.value]
        out = pd.DataFrame(
            {
                "prediction": np.full(n, np.nan),
                "predicted_class": pd.Series([None] * n, dtype=object),
                "probabilities": pd.Series([None] * n, dtype=object),
                "novelty": np.full(n, np.nan),
                "status": status,
                "error": error,
                "featurized": featurized,
            }
        )
        if ok:
            embeddings = [np.stack([v[r] for r in ok]) for v in vectors]
            x = self.features.assemble(embeddings, frame.iloc[ok].reset_index(drop=True))
            self._predict_into(out, ok, x)
            if self.novelty is not None:
                out.loc[ok, "novelty"] = self.novelty.score(embeddings)
        return out

    def _predict_into(self, out: pd.DataFrame, rows: list[int], x: np.ndarray) -> None:
        predicted = predict_output(self.booster, x, self.features.task)
        if self.features.task == "regression":
            out.loc[rows, "prediction"] = predicted
            return
        index = predicted.argmax(axis=1)
        out.loc[rows, "prediction"] = index.astype(np.float64)
        out.loc[rows, "predicted_class"] = [self.features.classes[k] for k in index]
        for r, p in zip(rows, predicted.astype(np.float64)):
            out.at[r, "probabilities"] = p.tolist()


def _featurize_rows(
    frame: pd.DataFrame, rows: list[int], model: Featurizer, opts: WorkerOptions
) -> Iterator[tuple[int, Prepared, np.ndarray | None]]:
    """Embed the given rows' images (bytes in `content`, else read from `path`), in order."""
    contents = frame["content"] if "content" in frame.columns else None
    paths = frame["path"] if "path" in frame.columns else None

    def job(r: int) -> tuple[int, Callable[[], Prepared]]:
        blob = contents.iloc[r] if contents is not None else None
        if blob is not None:
            data = bytes(blob)
            return len(data), lambda: prepare_bytes(data, model, opts.max_pixels)
        path = paths.iloc[r] if paths is not None else None
        if path is None:
            return 0, lambda: Prepared(None, Status.READ_ERROR, "no content and no path", None, None, None)
        return 0, lambda: prepare_path(str(path), model, opts.max_pixels)

    order = iter(rows)
    for items, batch in pipelined((job(r) for r in rows), model, opts):
        for item, vector in zip(items, batch):
            yield next(order), item, vector


def _load_bundled(spec: FeaturizerSpec, artifacts: Mapping[str, str], i: int) -> Featurizer:
    """The i-th featurizer, from the ONNX graph (when bundled and `prefer_graph`; no
    torch then) or the network weights, and the PCA basis bundled in the model.

    Parts without a file (seeded random or no weights) rebuild exactly from the spec.
    """
    base = _base(spec)
    graph = artifacts.get(_artifact("onnx", i))
    weights = artifacts.get(_artifact("weights", i))
    if graph is not None and prefer_graph():
        model = cached_featurizer(base, "cpu", graph=graph)
    elif weights is None:
        device = pick_device("auto")
        model = cached_featurizer(base, device)
    else:
        import torch

        device = pick_device("auto")
        model = load_featurizer(replace(base, weights="random:0", weights_sha256=None), device=device)
        model.network.load_state_dict(torch.load(weights, map_location=device, weights_only=True))
    if spec.projection is None:
        return model
    bundled = replace(spec.projection, location=artifacts[_artifact("projection", i)])
    return ProjectedFeaturizer(replace(spec, projection=bundled), model)


def _bundle(spec: FeaturizerSpec, i: int, dest: Path, graph: str | None = None) -> dict[str, str]:
    """Artifact files for the i-th featurizer: its network weights (unless the spec
    alone rebuilds them), its verified ONNX `graph` when the train config's runtime
    chose one, and its PCA basis, if reduced."""
    out = {}
    if graph is not None:
        out[_artifact("onnx", i)] = str(shutil.copy(graph, dest / f"graph_{i}.onnx"))
    if spec.projection is not None:
        path = dest / f"projection_{i}.npz"
        path.write_bytes(read_verified(spec.projection.location, spec.projection.sha256))
        out[_artifact("projection", i)] = str(path)
    base = _base(spec)
    if source_kind(base.weights) not in ("random", "none"):
        import torch

        path = dest / f"weights_{i}.pt"
        torch.save(cached_featurizer(base, "cpu").network.state_dict(), path)
        out[_artifact("weights", i)] = str(path)
    return out


def _base(spec: FeaturizerSpec) -> FeaturizerSpec:
    """The spec without its PCA projection (the network alone)."""
    if spec.projection is None:
        return spec
    return replace(spec, dim=spec.projection.in_dim, projection=None)


# --------------------------------------------------------------------- log + register
@dataclass(frozen=True)
class LoggedModel:
    uri: str  # models:/<id> (MLflow 3) or runs:/<run>/model
    name: str | None  # registered name
    version: str | None  # registered version


def log_model(
    result: TrainResult,
    registered_name: str | None,
    graphs: Sequence[str | None] = (),
    novelty: NoveltyReference | None = None,
) -> LoggedModel:
    """Log the pyfunc into the active MLflow run; register it under `registered_name`.

    `graphs[i]`: the i-th featurizer's verified ONNX graph, bundled so the model
    scores with ONNX Runtime (and without torch) where `prefer_graph` says so.
    `novelty`, when given, ships with the model and fills the `novelty` output.
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import Array

    spec = result.features
    with tempfile.TemporaryDirectory(prefix="imgfeat-model-") as tmp:
        artifacts = {
            FEATURES_ARTIFACT: str(Path(tmp, "features.json")),
            BOOSTER_ARTIFACT: str(Path(tmp, "booster.ubj")),
        }
        Path(artifacts[FEATURES_ARTIFACT]).write_text(spec.to_json())
        result.booster.save_model(artifacts[BOOSTER_ARTIFACT])
        for i, featurizer in enumerate(spec.featurizers):
            artifacts.update(_bundle(featurizer, i, Path(tmp), graphs[i] if i < len(graphs) else None))
        if novelty is not None:
            artifacts[NOVELTY_ARTIFACT] = str(Path(tmp, "novelty.npz"))
            novelty.save(artifacts[NOVELTY_ARTIFACT])
        inputs = Schema(
            [ColSpec("binary", "content", required=False), ColSpec("string", "path", required=False)]
            + [ColSpec(spec.column_types[c], c) for c in spec.columns]
        )
        outputs = Schema(
            [
                ColSpec("double", "prediction"),
                ColSpec("string", "predicted_class", required=False),
                ColSpec(Array("double"), "probabilities", required=False),
                ColSpec("double", "novelty", required=False),
                ColSpec("string", "status"),
                ColSpec("string", "error", required=False),
            ]
        )
        example = pd.DataFrame(
            [{"content": read_bytes(result.example["path"]), **{c: result.example[c] for c in spec.columns}}]
        )
        package = _code_path(Path(tmp, "code"))
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(Path(package, MODEL_CODE)),  # models from code: loading unpickles nothing
            artifacts=artifacts,
            signature=ModelSignature(inputs=inputs, outputs=outputs),
            input_example=example,
            registered_model_name=registered_name,
            code_paths=[package],
            pip_requirements=_requirements(),
        )
    registered = info.registered_model_version
    return LoggedModel(info.model_uri, registered_name if registered else None,
                       str(registered) if registered else None)


def _code_path(dest: Path) -> str:
    """imgfeat's package folder, bundled with the model; extracted into `dest` first
    when imgfeat was imported from a zip (`spark-submit --py-files imgfeat.zip`)."""
    package = Path(__file__).parent
    if package.is_dir():
        return str(package)
    archive = next(p for p in package.parents if p.is_file())
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(dest, [m for m in zf.namelist() if m.startswith(f"{package.name}/")])
    return str(dest / package.name)


def _requirements() -> list[str]:
    """imgfeat's own dependencies, pinned to the versions installed here."""
    names = {"mlflow"}
    for req in requires("imgfeat") or []:
        if "extra ==" not in req:
            names.add(req.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].strip())
    pinned = []
    for name in sorted(names):
        try:
            pinned.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            pinned.append(name)
    return pinned


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


def model_features(local_dir: str) -> FeatureSpec:
    """The `FeatureSpec` of a downloaded model, read without loading its networks."""
    return FeatureSpec.from_json(Path(_artifact_file(local_dir, FEATURES_ARTIFACT)).read_text())


def model_booster(local_dir: str) -> Any:  # -> xgboost.Booster
    """The booster of a downloaded model, loaded without its networks."""
    import xgboost

    booster = xgboost.Booster()
    booster.load_model(_artifact_file(local_dir, BOOSTER_ARTIFACT))
    return booster


def _artifact_file(local_dir: str, name: str) -> str:
    from mlflow.models import Model

    artifacts = Model.load(local_dir).flavors.get("python_function", {}).get("artifacts") or {}
    if name not in artifacts:
        raise InputError(f"{local_dir} is not an imgfeat image model (no {name!r} artifact)")
    return str(Path(local_dir, artifacts[name]["path"]))


def load_image_model(local_dir: str) -> ImageModel:
    """The `ImageModel` inside a downloaded pyfunc directory.

    Versions logged before imgfeat logged models as code hold a pickled
    `ImageModel`; they load as long as MLflow allows unpickling (its default
    today), else the error says what to do.
    """
    from mlflow.exceptions import MlflowException

    try:
        model = mlflow.pyfunc.load_model(local_dir).unwrap_python_model()
    except MlflowException as exc:
        if "pickle" not in exc.message:
            raise
        raise InputError(
            f"{local_dir} holds a pickled model logged by an older imgfeat, and MLflow refuses to unpickle it "
            "(MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false): retrain with `imgfeat train` to log it as code, "
            "or allow unpickling for this model only if you trust its origin"
        ) from None
    if not isinstance(model, ImageModel):
        raise InputError(f"{local_dir} is not an imgfeat image model ({type(model).__name__})")
    return model


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
            shas, errors = [], []
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
            part = model.score(batch.iloc[rows], [list(batch[c].iloc[rows]) for c in emb_cols], opts)
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
                        dict(zip(model.features.classes, p)) if isinstance(p, list) else None
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
