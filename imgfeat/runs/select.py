"""The select job: featurize a labeled sample with every candidate, cross-validate, recommend.

Owns: the order of a select run (checks before Spark, the sample, each
candidate as a nested MLflow run: featurized into the real table through the
featurize job's path, timed, cross-validated through the train path; the
parent run records the choice `imgfeat train --featurizers auto` reads), and
its summary. Must not: hold the selection rule or the order candidates are
tried in (`imgfeat.selection`), parse arguments, or print anything but progress.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from imgfeat import delta, selection, sources, tracking
from imgfeat.config import BaselinesConfig, FeaturizeConfig, FeaturizerConfig, SelectConfig, TrackingConfig, TrainConfig
from imgfeat.cv import SPLIT_VERSION
from imgfeat.dataset import PRIMARY_METRIC, with_labels
from imgfeat.errors import InputError
from imgfeat.featurizers import FeaturizerSpec
from imgfeat.featurizers.resolve import resolve_spec
from imgfeat.featurizers.runtime import RuntimeChoice
from imgfeat.runs._shared import cv_metrics, featurizer_runtime, log_fold_metrics, require_input
from imgfeat.runs.featurize import featurize_listed, featurize_options
from imgfeat.session import get_spark
from imgfeat.train import cross_validate

log = logging.getLogger("imgfeat")


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
    uri = require_input(cfg.input)
    sources.check_input(uri, cfg.read.extensions)  # all of this before Spark starts
    delta.check_writable(cfg.table)
    names = selection.check_candidates(cfg.candidates, cfg.floor)
    featurizers = {n: FeaturizerConfig(name=n, batch_size=cfg.batch_size, runtime=cfg.runtime) for n in names}
    specs = {n: resolve_spec(f) for n, f in featurizers.items()}
    photos = sources.sample_local_files(uri, cfg.read.extensions, 6)
    runtimes = {n: featurizer_runtime(featurizers[n], specs[n], cfg.spark, photos) for n in names}
    started = time.monotonic()
    spark = spark or get_spark(cfg.spark)
    with tracking.run(cfg.tracking, "select", {"table": cfg.table}) as parent:
        with sources.list_images(spark, uri, cfg.read.extensions) as listing:
            sample = _select_sample(spark, cfg, listing)
            try:
                summary = _measure(cfg, spark, featurizers, specs, runtimes, sample, parent)
            finally:
                sample.unpersist()
        summary.seconds = time.monotonic() - started
        if parent:
            tracking.set_tags(
                {"recommend": summary.choice.name, "sample": str(summary.sample), "split_version": str(SPLIT_VERSION)}
            )
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
    labeled = with_labels(spark, listing.frame, cfg.labels).where(F.col("label").isNotNull())
    classes = labeled.select("label").distinct().limit(2).count()
    if classes < 2 and cfg.task != "regression":
        raise InputError(f"select needs at least 2 label values among the images under {cfg.input}, found {classes}")
    return selection.stratified_sample(labeled, cfg.sample, cfg.seed).select(*sources.LISTING_COLUMNS).cache()


def _measure(
    cfg: SelectConfig,
    spark: SparkSession,
    featurizers: dict[str, FeaturizerConfig],
    specs: dict[str, FeaturizerSpec],
    runtimes: dict[str, RuntimeChoice],
    sample: DataFrame,
    parent: str | None,
) -> SelectSummary:
    """`selection.measure` with this run's trial: each candidate a nested MLflow run."""
    n = sample.count()
    featurize_seconds = 0.0

    def trial(names: Sequence[str], ms: float | None) -> tuple[selection.Candidate, str]:
        nonlocal featurize_seconds
        name = selection.PAIR.join(names)
        tags = {"table": cfg.table, "candidate": name}
        if ms is None:
            tags["runtime"] = runtimes[name].runtime
        with tracking.run(cfg.tracking, "select-candidate", tags, nested=True) as child:
            if ms is None:  # one featurizer: into the table, then timed
                began = time.monotonic()
                fcfg = FeaturizeConfig(
                    input=cfg.input,
                    table=cfg.table,
                    read=cfg.read,
                    spark=cfg.spark,
                    featurizer=featurizers[name],
                    tracking=TrackingConfig(enabled=False),
                )
                opts = featurize_options(fcfg, spark, runtimes[name])
                # One run id per candidate: the table's commits are idempotent per run id.
                featurize_listed(
                    fcfg, specs[name], opts, spark, child or uuid.uuid4().hex, sources.Listing(sample, n, sample)
                )
                featurize_seconds += time.monotonic() - began
                ms = selection.ms_per_image(sample, specs[name], opts, cfg.timing_images)
            log.warning("imgfeat: select: cross-validating %s (%d folds)", name, cfg.split.folds)
            scores, features = cross_validate(spark, _train_config(cfg, names), sample)
            metric = PRIMARY_METRIC[features.task]
            found = selection.candidate(name, features.dim, scores, metric, ms)
            if cfg.tracking.enabled:
                tracking.log_metrics({**cv_metrics(scores), "ms_per_image": ms, "dim": features.dim})
                log_fold_metrics(scores)
        return found, metric

    measured, metric = selection.measure(list(specs), cfg.floor, cfg.pair, trial)
    return SelectSummary(
        parent,
        cfg.table,
        n,
        metric,
        measured,
        selection.recommend(measured),
        featurize_seconds=featurize_seconds,
        runtimes={k: r.runtime for k, r in runtimes.items()},
    )
