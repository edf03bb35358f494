"""Job-level orchestration: one function per job, called by the CLI, the
spark-submit entry points in `jobs/` and the notebooks alike.

Owns: the order of the stages for a run (list → filter new → featurize →
stage → commit) and the run's summary. Must not: parse arguments or print
anything but progress (callers decide what to show).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from imgfeat import delta, faults, finetune, nightly, progress, reduce, selection, sources, tracking
from imgfeat.config import (
    BaselinesConfig,
    FeaturizeConfig,
    FeaturizerConfig,
    FinetuneConfig,
    InsightsConfig,
    NightlyConfig,
    ScoreConfig,
    SelectConfig,
    ServeConfig,
    SparkConfig,
    TrackingConfig,
    TrainConfig,
    dump_config,
    load_config,
)
from imgfeat.cv import Scores
from imgfeat.decode import decode_image
from imgfeat.errors import ConfigError, InputError, Status
from imgfeat.featurize import MaxParam, WorkerOptions, featurize_listing, ship_graph
from imgfeat.featurizers import FeaturizerSpec
from imgfeat.featurizers.registered import BACKBONE_FILE, is_mlflow_uri
from imgfeat.featurizers.runtime import RuntimeChoice, choose_runtime
from imgfeat.served_input import ServingPolicy
from imgfeat.session import get_spark
from imgfeat.train import PRIMARY_METRIC, TrainResult, join_columns, labeled_rows, read_source, resolve_spec, with_labels
from imgfeat.train import cross_validate as cross_validate_sample
from imgfeat.train import train as train_model

if TYPE_CHECKING:
    from imgfeat.scoring import ResolvedModel

log = logging.getLogger("imgfeat")


@dataclass
class FeaturizeSummary:
    """What a featurize run did; `line()` is the one-line summary users see."""

    run_id: str
    table: str
    featurizer: str
    fingerprint: str
    listed: int
    skipped: int
    counts: dict[str, int] = field(default_factory=dict)
    version: int | None = None
    committed: bool = False
    writer: str = ""
    seconds: float = 0.0
    model_loads: int = 0
    worker_peak_rss_mib: float = 0.0  # largest peak RSS of a Python worker task; 0 = nothing ran
    runtime: str = ""  # torch | onnxruntime (`featurizer.runtime` resolved)
    runtime_note: str | None = None  # why `auto` kept torch

    @property
    def featurized(self) -> int:
        return sum(self.counts.values())

    @property
    def images_per_second(self) -> float:
        return self.featurized / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        by_status = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items())) or "nothing new"
        landed = f"version {self.version}" if self.committed else f"unchanged at version {self.version}"
        return (
            f"featurize: {self.featurized} images ({by_status}); {self.skipped} unchanged skipped; "
            f"{self.seconds:.1f} s, {self.images_per_second:.1f} img/s; "
            f"table {self.table} {landed} [{self.writer}]"
            + (f"; runtime {self.runtime}" if self.runtime else "")
            + (f"; worker peak RSS {self.worker_peak_rss_mib:.0f} MiB" if self.worker_peak_rss_mib else "")
            + (f"; note: {self.runtime_note}" if self.runtime_note else "")
        )

    def as_dict(self) -> dict:
        return asdict(self)


def featurizer_spec(cfg: FeaturizeConfig) -> FeaturizerSpec:
    use_store_for([cfg.featurizer], cfg.tracking)
    return resolve_spec(cfg.featurizer)


def use_store_for(featurizers: Sequence[FeaturizerConfig], cfg: TrackingConfig) -> None:
    """Point MLflow at the run's store when a featurizer's weights are a models:/ or runs:/ URI
    (they are downloaded from there while the featurizer is resolved)."""
    if any(is_mlflow_uri(f.weights) for f in featurizers):
        tracking.use_store(cfg)


def worker_options(cfg: FeaturizeConfig, graph: str | None = None) -> WorkerOptions:
    return WorkerOptions(
        batch_size=cfg.featurizer.batch_size,
        max_bytes_in_flight=cfg.read.max_bytes_per_batch,
        max_pixels=cfg.read.max_pixels,
        decode_threads=cfg.read.decode_threads,
        device=cfg.featurizer.device,
        autocast=cfg.featurizer.autocast,
        graph=graph,
    )


def featurizer_runtime(
    f: FeaturizerConfig, spec: FeaturizerSpec, spark_cfg: SparkConfig, photos: Sequence[str] = ()
) -> RuntimeChoice:
    """`f.runtime` resolved for `spec` on the driver, before Spark starts: exports
    and verifies the ONNX graph (cached) on scikit-learn's two sample photos plus
    `photos` (files of the run's own input). Raises `RuntimeUnavailable` (exit 2)
    only for an explicit `runtime: onnxruntime`."""
    return choose_runtime(
        spec, f.runtime, device=f.device, gpu_visible=_gpu_visible(spark_cfg),
        photos=verification_photos(photos), cache_dir=f.onnx_cache,
    )


def verification_photos(paths: Sequence[str] = ()) -> list:
    """Real RGB photos to check an exported graph on: scikit-learn's two sample
    photos (inside its wheel) and those of `paths` that decode."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(a) for a in load_sample_images().images]
    for path in paths:
        decoded = decode_image(sources.read_bytes(path))
        if decoded.image is not None:
            photos.append(decoded.image)
    return photos


def _gpu_visible(spark_cfg: SparkConfig) -> bool:
    """Whether this job's featurizer may land on a GPU: GPU resources in the Spark
    config, or a CUDA device on the driver (a GPU cluster's driver usually has one)."""
    if any("resource.gpu" in key for key in spark_cfg.conf):
        return True
    import torch

    return torch.cuda.is_available()


def config_sha256(cfg: FeaturizeConfig) -> str:
    return hashlib.sha256(json.dumps(dump_config(cfg), sort_keys=True).encode()).hexdigest()


def featurize_run(
    cfg: FeaturizeConfig, spark: SparkSession | None = None, run_id: str | None = None
) -> FeaturizeSummary:
    """Featurize what is new under `cfg.input` into `cfg.table`, as one commit.

    With tracking on, the run is an MLflow run and its id is the `run_id`.
    """
    if not cfg.input:
        raise InputError("no input: pass --input DIR|GLOB|URI or set `input:` in the config")
    # What can be checked cheaply fails here, before Spark or MLflow start.
    sources.check_input(cfg.input, cfg.read.extensions)
    delta.check_writable(cfg.table)
    spec = featurizer_spec(cfg)
    runtime = featurizer_runtime(
        cfg.featurizer, spec, cfg.spark, sources.sample_local_files(cfg.input, cfg.read.extensions, 6)
    )
    with tracking.run(cfg.tracking, "featurize", {"table": cfg.table}, name=f"featurize {spec.name}") as tracked:
        spark = spark or get_spark(cfg.spark)
        summary = _featurize(cfg, spec, runtime, spark, run_id or tracked)
        if tracked:
            _track_featurize(cfg, spark, summary)
            tracking.log_params({"runtime": runtime.runtime})
    return summary


def _track_featurize(cfg: FeaturizeConfig, spark: SparkSession, summary: FeaturizeSummary) -> None:
    """Log a featurize run: config, lineage tags, counts, and the table version it left
    as its dataset (context `featurization`)."""
    tracking.log_params(dump_config(cfg))
    tracking.set_tags(
        {
            "featurizer": summary.featurizer,
            "featurizer_fingerprint": summary.fingerprint,
            "table_version": str(summary.version),
            "counts": summary.counts,
        }
    )
    tracking.log_metrics(
        {
            "listed": summary.listed,
            "skipped": summary.skipped,
            "featurized": summary.featurized,
            "seconds": summary.seconds,
            "images_per_second": summary.images_per_second,
            **({"table_version": summary.version} if summary.version is not None else {}),
            **{f"count_{k}": v for k, v in summary.counts.items()},
        }
    )
    if summary.version is not None:
        tracking.name_run(f"featurize {summary.featurizer} v{summary.version}")
        tracking.log_table_input(
            cfg.table, summary.version, "featurization", rows=delta.row_count(spark, cfg.table, summary.version),
            schema=delta.EMBEDDINGS.spark_schema,
        )


def _featurize(
    cfg: FeaturizeConfig, spec: FeaturizerSpec, runtime: RuntimeChoice, spark: SparkSession, run_id: str | None
) -> FeaturizeSummary:
    run_id = run_id or uuid.uuid4().hex
    started = time.monotonic()
    for dead in delta.remove_stale_staging(cfg.table):
        log.warning("imgfeat: removed the staging folder of run %s, which died before committing", dead)

    opts = worker_options(cfg, ship_graph(spark, runtime.graph_path) if runtime.graph_path else None)
    with sources.list_images(spark, cfg.input, cfg.read.extensions) as listing:
        summary = _featurize_listed(cfg, spec, opts, spark, run_id, listing)
    summary.seconds = time.monotonic() - started
    summary.runtime, summary.runtime_note = runtime.runtime, runtime.note
    return summary


def _featurize_listed(
    cfg: FeaturizeConfig, spec: FeaturizerSpec, opts: WorkerOptions, spark: SparkSession, run_id: str,
    listing: sources.Listing,
) -> FeaturizeSummary:
    listed = listing.count
    if listed == 0:
        raise InputError(
            f"no images under {cfg.input} (extensions: {', '.join(cfg.read.extensions)})"
        )
    if cfg.featurizer.dim:
        spec = reduce.ensure_basis(
            listing.frame, spec, cfg.table, cfg.featurizer.dim, cfg.featurizer.pca_sample, opts
        )
    todo = sources.only_new(listing.frame, delta.existing_keys(spark, cfg.table, spec.fingerprint)).cache()
    try:
        new = todo.count()
        log.warning(
            "imgfeat: %d images listed under %s, %d new or changed; featurizing them with %s",
            listed, cfg.input, new, spec.name,
        )
        summary = FeaturizeSummary(
            run_id=run_id, table=cfg.table, featurizer=spec.name, fingerprint=spec.fingerprint, listed=listed,
            skipped=listed,
        )
        if new == 0:  # an idle nightly run: no Python worker, no staging, no commit
            result = delta.unchanged(spark, cfg.table)
        else:
            result = _featurize_new(cfg, spec, opts, todo, new, summary)
    finally:
        todo.unpersist()
    summary.version, summary.committed, summary.writer = result.version, result.committed, result.writer
    return summary


def _featurize_new(
    cfg: FeaturizeConfig, spec: FeaturizerSpec, opts: WorkerOptions, todo: DataFrame, new: int,
    summary: FeaturizeSummary,
) -> delta.Commit:
    """Featurize the `new` listing rows of `todo`, stage them and commit them as one version."""
    spark = todo.sparkSession
    loads = spark.sparkContext.accumulator(0)
    peak_rss = spark.sparkContext.accumulator(0.0, MaxParam())
    with progress.stage("featurize", new, spark=spark) as shown:
        rows = featurize_listing(
            todo, spec, opts, files_per_partition=cfg.read.files_per_partition, loads=loads,
            peak_rss=peak_rss, count=new, progress=shown.reporter,
        ).withColumn("run_id", F.lit(summary.run_id)).withColumn("featurized_at", F.current_timestamp())
        staged = delta.stage(rows, cfg.table, summary.run_id)
        summary.counts = delta.staged_counts(staged)
        shown.set(sum(summary.counts.values()), _bad(summary.counts))
    summary.skipped = summary.listed - sum(summary.counts.values())
    summary.worker_peak_rss_mib = round(float(peak_rss.value), 1)
    summary.model_loads = int(loads.value)
    faults.die_once(faults.KILL_BEFORE_COMMIT)  # test hook: a no-op unless its variable is set
    return delta.commit(
        spark,
        staged,
        cfg.table,
        spec.name,
        summary.run_id,
        metadata={
            "config_sha256": config_sha256(cfg),
            "featurizer": spec.name,
            "featurizer_fingerprint": spec.fingerprint,
            "counts": summary.counts,
            "versions": library_versions(),
        },
    )


def _bad(counts: dict[str, int]) -> int:
    """Images whose status is not ok, from counts by status."""
    return sum(n for status, n in counts.items() if status != Status.OK.value)


def library_versions() -> dict[str, str]:
    """Versions that can change the numbers, recorded with every commit."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("imgfeat", "torch", "timm", "onnxruntime", "pillow", "pyspark", "deltalake"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


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
            f"of {min(folds)}-{max(folds)}, {r.counts['test']} test); {r.rounds} rounds picked by the folds, "
            f"refit on all {sum(folds)}; fold fits {r.fold_seconds:.1f} s, {r.parallel} at once; {r.seconds:.1f} s"
        )
        where = f"model {self.model_name} version {self.model_version}" if self.model_version else (
            f"model {self.model_uri}" if self.model_uri else "model not logged (tracking off)"
        )
        where += f" (alias {self.alias})" if self.alias else ""
        return [head, *r.lines(), f"{where}; MLflow run {self.run_id}"]

    @property
    def headline(self) -> tuple[str, float]:
        """The metric models are compared by (higher is better) and this model's test value."""
        name = PRIMARY_METRIC[self.result.features.task]
        return f"test_{name}", self.result.metrics["xgboost"][name]

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
    from imgfeat import scoring  # imports mlflow: only train and score pay for it

    if not delta.may_exist(cfg.table):  # before Spark starts
        raise InputError(f"no embeddings table at {cfg.table}: run `imgfeat featurize` first")
    cfg, chosen_by = auto_featurizers(cfg)
    use_store_for(cfg.featurizers, cfg.tracking)
    logs_model = cfg.tracking.enabled
    runtimes = [featurizer_runtime(f, resolve_spec(f), cfg.spark) for f in cfg.featurizers] if logs_model else []
    spark = spark or get_spark(cfg.spark)
    names = "+".join(f.name for f in cfg.featurizers)
    with tracking.run(cfg.tracking, "train", {"embeddings_table": cfg.table}, name=f"train {names}") as run_id:
        result = train_model(spark, cfg)
        summary = TrainSummary(result, run_id)
        if run_id:
            if chosen_by:
                tracking.set_tags({"featurizers_chosen_by": chosen_by})
            metrics = _track_train(cfg, result)
            tracking.log_params({"runtime": [r.runtime for r in runtimes]})
            reference = novelty_reference(spark, cfg, result)
            logged = scoring.log_model(result, cfg.model_name, [r.graph_path for r in runtimes], novelty=reference)
            summary.model_uri, summary.model_name, summary.model_version = logged.uri, logged.name, logged.version
            if logged.name and logged.version:
                tracking.describe_version(
                    logged.name, logged.version, summary.version_description(metrics), summary.version_tags()
                )
                if cfg.alias:
                    tracking.set_alias(logged.name, cfg.alias, logged.version)
                    summary.alias = cfg.alias
    return summary


def _track_train(cfg: TrainConfig, result: TrainResult) -> dict[str, float]:
    """Log a train run: config, lineage tags, metrics (returned), and the table version
    it read as its datasets: the rows it fitted on (`training`) and the held-out
    `test` split."""
    tracking.name_run(f"train {'+'.join(f.name for f in result.features.featurizers)} v{result.version}")
    tracking.log_params({**dump_config(cfg), "xgboost": result.params})
    tracking.set_tags(
        {
            "embeddings_version": str(result.version),
            "featurizers": [f.name for f in result.features.featurizers],
            "featurizer_fingerprints": [f.fingerprint for f in result.features.featurizers],
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
    }
    tracking.log_metrics(metrics)
    for model, scores in result.scores.items():
        log_fold_metrics(scores, f"{model}.")
    rows = {
        "training": sum(n for split, n in result.counts.items() if split != "test"),
        "test": result.counts.get("test", 0),
    }
    split = json.dumps(
        {"split": dump_config(cfg.split), "labels": dump_config(cfg.labels),
         "featurizers": [f.fingerprint for f in result.features.featurizers]},
        sort_keys=True,
    )
    for context, n in rows.items():
        tracking.log_table_input(
            cfg.table, result.version, context, rows=n, schema=delta.EMBEDDINGS.spark_schema, subset=f"{context} {split}"
        )
    return metrics


def cv_metrics(scores: Scores, prefix: str = "") -> dict[str, float]:
    """`<prefix>cv_<metric>_mean` / `_std` of one model's fold scores (prefix `xgboost.` in train)."""
    return {
        **{f"{prefix}cv_{k}_mean": v for k, v in scores.mean().items()},
        **{f"{prefix}cv_{k}_std": v for k, v in scores.std().items()},
    }


def log_fold_metrics(scores: Scores, prefix: str = "") -> None:
    """`<prefix>fold_<metric>` per fold, the fold's index as the MLflow step."""
    for i, fold in enumerate(scores.folds):
        tracking.log_metrics({f"{prefix}fold_{k}": v for k, v in fold.items()}, step=i)


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


@dataclass
class SelectSummary:
    """What a select run measured; `lines()` is the table users see, ending in `recommend: NAME`."""

    run_id: str | None
    table: str
    sample: int  # labeled images featurized (when new) and cross-validated
    metric: str
    candidates: list[selection.Candidate]
    choice: selection.Candidate
    featurize_seconds: float = 0.0  # featurizing the sample into the table, all candidates
    seconds: float = 0.0
    runtimes: dict[str, str] = field(default_factory=dict)  # candidate -> torch | onnxruntime

    def lines(self) -> list[str]:
        head = f"{'candidate':40} {'dim':>5} {'cv ' + self.metric + ' mean ± std':>26} {'featurize ms/img':>17}"
        rows = [
            f"{c.name:40} {c.dim:>5} {c.mean:>17.4f} ± {c.std:.4f}  {c.ms_per_image:>16.1f}" for c in self.candidates
        ]
        note = (
            f"select: {self.sample} labeled images in {self.table}; {self.seconds:.1f} s "
            f"({self.featurize_seconds:.1f} s featurizing); MLflow run {self.run_id}"
        )
        if self.runtimes:
            note += "; runtime " + ", ".join(f"{n} {r}" for n, r in self.runtimes.items())
        return [head, *rows, note, f"recommend: {self.choice.name}"]


def select_run(cfg: SelectConfig, spark: SparkSession | None = None) -> SelectSummary:
    """Featurize a stratified labeled sample with every candidate into `cfg.table` (the normal
    featurize path: rows a later full run reuses), cross-validate each (and the best pair),
    and recommend one by `selection.recommend`'s rule. Each candidate is a nested MLflow run;
    the parent records the choice (what `imgfeat train --featurizers auto` reads)."""
    if not cfg.input:
        raise InputError("no input: pass --input DIR|GLOB|URI or set `input:` in the config")
    sources.check_input(cfg.input, cfg.read.extensions)  # all of this before Spark starts
    delta.check_writable(cfg.table)
    names = selection.check_candidates(cfg.candidates, cfg.floor)
    featurizers = {n: FeaturizerConfig(name=n, batch_size=cfg.batch_size, runtime=cfg.runtime) for n in names}
    specs = {n: resolve_spec(f) for n, f in featurizers.items()}
    photos = sources.sample_local_files(cfg.input, cfg.read.extensions, 6)
    runtimes = {n: featurizer_runtime(featurizers[n], specs[n], cfg.spark, photos) for n in names}
    started = time.monotonic()
    spark = spark or get_spark(cfg.spark)
    with tracking.run(cfg.tracking, "select", {"table": cfg.table}) as parent:
        with sources.list_images(spark, cfg.input, cfg.read.extensions) as listing:
            sample = _select_sample(spark, cfg, listing)
            try:
                summary = _select(cfg, spark, featurizers, specs, runtimes, sample, parent)
            finally:
                sample.unpersist()
        summary.seconds = time.monotonic() - started
        if parent:
            tracking.set_tags({"recommend": summary.choice.name, "sample": str(summary.sample)})
            tracking.log_dict({"candidates": [asdict(c) for c in summary.candidates]}, "select.json")
            tracking.log_metrics({"seconds": summary.seconds, "featurize_seconds": summary.featurize_seconds})
    return summary


def _train_config(cfg: SelectConfig, names: Sequence[str]) -> TrainConfig:
    """The train config select cross-validates a candidate with (no baselines, no model)."""
    return TrainConfig(
        table=cfg.table,
        featurizers=tuple(FeaturizerConfig(name=n) for n in names),
        labels=cfg.labels,
        task=cfg.task,
        split=cfg.split,
        xgboost=cfg.xgboost,
        baselines=BaselinesConfig(linear=False, raw_pixels=False),
        model_name=None,
        tracking=TrackingConfig(enabled=False),
    )


def _select_sample(spark: SparkSession, cfg: SelectConfig, listing: sources.Listing) -> DataFrame:
    labeled = with_labels(spark, listing.frame, _train_config(cfg, ["grayscale16"]).labels).where(F.col("label").isNotNull())
    classes = labeled.select("label").distinct().limit(2).count()
    if classes < 2 and cfg.task != "regression":
        raise InputError(f"select needs at least 2 label values among the images under {cfg.input}, found {classes}")
    return selection.stratified_sample(labeled, cfg.sample, cfg.seed).select(*sources.LISTING_COLUMNS).cache()


def _select(
    cfg: SelectConfig, spark: SparkSession, featurizers: dict[str, FeaturizerConfig], specs: dict[str, FeaturizerSpec],
    runtimes: dict[str, RuntimeChoice], sample: DataFrame, parent: str | None,
) -> SelectSummary:
    n = sample.count()
    metric = None
    measured: list[selection.Candidate] = []
    featurize_seconds = 0.0
    for name, spec in specs.items():
        tags = {"table": cfg.table, "candidate": name, "runtime": runtimes[name].runtime}
        with tracking.run(cfg.tracking, "select-candidate", tags, nested=True) as child:
            began = time.monotonic()
            fcfg = FeaturizeConfig(
                input=cfg.input, table=cfg.table, read=cfg.read, spark=cfg.spark,
                featurizer=featurizers[name], tracking=TrackingConfig(enabled=False),
            )
            graph = runtimes[name].graph_path
            opts = worker_options(fcfg, ship_graph(spark, graph) if graph else None)
            # One run id per candidate: the table's commits are idempotent per run id.
            listing = sources.Listing(sample, n, sample)
            _featurize_listed(fcfg, spec, opts, spark, child or uuid.uuid4().hex, listing)
            featurize_seconds += time.monotonic() - began
            ms = _ms_per_image(sample, spec, opts, cfg.timing_images)
            log.warning("imgfeat: select: cross-validating %s (%d folds)", name, cfg.split.folds)
            scores, features = cross_validate_sample(spark, _train_config(cfg, [name]), sample)
            metric = PRIMARY_METRIC[features.task]
            measured.append(_candidate(name, features.dim, scores, metric, ms, cfg.tracking.enabled))
    if cfg.pair:
        best = sorted((c for c in measured if c.name != cfg.floor), key=lambda c: -c.mean)[:2]
        if len(best) == 2:
            names = [c.name for c in best]
            name = selection.PAIR.join(names)
            with tracking.run(cfg.tracking, "select-candidate", {"table": cfg.table, "candidate": name}, nested=True):
                log.warning("imgfeat: select: cross-validating %s (%d folds)", name, cfg.split.folds)
                scores, features = cross_validate_sample(spark, _train_config(cfg, names), sample)
                ms = sum(c.ms_per_image for c in best)
                measured.append(_candidate(name, features.dim, scores, metric, ms, cfg.tracking.enabled))
    return SelectSummary(parent, cfg.table, n, metric or "", measured, selection.recommend(measured),
                         featurize_seconds=featurize_seconds, runtimes={k: r.runtime for k, r in runtimes.items()})


def _ms_per_image(sample: DataFrame, spec: FeaturizerSpec, opts: WorkerOptions, images: int) -> float:
    """Wall ms per image of featurizing `images` of the sample on this cluster with the
    table run's options and runtime (workers already warm from that run; nothing written)."""
    some = sample.limit(images).cache()
    count = some.count()
    began = time.monotonic()
    featurize_listing(some, spec, opts).select("dim").collect()
    seconds = time.monotonic() - began
    some.unpersist()
    return 1000 * seconds / max(count, 1)


def _candidate(name: str, dim: int, scores: Scores, metric: str, ms: float, tracked: bool) -> selection.Candidate:
    mean, std = scores.mean()[metric], scores.std()[metric]
    if tracked:
        tracking.log_metrics({**cv_metrics(scores), "ms_per_image": ms, "dim": dim})
        log_fold_metrics(scores)
    log.warning("imgfeat: select: %s: cv %s %.4f ± %.4f, featurize %.1f ms/img", name, metric, mean, std, ms)
    return selection.Candidate(name, dim, mean, std, ms)


#: Training rows kept with a model as its novelty reference (`imgfeat.novelty`).
NOVELTY_REFERENCE_ROWS = 2000


def novelty_reference(spark: SparkSession, cfg: TrainConfig, result: TrainResult):  # -> NoveltyReference
    """A deterministic sample of the train split's embeddings and their own NN distances."""
    from imgfeat.insights import sample
    from imgfeat.novelty import NoveltyReference

    emb = [f"emb_{i}" for i in range(len(result.features.featurizers))]
    train_rows = labeled_rows(spark, cfg, result.features, result.version).where(F.col("split") == "train")
    picked = sample(train_rows, NOVELTY_REFERENCE_ROWS, cfg.split.seed).select(*emb).toPandas()
    return NoveltyReference.fit([np.stack(picked[c].to_numpy()) for c in emb])


@dataclass
class ScoreSummary:
    """What a score run did; `line()` is the one-line summary users see."""

    run_id: str
    output: str
    model_name: str
    model_version: str
    counts: dict[str, int]
    featurized: int  # images featurized now (bad ones included: they were tried)
    reused: int  # ok images whose embeddings came from the embeddings table
    version: int | None
    committed: bool
    seconds: float = 0.0
    novel: int = 0  # ok images with novelty >= novelty_threshold
    novelty_threshold: float = 99.0

    @property
    def images(self) -> int:
        return sum(self.counts.values())

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        by_status = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items())) or "none"
        return (
            f"score: {self.images} images ({by_status}) with {self.model_name} version {self.model_version}; "
            f"{self.reused} embeddings reused, {self.featurized} images featurized; "
            f"{self.novel} unlike training (novelty >= {self.novelty_threshold:g}); "
            f"{self.seconds:.1f} s; table {self.output} version {self.version}"
        )


def score_run(cfg: ScoreConfig, spark: SparkSession | None = None) -> ScoreSummary:
    """Score the images under `cfg.input` with a registered model into `cfg.output`, as one commit.

    With tracking on, the run is an MLflow run (job `score`) whose id is the
    `run_id` in the scores table, tagged with the model (as asked, and the
    version an alias or `latest` resolved to), with the scores table version
    it wrote as its dataset (context `scoring`).
    """
    if not cfg.model:
        raise InputError("no model: pass --model models:/NAME/VERSION (or models:/NAME/latest)")
    if not cfg.input:
        raise InputError("no input: pass --input DIR|GLOB|URI or set `input:` in the config")
    sources.check_input(cfg.input, cfg.read.extensions)  # before Spark starts, as the model lookup
    delta.check_writable(cfg.output)
    from imgfeat import scoring

    missing = delta.missing_columns(cfg.output, scoring.SCORES)
    if missing:
        raise InputError(
            f"scores table {cfg.output} predates column(s) {', '.join(missing)}: score into a new --output, "
            f"or add them first (ALTER TABLE delta.`{cfg.output}` ADD COLUMNS (novelty DOUBLE))"
        )

    tracking.use_store(cfg.tracking)
    model = scoring.resolve_model(cfg.model)
    name = f"score {model.name}/{model.version}" if model.version else "score"
    with tracking.run(cfg.tracking, "score", {"scores_table": cfg.output}, name=name) as tracked:
        spark = spark or get_spark(cfg.spark)
        summary = _score(cfg, model, spark, tracked or uuid.uuid4().hex)
        if tracked:
            if summary.version is not None:
                tracking.log_table_input(
                    cfg.output, summary.version, "scoring", rows=delta.row_count(spark, cfg.output, summary.version),
                    schema=scoring.SCORES.spark_schema,
                )
            tracking.log_params(dump_config(cfg))
            tracking.set_tags(
                {
                    "model": model.uri,
                    "model_name": model.name,
                    "model_version": model.version,
                    "scores_version": str(summary.version),
                    "counts": summary.counts,
                }
            )
            tracking.log_metrics(
                {
                    "images": summary.images,
                    "featurized": summary.featurized,
                    "reused": summary.reused,
                    "novel": summary.novel,
                    "seconds": summary.seconds,
                    "images_per_second": summary.images_per_second,
                    **({"scores_version": summary.version} if summary.version is not None else {}),
                    **{f"count_{k}": v for k, v in summary.counts.items()},
                }
            )
    return summary


def _score(cfg: ScoreConfig, model: ResolvedModel, spark: SparkSession, run_id: str) -> ScoreSummary:
    started = time.monotonic()
    with sources.list_images(spark, cfg.input, cfg.read.extensions) as listing:
        summary = _score_listed(cfg, model, spark, run_id, listing)
    summary.seconds = time.monotonic() - started
    return summary


def _score_listed(
    cfg: ScoreConfig, model: ResolvedModel, spark: SparkSession, run_id: str, listing: sources.Listing
) -> ScoreSummary:
    from imgfeat import scoring

    features = scoring.model_features(model.local_dir)
    parts = max(spark.sparkContext.defaultParallelism, -(-listing.count // cfg.read.files_per_partition))
    hashed = scoring.hash_files(listing.frame.repartition(parts, "path"))
    frame = scoring.with_stored_embeddings(spark, hashed, cfg.table, features.featurizers)
    if features.columns:
        if not cfg.tabular.source:
            raise InputError(f"the model needs column(s) {', '.join(features.columns)}: set tabular.source")
        frame = join_columns(frame, read_source(spark, cfg.tabular), features.columns, cfg.tabular.source)
    opts = WorkerOptions(
        batch_size=cfg.batch_size,
        max_bytes_in_flight=cfg.read.max_bytes_per_batch,
        max_pixels=cfg.read.max_pixels,
        decode_threads=cfg.read.decode_threads,
    )
    shipped = scoring.ship_model(spark, model.local_dir)
    with progress.stage("score", listing.count, spark=spark) as shown:
        rows = scoring.score_rows(
            frame, shipped, len(features.featurizers), opts, model.name, model.version, shown.reporter
        ).withColumn("run_id", F.lit(run_id)).withColumn("scored_at", F.current_timestamp())
        staged = delta.stage(rows, cfg.output, run_id, contract=scoring.SCORES)
        by_source = delta.staged_counts(staged, "status", "featurized")
        counts = {s: sum(n for (t, _), n in by_source.items() if t == s) for s, _ in by_source}
        shown.set(sum(counts.values()), _bad(counts))
    featurized = sum(n for (_, f), n in by_source.items() if f)
    novel = delta.staged_at_least(staged, "novelty", cfg.novelty_threshold)
    result = delta.commit(
        spark,
        staged,
        cfg.output,
        model.name,
        run_id,
        {"model": model.uri, "model_version": model.version, "counts": counts, "featurized": featurized,
         "reused": by_source.get(("ok", False), 0)},
        contract=scoring.SCORES,
    )
    return ScoreSummary(
        run_id=run_id,
        output=cfg.output,
        model_name=model.name,
        model_version=model.version,
        counts=counts,
        featurized=featurized,
        reused=by_source.get(("ok", False), 0),
        version=result.version,
        committed=result.committed,
        novel=novel,
        novelty_threshold=cfg.novelty_threshold,
    )


def serve_run(
    cfg: ServeConfig,
    on_ready: Callable[[str, str, float], None],
    output: Callable[[], IO | None] = lambda: None,
) -> int:
    """Serve `cfg.model` with MLflow's scoring server until it stops (Ctrl-C, SIGTERM).

    The model and the port are checked first, so a typo fails in one line
    instead of after the server's slow start. `on_ready(url, model, seconds)`
    is called once the server answers; `output()` gives the stream for the
    server's own logs (None: the terminal). Returns the server's exit code.
    """
    from imgfeat import serving

    if not cfg.model:
        raise InputError("no model: pass --model models:/NAME/VERSION (or models:/NAME/latest)")
    serving.check_port_free(cfg.host, cfg.port)
    uri = tracking.use_store(cfg.tracking)
    concrete = tracking.registered_version(cfg.model)[2]
    policy = ServingPolicy(cfg.limits, cfg.paths)
    with serving.Server(
        concrete, uri, host=cfg.host, port=cfg.port, workers=cfg.workers, policy=policy, output=output()
    ) as server:
        on_ready(server.url, concrete, server.wait_ready())
        return server.wait()


@dataclass
class FinetuneSummary:
    """What a finetune run did; `lines()` is what users see."""

    run_id: str | None
    featurizer: str
    fingerprint: str  # of the fine-tuned featurizer (its weights' sha256 included)
    weights_sha256: str
    task: str
    classes: tuple[str, ...]
    counts: dict[str, int]
    epochs: list[dict]  # per epoch: loss, validation metrics, images_per_second, seconds
    seconds: float
    model_name: str | None = None
    model_version: str | None = None
    output: str | None = None

    @property
    def weights(self) -> str:
        """The `weights:` value that uses this featurizer."""
        if self.model_version:
            return f"models:/{self.model_name}/{self.model_version}"
        return self.output or ""

    def lines(self) -> list[str]:
        c = self.counts
        skipped = sum(v for k, v in c.items() if k.startswith("skipped_"))
        head = (
            f"finetune: {self.featurizer} ({self.task}) on {c['train']} train images, {c['validation']} validation "
            f"({c['test_held_out']} test held out, {c['unlabeled']} unlabeled, {skipped} skipped); {self.seconds:.1f} s"
        )
        where = f"registered {self.model_name} version {self.model_version}" if self.model_version else (
            f"checkpoint {self.output}" if self.output else "not kept"
        )
        return [
            head,
            f"{where}; fingerprint {self.fingerprint[:12]}; use it with --weights {self.weights}; MLflow run {self.run_id}",
        ]

    def as_dict(self) -> dict:
        return {**asdict(self), "weights": self.weights}


def finetune_run(cfg: FinetuneConfig, spark: SparkSession | None = None) -> FinetuneSummary:
    """Fine-tune `cfg.featurizer` on the labeled images under `cfg.input` (train split only)
    with TorchDistributor; log the run and register the network as a featurizer.

    The model version is registered last, after training and logging succeeded:
    a run that dies leaves none.
    """
    if not cfg.input:
        raise InputError("no input: pass --input DIR|GLOB|URI or set `input:` in the config")
    sources.check_input(cfg.input, cfg.read.extensions)  # the cheap checks, before Spark starts
    use_store_for([cfg.featurizer], cfg.tracking)
    base = resolve_spec(cfg.featurizer)
    finetune.check_network(base)
    if cfg.distributor.use_gpu and cfg.distributor.local_mode:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("distributor.use_gpu is true but this driver has no CUDA device")
    started = time.monotonic()
    spark = spark or get_spark(cfg.spark)
    with tracking.run(cfg.tracking, "finetune", {"featurizer": base.name}) as run_id:
        with sources.list_images(spark, cfg.input, cfg.read.extensions) as listing:
            if listing.count == 0:
                raise InputError(f"no images under {cfg.input} (extensions: {', '.join(cfg.read.extensions)})")
            plan = finetune.plan(spark, cfg, listing.frame, listing.count)
        finetune.check(plan, cfg)
        _log_plan(plan, cfg, base)
        result = finetune.fine_tune(finetune.job_for(plan, base, cfg))
        with tempfile.TemporaryDirectory(prefix="imgfeat-finetune-") as tmp:
            summary = _finetuned(cfg, base, plan, result, Path(tmp), run_id, started)
    return summary


def _log_plan(plan: finetune.Plan, cfg: FinetuneConfig, base: FeaturizerSpec) -> None:
    c = plan.counts
    skipped = {k.removeprefix("skipped_"): v for k, v in c.items() if k.startswith("skipped_")}
    if skipped:
        log.warning(
            "imgfeat: finetune skips %d undecodable image(s) (%s), e.g. %s",
            sum(skipped.values()), ", ".join(f"{k} {v}" for k, v in skipped.items()), plan.skipped_examples[0],
        )
    if c["unlabeled"]:
        log.warning("imgfeat: finetune: %d decodable images have no label and are not used", c["unlabeled"])
    log.warning(
        "imgfeat: fine-tuning %s (%s, %d classes) on %d train images, validating on %d (%d test images held out); "
        "%d epochs, %d process(es) x batch %d",
        base.name, plan.task, len(plan.classes), c["train"], c["validation"], c["test_held_out"],
        cfg.epochs, cfg.distributor.num_processes, cfg.batch_size,
    )


def _finetuned(
    cfg: FinetuneConfig,
    base: FeaturizerSpec,
    plan: finetune.Plan,
    result: finetune.Result,
    tmp: Path,
    run_id: str | None,
    started: float,
) -> FinetuneSummary:
    """Write the weights, resolve the fine-tuned featurizer, log and register it."""
    folder = tmp / "featurizer"
    folder.mkdir()
    weights = folder / BACKBONE_FILE
    weights.write_bytes(result.backbone)
    (folder / "head.pt").write_bytes(result.head)
    tuned = resolve_spec(cfg.featurizer.model_copy(update={"weights": str(weights), "weights_sha256": None}))
    (folder / "featurizer.json").write_text(json.dumps(
        {"name": tuned.name, "arch": tuned.arch, "base_weights": base.weights, "pooling": tuned.pooling,
         "layers": list(tuned.layers), "dim": tuned.dim, "task": plan.task, "classes": list(plan.classes),
         "weights_sha256": tuned.weights_sha256, "fingerprint": tuned.fingerprint},
        indent=1,
    ))
    if cfg.output:
        Path(cfg.output).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.output).write_bytes(result.backbone)
    summary = FinetuneSummary(
        run_id=run_id, featurizer=tuned.name, fingerprint=tuned.fingerprint, weights_sha256=tuned.weights_sha256 or "",
        task=plan.task, classes=plan.classes, counts=plan.counts,
        epochs=[asdict(e) for e in result.history], seconds=time.monotonic() - started,
        output=str(Path(cfg.output).absolute()) if cfg.output else None,
    )
    if run_id:
        tracking.log_params(dump_config(cfg))
        tracking.set_tags({"base_fingerprint": base.fingerprint, "featurizer_fingerprint": tuned.fingerprint,
                           "weights_sha256": summary.weights_sha256, "task": plan.task, "counts": plan.counts})
        for e in result.history:
            tracking.log_epoch({"loss": e.loss, "images_per_second": e.images_per_second,
                                **{f"validation_{k}": v for k, v in e.validation.items()}}, e.epoch)
        tracking.log_metrics({"seconds": summary.seconds, "skipped_in_training": result.skipped,
                              **{f"images_{k}": v for k, v in plan.counts.items()}})
        source = tracking.log_artifacts(str(folder), "featurizer")
        if cfg.model_name:
            summary.model_name, summary.model_version = cfg.model_name, tracking.register_artifacts(
                cfg.model_name, source, run_id
            )
    return summary


#: The nightly job's steps, in the order they run.
NIGHTLY_STEPS = ("featurize", "train", "score")


@dataclass
class NightlySummary:
    """What a nightly run did, step by step; `lines()` is what users see."""

    run_id: str
    table: str
    steps: tuple[str, ...]
    featurize: FeaturizeSummary | None = None
    maintain: delta.Upkeep | None = None
    new_rows: int | None = None  # ok rows committed since the last nightly training
    retrained: str | None = None  # why it retrained; None = it did not
    train: TrainSummary | None = None
    promotion: str | None = None  # what became of train.alias after retraining, as a sentence
    score: ScoreSummary | None = None
    skipped: dict[str, str] = field(default_factory=dict)  # step → why it did nothing

    def lines(self) -> list[str]:
        out = [self.featurize.line()] if self.featurize else []
        out += [self.maintain.line()] if self.maintain else []
        if self.train:
            out += [f"nightly: retraining: {self.retrained}", *self.train.lines()]
        out += [f"nightly: {self.promotion}"] if self.promotion else []
        out += [self.score.line()] if self.score else []
        return out + [f"nightly: {step} skipped: {why}" for step, why in self.skipped.items()]

    def as_dict(self) -> dict:
        return {
            "run_id": self.run_id,
            "table": self.table,
            "steps": list(self.steps),
            "featurize": self.featurize.as_dict() if self.featurize else None,
            "maintain": asdict(self.maintain) if self.maintain else None,
            "new_rows": self.new_rows,
            "retrained": self.retrained,
            "model": self.train and self.train.model_uri,
            "model_version": self.train and self.train.model_version,
            "promotion": self.promotion,
            "score": asdict(self.score) if self.score else None,
            "skipped": self.skipped,
        }


def nightly_run(
    cfg: NightlyConfig, steps: Sequence[str] = NIGHTLY_STEPS, spark: SparkSession | None = None
) -> NightlySummary:
    """Featurize what is new (then compact and vacuum the table, as `cfg.maintain`
    says), retrain when `cfg.retrain` says so, score; under the table's lock.

    Safe to re-run: featurize skips unchanged files, train runs only past the
    threshold, score only when the model or the table changed since the last
    nightly score. Raises `ConflictError` while another run holds the lock.
    With tracking on, the steps' runs are nested under one `nightly` run. A
    retrained version takes `train.alias` only if it beats the version holding
    it on the same test split; score uses the version holding the alias.
    """
    steps = tuple(s for s in NIGHTLY_STEPS if s in steps)
    if "train" in steps and not (cfg.train.tracking.enabled and cfg.train.model_name):
        raise ConfigError("nightly train needs tracking.enabled and train.model_name: score uses the registered model")
    table = cfg.featurize.table
    summary = NightlySummary(uuid.uuid4().hex, table, steps)
    command = f"imgfeat nightly --step {' --step '.join(steps)}"
    with nightly.table_lock(table, summary.run_id, command, cfg.lock.stale_after_hours):
        spark = spark or get_spark(cfg.spark)
        with tracking.run(cfg.tracking, "nightly", {"table": table}, name=f"nightly {Path(table).name}") as parent:
            state = nightly.read_state(table)
            if "featurize" in steps:
                summary.featurize = featurize_run(cfg.featurize, spark)
                summary.maintain = _nightly_maintain(cfg, spark, summary.featurize.featurizer)
            if "train" in steps:
                state = _nightly_train(cfg, spark, state, summary)
            if "score" in steps:
                _nightly_score(cfg, spark, state, summary)
            if parent:
                tracking.log_dict(summary.as_dict(), "nightly.json")
    return summary


def _nightly_maintain(cfg: NightlyConfig, spark: SparkSession, featurizer: str) -> delta.Upkeep:
    """Compact the featurizer's small files and vacuum old ones, as `cfg.maintain` says."""
    m = cfg.maintain
    return delta.maintain(
        spark, cfg.featurize.table, featurizer,
        target_file_bytes=m.target_file_mb * 2**20 if m.compact else None,
        vacuum_retention_hours=m.vacuum_retention_hours,
    )


def _nightly_train(cfg: NightlyConfig, spark: SparkSession, state: dict, summary: NightlySummary) -> dict:
    trained = nightly.last_trained(state)
    if trained is not None:
        names = {f.name for f in cfg.train.featurizers}
        summary.new_rows = nightly.ok_rows_since(spark, summary.table, trained.table_version, names)
    summary.retrained = nightly.retrain_reason(trained, summary.new_rows or 0, cfg.retrain)
    if summary.retrained is None:
        summary.skipped["train"] = (
            f"{summary.new_rows} new ok rows since table version {trained.table_version} "
            f"(retrain.min_new_rows {cfg.retrain.min_new_rows}, min_new_fraction {cfg.retrain.min_new_fraction})"
        )
        return state
    summary.train = train_run(cfg.train.model_copy(update={"alias": None}), spark)
    if cfg.train.alias:
        summary.promotion = _promote(cfg.train, spark, summary.train)
    r = summary.train.result
    model = f"models:/{summary.train.model_name}/{summary.train.model_version}"
    return nightly.write_state(
        summary.table, state, trained=nightly.Trained(r.version, sum(r.counts.values()), model)
    )


def _promote(cfg: TrainConfig, spark: SparkSession, trained: TrainSummary) -> str:
    """Move `cfg.alias` to the version just trained if no version holds it, or if it beats
    the one holding it on the same test split (its own: same table version, same split
    rule); returns what happened, as a sentence."""
    from imgfeat import scoring
    from imgfeat.train import evaluate_on_test_split

    name, alias, new, r = trained.model_name, cfg.alias, trained.model_version, trained.result
    assert name and alias and new
    current = tracking.aliased_version(name, alias)
    if current is None:
        tracking.set_alias(name, alias, new)
        trained.alias = alias
        return f"alias {alias} set on version {new}: no version held it"
    metric, value = trained.headline
    try:
        held = scoring.resolve_model(f"models:/{name}/{current}")
        features = scoring.model_features(held.local_dir)
        if (features.task, features.classes) != (r.features.task, r.features.classes):
            raise InputError(f"it predicts {features.task} {list(features.classes)}")
        scores, n = evaluate_on_test_split(spark, cfg, r.version, features, scoring.model_booster(held.local_dir))
        if n != r.counts.get("test"):
            raise InputError(f"it has ok embeddings for {n} of the {r.counts.get('test')} test images")
    except InputError as exc:
        return f"alias {alias} stays on version {current}: it cannot be scored on version {new}'s test split ({exc})"
    old = scores[metric.removeprefix("test_")]
    versus = f"{metric} {value:.4f} vs {old:.4f} on the same test split ({n} images of {r.table} version {r.version})"
    if value > old:
        tracking.set_alias(name, alias, new)
        trained.alias = alias
        return f"alias {alias} moved from version {current} to version {new}: {versus}"
    return f"alias {alias} stays on version {current}: version {new} does not beat it: {versus}"


def _nightly_model(cfg: NightlyConfig, trained: nightly.Trained | None) -> tuple[str, str] | None:
    """(what to score with, the concrete models:/NAME/VERSION it is now): the version
    holding `train.alias`, else the last version the nightly job trained; None if none."""
    name, alias = cfg.train.model_name, cfg.train.alias
    if name and alias and cfg.train.tracking.enabled:
        tracking.use_store(cfg.train.tracking)
        version = tracking.aliased_version(name, alias)
        if version is not None:
            return f"models:/{name}@{alias}", f"models:/{name}/{version}"
    return (trained.model, trained.model) if trained else None


def _nightly_score(cfg: NightlyConfig, spark: SparkSession, state: dict, summary: NightlySummary) -> None:
    trained = nightly.last_trained(state)
    chosen = (cfg.score.model, cfg.score.model) if cfg.score.model else _nightly_model(cfg, trained)
    if chosen is None:
        raise InputError("nightly score: no model yet; run the train step first or set score.model")
    model, concrete = chosen
    now = nightly.Scored(concrete, delta.table_version(spark, summary.table))
    if nightly.last_scored(state) == now:
        summary.skipped["score"] = f"already scored table version {now.table_version} with {concrete}"
        return
    summary.score = score_run(cfg.score.model_copy(update={"model": model}), spark)
    nightly.write_state(summary.table, state, scored=now)


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
            f"{m['outliers']:.0f} outliers, {m['near_duplicates']:.0f} near-duplicate pairs "
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
    if not cfg.model:
        raise InputError("no model: pass --model models:/NAME/VERSION (or models:/NAME/latest)")
    tracking.use_store(cfg.tracking)
    model = scoring.resolve_model(cfg.model)
    features = scoring.model_features(model.local_dir)
    if features.task != "classification":
        raise InputError(f"{cfg.model} is a {features.task} model: insights needs a classification model")
    train_id, params, tags = tracking.model_lineage(model.name, model.version)
    train_cfg = load_config(
        TrainConfig, overrides=[f"{k}={v}" for k, v in params.items() if k.startswith(_LINEAGE_KEYS)],
        table=cfg.table or tags.get("embeddings_table"),
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
        rows = labeled_rows(spark, train_cfg, features, version)
        statuses = delta.read_table(spark, train_cfg.table, version, partitions=[f.name for f in features.featurizers]).where(
            F.col("featurizer_fingerprint").isin([f.fingerprint for f in features.featurizers])
        ).select("path", "status", "error")
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
        }
        data = insights.analyse(rows, statuses, features, loaded, cfg, min(cfg.sample or 2000, n), about)
        data.seconds = time.monotonic() - started
        data.about["time"] = f"{data.seconds:.1f} s (report written {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())})"
        path = report.write(data, cfg.output)
        metrics = {
            "sampled": float(len(data.points)),
            "outliers": float(data.outliers.count),
            "near_duplicates": float(data.pair_counts["near_duplicates"]),
            "leaking_pairs": float(data.pair_counts["leaking"]),
            "label_noise_pairs": float(data.pair_counts["label_noise"]),
            "test_accuracy": data.accuracy,
            **({"novel": float(data.novel)} if data.novel is not None else {}),
            **{f"count_{k}": float(v) for k, v in data.counts.items()},
        }
        if run_id:
            tracking.log_params(dump_config(cfg))
            tracking.set_tags(
                {"model": cfg.model, "model_name": model.name, "model_version": model.version,
                 "train_run_id": train_id, "embeddings_version": str(version)}
            )
            tracking.log_metrics(metrics)
            tracking.log_artifact(str(path))
    return InsightsSummary(str(path), run_id, f"{model.name} version {model.version}", train_cfg.table, version,
                           len(data.points), data.counts, metrics, time.monotonic() - started)
