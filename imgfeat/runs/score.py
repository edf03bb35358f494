"""The score job: score the images under an input with a registered model, as one Delta commit.

Owns: the order of a score run (checks before Spark, the model resolved,
list → hash → reuse stored embeddings → featurize the rest → predict → stage →
commit), its summary, and what its MLflow run records. Must not: build the
plan's stages itself (`scoring` and `delta` do), parse arguments, or print
anything but progress.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from imgfeat import delta, progress, sources, tracking
from imgfeat.config import ScoreConfig, dump_config
from imgfeat.dataset import join_columns, read_source
from imgfeat.errors import InputError
from imgfeat.runs._shared import CountedRun, bad_count, log_written_table, require_input, require_model, worker_options
from imgfeat.session import get_spark

if TYPE_CHECKING:
    from imgfeat.scoring import ResolvedModel


@dataclass
class ScoreSummary(CountedRun):
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

    def line(self) -> str:
        by_status = self.by_status("none")
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
    model_uri = require_model(cfg.model)
    uri = require_input(cfg.input)
    sources.check_input(uri, cfg.read.extensions)  # before Spark starts, as the model lookup
    delta.check_writable(cfg.output)
    from imgfeat import scoring

    missing = delta.missing_columns(cfg.output, scoring.SCORES)
    if missing:
        raise InputError(
            f"scores table {cfg.output} predates column(s) {', '.join(missing)}: score into a new --output, "
            f"or add them first (ALTER TABLE delta.`{cfg.output}` ADD COLUMNS (novelty DOUBLE))"
        )

    tracking.use_store(cfg.tracking)
    model = scoring.resolve_model(model_uri)
    name = f"score {model.name}/{model.version}" if model.version else "score"
    with tracking.run(cfg.tracking, "score", {"scores_table": cfg.output}, name=name) as tracked:
        spark = spark or get_spark(cfg.spark)
        started = time.monotonic()
        with sources.list_images(spark, uri, cfg.read.extensions) as listing:
            summary = _score_listed(cfg, model, spark, tracked or uuid.uuid4().hex, listing)
        summary.seconds = time.monotonic() - started
        if tracked:
            _track_score(cfg, model, spark, summary)
    return summary


def _track_score(cfg: ScoreConfig, model: ResolvedModel, spark: SparkSession, summary: ScoreSummary) -> None:
    """Log a score run: the scores table version it wrote (context `scoring`), config, the model, counts."""
    from imgfeat import scoring

    if summary.version is not None:
        log_written_table(spark, cfg.output, summary.version, "scoring", scoring.SCORES)
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
            **summary.counted_metrics("scores_version"),
        }
    )


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
    opts = worker_options(cfg.read, cfg.batch_size)
    shipped = scoring.ship_model(spark, model.local_dir)
    with progress.stage("score", listing.count, spark=spark) as shown:
        rows = (
            scoring.score_rows(
                frame, shipped, len(features.featurizers), opts, model.name, model.version, shown.reporter
            )
            .withColumn("run_id", F.lit(run_id))
            .withColumn("scored_at", F.current_timestamp())
        )
        staged = delta.stage(rows, cfg.output, run_id, contract=scoring.SCORES)
        by_source = delta.staged_counts(staged, "status", "featurized")
        counts = {s: sum(n for (t, _), n in by_source.items() if t == s) for s, _ in by_source}
        shown.set(sum(counts.values()), bad_count(counts))
    # What the commit records and the summary reports: the same numbers, counted once.
    tallies = {
        "counts": counts,
        "featurized": sum(n for (_, f), n in by_source.items() if f),
        "reused": by_source.get(("ok", False), 0),
    }
    novel = delta.staged_at_least(staged, "novelty", cfg.novelty_threshold)
    result = delta.commit(
        spark,
        staged,
        cfg.output,
        model.name,
        run_id,
        {"model": model.uri, "model_version": model.version, **tallies},
        contract=scoring.SCORES,
    )
    return ScoreSummary(
        run_id=run_id,
        output=cfg.output,
        model_name=model.name,
        model_version=model.version,
        **tallies,
        version=result.version,
        committed=result.committed,
        novel=novel,
        novelty_threshold=cfg.novelty_threshold,
    )
