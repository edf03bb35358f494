"""A small real labeled image set, featurized, trained and registered once per test
session, shared by test_train, test_tracking and test_scoring.

Three texture classes (brick, grass, gravel; non-overlapping tiles of real photos,
see `imgfeat.dev.samples`), 24 images each, embedded with the offline
efficientnet_lite0 weights into a Delta table (one featurize run, tracked), then
one tracked train run with both baselines that registers `MODEL_NAME` version 1
with the alias `ALIAS`, all in a temporary MLflow SQLite store.

The fixture is imported by several test modules; pytest would build a
session fixture once per importing module, so the build is cached here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from imgfeat.config import FeaturizeConfig, TrainConfig, load_config
from imgfeat.dev.samples import write_labeled_photos
from imgfeat.runs import FeaturizeSummary, TrainSummary, featurize_run, train_run

MODEL_NAME = "textures"
ALIAS = "champion"
PER_CLASS = 24
CLASSES = ("brick", "grass", "gravel")


@dataclass(frozen=True)
class TrainSet:
    photos: Path  # <label>/<label>_<i>.jpg and labels.csv
    table: str
    tracking_uri: str
    featurized: FeaturizeSummary
    trained: TrainSummary


_BUILT: dict[str, TrainSet] = {}


@pytest.fixture(scope="session")
def trainset(spark, tmp_path_factory) -> TrainSet:
    if "set" not in _BUILT:
        _BUILT["set"] = _build(spark, tmp_path_factory.mktemp("trainset"))
    return _BUILT["set"]


def _build(spark, root: Path) -> TrainSet:
    photos = write_labeled_photos(root / "photos", classes=CLASSES, per_class=PER_CLASS)
    uri = f"sqlite:///{root}/mlflow.db"
    table = str(root / "embeddings")
    featurized = featurize_run(
        load_config(FeaturizeConfig, overrides=[f"tracking.uri={uri}"], input=str(photos), table=table), spark
    )
    trained = train_run(
        load_config(TrainConfig, overrides=[f"tracking.uri={uri}", f"model_name={MODEL_NAME}", f"alias={ALIAS}"], table=table),
        spark,
    )
    return TrainSet(photos, table, uri, featurized, trained)
