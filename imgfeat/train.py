"""Fitting models on the labeled dataset with `xgboost.spark`: k-fold CV, refit, baselines.

Owns: fitting `SparkXGBClassifier` / `SparkXGBRegressor` by k-fold
cross-validation (rounds picked from the folds, then a refit on every
non-test image), the baselines (Spark ML linear model, raw-pixel XGBoost) the
same way, scoring a trained model on a table version's test split, the
leakage warning, and the novelty reference a model keeps of its training
rows. The rows come from `imgfeat.dataset` (read once per run); the split,
the folds and the metrics are `imgfeat.cv`'s. Must not: read labels or
tables itself, log to MLflow, build the served model, or write tables
(`dataset`, `tracking`, `model` and `runs` do that).

`xgboost.spark` stays the estimator: its options are passed through from the
config's `xgboost:` mapping, never retyped here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from imgfeat import cv
from imgfeat.config import TrainConfig
from imgfeat.dataset import (
    FEATURES,
    PRIMARY_METRIC,
    TrainingSet,
    embedding_columns,
    labels_source,
    read_labeled,
    sample,
    training_set,
    with_features,
)
from imgfeat.errors import ConfigError, InputError, Status
from imgfeat.features import FeatureSpec, predict_output
from imgfeat.featurize import WorkerOptions, featurize_listing
from imgfeat.featurizers import FeaturizerSpec
from imgfeat.novelty import NoveltyReference

log = logging.getLogger("imgfeat")

#: imgfeat's defaults for the `xgboost:` mapping (any xgboost.spark param overrides them).
#: `n_estimators` is the most rounds; the folds' validation curves pick how many the
#: refit uses, stopping `early_stopping_rounds` after the mean curve's best.
#: Chosen for wide, correlated embeddings and hundreds to thousands of rows (bench/README.md,
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
#: Training rows kept with a model as its novelty reference (`imgfeat.novelty`).
NOVELTY_REFERENCE_ROWS = 2000

_LABEL, _SPLIT, _FOLD = cv.LABEL, cv.SPLIT, cv.FOLD


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
    novelty: NoveltyReference | None = None  # kept with the model, when asked for
    grouped: int = 0  # images kept in one split with a copy (same bytes or perceptual-hash neighbour)

    @property
    def metrics(self) -> dict[str, dict[str, float]]:
        """model → metric → value on the held-out test split."""
        return {model: s.test for model, s in self.scores.items()}

    @property
    def best_iteration(self) -> int:
        """Index of the refit's last tree (rounds - 1), as xgboost counts iterations."""
        return self.rounds - 1

    @property
    def headline(self) -> tuple[str, float]:
        """The metric models are compared by (higher is better) and this model's test value."""
        name = PRIMARY_METRIC[self.features.task]
        return f"test_{name}", self.metrics["xgboost"][name]

    def lines(self) -> list[str]:
        """Every model's metrics side by side, cv mean ± std then test; then the leakage warning."""
        names = sorted({m for s in self.scores.values() for m in s.test})
        rows = [
            f"{'':12}" + "".join(f"{n:>28}" for n in names),
            f"{'model':12}" + f"{'cv mean ± std     test':>28}" * len(names),
        ]
        for model, s in self.scores.items():
            mean, std = s.mean(), s.std()
            rows.append(f"{model:12}" + "".join(f"{mean[n]:>11.4f} ± {std[n]:.4f} {s.test[n]:>7.4f}" for n in names))
        return rows + ([f"WARNING: {self.warning}"] if self.warning else [])


# ----------------------------------------------------------------------------- training
def train(
    spark: SparkSession, cfg: TrainConfig, *, resolved: Sequence[FeaturizerSpec] | None = None, novelty: bool = False
) -> TrainResult:
    """Cross-validate the model and its baselines on `cfg.table` at `cfg.version` (latest if
    None), refit each on every non-test image, and score the held-out test split.

    `resolved`: `cfg.featurizers` already resolved (`resolve_spec`), not resolved again.
    `novelty`: also keep a novelty reference of the train split, from the same rows.
    """
    started = time.monotonic()
    r = training_set(spark, cfg, resolved=resolved)
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
    seconds = time.monotonic() - started
    reference = novelty_reference(r, cfg.split.seed) if novelty else None
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
        seconds=seconds,
        fold_seconds=fold_seconds,
        parallel=parallel,
        novelty=reference,
        grouped=r.grouped,
    )


def cross_validate(spark: SparkSession, cfg: TrainConfig, only: DataFrame) -> tuple[cv.Scores, FeatureSpec]:
    """The XGBoost fold scores of `cfg` on the images whose `path` is in `only` (no refit,
    and the test split is neither trained nor scored: `imgfeat select` keeps it unseen)."""
    r = training_set(spark, cfg, only)
    params = {**XGB_DEFAULTS, **cfg.xgboost}
    scores, _, _ = xgboost_cv(
        r.data,
        r.features.task,
        r.features.classes,
        params,
        cfg.split.folds,
        fold_parallelism(spark, cfg, params),
        refit=False,
    )
    r.release()
    return scores, r.features


def fold_parallelism(spark: SparkSession, cfg: TrainConfig, params: dict[str, Any]) -> int:
    """`split.parallel`, or as many fold fits as the cluster's task slots hold (each
    xgboost.spark fit takes `num_workers` slots), at most `split.folds`."""
    if cfg.split.parallel:
        return min(cfg.split.parallel, cfg.split.folds)
    slots = spark.sparkContext.defaultParallelism // int(params.get("num_workers", 1) or 1)
    return max(1, min(slots, cfg.split.folds))


def novelty_reference(r: TrainingSet, seed: int) -> NoveltyReference:
    """A deterministic sample of the train split's embeddings and their own NN distances."""
    emb = embedding_columns(len(r.features.featurizers))
    train_rows = r.rows.where(F.col(_SPLIT) == "train")
    picked: pd.DataFrame = sample(train_rows, NOVELTY_REFERENCE_ROWS, seed).select(*emb).toPandas()
    return NoveltyReference.fit([np.stack(picked[c].to_numpy()) for c in emb])


def _fit_xgboost(rows: DataFrame, task: str, params: dict[str, Any], validation: Column | None = None):
    """A `SparkXGBClassifier` / `SparkXGBRegressor` fitted on `rows`; where `validation` is
    true, rows are watched (the training summary's validation curve), not trained on."""
    from xgboost.spark import SparkXGBClassifier, SparkXGBRegressor

    quiet = logging.getLogger("XGBoost-PySpark")
    if quiet.level == logging.NOTSET:  # xgboost.spark logs every fit at INFO unless told otherwise
        quiet.setLevel(logging.WARNING)
    cls = SparkXGBClassifier if task == "classification" else SparkXGBRegressor
    extra: dict[str, Any] = {}
    if validation is not None:
        rows, extra = rows.withColumn("is_validation", validation), {"validation_indicator_col": "is_validation"}
    try:
        estimator = cls(features_col=FEATURES, label_col=_LABEL, **extra, **params)
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
    spark: SparkSession,
    cfg: TrainConfig,
    version: int,
    features: FeatureSpec,
    booster: Any,
    held_out_before: bool = False,
) -> tuple[dict[str, float], int]:
    """Held-out metrics (and row count) of a trained model, given as its `FeatureSpec`
    and booster (e.g. a registered champion), on the test split `cfg` draws from
    `cfg.table` at `version`: how an older model does on a new model's test rows.
    `held_out_before`: only the test rows split version 1 held out too (`cv.held_out_before`).

    Raises `InputError` when the model cannot be scored there (its featurizers
    have no rows in the table, or it needs columns `cfg.labels` does not give).
    """
    missing = [c for c in features.columns if c not in (*cfg.labels.numeric, *cfg.labels.categorical)]
    if missing:
        raise InputError(f"the model needs column(s) {', '.join(missing)} that labels does not provide")
    test = read_labeled(spark, cfg, features=features, version=version).rows.where(F.col(_SPLIT) == "test")
    if held_out_before:
        test = test.where(cv.held_out_before(cfg.split))
    data = with_features(test, features, embedding_columns(len(features.featurizers)))
    frame: pd.DataFrame = data.select(_LABEL, FEATURES).toPandas()
    if frame.empty:
        raise InputError(f"no test rows in {cfg.table} version {version}")
    y = frame[_LABEL].to_numpy()
    out = predict_output(booster, np.stack(frame[FEATURES].to_numpy()), features.task)
    if features.task == "regression":
        return cv.regression_metrics(y, out), len(frame)
    return cv.classification_metrics(y.astype(int), out, len(features.classes)), len(frame)


def _linear_baseline(data: DataFrame, task: str, classes: Sequence[str], cfg: TrainConfig, parallel: int) -> cv.Scores:
    """Spark ML logistic / linear regression on the same features (missing values as 0), same folds."""
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.functions import array_to_vector
    from pyspark.ml.regression import LinearRegression

    vectors = data.withColumn("vector", array_to_vector(F.transform(FEATURES, lambda x: F.nanvl(x, F.lit(0.0)))))
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
