"""Cross-validation on Spark: which images are held out, fold fits side by side, scores as mean ± std.

Owns: an image's place in the evaluation (`with_split`: groups of copies, byte-identical
or perceptual-hash neighbours, each wholly in the held-out test share or in one of k
folds, stratified by label), running one fit per fold from driver threads (Spark runs
their jobs at once when it has free task slots), picking a booster's number of rounds
from the folds' validation curves, and the metrics with their spread across folds.
Must not: know featurizers, label names or MLflow (`train` and `runs` do), or collect
features to the driver (only labels, predictions and near-copy edges come back).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from imgfeat import nearcopy
from imgfeat.config import SplitConfig

LABEL, SPLIT, FOLD, GROUP = "label_index", "split", "fold", "copy_group"
#: Recorded with every split (MLflow param `split_version`): 2 = groups of copies, stratified;
#: 1 (before) = a hash of each image's bytes alone. A table's splits changed once, with 2.
SPLIT_VERSION = 2
#: xgboost eval metrics that improve upwards (the rest: losses and errors, downwards).
_MAXIMIZED = ("auc", "aucpr", "ndcg", "map", "pre")

T = TypeVar("T")


def with_split(rows: DataFrame, split: SplitConfig, stratify: bool) -> DataFrame:
    """`rows` (`content_sha256`, `LABEL`, `phash` if the table has it) + `GROUP`, `SPLIT`
    (`test` or `train`) and `FOLD` (0 .. folds-1; null in test).

    A group is a connected component of copies: the same bytes, or perceptual hashes within
    `split.near_copy_distance` bits (`nearcopy`); the whole group is in test or in one fold,
    so a resized or re-encoded copy never sits on the other side of its original. Groups
    are ordered by a hash of (seed, group) within their stratum (the smallest label of the
    group when `stratify`, else one stratum), the order is rotated by a hash of the stratum,
    and each group goes where the middle of its images falls: the first `split.test` of the
    stratum's images to test, then consecutive equal shares of the rest to the folds. Per
    class, test and every fold get their proportional share within one image where the
    groups are single images (a group is never cut, so large groups shift the cuts).
    Deterministic for the same rows and seed; adding images can move others (unlike a
    per-image hash). Rows without a `phash` group by their bytes only.
    """
    spark = rows.sparkSession
    edges = []
    if "phash" in rows.columns:
        pairs = nearcopy.near_pairs(rows, "content_sha256", split.near_copy_distance)
        edges = [(r[0], r[1]) for r in pairs.select("content_sha256_a", "content_sha256_b").collect()]
    roots = nearcopy.components(edges)
    grouped = rows.withColumn(GROUP, F.col("content_sha256"))
    if roots:
        mapping = spark.createDataFrame(sorted(roots.items()), "content_sha256 string, _root string")
        grouped = (
            rows.join(F.broadcast(mapping), "content_sha256", "left")
            .withColumn(GROUP, F.coalesce("_root", "content_sha256"))
            .drop("_root")
        )
    stratum = F.min(LABEL).cast("string") if stratify else F.lit("")
    groups = grouped.groupBy(GROUP).agg(F.count(F.lit(1)).alias("_n"), stratum.alias("_stratum"))
    placed = groups.withColumn(SPLIT, F.when(_position(split.seed) < split.test, "test").otherwise("train"))
    rest = placed.where(F.col(SPLIT) == "train")
    folds = rest.select(
        GROUP, F.least(F.floor(_position(split.seed) * split.folds), F.lit(split.folds - 1)).cast("int").alias(FOLD)
    )
    assigned = placed.join(folds, GROUP, "left").select(GROUP, SPLIT, FOLD)
    return grouped.join(assigned, GROUP)


def _position(seed: int) -> Column:
    """Where the middle of a group's images falls in its stratum, in [0, 1): groups in
    (seed, group)-hash order, rotated by a hash of (seed, stratum) so the strata's
    rounding does not favour the same folds."""
    order = Window.partitionBy("_stratum").orderBy(F.xxhash64(F.lit(seed), F.col(GROUP)), GROUP)
    end = F.sum("_n").over(order.rowsBetween(Window.unboundedPreceding, Window.currentRow))
    total = F.sum("_n").over(Window.partitionBy("_stratum"))
    turn = F.pmod(F.xxhash64(F.lit(seed), F.col("_stratum")), F.lit(1_000_000)) / 1_000_000
    return F.pmod((end - F.col("_n") / 2) / total + turn, F.lit(1.0))


def held_out_before(split: SplitConfig) -> Column:
    """True for the images split version 1 held out as test (a hash of `split.seed` and each
    image's bytes): a model trained on that split never saw them, so promotion compares such
    a model with a new one on the test images both held out."""
    unit = F.pmod(F.xxhash64(F.lit(split.seed), F.col("content_sha256")), F.lit(1_000_000)) / 1_000_000
    return unit < split.test


def grouped_images(rows: DataFrame) -> int:
    """Images of `with_split`'s rows that share their group with another image."""
    sizes = rows.groupBy(GROUP).count().where(F.col("count") > 1)
    total = sizes.agg(F.sum("count")).first()
    return int(total[0] or 0) if total is not None else 0


@dataclass
class Scores:
    """A model's metrics on each held-out fold, and on the test split after the refit."""

    folds: list[dict[str, float]]
    test: dict[str, float]

    def mean(self) -> dict[str, float]:
        """Mean over the folds that have the metric (AUC is NaN in a fold missing a class)."""
        return {k: _nan_quiet(np.nanmean, [f[k] for f in self.folds]) for k in self.folds[0]}

    def std(self) -> dict[str, float]:
        """Sample standard deviation across folds (ddof 1): the spread a new fold would show."""
        return {k: _nan_quiet(np.nanstd, [f[k] for f in self.folds], ddof=1) for k in self.folds[0]}


def _nan_quiet(reduce: Callable[..., Any], values: list[float], **kwargs: Any) -> float:
    """`reduce` of `values`, NaN without a RuntimeWarning when too few are finite."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(reduce(values, **kwargs))


def run_folds(fn: Callable[[int], T], folds: int, parallel: int) -> list[T]:
    """`[fn(0), ..., fn(folds-1)]`, up to `parallel` at once from driver threads.

    Each call submits its own Spark jobs; Spark schedules jobs of different
    threads side by side, so fits that each use fewer task slots than the
    cluster has run concurrently instead of one after another.
    """
    if parallel <= 1:
        return [fn(i) for i in range(folds)]
    with ThreadPoolExecutor(max_workers=min(parallel, folds), thread_name_prefix="imgfeat-fold") as pool:
        return list(pool.map(fn, range(folds)))


def cross_validate(
    fit: Callable[[DataFrame], Any],
    data: DataFrame,
    task: str,
    classes: Sequence[str],
    folds: int,
    parallel: int,
) -> tuple[Scores, Any]:
    """Fit on all non-test rows but fold i and score fold i, for every i; then refit on
    all non-test rows and score the test rows. Returns the scores and the refitted model."""
    rest = data.where(F.col(SPLIT) != "test")

    def fold(i: int) -> dict[str, float]:
        model = fit(rest.where(F.col(FOLD) != i))
        return evaluate(model, rest.where(F.col(FOLD) == i), task, classes)

    scores = run_folds(fold, folds, parallel)
    final = fit(rest)
    return Scores(scores, evaluate(final, data.where(F.col(SPLIT) == "test"), task, classes)), final


def pick_rounds(curves: Sequence[Sequence[float]], metric: str, patience: int | None) -> int:
    """Boosting rounds from the folds' validation curves of `metric`, as xgboost's `cv` picks
    them: the best round of the mean curve, stopping `patience` rounds after the last
    improvement (None: look at the whole curve)."""
    length = min(len(c) for c in curves)
    mean = np.mean([np.asarray(c[:length], dtype=float) for c in curves], axis=0)
    if metric.split("@")[0] in _MAXIMIZED:
        mean = -mean
    best = 0
    for i in range(1, length):
        if mean[i] < mean[best]:
            best = i
        elif patience and i - best >= patience:
            break
    return best + 1


def at_rounds(model: Any, rounds: int) -> Any:
    """The xgboost.spark `model` predicting with its first `rounds` trees (as early stopping's
    `best_iteration` makes it), so every fold is scored at the rounds the refit uses."""
    model.get_booster().best_iteration = rounds - 1
    return model


def evaluate(model: Any, rows: DataFrame, task: str, classes: Sequence[str]) -> dict[str, float]:
    """Metrics of a fitted Spark ML / xgboost.spark model on `rows`."""
    from pyspark.ml.functions import vector_to_array

    out = model.transform(rows)
    cols = [F.col(LABEL), F.col("prediction")]
    if task == "classification":
        cols.append(vector_to_array(F.col("probability")).alias("probability"))
    frame = out.select(*cols).toPandas()
    y = frame[LABEL].to_numpy()
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
