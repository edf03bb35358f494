"""The labeled dataset: embeddings at one table version, joined with labels, split and checked.

Owns: reading per-image columns (`read_source`: CSV, Parquet, Delta) and
joining them by path (`join_columns`, `path_key`), labels (`with_labels`),
inferring the task (`infer_task`), the target and the split (`with_target`,
folds by `imgfeat.cv`), the featurizers whose rows a table holds
(`table_spec`: its stored PCA basis included), the ONE reader of a table
version's labeled rows (`read_labeled`, for a config's featurizers or a
trained model's), the set a train run fits on (`training_set`: counts and
class checks, the model's `FeatureSpec`, the assembled `features` column),
and the deterministic row sample (`sample`). Must not: fit models, log to
MLflow or write tables (`train`, `tracking` and `runs` do that). Fine-tuning
reads labels and the split here too, so it splits exactly as training does.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from imgfeat import cv, delta, inputs, reduce
from imgfeat.config import FeaturizerConfig, LabelsConfig, SourceConfig, SplitConfig, TrainConfig
from imgfeat.errors import ConfigError, FeaturizerError, InputError, Status
from imgfeat.features import FeatureSpec, category_text
from imgfeat.featurizers import FeaturizerSpec
from imgfeat.featurizers.resolve import resolve_spec

log = logging.getLogger("imgfeat")
#: An integer label with at most this many distinct values is a class label.
MAX_INT_CLASSES = 20
#: The metric a task's models are compared by (higher is better).
PRIMARY_METRIC = {"classification": "accuracy", "regression": "r2"}
#: The assembled feature vector column (array<float>) models fit on.
FEATURES = "features"

_LABEL, _SPLIT, _FOLD = cv.LABEL, cv.SPLIT, cv.FOLD
_MLFLOW_TYPES = {
    "string": "string",
    "boolean": "boolean",
    "double": "double",
    "float": "double",
    "bigint": "long",
    "int": "long",
    "smallint": "long",
    "tinyint": "long",
}


def embedding_columns(n: int) -> list[str]:
    """The embedding columns of `n` featurizers' rows joined by path: `emb_0`, `emb_1`, ..."""
    return [f"emb_{i}" for i in range(n)]


# ----------------------------------------------------------------------------- featurizers of a table
def table_spec(f: FeaturizerConfig, table: str, spec: FeaturizerSpec | None = None) -> FeaturizerSpec:
    """The featurizer whose rows a table holds: `spec` (`f` resolved, when not given) reduced,
    with `dim`, by the table's stored PCA basis."""
    spec = spec or resolve_spec(f)
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


def _config_specs(cfg: TrainConfig, resolved: Sequence[FeaturizerSpec] | None) -> tuple[FeaturizerSpec, ...]:
    """`cfg.featurizers` as the table holds them (`resolved`: the same featurizers already resolved)."""
    given: Sequence[FeaturizerSpec | None] = resolved or [None] * len(cfg.featurizers)
    specs = tuple(table_spec(f, cfg.table, s) for f, s in zip(cfg.featurizers, given, strict=True))
    if len({s.fingerprint for s in specs}) != len(specs):  # one name twice is fine: e.g. pretrained + fine-tuned
        raise ConfigError(f"featurizers: {[s.name for s in specs]} lists a featurizer twice")
    return specs


# ----------------------------------------------------------------------------- the one reader
class CachedFrames:
    """A reader's result holding frames it cached for its caller: `release` unpersists them.

    Why: `Labeled` and `TrainingSet` both hand their caller the cache to free when done.
    """

    cached: tuple[DataFrame, ...]

    def release(self) -> None:
        for frame in self.cached:
            frame.unpersist()


@dataclass
class Labeled(CachedFrames):
    """A table version's labeled images with ok embeddings, as `read_labeled` reads them."""

    rows: DataFrame  # emb_0.., label, label_index, split, fold (+ tabular columns)
    specs: tuple[FeaturizerSpec, ...]
    task: str
    classes: tuple[str, ...]
    version: int
    column_types: dict[str, str]  # tabular column → MLflow type
    cached: tuple[DataFrame, ...] = ()  # what `release` unpersists


def read_labeled(
    spark: SparkSession,
    cfg: TrainConfig,
    *,
    features: FeatureSpec | None = None,
    version: int | None = None,
    only: DataFrame | None = None,
    resolved: Sequence[FeaturizerSpec] | None = None,
) -> Labeled:
    """The labeled rows of `cfg.table` at `version` (else `cfg.version`, else the latest):
    one per image with ok embeddings for every featurizer, its label, target and split.

    The featurizers and the task are a trained model's (`features`), or `cfg`'s (its
    featurizers, `resolved` if already resolved, and the task inferred from the labels).
    `only`: keep the images whose `path` is in it.
    """
    specs = features.featurizers if features else _config_specs(cfg, resolved)
    if version is None:
        version = cfg.version if cfg.version is not None else delta.table_version(spark, cfg.table)
    if version is None:
        raise InputError(f"no embeddings table at {cfg.table}: run `imgfeat featurize` first")
    partitions = sorted({s.name for s in specs})
    rows = _embedding_rows(delta.read_table(spark, cfg.table, version, partitions=partitions), specs, cfg.table)
    if only is not None:
        rows = rows.join(only.select("path"), "path", "left_semi")
    _warn_unhashed(rows, cfg.table)
    labeled = with_labels(spark, rows, cfg.labels)
    if features:
        cached: tuple[DataFrame, ...] = ()
        task, classes, types = features.task, features.classes, features.column_types
    else:
        labeled = labeled.cache()
        task, classes = infer_task(labeled, cfg.task)
        types = {
            c: _MLFLOW_TYPES.get(labeled.schema[c].dataType.simpleString(), "string")
            for c in (*cfg.labels.numeric, *cfg.labels.categorical)
        }
        cached = (labeled,)
    target = with_target(labeled, task, classes, cfg.split, cfg.labels)
    return Labeled(target, specs, task, classes, int(version), types, cached)


def _warn_unhashed(rows: DataFrame, table: str) -> None:
    """Warn when ok rows predate the `phash` column: their near-copies cannot be grouped."""
    missing = rows.where(F.col("phash").isNull()).count()
    if missing:
        log.warning(
            "imgfeat: %d images of %s have no perceptual hash (featurized before it was stored): their splits and "
            "the report group byte-identical copies only; fill it with `imgfeat rehash --table %s`",
            missing,
            table,
            table,
        )


@dataclass
class TrainingSet(CachedFrames):
    """The rows a train run fits on, read once and checked (cached until `release`)."""

    rows: DataFrame  # `Labeled.rows`
    data: DataFrame  # + features
    features: FeatureSpec
    counts: dict[str, int]  # rows: test, and each fold (fold_0, ...)
    version: int
    cached: tuple[DataFrame, ...]
    grouped: int = 0  # images split together with a copy of theirs (`cv.grouped_images`)


def training_set(
    spark: SparkSession,
    cfg: TrainConfig,
    only: DataFrame | None = None,
    resolved: Sequence[FeaturizerSpec] | None = None,
) -> TrainingSet:
    """`read_labeled` for `cfg`, checked (every fold and the test split non-empty, every class
    in the folds), with the model's `FeatureSpec` and its assembled `features` column."""
    labeled = read_labeled(spark, cfg, only=only, resolved=resolved)
    rows = labeled.rows.cache()
    counts = _check_counts(rows, labeled.task, labeled.classes, cfg)
    features = _feature_spec(rows, labeled, cfg.labels)
    data = with_features(rows, features, embedding_columns(len(labeled.specs))).cache()
    cached = (data, rows, *labeled.cached)
    return TrainingSet(rows, data, features, counts, labeled.version, cached, cv.grouped_images(rows))


def sample(rows: DataFrame, n: int, seed: int) -> DataFrame:
    """`n` rows chosen by a hash of (seed, content): the same rows on every run and cluster."""
    order = F.xxhash64(F.lit(seed), F.col("content_sha256"), F.col("path"))
    return rows.orderBy(order, "path").limit(n)


def labels_source(cfg: TrainConfig) -> str:
    """Where labels came from, as recorded in lineage."""
    where = cfg.labels.source or "the image paths"
    return f"{where} (label: {cfg.labels.label})"


def _embedding_rows(table: DataFrame, specs: Sequence[FeaturizerSpec], name: str) -> DataFrame:
    """One row per image with an ok embedding for every featurizer (`emb_0`, `emb_1`, ...)."""
    joined: DataFrame | None = None
    ok = table.where(F.col("status") == Status.OK.value)
    for column, spec in zip(embedding_columns(len(specs)), specs, strict=True):
        mine = ok.where(F.col("featurizer") == spec.name)
        found = [r[0] for r in mine.select("featurizer_fingerprint").distinct().collect()]
        if spec.fingerprint not in found:
            raise InputError(
                f"{name} has no ok rows of featurizer {spec.name!r} with fingerprint {spec.fingerprint[:12]}"
                + (
                    f" (it has {', '.join(f[:12] for f in found)}: set the featurizer's weights, pooling and "
                    "layers as in the featurize run)"
                    if found
                    else ""
                )
            )
        keep = ("path", "content_sha256", "phash", "modification_time", "length") if joined is None else ("path",)
        part = mine.where(F.col("featurizer_fingerprint") == spec.fingerprint).select(
            *keep, F.col("embedding").alias(column)
        )
        joined = part if joined is None else joined.join(part, "path")
    assert joined is not None
    return joined


# ----------------------------------------------------------------------------- labels and columns
def path_key(column: Column) -> Column:
    """A path as a join key: `file:/a`, `file:///a` and `/a` are the same file."""
    return F.regexp_replace(column, r"^file:(//)?(?=/)", "")


def read_table(spark: SparkSession, source: str, kind: str = "auto") -> tuple[DataFrame, str]:
    """A CSV / Parquet / Delta table, or the one CSV inside a zip, as it is; and the folder its
    relative paths resolve against (`inputs.table_folder`; in a zip, a member key)."""
    kind = inputs.table_format(source, kind)
    base = inputs.table_folder(source)
    try:
        if kind == "delta":
            frame = delta.read_table(spark, source, contract=None)
        elif kind == "csv":
            frame = spark.read.option("header", True).option("inferSchema", True).csv(source)
        elif kind == "zip":
            rows, base = inputs.archive_table(source)
            frame = spark.createDataFrame(rows)
        else:
            frame = spark.read.parquet(source)
    except InputError:
        raise
    except Exception as exc:  # Spark's AnalysisException and friends
        raise InputError(f"cannot read {source} as {kind}: {str(exc).splitlines()[0]}") from None
    return frame, base


def read_source(spark: SparkSession, src: SourceConfig) -> DataFrame:
    """A table of per-image columns with a `path` column: `src.path_column`'s cells resolved
    as featurize resolves a table input's (relative paths against the table's folder)."""
    assert src.source is not None
    frame, base = read_table(spark, src.source, src.format)
    if src.path_column not in frame.columns:
        raise InputError(f"{src.source} has no `{src.path_column}` column (columns: {', '.join(frame.columns)})")
    return frame.withColumn("path", inputs.resolved(F.col(src.path_column), base))


def folder_label(path: Column) -> Column:
    """An image's parent folder name (a zip member's folder inside its archive)."""
    inside = F.regexp_extract(path, r"^zip://(.*)::", 1)
    return F.try_element_at(F.split(F.when(inside != "", inside).otherwise(path), "/"), F.lit(-2))


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
        return rows.withColumn("label", folder_label(F.col("path")))
    wanted = tabular + ([] if labels.label == "folder" else [labels.label])
    joined = join_columns(rows, read_source(spark, labels), wanted, labels.source)
    if labels.label == "folder":
        return joined.withColumn("label", folder_label(F.col("path")))
    return joined.withColumnRenamed(labels.label, "label") if labels.label != "label" else joined


def infer_task(rows: DataFrame, requested: str) -> tuple[str, tuple[str, ...]]:
    """classification (strings, booleans, few integers) or regression; and the classes."""
    labeled = rows.where(F.col("label").isNotNull())
    kind = labeled.schema["label"].dataType
    if requested == "regression" or (
        requested == "auto" and isinstance(kind, (T.FloatType, T.DoubleType, T.DecimalType))
    ):
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
    """Labeled rows with `label_index` (class index or value), `split`, `fold` and `copy_group` (`cv.with_split`)."""
    labeled = rows.where(F.col("label").isNotNull())
    if task == "classification":
        mapping = F.create_map(*[x for i, c in enumerate(classes) for x in (F.lit(c), F.lit(float(i)))])
        target = mapping[F.col("label").cast("string")]
    else:
        target = F.col("label").cast("double")
    out = cv.with_split(labeled.withColumn(_LABEL, target), split, stratify=task == "classification")
    for name in labels.numeric:
        out = out.withColumn(name, F.col(name).cast("double"))
    for name in labels.categorical:
        out = out.withColumn(name, F.col(name).cast("string"))
    return out


# ----------------------------------------------------------------------------- checks and features
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
    images all sit in one fold (one group of copies: the split never cuts it) is missing from
    that fold's training rows, and its scores would measure a model that never saw the class."""
    in_folds = (
        rows.where(F.col(_SPLIT) != "test")
        .groupBy(_LABEL)
        .agg(F.count(F.lit(1)).alias("n"), F.collect_set(_FOLD).alias("folds"))
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
                f"class {name!r}: all {n} non-test images fall in fold {where[0]} (they are copies of each other, "
                f"kept together), so that fold's model would never see the class: label more images of it, "
                "or lower split.folds"
            )


def _feature_spec(rows: DataFrame, labeled: Labeled, labels: LabelsConfig) -> FeatureSpec:
    """The model's input spec: `labeled`'s featurizers and task, the tabular columns, and each
    categorical column's values as the train split has them."""
    train_rows = rows.where(F.col(_SPLIT) == "train")
    categorical = []
    for name in labels.categorical:
        seen = train_rows.where(F.col(name).isNotNull()).select(name).distinct().limit(1001).collect()
        if len(seen) > 1000:
            raise InputError(f"categorical column {name!r} has more than 1000 values; use it as numeric or drop it")
        categorical.append((name, tuple(sorted(r[0] for r in seen))))
    return FeatureSpec(
        featurizers=labeled.specs,
        task=labeled.task,
        classes=labeled.classes,
        numeric=tuple(labels.numeric),
        categorical=tuple(categorical),
        encoding=labels.encoding,
        column_types=labeled.column_types,
    )


def with_features(frame: DataFrame, spec: FeatureSpec, embedding_cols: Sequence[str]) -> DataFrame:
    """`frame` plus a `features` array<float> column (`spec.assemble` on the workers)."""
    schema = T.StructType(frame.schema.fields + [T.StructField(FEATURES, T.ArrayType(T.FloatType()), True)])
    cols = list(embedding_cols)

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            if batch.empty:
                continue
            embeddings = [np.stack(batch[c].to_numpy()) for c in cols]
            batch[FEATURES] = list(spec.assemble(embeddings, batch))
            yield batch

    return frame.mapInPandas(run, schema)
