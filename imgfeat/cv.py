"""Cross-validation on Spark: which images are held out, fold fits side by side, scores as mean ± std.

Owns: an image's place in the evaluation (`split_column`: the held-out test
share; `fold_column`: one of k folds for the rest; both from one hash of
(split.seed, content_sha256), so byte-identical copies always land together),
running one fit per fold from driver threads (Spark runs their jobs at once
when it has free task slots), picking a booster's number of rounds from the
folds' validation curves, and the metrics with their spread across folds.
Must not: know featurizers, labels or MLflow (`train` and `runs` do), or
collect features to the driver (only labels and predictions come back).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from imgfeat.config import SplitConfig

LABEL, SPLIT, FOLD = "label_index", "split", "fold"
#: xgboost eval metrics that improve upwards (the rest: losses and errors, downwards).
_MAXIMIZED = ("auc", "aucpr", "ndcg", "map", "pre")

T = TypeVar("T")


def _unit(split: SplitConfig) -> Column:
    """A uniform number in [0, 1) per image content: the one hash both columns read."""
    return F.pmod(F.xxhash64(F.lit(split.seed), F.col("content_sha256")), F.lit(1_000_000)) / 1_000_000


def split_column(split: SplitConfig) -> Column:
    """`test` for the held-out share, `train` for the rest (the rows the folds divide)."""
    return F.when(_unit(split) < split.test, "test").otherwise("train")


def fold_column(split: SplitConfig) -> Column:
    """The fold (0 .. folds-1) of a non-test image; null for a test image.

    The non-test part of the same hash, cut into `folds` equal ranges: the
    same bytes are in the same fold whatever their path or row order.
    """
    u = _unit(split)
    share = (u - split.test) / (1 - split.test)
    return F.when(u >= split.test, F.least(F.floor(share * split.folds), F.lit(split.folds - 1)).cast("int"))


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
