"""The featurize job: list → filter new → featurize → stage → commit, as one Delta version.

Owns: the order of the featurize stages for a run (also for each candidate of
`imgfeat select`, through `featurize_listed`), its summary, and what its
MLflow run records. Must not: decode, featurize or write tables itself
(`sources`, `featurize`, `reduce` and `delta` do), parse arguments, or print
anything but progress.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import asdict, dataclass, field

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from imgfeat import dataset, delta, faults, inputs, progress, reduce, sources, tracking
from imgfeat.config import FeaturizeConfig, dump_config
from imgfeat.featurize import MaxParam, WorkerOptions, featurize_listing, ship_graph
from imgfeat.featurizers import FeaturizerSpec
from imgfeat.featurizers.runtime import RuntimeChoice
from imgfeat.runs._shared import (
    CountedRun,
    bad_count,
    config_sha256,
    featurizer_runtime,
    featurizer_spec,
    library_versions,
    log_written_table,
    no_images,
    read_limits,
    require_input,
    worker_options,
)
from imgfeat.session import get_spark

log = logging.getLogger("imgfeat")


@dataclass
class FeaturizeSummary(CountedRun):
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
    input_kind: str = "images"  # images | csv | parquet | delta | zip (`inputs.input_kind`)
    input_version: str | None = None  # a Delta input's version, a file input's content digest
    runtime_note: str | None = None  # why `auto` kept torch

    @property
    def featurized(self) -> int:
        """The images this run featurized: every one it counted."""
        return self.images

    def line(self) -> str:
        by_status = self.by_status("nothing new")
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


def featurize_run(
    cfg: FeaturizeConfig, spark: SparkSession | None = None, run_id: str | None = None
) -> FeaturizeSummary:
    """Featurize what is new under `cfg.input` into `cfg.table`, as one commit.

    With tracking on, the run is an MLflow run and its id is the `run_id`.
    """
    uri = require_input(cfg.input)
    # What can be checked cheaply fails here, before Spark or MLflow start.
    kind = inputs.input_kind(uri, cfg.input_format)
    inputs.check_input(uri, kind, cfg.read.extensions)
    delta.check_writable(cfg.table)
    spec = featurizer_spec(cfg)
    photos = sources.sample_local_files(uri, cfg.read.extensions, 6) if kind == "images" else []
    runtime = featurizer_runtime(cfg.featurizer, spec, cfg.spark, photos)
    with tracking.run(cfg.tracking, "featurize", {"table": cfg.table}, name=f"featurize {spec.name}") as tracked:
        spark = spark or get_spark(cfg.spark)
        summary = _featurize(cfg, kind, spec, runtime, spark, run_id or tracked)
        if tracked:
            _track_featurize(cfg, spark, summary)
    return summary


def _track_featurize(cfg: FeaturizeConfig, spark: SparkSession, summary: FeaturizeSummary) -> None:
    """Log a featurize run: config, lineage tags, counts, the runtime, and the table version
    it left as its dataset (context `featurization`)."""
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
            **summary.counted_metrics("table_version"),
        }
    )
    if summary.version is not None:
        tracking.name_run(f"featurize {summary.featurizer} v{summary.version}")
        log_written_table(spark, cfg.table, summary.version, "featurization", delta.EMBEDDINGS)
    _track_input(cfg, summary)
    tracking.log_params({"runtime": summary.runtime})


def _featurize(
    cfg: FeaturizeConfig,
    kind: str,
    spec: FeaturizerSpec,
    runtime: RuntimeChoice,
    spark: SparkSession,
    run_id: str | None,
) -> FeaturizeSummary:
    run_id = run_id or uuid.uuid4().hex
    started = time.monotonic()
    for dead in delta.remove_stale_staging(cfg.table):
        log.warning("imgfeat: removed the staging folder of run %s, which died before committing", dead)

    opts = featurize_options(cfg, spark, runtime)
    version = _input_version(cfg, kind, spark)  # before the listing reads the input
    with list_input(cfg, kind, spark) as listing:
        summary = featurize_listed(cfg, spec, opts, spark, run_id, listing)
    summary.seconds = time.monotonic() - started
    summary.runtime, summary.runtime_note = runtime.runtime, runtime.note
    summary.input_kind, summary.input_version = kind, version
    return summary


def list_input(cfg: FeaturizeConfig, kind: str, spark: SparkSession) -> sources.Listing:
    """`cfg.input`'s images as one listing frame, whatever the input (`kind`, from
    `inputs.input_kind`): a folder (or glob, or URI) of images, a table whose
    `image_columns` name images, or a zip archive."""
    uri = require_input(cfg.input)
    limits = read_limits(cfg.read)
    if kind == "images":
        return sources.list_images(spark, uri, cfg.read.extensions)
    if kind == "zip":
        return inputs.list_archive(
            spark, uri, cfg.read.extensions, cfg.image_columns, limits, cfg.read.max_archive_members
        )
    frame, base = dataset.read_table(spark, uri, kind)
    return inputs.list_table(frame, uri, cfg.image_columns, limits, base)


def _input_version(cfg: FeaturizeConfig, kind: str, spark: SparkSession) -> str | None:
    """The input's version, for lineage: a Delta table's version, a file's content digest
    (`inputs.source_digest`); none for a folder of images."""
    uri = require_input(cfg.input)
    if kind == "images":
        return None
    if kind == "delta":
        return str(delta.table_version(spark, uri))
    return inputs.source_digest(uri, read_limits(cfg.read))


def _track_input(cfg: FeaturizeConfig, summary: FeaturizeSummary) -> None:
    """Log a table or archive input as the run's `source` dataset, with its version or digest."""
    uri = require_input(cfg.input)
    if summary.input_version is None:
        return
    tracking.set_tags({"input": uri, "input_kind": summary.input_kind, "input_version": summary.input_version})
    if summary.input_kind == "delta":
        tracking.log_table_input(uri, int(summary.input_version), "source", rows=summary.listed)
    else:
        tracking.log_source_input(uri, "source", digest=summary.input_version, rows=summary.listed)


def featurize_options(cfg: FeaturizeConfig, spark: SparkSession, runtime: RuntimeChoice) -> WorkerOptions:
    """The workers' options of a featurize run, its exported graph (if any) shipped to them."""
    graph = ship_graph(spark, runtime.graph_path) if runtime.graph_path else None
    return worker_options(cfg.read, cfg.featurizer.batch_size, cfg.featurizer, graph)


def featurize_listed(
    cfg: FeaturizeConfig,
    spec: FeaturizerSpec,
    opts: WorkerOptions,
    spark: SparkSession,
    run_id: str,
    listing: sources.Listing,
) -> FeaturizeSummary:
    """Featurize what of `listing` the table lacks (fitting the PCA basis first, with `dim`)."""
    listed = listing.count
    if listed == 0:
        raise no_images(cfg.input, cfg.read.extensions)
    if cfg.featurizer.dim:
        spec = reduce.ensure_basis(listing.frame, spec, cfg.table, cfg.featurizer.dim, cfg.featurizer.pca_sample, opts)
    todo = sources.only_new(listing.frame, delta.existing_keys(spark, cfg.table, spec.fingerprint)).cache()
    try:
        new = todo.count()
        log.warning(
            "imgfeat: %d images listed under %s, %d new or changed; featurizing them with %s",
            listed,
            cfg.input,
            new,
            spec.name,
        )
        summary = FeaturizeSummary(
            run_id=run_id,
            table=cfg.table,
            featurizer=spec.name,
            fingerprint=spec.fingerprint,
            listed=listed,
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
    cfg: FeaturizeConfig,
    spec: FeaturizerSpec,
    opts: WorkerOptions,
    todo: DataFrame,
    new: int,
    summary: FeaturizeSummary,
) -> delta.Commit:
    """Featurize the `new` listing rows of `todo`, stage them and commit them as one version."""
    spark = todo.sparkSession
    loads = spark.sparkContext.accumulator(0)
    peak_rss = spark.sparkContext.accumulator(0.0, MaxParam())
    with progress.stage("featurize", new, spark=spark) as shown:
        rows = (
            featurize_listing(
                todo,
                spec,
                opts,
                files_per_partition=cfg.read.files_per_partition,
                loads=loads,
                peak_rss=peak_rss,
                count=new,
                progress=shown.reporter,
            )
            .withColumn("run_id", F.lit(summary.run_id))
            .withColumn("featurized_at", F.current_timestamp())
        )
        staged = delta.stage(rows, cfg.table, summary.run_id)
        summary.counts = delta.staged_counts(staged)
        shown.set(sum(summary.counts.values()), bad_count(summary.counts))
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
