"""Frozen vs fine-tuned features on a set far from ImageNet, side by side, one run.

    .venv/bin/python bench/finetune_compare.py [--n 400] [--epochs 2] [--processes 2] [--out bench/out/finetune]

On `imgfeat.dev.defect_samples.write_defect_photos` (tiles of real texture photos,
half with a small drawn defect; label `defect`): featurize with the pretrained
efficientnet_lite0, fine-tune it (`runs.finetune_run`, TorchDistributor, CPU),
featurize again with ``models:/bench-finetuned/latest`` into the same table,
then report on the same held-out test split (train's split: same seed, same
hash): XGBoost on pretrained embeddings, XGBoost on fine-tuned embeddings, and
the fine-tuned network's own head. Prints a Markdown table, fine-tuning time
and training images per second.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400, help="images (half with a defect)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--processes", type=int, default=2, help="TorchDistributor num_processes")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", default="bench/out/finetune")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse --out's photos, table and registered fine-tune; only train and compare")
    args = parser.parse_args()

    from imgfeat.config import FeaturizeConfig, FinetuneConfig, SparkConfig, TrainConfig, load_config
    from imgfeat.dev.defect_samples import write_defect_photos
    from imgfeat.runs import featurize_run, finetune_run, train_run
    from imgfeat.session import get_spark

    out = Path(args.out).absolute()
    if not args.reuse:
        shutil.rmtree(out, ignore_errors=True)
    os.environ["IMGFEAT_CACHE"] = str(out / "cache")
    photos = out / "photos" if args.reuse else write_defect_photos(out / "photos", n=args.n, seed=0)
    tracking = f"tracking.uri=sqlite:///{out}/mlflow.db"
    labels = [f"labels.source={photos / 'labels.csv'}", "labels.label=defect"]
    table = str(out / "embeddings")
    spark = get_spark(SparkConfig(master="local[2]", conf={"spark.ui.showConsoleProgress": "false"}))
    print(f"load average at start: {os.getloadavg()}", flush=True)

    def featurize(*overrides: str):
        cfg = load_config(FeaturizeConfig, overrides=[tracking, *overrides], input=str(photos), table=table)
        return featurize_run(cfg, spark)

    def xgboost(weights: str) -> dict[str, float]:
        cfg = load_config(
            TrainConfig,
            overrides=[tracking, *labels, "model_name=null", "baselines.linear=false", "baselines.raw_pixels=false"],
            table=table,
            featurizers=[{"name": "efficientnet_lite0", "weights": weights}],
        )
        return train_run(cfg, spark).result.metrics["xgboost"]

    if args.reuse:
        tuned = _registered(out)
    else:
        pretrained = featurize()
        tuned = finetune_run(
            load_config(
                FinetuneConfig,
                overrides=[tracking, *labels, f"epochs={args.epochs}", f"batch_size={args.batch_size}",
                           f"distributor.num_processes={args.processes}", "model_name=bench-finetuned"],
                input=str(photos),
            ),
            spark,
        )
        again = featurize("featurizer.weights=models:/bench-finetuned/latest")
        print(f"featurize: pretrained {pretrained.images_per_second:.1f} img/s, "
              f"fine-tuned {again.images_per_second:.1f} img/s")
    frozen_scores = xgboost("default")
    tuned_scores = xgboost("models:/bench-finetuned/latest")
    head_scores, n_test = _head_on_test(spark, table, tuned, photos)

    print(f"load average at end: {os.getloadavg()}")
    print(f"\ntest split: {n_test} images (held out, never seen by fine-tuning)")
    if not args.reuse:
        train_images = sum(e["images_per_second"] * e["seconds"] for e in tuned.epochs)
        train_seconds = sum(e["seconds"] for e in tuned.epochs)
        print(f"fine-tuning: {args.epochs} epochs, {args.processes} processes x batch {args.batch_size}, "
              f"{train_seconds:.0f} s in training epochs ({train_images / train_seconds:.1f} train img/s), "
              f"{tuned.seconds:.0f} s for the whole run (decode check, validation, logging, registering)")
        for e in tuned.epochs:
            print(f"  epoch {e['epoch']}: loss {e['loss']:.4f}, validation {json.dumps(e['validation'])}")
    print("\n| model (test split) | accuracy | AUC | log loss |\n|---|---|---|---|")
    for name, s in (("XGBoost on pretrained embeddings", frozen_scores),
                    ("XGBoost on fine-tuned embeddings", tuned_scores),
                    ("fine-tuned network's own head", head_scores)):
        print(f"| {name} | {s['accuracy']:.3f} | {s['auc']:.3f} | {s['log_loss']:.3f} |")
    spark.stop()


def _registered(out: Path) -> SimpleNamespace:
    """The latest registered fine-tune of a previous run in `out` (run id, fingerprint, classes)."""
    import mlflow

    from imgfeat import tracking
    from imgfeat.config import TrackingConfig

    tracking.use_store(TrackingConfig(uri=f"sqlite:///{out}/mlflow.db"))
    version = mlflow.MlflowClient().get_latest_versions("bench-finetuned")[0]
    meta = json.loads(Path(mlflow.artifacts.download_artifacts(f"runs:/{version.run_id}/featurizer/featurizer.json"))
                      .read_text())
    return SimpleNamespace(run_id=version.run_id, fingerprint=meta["fingerprint"], classes=tuple(meta["classes"]))


def _head_on_test(spark, table: str, tuned, photos: Path) -> tuple[dict[str, float], int]:
    """The head (logged with the run) on the fine-tuned embeddings of the test split."""
    import mlflow
    from pyspark.sql import functions as F

    from imgfeat import delta
    from imgfeat.config import SplitConfig
    from imgfeat.cv import classification_metrics, with_split
    from imgfeat.dataset import path_key

    head = torch.load(
        io.BytesIO(Path(mlflow.artifacts.download_artifacts(f"runs:/{tuned.run_id}/featurizer/head.pt")).read_bytes()),
        weights_only=True,
    )
    rows = delta.read_table(spark, table).where(F.col("featurizer_fingerprint") == tuned.fingerprint)
    labels = spark.read.option("header", True).csv(str(photos / "labels.csv"))
    index = {c: i for i, c in enumerate(tuned.classes)}
    target = F.create_map(*[x for c, i in index.items() for x in (F.lit(c), F.lit(float(i)))])
    labeled = (
        rows.withColumn("_key", path_key(F.col("path")))
        .join(labels.select(path_key(F.col("path")).alias("_key"), "defect"), "_key")
        .withColumn("label_index", target[F.col("defect")])
    )
    test = (
        with_split(labeled, SplitConfig(), stratify=True)  # the split fine-tuning and train make
        .where(F.col("split") == "test")
        .select("embedding", "defect")
        .toPandas()
    )
    x = np.stack(test["embedding"].to_numpy())
    logits = x @ head["weight"].numpy().T + head["bias"].numpy()
    proba = np.exp(logits - logits.max(axis=1, keepdims=True))
    proba /= proba.sum(axis=1, keepdims=True)
    y = test["defect"].map(index).to_numpy()
    return classification_metrics(y, proba, len(tuned.classes)), len(test)


if __name__ == "__main__":
    started = time.monotonic()
    main()
    print(f"\nbench/finetune_compare.py: {time.monotonic() - started:.0f} s")
