"""Training on the embeddings table: held-out quality, baselines, tabular columns, split, errors."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from imgfeat.config import SplitConfig, TrainConfig, load_config
from imgfeat.errors import ConfigError, InputError
from imgfeat.train import split_column, train
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
    assert result.best_iteration is not None and result.best_iteration < result.params["n_estimators"]


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
    r2_without, r2_with = without.metrics["xgboost"]["r2"], with_cols.metrics["xgboost"]["r2"]
    assert r2_with > 0.6 and r2_with > r2_without + 0.5
    assert with_cols.metrics["xgboost"]["rmse"] < without.metrics["xgboost"]["rmse"]


def test_split_is_by_content_hash_so_duplicates_never_straddle(spark):
    from pyspark.sql import functions as F

    rng = np.random.default_rng(1)
    shas = [bytes(rng.integers(0, 256, 32, dtype=np.uint8)).hex() for _ in range(3000)]
    rows = [(f"/a/{i}.jpg", s) for i, s in enumerate(shas)] + [(f"/copy/{i}.jpg", s) for i, s in enumerate(shas)]
    frame = spark.createDataFrame(rows, "path string, content_sha256 string")
    split = SplitConfig(validation=0.15, test=0.2, seed=0)
    marked = frame.withColumn("split", split_column(split))
    assert marked.groupBy("content_sha256").agg(F.countDistinct("split").alias("n")).where("n > 1").count() == 0
    shares = {r["split"]: r["count"] / len(rows) for r in marked.groupBy("split").count().collect()}
    assert abs(shares["test"] - 0.2) < 0.03 and abs(shares["validation"] - 0.15) < 0.03
    reseeded = frame.withColumn("split", split_column(SplitConfig(seed=1)))
    assert reseeded.join(marked, ["path", "content_sha256"]).where(reseeded.split != marked.split).count() > 0


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
