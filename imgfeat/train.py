"""Training on the embeddings table (+ tabular columns) with `xgboost.spark`.

Owns: building a model's input spec (`imgfeat.features.FeatureSpec`), reading the embeddings at one table version, joining
labels, inferring the task, fitting `SparkXGBClassifier` /
`SparkXGBRegressor` by k-fold cross-validation (rounds picked from the
folds, then a refit on every non-test image) and the baselines (Spark ML
linear model, raw-pixel XGBoost) the same way. The split, the folds and the
metrics are `imgfeat.cv`'s. Must not: log to MLflow, build the served model,
or write tables (`tracking`, `scoring` and `runs` do that).

`xgboost.spark` stays the estimator: its options are passed through from the
config's `xgboost:` mapping, never retyped here.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from imgfeat import cv, delta, reduce
from imgfeat.config import FeaturizerConfig, LabelsConfig, SourceConfig, SplitConfig, TrainConfig
from imgfeat.errors import ConfigError, FeaturizerError, InputError, Status
from imgfeat.featurize import WorkerOptions, featurize_listing
from imgfeat.featurizers import FeaturizerSpec
from imgfeat.features import FeatureSpec, category_text, predict_output

log = logging.getLogger("imgfeat")

#: imgfeat's defaults for the `xgboost:` mapping (any xgboost.spark param overrides them).
#: `n_estimators` is the most rounds; the folds' validation curves pick how many the
#: refit uses, stopping `early_stopping_rounds` after the mean curve's best.
#: Chosen for wide, correlated embeddings and hundreds to thousands of rows (README,
#: "XGBoost defaults", measured on two real sets): a slower rate with row and strong
#: column subsampling, so no single dimension of 1,280 near-duplicates carries a tree.
XGB_DEFAULTS: dict[str, Any] = {
    "n_estimators": 600,
    "max_depth": 4,
    "learning_rate": 0.05,
    "subsample": 0.8,
    "colsample_bytree": 0.5,
    "early_stopping_rounds": 20,
    "verbose": False,
}
#: An integer label with at most this many distinct values is a class label.
MAX_INT_CLASSES = 20
#: Metric compared against the raw-pixel baseline (higher is better).
PRIMARY_METRIC = {"classification": "accuracy", "regression": "r2"}

_LABEL, _SPLIT, _FOLD = cv.LABEL, cv.SPLIT, cv.FOLD
_FEATURES = "features"
_MLFLOW_TYPES = {"string": "string", "boolean": "boolean", "double": "double", "float": "double",
                 "bigint": "long", "int": "long", "smallint": "long", "tinyint": "long"}


def resolve_spec(f: FeaturizerConfig) -> FeaturizerSpec:
    """The featurizer a config section names (validated, weights hashed), before any PCA."""
    from imgfeat.featurizers import resolve_featurizer  # the registry imports torch: drivers only

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
    """What a train run produced; `lines()` is the side-by-side metrics table."""

    features: FeatureSpec
    booster: Any  # xgboost.Booster of the refit on every non-test image
    scores: dict[str, cv.Scores]  # model → its fold and test metrics
    counts: dict[str, int]  # rows: test, and each fold (fold_0, ...)
    table: str
    version: int
    labels_source: str
    params: dict[str, Any]  # effective xgboost.spark params
    rounds: int  # boosting rounds of the refit, picked from the folds
    example: dict[str, Any]  # one test row: path + tabular columns (the model's input example)
    warning: str | None = None
    seconds: float = 0.0
    fold_seconds: float = 0.0  # wall time of the xgboost fold fits (run `parallel` at once)
    parallel: int = 1

    @property
    def metrics(self) -> dict[str, dict[str, float]]:
        """model → metric → value on the held-out test split."""
        return {model: s.test for model, s in self.scores.items()}

    @property
    def best_iteration(self) -> int:
        """Index of the refit's last tree (rounds - 1), as xgboost counts iterations."""
        return self.rounds - 1

    def lines(self) -> list[str]:
        """Every model's metrics side by side, cv mean ± std then test; then the leakage warning."""
        names = sorted({m for s in self.scores.values() for m in s.test})
        rows = [
            f"{'':12}" + "".join(f"{n:>28}" for n in names),
            f"{'model':12}" + f"{'cv mean ± std     test':>28}" * len(names),
        ]
        for model, s in self.scores.items():
            mean, std = s.mean(), s.std()
            rows.append(
                f"{model:12}" + "".join(f"{mean[n]:>11.4f} ± {std[n]:.4f} {s.test[n]:>7.4f}" for n in names)
            )
        return rows + ([f"WARNING: {self.warning}"] if self.warning else [])


# ----------------------------------------------------------------------------- training
@dataclass
class _Rows:
    """The labeled rows of a train run, read and checked (cached until `release`)."""

    labeled: DataFrame
    rows: DataFrame  # + label_index, split, fold
    data: DataFrame  # + features
    features: FeatureSpec
    counts: dict[str, int]
    version: int

    def release(self) -> None:
        for frame in (self.data, self.rows, self.labeled):
            frame.unpersist()


def train(spark: SparkSession, cfg: TrainConfig) -> TrainResult:
    """Cross-validate the model and its baselines on `cfg.table` at `cfg.version` (latest if
    None), refit each on every non-test image, and score the held-out test split."""
    started = time.monotonic()
    r = _read_rows(spark, cfg)
    task, classes = r.features.task, r.features.classes
    params = {**XGB_DEFAULTS, **cfg.xgboost}
    parallel = fold_parallelism(spark, cfg, params)
    fold_started = time.monotonic()
    scores, model, rounds = xgboost_cv(r.data, task, classes, params, cfg.split.folds, parallel)
    fold_seconds = time.monotonic() - fold_started
    all_scores = {"xgboost": scores}
    if cfg.baselines.linear:
        all_scores["linear"] = _linear_baseline(r.data, task, classes, cfg, parallel)
    if cfg.baselines.raw_pixels:
        all_scores["raw_pixels"] = _pixel_baseline(r.rows, task, classes, params, cfg, parallel)
    example = _example(r.data, r.features)
    r.release()
    return TrainResult(
        features=r.features,
        booster=model.get_booster(),
        scores=all_scores,
        counts=r.counts,
        table=cfg.table,
        version=r.version,
        labels_source=labels_source(cfg),
        params=params,
        rounds=rounds,
        example=example,
        warning=_leakage_warning({m: s.mean() for m, s in all_scores.items()}, task, cfg.baselines.leakage_margin),
        seconds=time.monotonic() - started,
        fold_seconds=fold_seconds,
        parallel=parallel,
    )


def cross_validate(spark: SparkSession, cfg: TrainConfig, only: DataFrame) -> tuple[cv.Scores, FeatureSpec]:
    """The XGBoost fold scores of `cfg` on the images whose `path` is in `only` (no refit,
    and the test split is neither trained nor scored: `imgfeat select` keeps it unseen)."""
    r = _read_rows(spark, cfg, only)
    params = {**XGB_DEFAULTS, **cfg.xgboost}
    scores, _, _ = xgboost_cv(
        r.data, r.features.task, r.features.classes, params, cfg.split.folds,
        fold_parallelism(spark, cfg, params), refit=False,
    )
    r.release()
    return scores, r.features


def _read_rows(spark: SparkSession, cfg: TrainConfig, only: DataFrame | None = None) -> _Rows:
    specs = tuple(table_spec(f, cfg.table) for f in cfg.featurizers)
    names = [s.name for s in specs]
    if len({s.fingerprint for s in specs}) != len(specs):  # one name twice is fine: e.g. pretrained + fine-tuned
        raise ConfigError(f"featurizers: {names} lists a featurizer twice")
    version = cfg.version if cfg.version is not None else delta.table_version(spark, cfg.table)
    if version is None:
        raise InputError(f"no embeddings table at {cfg.table}: run `imgfeat featurize` first")
    rows = _embedding_rows(delta.read_table(spark, cfg.table, version, partitions=sorted(set(names))), specs, cfg.table)
    if only is not None:
        rows = rows.join(only.select("path"), "path", "left_semi")
    labeled = with_labels(spark, rows, cfg.labels).cache()
    task, classes = infer_task(labeled, cfg.task)
    types = {c: _MLFLOW_TYPES.get(labeled.schema[c].dataType.simpleString(), "string")
             for c in (*cfg.labels.numeric, *cfg.labels.categorical)}
    rows = with_target(labeled, task, classes, cfg.split, cfg.labels).cache()
    counts = _check_counts(rows, task, classes, cfg)

    features = _feature_spec(rows, specs, task, classes, cfg, types)
    data = with_features(rows, features, [f"emb_{i}" for i in range(len(specs))]).cache()
    return _Rows(labeled, rows, data, features, counts, int(version))


def fold_parallelism(spark: SparkSession, cfg: TrainConfig, params: dict[str, Any]) -> int:
    """`split.parallel`, or as many fold fits as the cluster's task slots hold (each
    xgboost.spark fit takes `num_workers` slots), at most `split.folds`."""
    if cfg.split.parallel:
        return min(cfg.split.parallel, cfg.split.folds)
    slots = spark.sparkContext.defaultParallelism // int(params.get("num_workers", 1) or 1)
    return max(1, min(slots, cfg.split.folds))


def labeled_rows(
    spark: SparkSession, cfg: TrainConfig, features: FeatureSpec, version: int
) -> DataFrame:
    """The rows a model was trained and tested on: one per image with ok embeddings
    (`emb_0`, ...), its `label`, `label_index` and `split`, as `train` builds them."""
    names = sorted({s.name for s in features.featurizers})
    rows = _embedding_rows(delta.read_table(spark, cfg.table, version, partitions=names), features.featurizers, cfg.table)
    return with_target(with_labels(spark, rows, cfg.labels), features.task, features.classes, cfg.split, cfg.labels)


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


def with_labels(spark: SparkSession, rows: DataFrame, labels: LabelsConfig) -> DataFrame:
    """`rows` (with `path`) plus `label` and the tabular columns, as `labels` says (null = unlabeled)."""
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


def infer_task(rows: DataFrame, requested: str) -> tuple[str, tuple[str, ...]]:
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
    return "classification", tuple(category_text(v) or "" for v in sorted(values))


def with_target(
    rows: DataFrame, task: str, classes: tuple[str, ...], split: SplitConfig, labels: LabelsConfig
) -> DataFrame:
    """Labeled rows with `label_index` (class index or value) and `split`."""
    labeled = rows.where(F.col("label").isNotNull())
    if task == "classification":
        mapping = F.create_map(*[x for i, c in enumerate(classes) for x in (F.lit(c), F.lit(float(i)))])
        target = mapping[F.col("label").cast("string")]
    else:
        target = F.col("label").cast("double")
    out = (
        labeled.withColumn(_LABEL, target)
        .withColumn(_SPLIT, cv.split_column(split))
        .withColumn(_FOLD, cv.fold_column(split))
    )
    for name in labels.numeric:
        out = out.withColumn(name, F.col(name).cast("double"))
    for name in labels.categorical:
        out = out.withColumn(name, F.col(name).cast("string"))
    return out


def _check_counts(rows: DataFrame, task: str, classes: Sequence[str], cfg: TrainConfig) -> dict[str, int]:
    """Rows per split and fold (`test`, `fold_0`, ...); an error when a fold or the test
    split would be empty, or a class has fewer non-test images than there are folds."""
    folds = cfg.split.folds
    group = F.coalesce(F.concat(F.lit("fold_"), F.col(_FOLD).cast("string")), F.col(_SPLIT))
    counts = {k: int(v) for k, v in rows.groupBy(group.alias("g")).count().collect()}
    if task == "classification":
        _check_classes_in_folds(rows, classes, folds)
    wanted = ["test", *(f"fold_{i}" for i in range(folds))]
    if any(counts.get(k, 0) < 1 for k in wanted):
        raise InputError(
            f"too few labeled images with ok embeddings in {cfg.table} for a test split and {folds} folds "
            f"({', '.join(f'{k} {counts.get(k, 0)}' for k in wanted)}); label more images or lower split.folds"
        )
    return {k: counts.get(k, 0) for k in wanted}


def _check_classes_in_folds(rows: DataFrame, classes: Sequence[str], folds: int) -> None:
    """Every class needs `folds` non-test images, spread over at least two folds: a class whose
    images all hash into one fold is missing from that fold's training rows, and its scores
    would measure a model that never saw the class."""
    in_folds = rows.where(F.col(_SPLIT) != "test").groupBy(_LABEL).agg(
        F.count(F.lit(1)).alias("n"), F.collect_set(_FOLD).alias("folds")
    )
    found = {int(r[_LABEL]): (int(r["n"]), sorted(r["folds"])) for r in in_folds.collect()}
    for i, name in enumerate(classes):
        n, where = found.get(i, (0, []))
        if n < folds:
            raise InputError(
                f"class {name!r} has {n} non-test image(s), fewer than split.folds = {folds}: "
                "lower split.folds or label more images of it"
            )
        if len(where) < 2:
            raise InputError(
                f"class {name!r}: all {n} non-test images fall in fold {where[0]} (folds follow a hash of the "
                f"image bytes), so that fold's model would never see the class: label more images of it, "
                "lower split.folds or change split.seed"
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


def _fit_xgboost(rows: DataFrame, task: str, params: dict[str, Any], validation: Column | None = None):
    """A `SparkXGBClassifier` / `SparkXGBRegressor` fitted on `rows`; where `validation` is
    true, rows are watched (the training summary's validation curve), not trained on."""
    from xgboost.spark import SparkXGBClassifier, SparkXGBRegressor

    quiet = logging.getLogger("XGBoost-PySpark")
    if quiet.level == logging.NOTSET:  # xgboost.spark logs every fit at INFO unless told otherwise
        quiet.setLevel(logging.WARNING)
    cls = SparkXGBClassifier if task == "classification" else SparkXGBRegressor
    extra = {}
    if validation is not None:
        rows, extra = rows.withColumn("is_validation", validation), {"validation_indicator_col": "is_validation"}
    try:
        estimator = cls(features_col=_FEATURES, label_col=_LABEL, **extra, **params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"xgboost: {exc}") from None
    return estimator.fit(rows)


def xgboost_cv(
    data: DataFrame,
    task: str,
    classes: Sequence[str],
    params: dict[str, Any],
    folds: int,
    parallel: int,
    *,
    refit: bool = True,
) -> tuple[cv.Scores, Any, int]:
    """k-fold cross-validated XGBoost: fold i's fit watches fold i for `n_estimators`
    rounds; the rounds of the best mean validation curve (with `early_stopping_rounds`
    patience) score every fold and size the refit on all non-test rows, which scores
    the test split. Returns the scores, the refitted model (None without `refit`: no
    test scores either) and the rounds."""
    patience = params.get("early_stopping_rounds")
    full = {k: v for k, v in params.items() if k != "early_stopping_rounds"}
    rest = data.where(F.col(_SPLIT) != "test")
    models = cv.run_folds(lambda i: _fit_xgboost(rest, task, full, F.col(_FOLD) == i), folds, parallel)
    curves = [m.training_summary.validation_objective_history for m in models]
    metric = list(curves[0])[-1]  # xgboost early-stops on the last eval metric too
    rounds = cv.pick_rounds([c[metric] for c in curves], metric, patience)
    fold_scores = cv.run_folds(
        lambda i: cv.evaluate(cv.at_rounds(models[i], rounds), rest.where(F.col(_FOLD) == i), task, classes),
        folds,
        parallel,
    )
    if not refit:
        return cv.Scores(fold_scores, {}), None, rounds
    final = _fit_xgboost(rest, task, {**full, "n_estimators": rounds})
    test = cv.evaluate(final, data.where(F.col(_SPLIT) == "test"), task, classes)
    return cv.Scores(fold_scores, test), final, rounds


def evaluate_on_test_split(
    spark: SparkSession, cfg: TrainConfig, version: int, features: FeatureSpec, booster: Any
) -> tuple[dict[str, float], int]:
    """Held-out metrics (and row count) of a trained model, given as its `FeatureSpec`
    and booster (e.g. a registered champion), on the test split `cfg` draws from
    `cfg.table` at `version`: how an older model does on a new model's test rows.

    Raises `InputError` when the model cannot be scored there (its featurizers
    have no rows in the table, or it needs columns `cfg.labels` does not give).
    """
    missing = [c for c in features.columns if c not in (*cfg.labels.numeric, *cfg.labels.categorical)]
    if missing:
        raise InputError(f"the model needs column(s) {', '.join(missing)} that labels does not provide")
    names = [s.name for s in features.featurizers]
    rows = _embedding_rows(delta.read_table(spark, cfg.table, version, partitions=names), features.featurizers, cfg.table)
    test = with_target(with_labels(spark, rows, cfg.labels), features.task, features.classes, cfg.split, cfg.labels)
    data = with_features(test.where(F.col(_SPLIT) == "test"), features, [f"emb_{i}" for i in range(len(names))])
    frame = data.select(_LABEL, _FEATURES).toPandas()
    if frame.empty:
        raise InputError(f"no test rows in {cfg.table} version {version}")
    y = frame[_LABEL].to_numpy()
    out = predict_output(booster, np.stack(frame[_FEATURES].to_numpy()), features.task)
    if features.task == "regression":
        return cv.regression_metrics(y, out), len(frame)
    return cv.classification_metrics(y.astype(int), out, len(features.classes)), len(frame)


def _linear_baseline(
    data: DataFrame, task: str, classes: Sequence[str], cfg: TrainConfig, parallel: int
) -> cv.Scores:
    """Spark ML logistic / linear regression on the same features (missing values as 0), same folds."""
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.functions import array_to_vector
    from pyspark.ml.regression import LinearRegression

    vectors = data.withColumn(
        "vector", array_to_vector(F.transform(_FEATURES, lambda x: F.nanvl(x, F.lit(0.0))))
    )
    if task == "classification":  # every class, even one a fold's training rows lack
        nominal = {"ml_attr": {"type": "nominal", "num_vals": len(classes)}}
        vectors = vectors.withColumn(_LABEL, F.col(_LABEL).alias(_LABEL, metadata=nominal))
    kind = LogisticRegression if task == "classification" else LinearRegression
    estimator = kind(
        featuresCol="vector", labelCol=_LABEL, regParam=cfg.baselines.linear_reg_param, maxIter=100, tol=1e-4
    )

    def fit(rows: DataFrame):  # a copy per call: folds fit from several threads
        return estimator.copy().fit(rows)

    scores, _ = cv.cross_validate(fit, vectors, task, classes, cfg.split.folds, parallel)
    return scores


def _pixel_baseline(
    rows: DataFrame, task: str, classes: Sequence[str], params: dict[str, Any], cfg: TrainConfig, parallel: int
) -> cv.Scores:
    """XGBoost (same params, same folds) on a tiny grayscale thumbnail of the same images, no columns.

    The thumbnails are computed now from the files the table lists (not stored).
    """
    from imgfeat.featurizers import resolve_featurizer

    spec = resolve_featurizer(cfg.baselines.raw_pixel_featurizer)
    listing = rows.select("path", "modification_time", "length")
    pixels = featurize_listing(listing, spec, WorkerOptions(batch_size=256))
    ok = pixels.where(F.col("status") == Status.OK.value).select("path", F.col("embedding").alias("emb_0"))
    joined = rows.select("path", _LABEL, _SPLIT, _FOLD).join(ok, "path")
    only_pixels = FeatureSpec(featurizers=(spec,), task=task, classes=tuple(classes))
    data = with_features(joined, only_pixels, ["emb_0"]).cache()
    scores, _, _ = xgboost_cv(data, task, classes, params, cfg.split.folds, parallel)
    data.unpersist()
    return scores


def _leakage_warning(metrics: dict[str, dict[str, float]], task: str, margin: float) -> str | None:
    if "raw_pixels" not in metrics:
        return None
    name = PRIMARY_METRIC[task]
    model, pixels = metrics["xgboost"][name], metrics["raw_pixels"][name]
    if pixels >= model - margin:
        return (
            f"the raw-pixel baseline scores cv {name} {pixels:.3f}, as well as the model ({model:.3f}): "
            "the label may leak through trivial image properties (size, brightness, borders, "
            "duplicates), or the images need no learned features"
        )
    return None


def _example(data: DataFrame, spec: FeatureSpec) -> dict[str, Any]:
    row = data.where(F.col(_SPLIT) == "test").select("path", *spec.columns).first()
    assert row is not None
    return row.asDict()

