"""Training on the embeddings table (+ tabular columns) with `xgboost.spark`.

Owns: what a model's input is (`FeatureSpec`: featurizers in a fixed order,
numeric and categorical columns, classes; `assemble` turns embeddings and
columns into the feature matrix, the same function on Spark workers and in
the served model), reading the embeddings at one table version, joining
labels, the deterministic split by content hash, inferring the task, fitting
`SparkXGBClassifier` / `SparkXGBRegressor` with early stopping, the
baselines (Spark ML linear model, raw-pixel XGBoost) and the held-out
metrics. Must not: log to MLflow, build the served model, or write tables
(`tracking`, `scoring` and `runs` do that).

`xgboost.spark` stays the estimator: its options are passed through from the
config's `xgboost:` mapping, never retyped here.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from imgfeat import delta, reduce
from imgfeat.config import FeaturizerConfig, SourceConfig, SplitConfig, TrainConfig
from imgfeat.errors import ConfigError, FeaturizerError, InputError, Status
from imgfeat.featurize import WorkerOptions, featurize_listing
from imgfeat.featurizers import FeaturizerSpec, Projection, resolve_featurizer

log = logging.getLogger("imgfeat")

#: imgfeat's defaults for the `xgboost:` mapping (any xgboost.spark param overrides them).
XGB_DEFAULTS: dict[str, Any] = {
    "n_estimators": 300,
    "max_depth": 4,
    "learning_rate": 0.1,
    "early_stopping_rounds": 20,
    "verbose": False,
}
#: An integer label with at most this many distinct values is a class label.
MAX_INT_CLASSES = 20
#: Metric compared against the raw-pixel baseline (higher is better).
PRIMARY_METRIC = {"classification": "accuracy", "regression": "r2"}

_LABEL, _SPLIT = "label_index", "split"
_FEATURES = "features"
_MLFLOW_TYPES = {"string": "string", "boolean": "boolean", "double": "double", "float": "double",
                 "bigint": "long", "int": "long", "smallint": "long", "tinyint": "long"}


# ----------------------------------------------------------------------------- features
@dataclass(frozen=True)
class FeatureSpec:
    """How one image (+ its row of columns) becomes the model's feature vector.

    Saved with the model, so training and serving build identical vectors:
    the featurizers' embeddings in order, then `numeric` columns (missing =
    NaN), then `categorical` columns as one-hot blocks (unseen value = all
    zeros) or as the value's index (unseen = NaN).
    """

    featurizers: tuple[FeaturizerSpec, ...]
    task: str  # classification | regression
    classes: tuple[str, ...] = ()  # class names, in label-index order
    numeric: tuple[str, ...] = ()
    categorical: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (column, categories seen in train)
    encoding: str = "onehot"
    column_types: dict[str, str] = field(default_factory=dict)  # tabular column → MLflow type

    @property
    def columns(self) -> tuple[str, ...]:
        """Tabular input columns, in feature order."""
        return self.numeric + tuple(c for c, _ in self.categorical)

    @property
    def dim(self) -> int:
        width = sum(len(cats) if self.encoding == "onehot" else 1 for _, cats in self.categorical)
        return sum(f.dim for f in self.featurizers) + len(self.numeric) + width

    def assemble(self, embeddings: Sequence[np.ndarray], columns: pd.DataFrame) -> np.ndarray:
        """(n, dim) float32 features from one (n, d_i) array per featurizer plus the columns."""
        n = len(columns)
        parts = [np.asarray(e, dtype=np.float32).reshape(n, -1) for e in embeddings]
        for name in self.numeric:
            values = pd.to_numeric(columns[name], errors="coerce").astype("float64")
            parts.append(values.to_numpy(np.float32, na_value=np.nan).reshape(n, 1))
        for name, cats in self.categorical:
            values = columns[name].map(_category_text)
            if self.encoding == "onehot":
                parts.append(np.stack([(values == c).to_numpy() for c in cats], axis=1).astype(np.float32))
            else:
                index = {c: float(i) for i, c in enumerate(cats)}
                parts.append(values.map(lambda v: index.get(v, np.nan)).to_numpy(np.float32).reshape(n, 1))
        return np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float32)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "FeatureSpec":
        data = json.loads(text)
        specs = tuple(_featurizer_from_dict(f) for f in data.pop("featurizers"))
        categorical = tuple((c, tuple(cats)) for c, cats in data.pop("categorical"))
        return cls(
            featurizers=specs,
            categorical=categorical,
            classes=tuple(data.pop("classes")),
            numeric=tuple(data.pop("numeric")),
            **data,
        )


def _featurizer_from_dict(data: dict[str, Any]) -> FeaturizerSpec:
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    if fields.get("projection") is not None:
        fields["projection"] = Projection(**fields["projection"])
    return FeaturizerSpec(**fields)


def _category_text(value: Any) -> str | None:
    """Categories compare as text, the same in Spark (cast to string) and pandas."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    return str(value)


def resolve_spec(f: FeaturizerConfig) -> FeaturizerSpec:
    """The featurizer a config section names (validated, weights hashed), before any PCA."""
    return resolve_featurizer(
        f.name,
        weights=f.weights,
        weights_sha256=f.weights_sha256,
        pooling=f.pooling,
        gem_p=f.gem_p,
        layers=f.layers,
        fold_bn=f.fold_bn,
    )


def table_spec(f: FeaturizerConfig, table: str) -> FeaturizerSpec:
    """The featurizer whose rows a table holds: with `dim`, reduced by the table's stored PCA basis."""
    spec = resolve_spec(f)
    if not f.dim:
        return spec
    location = reduce.basis_location(table, spec, f.dim)
    try:
        return reduce.reduced_spec(spec, location, f.dim)
    except FeaturizerError:
        raise InputError(
            f"{table} has no PCA basis for {spec.name} to {f.dim} dims ({location}): "
            "featurize with featurizer.dim set first"
        ) from None


# ----------------------------------------------------------------------------- result
@dataclass
class TrainResult:
    """What a train run produced; `table()` is the side-by-side metrics table."""

    features: FeatureSpec
    booster: Any  # xgboost.Booster, cut to the best iteration
    metrics: dict[str, dict[str, float]]  # model → metric → value (held-out test split)
    counts: dict[str, int]  # rows per split
    table: str
    version: int
    labels_source: str
    params: dict[str, Any]  # effective xgboost.spark params
    best_iteration: int | None
    example: dict[str, Any]  # one test row: path + tabular columns (the model's input example)
    warning: str | None = None
    seconds: float = 0.0

    def lines(self) -> list[str]:
        """Metrics of every model side by side, then the leakage warning if any."""
        names = sorted({m for scores in self.metrics.values() for m in scores})
        rows = [f"{'model':12}" + "".join(f"{n:>10}" for n in names)]
        for model, scores in self.metrics.items():
            rows.append(f"{model:12}" + "".join(f"{scores.get(n, float('nan')):>10.4f}" for n in names))
        return rows + ([f"WARNING: {self.warning}"] if self.warning else [])


# ----------------------------------------------------------------------------- training
def train(spark: SparkSession, cfg: TrainConfig) -> TrainResult:
    """Fit the model and its baselines on `cfg.table` at `cfg.version` (latest if None)."""
    started = time.monotonic()
    specs = tuple(table_spec(f, cfg.table) for f in cfg.featurizers)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"featurizers: {names} lists a featurizer twice")
    version = cfg.version if cfg.version is not None else delta.table_version(spark, cfg.table)
    if version is None:
        raise InputError(f"no embeddings table at {cfg.table}: run `imgfeat featurize` first")
    rows = _embedding_rows(delta.read_table(spark, cfg.table, version, partitions=names), specs, cfg.table)
    labeled = _with_labels(spark, rows, cfg).cache()
    task, classes = _task(labeled, cfg.task)
    types = {c: _MLFLOW_TYPES.get(labeled.schema[c].dataType.simpleString(), "string")
             for c in (*cfg.labels.numeric, *cfg.labels.categorical)}
    rows = _with_target(labeled, task, classes, cfg).cache()
    counts = {k: int(v) for k, v in rows.groupBy(_SPLIT).count().collect()}
    _check_counts(counts, task, cfg)

    features = _feature_spec(rows, specs, task, classes, cfg, types)
    data = with_features(rows, features, [f"emb_{i}" for i in range(len(specs))]).cache()
    params = {**XGB_DEFAULTS, **cfg.xgboost}
    model = _fit_xgboost(data, task, params)
    booster, best = _best_booster(model)
    metrics = {"xgboost": evaluate(model, data.where(F.col(_SPLIT) == "test"), task, classes)}
    if cfg.baselines.linear:
        metrics["linear"] = _linear_baseline(data, task, classes, cfg.baselines.linear_reg_param)
    if cfg.baselines.raw_pixels:
        metrics["raw_pixels"] = _pixel_baseline(rows, task, classes, params, cfg)
    example = _example(data, features)
    for frame in (data, rows, labeled):
        frame.unpersist()
    return TrainResult(
        features=features,
        booster=booster,
        metrics=metrics,
        counts=counts,
        table=cfg.table,
        version=int(version),
        labels_source=labels_source(cfg),
        params=params,
        best_iteration=best,
        example=example,
        warning=_leakage_warning(metrics, task, cfg.baselines.leakage_margin),
        seconds=time.monotonic() - started,
    )


def labeled_rows(
    spark: SparkSession, cfg: TrainConfig, features: FeatureSpec, version: int
) -> DataFrame:
    """The rows a model was trained and tested on: one per image with ok embeddings
    (`emb_0`, ...), its `label`, `label_index` and `split`, as `train` builds them."""
    names = [s.name for s in features.featurizers]
    rows = _embedding_rows(delta.read_table(spark, cfg.table, version, partitions=names), features.featurizers, cfg.table)
    return _with_target(_with_labels(spark, rows, cfg), features.task, features.classes, cfg)


def labels_source(cfg: TrainConfig) -> str:
    """Where labels came from, as recorded in lineage."""
    where = cfg.labels.source or "the image paths"
    return f"{where} (label: {cfg.labels.label})"


def _embedding_rows(table: DataFrame, specs: Sequence[FeaturizerSpec], name: str) -> DataFrame:
    """One row per image with an ok embedding for every featurizer (`emb_0`, `emb_1`, ...)."""
    joined: DataFrame | None = None
    ok = table.where(F.col("status") == Status.OK.value)
    for i, spec in enumerate(specs):
        mine = ok.where(F.col("featurizer") == spec.name)
        found = [r[0] for r in mine.select("featurizer_fingerprint").distinct().collect()]
        if spec.fingerprint not in found:
            raise InputError(
                f"{name} has no ok rows of featurizer {spec.name!r} with fingerprint {spec.fingerprint[:12]}"
                + (f" (it has {', '.join(f[:12] for f in found)}: set the featurizer's weights, pooling and "
                   "layers as in the featurize run)" if found else "")
            )
        keep = ("path", "content_sha256", "modification_time", "length") if joined is None else ("path",)
        part = mine.where(F.col("featurizer_fingerprint") == spec.fingerprint).select(
            *keep, F.col("embedding").alias(f"emb_{i}")
        )
        joined = part if joined is None else joined.join(part, "path")
    assert joined is not None
    return joined


def path_key(column: Column) -> Column:
    """A path as a join key: `file:/a`, `file:///a` and `/a` are the same file."""
    return F.regexp_replace(column, r"^file:(//)?(?=/)", "")


def read_source(spark: SparkSession, src: SourceConfig) -> DataFrame:
    """A CSV / Parquet / Delta table of per-image columns, with a `path` column."""
    assert src.source is not None
    kind = src.format
    if kind == "auto":
        name = src.source.lower().rstrip("/")
        if name.endswith(".csv"):
            kind = "csv"
        elif name.endswith((".parquet", ".pq")):
            kind = "parquet"
        else:
            kind = "delta" if _is_delta(spark, src.source) else "parquet"
    try:
        if kind == "delta":
            frame = delta.read_table(spark, src.source, contract=None)
        elif kind == "csv":
            frame = spark.read.option("header", True).option("inferSchema", True).csv(src.source)
        else:
            frame = spark.read.parquet(src.source)
    except InputError:
        raise
    except Exception as exc:  # Spark's AnalysisException and friends
        raise InputError(f"cannot read {src.source} as {kind}: {str(exc).splitlines()[0]}") from None
    if "path" not in frame.columns:
        raise InputError(f"{src.source} has no `path` column (columns: {', '.join(frame.columns)})")
    return frame


def _is_delta(spark: SparkSession, path: str) -> bool:
    try:
        return delta.table_version(spark, path) is not None
    except Exception:  # delta-rs raises OSError for a plain file
        return False


def join_columns(rows: DataFrame, source: DataFrame, columns: Sequence[str], where: str) -> DataFrame:
    """`rows` with `columns` of `source` (keyed by path; a path listed twice is an error)."""
    missing = [c for c in columns if c not in source.columns]
    if missing:
        raise InputError(f"{where} lacks column(s) {', '.join(missing)} (has {', '.join(source.columns)})")
    keyed = source.select(path_key(F.col("path")).alias("_key"), *columns)
    dupes = keyed.groupBy("_key").count().where("count > 1").limit(3).collect()
    if dupes:
        raise InputError(f"{where} lists a path more than once, e.g. {dupes[0]['_key']}")
    return rows.withColumn("_key", path_key(F.col("path"))).join(keyed, "_key", "left").drop("_key")


def _with_labels(spark: SparkSession, rows: DataFrame, cfg: TrainConfig) -> DataFrame:
    labels = cfg.labels
    tabular = list(labels.numeric) + list(labels.categorical)
    if labels.source is None:
        if labels.label != "folder" or tabular:
            raise ConfigError("labels.source is required for a label column or tabular columns")
        return rows.withColumn("label", F.element_at(F.split("path", "/"), -2))
    wanted = tabular + ([] if labels.label == "folder" else [labels.label])
    joined = join_columns(rows, read_source(spark, labels), wanted, labels.source)
    if labels.label == "folder":
        return joined.withColumn("label", F.element_at(F.split("path", "/"), -2))
    return joined.withColumnRenamed(labels.label, "label") if labels.label != "label" else joined


def _task(rows: DataFrame, requested: str) -> tuple[str, tuple[str, ...]]:
    """classification (strings, booleans, few integers) or regression; and the classes."""
    labeled = rows.where(F.col("label").isNotNull())
    kind = labeled.schema["label"].dataType
    if requested == "regression" or (requested == "auto" and isinstance(kind, (T.FloatType, T.DoubleType, T.DecimalType))):
        if not isinstance(kind, T.NumericType):
            raise InputError(f"task regression needs a numeric label, got {kind.simpleString()}")
        return "regression", ()
    values = [r[0] for r in labeled.select("label").distinct().limit(10_001).collect()]
    if requested == "auto" and isinstance(kind, T.IntegralType) and len(values) > MAX_INT_CLASSES:
        return "regression", ()
    if len(values) < 2:
        raise InputError(f"classification needs at least 2 label values, found {values}")
    if len(values) > 10_000:
        raise InputError("more than 10000 label values: set task: regression")
    return "classification", tuple(_category_text(v) or "" for v in sorted(values))


def _with_target(rows: DataFrame, task: str, classes: tuple[str, ...], cfg: TrainConfig) -> DataFrame:
    """Labeled rows with `label_index` (class index or value) and `split`."""
    labeled = rows.where(F.col("label").isNotNull())
    if task == "classification":
        mapping = F.create_map(*[x for i, c in enumerate(classes) for x in (F.lit(c), F.lit(float(i)))])
        target = mapping[F.col("label").cast("string")]
    else:
        target = F.col("label").cast("double")
    out = labeled.withColumn(_LABEL, target).withColumn(_SPLIT, split_column(cfg.split))
    for name in cfg.labels.numeric:
        out = out.withColumn(name, F.col(name).cast("double"))
    for name in cfg.labels.categorical:
        out = out.withColumn(name, F.col(name).cast("string"))
    return out


def split_column(split: SplitConfig) -> Column:
    """train / validation / test from a hash of (seed, content_sha256): the same bytes
    always land in the same split, whatever their path or the table's row order."""
    u = F.pmod(F.xxhash64(F.lit(split.seed), F.col("content_sha256")), F.lit(1_000_000)) / 1_000_000
    return (
        F.when(u < split.test, "test")
        .when(u < split.test + split.validation, "validation")
        .otherwise("train")
    )


def _check_counts(counts: dict[str, int], task: str, cfg: TrainConfig) -> None:
    need = {"train": 2, "validation": 1, "test": 1}
    short = {k: counts.get(k, 0) for k, n in need.items() if counts.get(k, 0) < n}
    if short:
        raise InputError(
            f"too few labeled images with ok embeddings in {cfg.table} for a {task} split "
            f"(per split: {counts or 'none'}); label more images or change split shares"
        )


def _feature_spec(
    rows: DataFrame,
    specs: tuple[FeaturizerSpec, ...],
    task: str,
    classes: tuple[str, ...],
    cfg: TrainConfig,
    column_types: dict[str, str],
) -> FeatureSpec:
    labels = cfg.labels
    train_rows = rows.where(F.col(_SPLIT) == "train")
    categorical = []
    for name in labels.categorical:
        seen = train_rows.where(F.col(name).isNotNull()).select(name).distinct().limit(1001).collect()
        if len(seen) > 1000:
            raise InputError(f"categorical column {name!r} has more than 1000 values; use it as numeric or drop it")
        categorical.append((name, tuple(sorted(r[0] for r in seen))))
    return FeatureSpec(
        featurizers=specs,
        task=task,
        classes=classes,
        numeric=tuple(labels.numeric),
        categorical=tuple(categorical),
        encoding=labels.encoding,
        column_types=column_types,
    )


def with_features(frame: DataFrame, spec: FeatureSpec, embedding_cols: Sequence[str]) -> DataFrame:
    """`frame` plus a `features` array<float> column (`spec.assemble` on the workers)."""
    schema = T.StructType(frame.schema.fields + [T.StructField(_FEATURES, T.ArrayType(T.FloatType()), True)])
    cols = list(embedding_cols)

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            if batch.empty:
                continue
            embeddings = [np.stack(batch[c].to_numpy()) for c in cols]
            batch[_FEATURES] = list(spec.assemble(embeddings, batch))
            yield batch

    return frame.mapInPandas(run, schema)


def _fit_xgboost(data: DataFrame, task: str, params: dict[str, Any]):  # -> SparkXGB*Model
    from xgboost.spark import SparkXGBClassifier, SparkXGBRegressor

    quiet = logging.getLogger("XGBoost-PySpark")
    if quiet.level == logging.NOTSET:  # xgboost.spark logs every fit at INFO unless told otherwise
        quiet.setLevel(logging.WARNING)
    cls = SparkXGBClassifier if task == "classification" else SparkXGBRegressor
    fit_rows = data.where(F.col(_SPLIT) != "test").withColumn("is_validation", F.col(_SPLIT) == "validation")
    try:
        estimator = cls(
            features_col=_FEATURES, label_col=_LABEL, validation_indicator_col="is_validation", **params
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"xgboost: {exc}") from None
    return estimator.fit(fit_rows)


def _best_booster(model) -> tuple[Any, int | None]:
    """The booster cut to its best iteration (what `model.transform` predicts with)."""
    booster = model.get_booster()
    best = booster.attr("best_iteration")
    if best is None:
        return booster, None
    return booster[: int(best) + 1], int(best)


def evaluate(model, test: DataFrame, task: str, classes: Sequence[str]) -> dict[str, float]:
    """Held-out metrics of a fitted Spark ML / xgboost.spark model on `test`."""
    from pyspark.ml.functions import vector_to_array

    out = model.transform(test)
    cols = [F.col(_LABEL), F.col("prediction")]
    if task == "classification":
        cols.append(vector_to_array(F.col("probability")).alias("probability"))
    frame = out.select(*cols).toPandas()
    y = frame[_LABEL].to_numpy()
    if task == "regression":
        return regression_metrics(y, frame["prediction"].to_numpy())
    return classification_metrics(y.astype(int), np.stack(frame["probability"].to_numpy()), len(classes))


def classification_metrics(y: np.ndarray, proba: np.ndarray, n_classes: int) -> dict[str, float]:
    """accuracy, log loss and AUC (binary, or one-vs-rest macro; NaN if a class is absent)."""
    from sklearn.metrics import log_loss, roc_auc_score

    labels = list(range(n_classes))
    proba = proba / proba.sum(axis=1, keepdims=True)  # float32 rows sum to 1 only within 1e-7
    out = {
        "accuracy": float(np.mean(proba.argmax(axis=1) == y)),
        "log_loss": float(log_loss(y, np.clip(proba, 1e-15, 1), labels=labels)),
    }
    present = np.unique(y)
    if len(present) < 2 or (n_classes > 2 and len(present) < n_classes):
        out["auc"] = float("nan")
    elif n_classes == 2:
        out["auc"] = float(roc_auc_score(y, proba[:, 1]))
    else:
        out["auc"] = float(roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=labels))
    return out


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    return {
        "rmse": float(np.sqrt(mean_squared_error(y, pred))),
        "mae": float(mean_absolute_error(y, pred)),
        "r2": float(r2_score(y, pred)) if len(y) > 1 else float("nan"),
    }


def _linear_baseline(data: DataFrame, task: str, classes: Sequence[str], reg_param: float) -> dict[str, float]:
    """Spark ML logistic / linear regression on the same features (missing values as 0)."""
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.functions import array_to_vector
    from pyspark.ml.regression import LinearRegression

    vectors = data.withColumn(
        "vector", array_to_vector(F.transform(_FEATURES, lambda x: F.nanvl(x, F.lit(0.0))))
    )
    kind = LogisticRegression if task == "classification" else LinearRegression
    model = kind(featuresCol="vector", labelCol=_LABEL, regParam=reg_param, maxIter=100, tol=1e-4).fit(
        vectors.where(F.col(_SPLIT) == "train")
    )
    return evaluate(model, vectors.where(F.col(_SPLIT) == "test"), task, classes)


def _pixel_baseline(
    rows: DataFrame, task: str, classes: Sequence[str], params: dict[str, Any], cfg: TrainConfig
) -> dict[str, float]:
    """XGBoost (same params) on a tiny grayscale thumbnail of the same images, no columns.

    The thumbnails are computed now from the files the table lists (not stored).
    """
    spec = resolve_featurizer(cfg.baselines.raw_pixel_featurizer)
    listing = rows.select("path", "modification_time", "length")
    pixels = featurize_listing(listing, spec, WorkerOptions(batch_size=256))
    ok = pixels.where(F.col("status") == Status.OK.value).select("path", F.col("embedding").alias("emb_0"))
    joined = rows.select("path", _LABEL, _SPLIT).join(ok, "path")
    only_pixels = FeatureSpec(featurizers=(spec,), task=task, classes=tuple(classes))
    data = with_features(joined, only_pixels, ["emb_0"]).cache()
    model = _fit_xgboost(data, task, params)
    metrics = evaluate(model, data.where(F.col(_SPLIT) == "test"), task, classes)
    data.unpersist()
    return metrics


def _leakage_warning(metrics: dict[str, dict[str, float]], task: str, margin: float) -> str | None:
    if "raw_pixels" not in metrics:
        return None
    name = PRIMARY_METRIC[task]
    model, pixels = metrics["xgboost"][name], metrics["raw_pixels"][name]
    if pixels >= model - margin:
        return (
            f"the raw-pixel baseline scores {name} {pixels:.3f}, as well as the model ({model:.3f}): "
            "the label may leak through trivial image properties (size, brightness, borders, "
            "duplicates), or the images need no learned features"
        )
    return None


def _example(data: DataFrame, spec: FeatureSpec) -> dict[str, Any]:
    row = data.where(F.col(_SPLIT) == "test").select("path", *spec.columns).first()
    assert row is not None
    return row.asDict()

