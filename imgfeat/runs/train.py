"""The train job: resolve the featurizers once, fit on one table version, log and register.

Owns: the order of a train run (the featurizers `auto` picks, resolved once
with their runtimes; `imgfeat.train.train` on the table version it reads
once), its summary, and the one function that logs it (`_track_train`:
params, metrics, lineage tags, datasets, the model, the registered version's
description, tags and alias). Must not: read labels, fit models or build the
served model itself (`dataset`, `train` and `model` do), parse arguments, or
print anything but progress.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pyspark.sql import SparkSession

from imgfeat import cv, delta, selection, tracking
from imgfeat.config import TrainConfig, dump_config
from imgfeat.errors import InputError
from imgfeat.featurizers.resolve import resolve_spec
from imgfeat.featurizers.runtime import RuntimeChoice
from imgfeat.runs._shared import cv_metrics, featurizer_runtime, log_fold_metrics, registered_where, use_store_for
from imgfeat.session import get_spark
from imgfeat.train import TrainResult
from imgfeat.train import train as train_model

log = logging.getLogger("imgfeat")


@dataclass
class TrainSummary:
    """What a train run did; `lines()` is what users see."""

    result: TrainResult
    run_id: str | None
    model_uri: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    alias: str | None = None  # set on model_version by this run

    def lines(self) -> list[str]:
        r = self.result
        folds = [v for k, v in r.counts.items() if k.startswith("fold_")]
        head = (
            f"train: {r.features.task} on {r.table} version {r.version} "
            f"({', '.join(f.name for f in r.features.featurizers)}; {sum(folds)} images in {len(folds)} folds "
            f"of {min(folds)}-{max(folds)}, {r.counts['test']} test; {r.grouped} grouped with their copies); "
            f"{r.rounds} rounds picked by the folds, "
            f"refit on all {sum(folds)}; fold fits {r.fold_seconds:.1f} s, {r.parallel} at once; {r.seconds:.1f} s"
        )
        logged = f"model {self.model_uri}" if self.model_uri else "model not logged (tracking off)"
        where = registered_where("model", self.model_name, self.model_version, logged)
        where += f" (alias {self.alias})" if self.alias else ""
        return [head, *r.lines(), f"{where}; MLflow run {self.run_id}"]

    @property
    def headline(self) -> tuple[str, float]:
        """The metric models are compared by (higher is better) and this model's test value."""
        return self.result.headline

    def version_description(self, metrics: Mapping[str, float]) -> str:
        """The registered version's description (Markdown): what it reads, what it predicts,
        how it scored (`metrics`: what the run logged, test and CV keys alike)."""
        r, f = self.result, self.result.features
        featurizers = ", ".join(f"{s.name} (fingerprint {s.fingerprint[:12]})" for s in f.featurizers)
        target = f"classes {', '.join(f.classes)}" if f.task == "classification" else "a value"
        columns = f"; tabular columns {', '.join(f.columns)}" if f.columns else ""
        lines = [
            f"XGBoost {f.task} of images: raw image in, {target} out{columns}.",
            "",
            f"- featurizers: {featurizers}",
            f"- trained on: `{r.table}`, Delta version {r.version}; labels from {r.labels_source}",
            f"- rows: {', '.join(f'{k} {v}' for k, v in sorted(r.counts.items()))}",
        ]
        for kind, label in (("test", "test metrics"), ("cv", "cross-validation")):
            found = {k: v for k, v in sorted(metrics.items()) if f".{kind}_" in k}
            if found:
                lines.append(f"- {label}: " + ", ".join(f"{k} {v:.4f}" for k, v in found.items()))
        if r.warning:
            lines.append(f"- WARNING: {r.warning}")
        return "\n".join(lines)

    def version_tags(self) -> dict[str, str]:
        """The registered version's `imgfeat.` tags (lineage, task, headline metric)."""
        f = self.result.features
        name, value = self.headline
        return {
            "embeddings_table": self.result.table,
            "embeddings_version": str(self.result.version),
            "featurizers": json.dumps([s.name for s in f.featurizers]),
            "featurizer_fingerprints": json.dumps([s.fingerprint for s in f.featurizers]),
            "task": f.task,
            name: f"{value:.4f}",
        }


def train_run(cfg: TrainConfig, spark: SparkSession | None = None) -> TrainSummary:
    """Train on the embeddings table; with tracking on, log the run and register the model
    (described, tagged, and given `cfg.alias` if set)."""
    if not delta.may_exist(cfg.table):  # before Spark starts
        raise InputError(f"no embeddings table at {cfg.table}: run `imgfeat featurize` first")
    cfg, chosen_by = auto_featurizers(cfg)
    use_store_for(cfg.featurizers, cfg.tracking)
    specs = [resolve_spec(f) for f in cfg.featurizers]  # once: training and the logged model share them
    tracked = cfg.tracking.enabled
    runtimes = (
        [featurizer_runtime(f, s, cfg.spark) for f, s in zip(cfg.featurizers, specs, strict=True)] if tracked else []
    )
    spark = spark or get_spark(cfg.spark)
    names = "+".join(f.name for f in cfg.featurizers)
    with tracking.run(cfg.tracking, "train", {"embeddings_table": cfg.table}, name=f"train {names}") as run_id:
        summary = TrainSummary(train_model(spark, cfg, resolved=specs, novelty=bool(run_id)), run_id)
        if run_id:
            _track_train(cfg, summary, runtimes, chosen_by)
    return summary


def _track_train(
    cfg: TrainConfig, summary: TrainSummary, runtimes: Sequence[RuntimeChoice], chosen_by: str | None
) -> None:
    """Log a train run, all of it: config, lineage tags, metrics, the table version it read as
    its datasets (the rows it fitted on, `training`, and the held-out `test` split), the model,
    and the registered version's description, tags and `cfg.alias`."""
    from imgfeat import scoring  # imports mlflow: only train and score pay for it

    result = summary.result
    specs = result.features.featurizers
    tracking.name_run(f"train {'+'.join(f.name for f in specs)} v{result.version}")
    tracking.log_params(
        {
            **dump_config(cfg),
            "xgboost": result.params,
            "runtime": [r.runtime for r in runtimes],
            "split_version": cv.SPLIT_VERSION,  # 2: copies grouped, stratified; splits changed once
        }
    )
    tracking.set_tags(
        {
            **({"featurizers_chosen_by": chosen_by} if chosen_by else {}),
            "embeddings_version": str(result.version),
            "featurizers": [f.name for f in specs],
            "featurizer_fingerprints": [f.fingerprint for f in specs],
            "labels_source": result.labels_source,
            "task": result.features.task,
            **({"leakage_warning": result.warning} if result.warning else {}),
        }
    )
    metrics = {
        **{f"{model}.test_{k}": v for model, scores in result.metrics.items() for k, v in scores.items()},
        **{k: v for model, scores in result.scores.items() for k, v in cv_metrics(scores, f"{model}.").items()},
        **{f"rows_{k}": v for k, v in result.counts.items()},
        "best_iteration": result.best_iteration,
        "rounds": result.rounds,
        "fold_seconds": result.fold_seconds,
        "grouped_images": result.grouped,
    }
    tracking.log_metrics(metrics)
    for model, scores in result.scores.items():
        log_fold_metrics(scores, f"{model}.")
    rows = {
        "training": sum(n for split, n in result.counts.items() if split != "test"),
        "test": result.counts.get("test", 0),
    }
    split = json.dumps(
        {
            "split": dump_config(cfg.split),
            "labels": dump_config(cfg.labels),
            "featurizers": [f.fingerprint for f in specs],
        },
        sort_keys=True,
    )
    for context, n in rows.items():
        tracking.log_table_input(
            cfg.table,
            result.version,
            context,
            rows=n,
            schema=delta.EMBEDDINGS.spark_schema,
            subset=f"{context} {split}",
        )
    logged = scoring.log_model(result, cfg.model_name, [r.graph_path for r in runtimes], novelty=result.novelty)
    summary.model_uri, summary.model_name, summary.model_version = logged.uri, logged.name, logged.version
    if logged.name and logged.version:
        tracking.describe_version(
            logged.name, logged.version, summary.version_description(metrics), summary.version_tags()
        )
        if cfg.alias:
            tracking.set_alias(logged.name, cfg.alias, logged.version)
            summary.alias = cfg.alias


def auto_featurizers(cfg: TrainConfig) -> tuple[TrainConfig, str | None]:
    """`featurizers: [auto]` → the featurizers the latest `imgfeat select` on `cfg.table`
    recommended, and that select run's id (recorded by the train run); else unchanged."""
    if [f.name for f in cfg.featurizers] != ["auto"]:
        return cfg, None
    found = tracking.latest_tags(cfg.tracking, "select", cfg.table) if cfg.tracking.enabled else None
    if found is None or "recommend" not in found[1]:
        raise InputError(f"featurizers auto: no finished `imgfeat select` run on {cfg.table} in the MLflow store")
    run_id, tags = found
    names = tags["recommend"].split(selection.PAIR)
    log.warning("imgfeat: featurizers auto: %s, recommended by select run %s", ", ".join(names), run_id)
    base = cfg.featurizers[0]
    chosen = tuple(base.model_copy(update={"name": n}) for n in names)
    return cfg.model_copy(update={"featurizers": chosen}), run_id
