"""The nightly job: featurize what is new, maintain the table, retrain past a threshold, score.

Owns: the order of the nightly steps under the table's lock, which model the
score step uses (the version holding `train.alias`, else the last one the
job trained), and its summary. Must not: decide when to retrain or keep the
job's state (`imgfeat.nightly` does), hold the promotion rule
(`imgfeat.promotion`), parse arguments, or print anything but progress.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pyspark.sql import SparkSession

from imgfeat import delta, inputs, nightly, promotion, tracking
from imgfeat.config import NightlyConfig, TrainConfig
from imgfeat.errors import ConfigError, InputError
from imgfeat.runs.featurize import FeaturizeSummary, featurize_run
from imgfeat.runs.score import ScoreSummary, score_run
from imgfeat.runs.train import TrainSummary, train_run
from imgfeat.session import get_spark

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
    if "score" in steps:
        _check_score_input(cfg)
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


def _check_score_input(cfg: NightlyConfig) -> None:
    """Score reads folders of images: a table or zip `featurize.input` (which `score.input`
    defaults to) needs `score.input` set, said before the lock is taken and any step runs."""
    given = cfg.score.input
    kind = inputs.input_kind(given) if given else "images"
    if kind != "images":
        raise ConfigError(
            f"nightly score: score.input {given} is a {kind} input, and score reads folders of images; "
            "set score.input to the images' folder, or run --step featurize --step train"
        )


def _nightly_maintain(cfg: NightlyConfig, spark: SparkSession, featurizer: str) -> delta.Upkeep:
    """Compact the featurizer's small files and vacuum old ones, as `cfg.maintain` says."""
    m = cfg.maintain
    return delta.maintain(
        spark,
        cfg.featurize.table,
        featurizer,
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
        assert trained is not None  # retrain_reason always gives one for a table never trained on
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
    return nightly.write_state(summary.table, state, trained=nightly.Trained(r.version, sum(r.counts.values()), model))


def _promote(cfg: TrainConfig, spark: SparkSession, trained: TrainSummary) -> str:
    """`promotion.promote` for the version just trained (recorded as `trained.alias` when it
    takes `cfg.alias`); returns what happened, as a sentence."""
    assert trained.model_name and trained.model_version
    moved, line = promotion.promote(spark, cfg, trained.model_name, trained.model_version, trained.result)
    if moved:
        trained.alias = cfg.alias
    return line


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
