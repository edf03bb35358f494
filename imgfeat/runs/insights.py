"""The insights job: a registered model's report (report.html) on the table version it trained on.

Owns: the order of an insights run (model resolved, its train run's lineage
read back into a train config, the labeled rows read through
`imgfeat.dataset`, the analysis, the report written), its summary, and what
its MLflow run records. Must not: compute the report's sections or render
it (`insights` and `report` do), parse arguments, or print anything but progress.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from imgfeat import delta, tracking
from imgfeat.config import InsightsConfig, TrainConfig, dump_config, load_config
from imgfeat.cv import SPLIT_VERSION
from imgfeat.dataset import read_labeled
from imgfeat.errors import InputError
from imgfeat.featurizers import Featurizer
from imgfeat.model import torch_featurizers
from imgfeat.runs._shared import require_model
from imgfeat.session import get_spark

log = logging.getLogger("imgfeat")


@dataclass
class InsightsSummary:
    """What an insights run wrote; `line()` is what users see."""

    report: str
    run_id: str | None
    model: str
    table: str
    version: int
    sampled: int
    counts: dict[str, int]
    metrics: dict[str, float]
    seconds: float = 0.0

    def line(self) -> str:
        m = self.metrics
        novel = f", {m['novel']:.0f} unlike training" if "novel" in m else ""
        return (
            f"insights: {self.model} on {self.table} version {self.version}: {self.sampled} images projected; "
            f"{m['outliers']:.0f} outliers; pairs: {m['exact_copy_pairs']:.0f} exact copies, "
            f"{m['near_copy_pairs']:.0f} near-copies, {m['near_duplicates']:.0f} look-alikes "
            f"({m['leaking_pairs']:.0f} across train/test, {m['label_noise_pairs']:.0f} with different labels){novel}; "
            f"test accuracy {m['test_accuracy']:.3f}; {self.seconds:.1f} s; report {self.report}"
        )


#: Train-config keys an insights run reads back from the train run's params.
_LINEAGE_KEYS = ("table", "featurizers", "labels.", "split.", "task")


def insights_run(cfg: InsightsConfig, spark: SparkSession | None = None) -> InsightsSummary:
    """Write `cfg.output/report.html` for a registered model, on the table version and
    split it was trained on; with tracking on, log it as an MLflow run's artifact."""
    from imgfeat import insights, report, scoring

    started = time.monotonic()
    model_uri = require_model(cfg.model)
    tracking.use_store(cfg.tracking)
    model = scoring.resolve_model(model_uri)
    features = scoring.model_features(model.local_dir)
    if features.task != "classification":
        raise InputError(f"{cfg.model} is a {features.task} model: insights needs a classification model")
    train_id, params, tags = tracking.model_lineage(model.name, model.version)
    train_cfg = load_config(
        TrainConfig,
        overrides=[f"{k}={v}" for k, v in params.items() if k.startswith(_LINEAGE_KEYS)],
        table=cfg.table or tags.get("embeddings_table"),
    )
    if str(params.get("split_version")) != str(SPLIT_VERSION):
        log.warning(
            "imgfeat: insights: %s was trained on the old split (by each image's bytes); the report's test split "
            "is today's (copies grouped, stratified), so it may hold images the model trained on: retrain it",
            cfg.model,
        )
    version = int(tags.get("embeddings_version", -1))
    if version < 0:
        raise InputError(f"{cfg.model}: its train run {train_id} names no embeddings table version")
    ok = delta.ok_rows(train_cfg.table, version, features.featurizers)  # before Spark starts
    if ok is not None and cfg.sample is not None and cfg.sample > ok:
        raise InputError(f"sample {cfg.sample} is larger than the {ok} ok rows of {train_cfg.table} version {version}")
    spark = spark or get_spark(cfg.spark)
    loaded = scoring.load_image_model(model.local_dir)
    with tracking.run(cfg.tracking, "insights", {"embeddings_table": train_cfg.table}) as run_id:
        rows = read_labeled(spark, train_cfg, features=features, version=version).rows
        statuses = (
            delta.read_table(spark, train_cfg.table, version, partitions=[f.name for f in features.featurizers])
            .where(F.col("featurizer_fingerprint").isin([f.fingerprint for f in features.featurizers]))
            .select("path", "status", "error")
        )
        n = rows.count()
        if cfg.sample is not None and cfg.sample > n:
            raise InputError(f"sample {cfg.sample} is larger than the {n} labeled ok rows of {train_cfg.table}")
        about = {
            "model": f"{model.name} version {model.version}",
            "train run": train_id,
            "featurizers": ", ".join(f"{f.name} ({f.fingerprint[:12]})" for f in features.featurizers),
            "embeddings table": f"{train_cfg.table} version {version}",
            "projection": cfg.projection,
            "near_duplicate_threshold": f"{cfg.near_duplicates.threshold:g}",
            "near_copy_distance": str(train_cfg.split.near_copy_distance),
        }

        def trunk() -> Featurizer:  # the torch network of a model that scores with ONNX: its activation maps
            return torch_featurizers(model.local_dir)[0]

        distance = train_cfg.split.near_copy_distance
        data = insights.analyse(
            rows, statuses, features, loaded, cfg, min(cfg.sample or 2000, n), about, trunk, distance
        )
        data.seconds = time.monotonic() - started
        data.about["time"] = (
            f"{data.seconds:.1f} s (report written {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())})"
        )
        path = report.write(data, cfg.output)
        metrics = {
            "sampled": float(len(data.points)),
            "outliers": float(data.outliers.count),
            "exact_copy_pairs": float(data.pairs["exact_copies"].count),
            "near_copy_pairs": float(data.pairs["near_copies"].count),
            "near_duplicates": float(data.pairs["lookalikes"].count),
            "leaking_pairs": float(sum(p.leaking for p in data.pairs.values())),
            "label_noise_pairs": float(sum(p.label_noise for p in data.pairs.values())),
            "test_accuracy": data.accuracy,
            **({"novel": float(data.novel)} if data.novel is not None else {}),
            **{f"count_{k}": float(v) for k, v in data.counts.items()},
        }
        if run_id:
            tracking.log_params(dump_config(cfg))
            tracking.set_tags(
                {
                    "model": cfg.model,
                    "model_name": model.name,
                    "model_version": model.version,
                    "train_run_id": train_id,
                    "embeddings_version": str(version),
                }
            )
            tracking.log_metrics(metrics)
            tracking.log_artifact(str(path))
    return InsightsSummary(
        str(path),
        run_id,
        f"{model.name} version {model.version}",
        train_cfg.table,
        version,
        len(data.points),
        data.counts,
        metrics,
        time.monotonic() - started,
    )
