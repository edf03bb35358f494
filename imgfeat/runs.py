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
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import IO, TYPE_CHECKING, Callable, Sequence

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from imgfeat import delta, faults, nightly, progress, reduce, sources, tracking
from imgfeat.config import (
    FeaturizeConfig, InsightsConfig, NightlyConfig, ScoreConfig, ServeConfig, TrainConfig, dump_config, load_config,
)
from imgfeat.errors import ConfigError, InputError, Status
from imgfeat.featurize import MaxParam, WorkerOptions, featurize_listing
from imgfeat.featurizers import FeaturizerSpec
from imgfeat.session import get_spark
from imgfeat.train import TrainResult, join_columns, labeled_rows, read_source, resolve_spec
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
            + (f"; worker peak RSS {self.worker_peak_rss_mib:.0f} MiB" if self.worker_peak_rss_mib else "")
        )

    def as_dict(self) -> dict:
        return asdict(self)


def featurizer_spec(cfg: FeaturizeConfig) -> FeaturizerSpec:
    return resolve_spec(cfg.featurizer)


def worker_options(cfg: FeaturizeConfig) -> WorkerOptions:
    return WorkerOptions(
        batch_size=cfg.featurizer.batch_size,
        max_bytes_in_flight=cfg.read.max_bytes_per_batch,
        max_pixels=cfg.read.max_pixels,
        decode_threads=cfg.read.decode_threads,
        device=cfg.featurizer.device,
        autocast=cfg.featurizer.autocast,
    )


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
    with tracking.run(cfg.tracking, "featurize", {"table": cfg.table}) as tracked:
        summary = _featurize(cfg, spec, spark, run_id or tracked)
        if tracked:
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
    return summary


def _featurize(
    cfg: FeaturizeConfig, spec: FeaturizerSpec, spark: SparkSession | None, run_id: str | None
) -> FeaturizeSummary:
    spark = spark or get_spark(cfg.spark)
    run_id = run_id or uuid.uuid4().hex
    started = time.monotonic()
    for dead in delta.remove_stale_staging(cfg.table):
        log.warning("imgfeat: removed the staging folder of run %s, which died before committing", dead)

    with sources.list_images(spark, cfg.input, cfg.read.extensions) as listing:
        summary = _featurize_listed(cfg, spec, spark, run_id, listing)
    summary.seconds = time.monotonic() - started
    return summary


def _featurize_listed(
    cfg: FeaturizeConfig, spec: FeaturizerSpec, spark: SparkSession, run_id: str, listing: sources.Listing
) -> FeaturizeSummary:
    listed = listing.count
    if listed == 0:
        raise InputError(
            f"no images under {cfg.input} (extensions: {', '.join(cfg.read.extensions)})"
        )
    if cfg.featurizer.dim:
        spec = reduce.ensure_basis(
            listing.frame, spec, cfg.table, cfg.featurizer.dim, cfg.featurizer.pca_sample, worker_options(cfg)
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
            result = _featurize_new(cfg, spec, todo, new, summary)
    finally:
        todo.unpersist()
    summary.version, summary.committed, summary.writer = result.version, result.committed, result.writer
    return summary


def _featurize_new(
    cfg: FeaturizeConfig, spec: FeaturizerSpec, todo: DataFrame, new: int, summary: FeaturizeSummary
) -> delta.Commit:
    """Featurize the `new` listing rows of `todo`, stage them and commit them as one version."""
    spark = todo.sparkSession
    loads = spark.sparkContext.accumulator(0)
    peak_rss = spark.sparkContext.accumulator(0.0, MaxParam())
    with progress.stage("featurize", new, spark=spark) as shown:
        rows = featurize_listing(
            todo, spec, worker_options(cfg), files_per_partition=cfg.read.files_per_partition, loads=loads,
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
    for pkg in ("imgfeat", "torch", "timm", "pillow", "pyspark", "deltalake"):
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

    def lines(self) -> list[str]:
        r = self.result
        counts = ", ".join(f"{k} {v}" for k, v in sorted(r.counts.items()))
        head = (
            f"train: {r.features.task} on {r.table} version {r.version} "
            f"({', '.join(f.name for f in r.features.featurizers)}; {counts}); "
            f"best iteration {r.best_iteration}; {r.seconds:.1f} s"
        )
        where = f"model {self.model_name} version {self.model_version}" if self.model_version else (
            f"model {self.model_uri}" if self.model_uri else "model not logged (tracking off)"
        )
        return [head, *r.lines(), f"{where}; MLflow run {self.run_id}"]


def train_run(cfg: TrainConfig, spark: SparkSession | None = None) -> TrainSummary:
    """Train on the embeddings table; with tracking on, log the run and register the model."""
    from imgfeat import scoring  # imports mlflow: only train and score pay for it

    if not delta.may_exist(cfg.table):  # before Spark starts
        raise InputError(f"no embeddings table at {cfg.table}: run `imgfeat featurize` first")
    spark = spark or get_spark(cfg.spark)
    with tracking.run(cfg.tracking, "train", {"embeddings_table": cfg.table}) as run_id:
        result = train_model(spark, cfg)
        summary = TrainSummary(result, run_id)
        if run_id:
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
            tracking.log_metrics(
                {
                    **{f"{model}.test_{k}": v for model, scores in result.metrics.items() for k, v in scores.items()},
                    **{f"rows_{k}": v for k, v in result.counts.items()},
                    **({"best_iteration": result.best_iteration} if result.best_iteration is not None else {}),
                }
            )
            reference = novelty_reference(spark, cfg, result)
            logged = scoring.log_model(result, cfg.model_name, novelty=reference)
            summary.model_uri, summary.model_name, summary.model_version = logged.uri, logged.name, logged.version
    return summary


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
    `run_id` in the scores table, tagged with the model and the output version.
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
    with tracking.run(cfg.tracking, "score", {"scores_table": cfg.output}) as tracked:
        summary = _score(cfg, model, spark or get_spark(cfg.spark), tracked or uuid.uuid4().hex)
        if tracked:
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
    with serving.Server(concrete, uri, host=cfg.host, port=cfg.port, workers=cfg.workers, output=output()) as server:
        on_ready(server.url, concrete, server.wait_ready())
        return server.wait()


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
    score: ScoreSummary | None = None
    skipped: dict[str, str] = field(default_factory=dict)  # step → why it did nothing

    def lines(self) -> list[str]:
        out = [self.featurize.line()] if self.featurize else []
        out += [self.maintain.line()] if self.maintain else []
        if self.train:
            out += [f"nightly: retraining: {self.retrained}", *self.train.lines()]
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
    """
    steps = tuple(s for s in NIGHTLY_STEPS if s in steps)
    if "train" in steps and not (cfg.train.tracking.enabled and cfg.train.model_name):
        raise ConfigError("nightly train needs tracking.enabled and train.model_name: score uses the registered model")
    table = cfg.featurize.table
    summary = NightlySummary(uuid.uuid4().hex, table, steps)
    command = f"imgfeat nightly --step {' --step '.join(steps)}"
    with nightly.table_lock(table, summary.run_id, command, cfg.lock.stale_after_hours):
        spark = spark or get_spark(cfg.spark)
        state = nightly.read_state(table)
        if "featurize" in steps:
            summary.featurize = featurize_run(cfg.featurize, spark)
            summary.maintain = _nightly_maintain(cfg, spark, summary.featurize.featurizer)
        if "train" in steps:
            state = _nightly_train(cfg, spark, state, summary)
        if "score" in steps:
            _nightly_score(cfg, spark, state, summary)
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
    summary.train = train_run(cfg.train, spark)
    r = summary.train.result
    model = f"models:/{summary.train.model_name}/{summary.train.model_version}"
    return nightly.write_state(
        summary.table, state, trained=nightly.Trained(r.version, sum(r.counts.values()), model)
    )


def _nightly_score(cfg: NightlyConfig, spark: SparkSession, state: dict, summary: NightlySummary) -> None:
    trained = nightly.last_trained(state)
    model = cfg.score.model or (trained.model if trained else None)
    if not model:
        raise InputError("nightly score: no model yet; run the train step first or set score.model")
    now = nightly.Scored(model, delta.table_version(spark, summary.table))
    if nightly.last_scored(state) == now:
        summary.skipped["score"] = f"already scored table version {now.table_version} with {model}"
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
