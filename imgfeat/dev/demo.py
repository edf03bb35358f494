"""`make demo`: the whole pipeline on real labeled photos, offline, in a few minutes.

Owns: the demo's data layout and the story it prints. Writes three texture
classes (brick, grass, gravel: non-overlapping tiles of real photos shipped in
scikit-image, see `imgfeat.dev.samples`) under `demo/photos/train/<label>/`, holds
out more tiles of the same photos as new images in `demo/photos/new/` (plus a
broken file and copies of three training images), then runs the same jobs as
the CLI: featurize → train (with baselines) → register (alias `champion`) →
score the new images with `models:/imgfeat-demo@champion` (plus a photo of a
cat, unlike any training texture: its `novelty` says so) → the insights report
of the model. Must not: hold pipeline logic (it calls `imgfeat.runs`, as the CLI does).

Outputs: `demo/warehouse/embeddings` and `demo/warehouse/scores` (Delta),
`demo/insights/report.html`,
`mlflow.db` + `mlartifacts/` (MLflow) in the working directory. A rerun keeps
the photos, featurizes nothing new, trains and registers a new model version
(the alias moves to it) and scores again.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import time
from pathlib import Path

from imgfeat import console
from imgfeat.config import FeaturizeConfig, InsightsConfig, ScoreConfig, TrainConfig, load_config
from imgfeat.dev.samples import DEFAULT_CLASSES, write_labeled_photos
from imgfeat.errors import ImgfeatError

ROOT = Path("demo")
MODEL_NAME = "imgfeat-demo"
ALIAS = "champion"
TRAIN_PER_CLASS = 64
NEW_PER_CLASS = 8


def prepare_photos(root: Path) -> tuple[Path, Path]:
    """Labeled training tiles (listed in `labels.csv` too) and held-out new tiles
    (+ a broken file, + 3 copies of training tiles); kept if already complete."""
    train, new, ready = root / "photos" / "train", root / "photos" / "new", root / "photos" / "READY"
    if ready.is_file():
        return train, new
    shutil.rmtree(root / "photos", ignore_errors=True)
    write_labeled_photos(train, classes=DEFAULT_CLASSES, per_class=TRAIN_PER_CLASS + NEW_PER_CLASS)
    for label in DEFAULT_CLASSES:
        (new / label).mkdir(parents=True)
        tiles = sorted((train / label).glob("*.jpg"))
        for tile in tiles[TRAIN_PER_CLASS:]:  # distinct tiles: no pixel is shared with training
            tile.rename(new / label / tile.name)
        shutil.copy(tiles[0], new / label / f"copy_of_{tiles[0].name}")  # bytes already embedded
    (new / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    with open(train / "labels.csv") as f:  # the moved tiles leave labels.csv
        rows = [r for r in csv.reader(f) if r[0] == "path" or Path(r[1]).is_file()]
    with open(train / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    ready.touch()
    return train, new


def add_cat(new: Path) -> Path:
    """scikit-image's photo of a cat (Chelsea) among the new images: nothing like a texture."""
    from PIL import Image
    from skimage.data import chelsea

    cat = new / "cat.jpg"
    if not cat.is_file():
        Image.fromarray(chelsea()).save(cat, quality=90)
    return cat


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m imgfeat.dev.demo", description="The whole pipeline on sample photos."
    )
    parser.add_argument("--verbose", action="store_true", help="show Spark, MLflow and XGBoost logs here")
    args = parser.parse_args(argv)
    if args.verbose:
        console.verbose()
    else:
        console.quiet(console.default_log_path("demo"))

    from imgfeat.runs import featurize_run, insights_run, score_run, train_run
    from imgfeat.session import get_spark

    started = time.monotonic()
    table, scores = ROOT / "warehouse" / "embeddings", ROOT / "warehouse" / "scores"
    train_dir, new_dir = prepare_photos(ROOT)
    cat = add_cat(new_dir)
    spark = get_spark()
    print(f"demo: {TRAIN_PER_CLASS} training photos per class {DEFAULT_CLASSES} in {train_dir}", flush=True)

    featurized = featurize_run(load_config(FeaturizeConfig, input=str(train_dir), table=str(table)), spark)
    print(featurized.line(), flush=True)
    trained = train_run(
        load_config(TrainConfig, table=str(table), overrides=[f"model_name={MODEL_NAME}", f"alias={ALIAS}"]), spark
    )
    print("\n".join(trained.lines()), flush=True)
    scored = score_run(
        load_config(
            ScoreConfig,
            model=f"models:/{MODEL_NAME}@{ALIAS}",
            input=str(new_dir),
            table=str(table),
            output=str(scores),
        ),
        spark,
    )
    print(scored.line(), flush=True)
    print(_new_image_accuracy(spark, str(scores), scored.model_version), flush=True)
    print(_cat_line(spark, str(scores), scored.model_version, cat), flush=True)
    insights = insights_run(
        load_config(
            InsightsConfig, model=f"models:/{MODEL_NAME}/{scored.model_version}", output=str(ROOT / "insights")
        ),
        spark,
    )
    print(insights.line(), flush=True)
    print(
        "\n".join(
            [
                "",
                f"embeddings table  {table} (Delta, version {featurized.version})",
                f"scores table      {scores} (Delta, version {scored.version})",
                f"insights report   {insights.report}",
                f"MLflow store      sqlite:///mlflow.db, artifacts in ./mlartifacts; "
                f"model {MODEL_NAME} version {trained.model_version} (alias {ALIAS})",
                "open the MLflow UI:  .venv/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db",
                f"  then http://127.0.0.1:5000{_experiment_link(trained.run_id)}",
                f"serve the model:     .venv/bin/imgfeat serve --model models:/{MODEL_NAME}/{trained.model_version}",
                f"demo finished in {time.monotonic() - started:.0f} s",
            ]
        ),
        flush=True,
    )
    return 0


def _experiment_link(run_id: str | None) -> str:
    assert run_id is not None  # the demo tracks every run
    from mlflow import MlflowClient

    from imgfeat.tracking import experiment_link

    return experiment_link(MlflowClient().get_run(run_id).info.experiment_id)


def _new_image_accuracy(spark, scores: str, version: str | None) -> str:
    """How many held-out tiles (folder = true label) the registered model got right."""
    from pyspark.sql import functions as F

    from imgfeat.delta import read_table
    from imgfeat.scoring import SCORES

    rows = read_table(spark, scores, contract=SCORES).where(
        (F.col("model_version") == version) & ~F.col("path").contains("copy_of_") & ~F.col("path").endswith("/cat.jpg")
    )
    labeled = rows.withColumn("truth", F.element_at(F.split("path", "/"), -2)).where(F.col("status") == "ok")
    right = labeled.where(F.col("truth") == F.col("predicted_class")).count()
    bad = rows.where(F.col("status") != "ok").count()
    return f"new images: {right}/{labeled.count()} held-out tiles predicted correctly; {bad} bad file(s) kept as rows"


def _cat_line(spark, scores: str, version: str | None, cat: Path) -> str:
    """What the model says about the cat, and how novel it finds it."""
    from pyspark.sql import functions as F

    from imgfeat.delta import read_table
    from imgfeat.scoring import SCORES

    row = (
        read_table(spark, scores, contract=SCORES)
        .where((F.col("model_version") == version) & F.col("path").endswith(f"/{cat.name}"))
        .first()
    )
    if row is None or row["status"] != "ok":
        return f"cat photo: not scored ({row and row['error']})"
    p = row["probabilities"][row["predicted_class"]]
    novelty = "unknown" if row["novelty"] is None else f"{row['novelty']:.0f}"
    return (
        f"cat photo: predicted {row['predicted_class']} with probability {p:.2f}, novelty {novelty} "
        "(100 = farther from the training images than any of them is from its nearest neighbour)"
    )


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ImgfeatError as exc:
        print(f"imgfeat demo: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
