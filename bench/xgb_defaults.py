"""XGBoost defaults for embeddings: candidate parameter sets cross-validated on real sets.

    PYTHONPATH=. .venv/bin/python bench/xgb_defaults.py [--out bench/out/quality] [--digits 500]

Writes two real labeled sets (once; kept in --out): the defect set
(`imgfeat.dev.defect_samples`, 600 tiles of real texture photos, half with a small
defect; label `defect`) and scikit-learn's handwritten digits (real 8x8 scans
of the UCI set, inside scikit-learn's wheel; the first --digits, upscaled to
64x64 PNGs; label `digit`), featurizes both with efficientnet_lite0 through
`imgfeat featurize` (into --out/<set>/embeddings, which the train and select
commands of the README reuse), then cross-validates each parameter set in
`CANDIDATES` on the embeddings of the non-test images (imgfeat's split: test =
a hash of content_sha256) with xgboost's own `cv` (the library xgboost.spark
runs in every task): 5 stratified folds, up to 600 rounds, the round picked
by the mean validation log loss with patience 20, as `imgfeat train` does.
Prints one table per set: cv accuracy, AUC (binary) and log loss, mean ± std
over folds, with the rounds picked and the seconds taken.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np

CANDIDATES: dict[str, dict] = {
    "old default": {"max_depth": 4, "learning_rate": 0.1},
    "new default": {"max_depth": 4, "learning_rate": 0.05, "subsample": 0.8, "colsample_bytree": 0.5},
    "shallow, cols 0.3": {"max_depth": 3, "learning_rate": 0.05, "subsample": 0.8, "colsample_bytree": 0.3},
    "shallow, cols 0.3, reg": {
        "max_depth": 3, "learning_rate": 0.05, "subsample": 0.8, "colsample_bytree": 0.3,
        "min_child_weight": 2, "reg_lambda": 5,
    },
    "depth 2, node cols 0.3": {"max_depth": 2, "learning_rate": 0.05, "subsample": 0.8, "colsample_bynode": 0.3},
}


def write_digits(dest: Path, n: int) -> Path:
    """The first `n` of scikit-learn's 1,797 real 8x8 digit scans as 64x64 PNGs + labels.csv."""
    from PIL import Image
    from sklearn.datasets import load_digits

    from imgfeat.dev.samples import spark_path

    digits = load_digits()
    rows = []
    for i in range(n):
        scan = np.round(digits.images[i] * 255 / 16).astype(np.uint8)
        out = dest / str(digits.target[i]) / f"digit_{i:04d}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(scan).resize((64, 64), Image.Resampling.NEAREST).save(out)
        rows.append((spark_path(out), str(out), int(digits.target[i])))
    with open(dest / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([("path", "file", "digit"), *rows])
    return dest


def prepare(out: Path, digits: int) -> dict[str, tuple[Path, str]]:
    """Photos + labels.csv per set (written once), and the label column of each."""
    from imgfeat.dev.defect_samples import write_defect_photos

    sets = {"defects": (out / "defects" / "photos", "defect"), "digits": (out / "digits" / "photos", "digit")}
    if not (sets["defects"][0] / "labels.csv").is_file():
        write_defect_photos(sets["defects"][0], n=600)
    if not (sets["digits"][0] / "labels.csv").is_file():
        write_digits(sets["digits"][0], digits)
    return sets


def embeddings(spark, photos: Path, table: Path, label: str) -> tuple[np.ndarray, np.ndarray]:
    """Featurize (incremental: nothing twice) and return the non-test embeddings and labels."""
    import pandas as pd
    from pyspark.sql import functions as F

    from imgfeat import cv
    from imgfeat.config import FeaturizeConfig, SplitConfig, load_config
    from imgfeat.delta import read_table
    from imgfeat.runs import featurize_run

    print(featurize_run(load_config(FeaturizeConfig, overrides=["tracking.enabled=false"], input=str(photos),
                                    table=str(table)), spark).line(), flush=True)
    labels = pd.read_csv(photos / "labels.csv").set_index("path")[label]
    index = spark.createDataFrame([(p, float(i)) for p, i in zip(labels.index, pd.factorize(labels, sort=True)[0], strict=True)],
                                  "path string, label_index double")
    rows = read_table(spark, str(table)).where(F.col("status") == "ok").join(index, "path")
    split = cv.with_split(rows, SplitConfig(), stratify=True)  # the split train makes: the non-test rows
    frame = split.where(F.col("split") == "train").select("path", "embedding").toPandas()
    return np.stack(frame["embedding"].to_numpy()), labels.loc[frame["path"]].to_numpy()


def measure(x: np.ndarray, y: np.ndarray, emit=print) -> None:
    """Emit the table's header, then one line per parameter set as it is measured."""
    import xgboost as xgb

    classes = np.unique(y)
    target = np.searchsorted(classes, y)
    binary = len(classes) == 2
    base = {"objective": "binary:logistic"} if binary else {"objective": "multi:softprob", "num_class": len(classes)}
    metrics = ["error", "auc", "logloss"] if binary else ["merror", "mlogloss"]
    data = xgb.DMatrix(x, label=target)
    emit(f"{'params':26} {'cv accuracy':>16} {'cv auc':>16} {'cv log loss':>16} {'rounds':>6} {'s':>5}")
    for name, params in CANDIDATES.items():
        began = time.monotonic()
        result = xgb.cv({**base, "tree_method": "hist", "nthread": 2, "seed": 0, **params}, data,
                        num_boost_round=600, nfold=5, stratified=True, metrics=metrics,
                        early_stopping_rounds=20, seed=0)
        last = result.iloc[-1]
        err, loss = ("test-error", "test-logloss") if binary else ("test-merror", "test-mlogloss")
        auc = f"{last['test-auc-mean']:.3f} ± {last['test-auc-std']:.3f}" if binary else "-"
        emit(
            f"{name:26} {1 - last[err + '-mean']:>8.3f} ± {last[err + '-std']:.3f} {auc:>16} "
            f"{last[loss + '-mean']:>8.3f} ± {last[loss + '-std']:.3f} {len(result):>6} {time.monotonic() - began:>5.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/out/quality")
    parser.add_argument("--digits", type=int, default=500, help="digit scans to use (of 1,797)")
    args = parser.parse_args()
    from imgfeat.config import SparkConfig
    from imgfeat.session import get_spark

    out = Path(args.out).absolute()
    sets = prepare(out, args.digits)
    spark = get_spark(SparkConfig(conf={"spark.ui.showConsoleProgress": "false"}))
    for name, (photos, label) in sets.items():
        x, y = embeddings(spark, photos, out / name / "embeddings", label)
        print(f"\n{name}: {len(y)} non-test images, {x.shape[1]} dims (efficientnet_lite0), label {label}", flush=True)
        measure(x, y, lambda line: print(line, flush=True))


if __name__ == "__main__":
    main()
