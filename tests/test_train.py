"""Training on the embeddings table: cross-validated and held-out quality, baselines, tabular
columns, split and folds, the refit, errors."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from imgfeat import cv
from imgfeat.config import SplitConfig, TrainConfig, load_config
from imgfeat.errors import ConfigError, InputError
from imgfeat.train import train, xgboost_cv
from tests.trainset import CLASSES, PER_CLASS, trainset  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow


def _cfg(table: str, *sets: str) -> TrainConfig:
    return load_config(TrainConfig, overrides=["tracking.enabled=false", *sets], table=table)


def test_model_beats_chance_and_the_raw_pixel_baseline_on_held_out_images(trainset):
    result = trainset.trained.result
    assert result.features.task == "classification" and result.features.classes == CLASSES
    assert sum(result.counts.values()) == len(CLASSES) * PER_CLASS
    assert result.counts["test"] >= 8

    model, linear, pixels = (result.metrics[k] for k in ("xgboost", "linear", "raw_pixels"))
    chance = 1 / len(CLASSES)
    assert model["accuracy"] >= 0.8 > chance + 0.4
    assert model["accuracy"] >= pixels["accuracy"] + 0.25
    assert model["log_loss"] < math.log(len(CLASSES)) < pixels["log_loss"] + 0.5
    assert model["auc"] > 0.9
    assert linear["accuracy"] >= 0.8
    assert result.warning is None  # raw pixels do not come close: no leakage warning
    assert 1 <= result.rounds <= result.params["n_estimators"]
    assert result.booster.num_boosted_rounds() == result.rounds  # the refit grew the picked rounds
    for name, scores in result.scores.items():  # every model: one score per fold, spread measured
        assert len(scores.folds) == 5 and set(scores.mean()) == set(scores.test) == {"accuracy", "auc", "log_loss"}
        assert all(0 <= v < 0.5 for v in scores.std().values()), name
    assert result.scores["xgboost"].mean()["accuracy"] >= 0.8
    assert sum(result.counts.values()) == len(CLASSES) * PER_CLASS


def test_a_tabular_column_with_signal_improves_the_metric(spark, trainset, tmp_path):
    # y = texture index + 10 x + 5 [color == b]: the image explains little of it.
    rng = np.random.default_rng(0)
    labels = tmp_path / "labels.csv"
    with open(trainset.photos / "labels.csv") as src, open(labels, "w", newline="") as dst:
        out = csv.writer(dst)
        out.writerow(("path", "y", "x", "color"))
        for row in csv.DictReader(src):
            x, color = rng.uniform(), rng.choice(["a", "b", "c"])
            y = CLASSES.index(row["label"]) + 10 * x + 5 * (color == "b")
            out.writerow((row["file"], y, x, color))  # plain paths: they match file:/ paths

    base = (f"labels.source={labels}", "labels.label=y", "baselines.raw_pixels=false", "baselines.linear=false")
    without = train(spark, _cfg(trainset.table, *base))
    with_cols = train(spark, _cfg(trainset.table, *base, "labels.numeric=[x]", "labels.categorical=[color]"))

    assert without.features.task == with_cols.features.task == "regression"
    assert with_cols.features.dim == 1280 + 1 + 3  # embedding, x, one-hot color (a, b, c)
    # The columns help on the held-out split and on the folds (folds of ~12 images: lower R²).
    cv_without, cv_with = without.scores["xgboost"].mean()["r2"], with_cols.scores["xgboost"].mean()["r2"]
    assert with_cols.metrics["xgboost"]["r2"] > 0.5 and cv_with > cv_without + 0.2
    assert with_cols.metrics["xgboost"]["rmse"] < without.metrics["xgboost"]["rmse"]


def test_folds_train_on_the_other_folds_and_the_refit_on_every_non_test_row(spark):
    """Root cover of a squared-error tree = rows it was grown on (hessian 1 per row)."""
    from pyspark.sql import functions as F

    rng = np.random.default_rng(2)
    x = rng.normal(size=(240, 6)).astype(np.float32)
    y = x[:, 0] * 2 + rng.normal(0, 0.1, 240)
    split = SplitConfig(test=0.25, folds=3, seed=0)
    frame = spark.createDataFrame(
        [(f"{i:064x}", [float(v) for v in row], float(t)) for i, (row, t) in enumerate(zip(x, y, strict=True))],
        "content_sha256 string, features array<float>, label_index double",
    )
    frame = cv.with_split(frame, split, stratify=False).cache()
    rest = frame.where(F.col("split") != "test").count()
    seen = []

    def fit(rows):
        seen.append(rows.count())
        from pyspark.ml.functions import array_to_vector
        from pyspark.ml.regression import LinearRegression

        return _Vectorized(LinearRegression(featuresCol="v", labelCol="label_index").fit(
            rows.withColumn("v", array_to_vector("features"))))

    scores, _ = cv.cross_validate(fit, frame, "regression", (), folds=3, parallel=2)
    sizes = [frame.where(F.col("fold") == i).count() for i in range(3)]
    assert sorted(seen) == sorted([rest - n for n in sizes] + [rest])  # k folds, then all non-test rows
    assert len(scores.folds) == 3 and scores.mean()["r2"] > 0.9 and scores.test["r2"] > 0.9

    params = {"n_estimators": 40, "max_depth": 2, "learning_rate": 0.3, "subsample": 1.0, "early_stopping_rounds": 5}
    scores, model, rounds = xgboost_cv(frame, "regression", (), params, folds=3, parallel=2)
    root = model.get_booster().trees_to_dataframe().query("Tree == 0 and Node == 0")
    assert float(root["Cover"].iloc[0]) == rest  # the refit grew on every non-test row
    assert model.get_booster().num_boosted_rounds() == rounds <= 40
    assert len(scores.folds) == 3 and scores.mean()["r2"] > 0.8 and scores.test["r2"] > 0.8


class _Vectorized:
    """A Spark ML model that reads the `features` array column as its vector column."""

    def __init__(self, model):
        self.model = model

    def transform(self, rows):
        from pyspark.ml.functions import array_to_vector

        return self.model.transform(rows.withColumn("v", array_to_vector("features")))


def test_fewer_images_of_a_class_than_folds_is_one_clear_error(spark, trainset):
    with pytest.raises(InputError, match="non-test image.*split.folds = 30"):
        train(spark, _cfg(trainset.table, "split.folds=30", "baselines.raw_pixels=false"))


def test_a_class_whose_images_are_all_one_group_of_copies_is_one_clear_error(spark):
    """Its copies stay in one fold, so that fold's model would never see the class: its scores would be meaningless."""
    from imgfeat.dataset import _check_classes_in_folds

    rows = [(f"/a/{i}.jpg", f"{i:064x}", float(i % 2)) for i in range(40)]
    rows += [(f"/rare/{i}.jpg", "f" * 64, 2.0) for i in range(3)]  # three byte-identical copies
    frame = spark.createDataFrame(rows, "path string, content_sha256 string, label_index double")
    for seed in range(10):  # the first seed that puts the copies in a fold, not in test
        marked = cv.with_split(frame, SplitConfig(folds=2, seed=seed), stratify=True)
        if marked.where("label_index = 2 and split = 'train'").count():
            break
    with pytest.raises(InputError, match="class 'rare': all 3 non-test images fall in fold"):
        _check_classes_in_folds(marked, ("a", "b", "rare"), folds=2)


def test_the_removed_validation_share_is_a_clear_config_error():
    with pytest.raises(ConfigError, match="split.validation was removed"):
        load_config(TrainConfig, overrides=["split.validation=0.15"])


def test_user_errors_name_what_is_wrong(spark, trainset, tmp_path):
    with pytest.raises(InputError, match="no embeddings table"):
        train(spark, _cfg(str(tmp_path / "missing")))
    with pytest.raises(InputError, match="fingerprint"):  # the table holds avg-pooled embeddings
        train(spark, _cfg(trainset.table, "featurizers=[{name: efficientnet_lite0, pooling: max}]"))
    with pytest.raises(InputError, match="lacks column.*price"):
        train(spark, _cfg(trainset.table, f"labels.source={trainset.photos / 'labels.csv'}", "labels.numeric=[price]"))
    with pytest.raises(ConfigError, match="labels.source is required"):
        train(spark, _cfg(trainset.table, "labels.label=y"))
    with pytest.raises(ConfigError, match="xgboost"):
        train(spark, _cfg(trainset.table, "xgboost.nthread=2", "baselines.raw_pixels=false"))
