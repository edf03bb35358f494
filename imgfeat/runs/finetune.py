"""The finetune job: fine-tune a featurizer on labeled images with TorchDistributor, log, register.

Owns: the order of a finetune run (checks before Spark, list → plan → check →
train → save the featurizer), its summary, and what its MLflow run records
(the version is registered last: a run that dies leaves none). Must not:
decide which images train, train, or write the featurizer's files itself
(`imgfeat.finetune` does), parse arguments, or print anything but progress.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from pyspark.sql import SparkSession

from imgfeat import cv, finetune, sources, tracking
from imgfeat.config import FinetuneConfig, dump_config
from imgfeat.errors import ConfigError
from imgfeat.featurizers import FeaturizerSpec
from imgfeat.featurizers.resolve import resolve_spec
from imgfeat.runs._shared import no_images, registered_where, require_input, use_store_for
from imgfeat.session import get_spark

log = logging.getLogger("imgfeat")


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
        kept = f"checkpoint {self.output}" if self.output else "not kept"
        where = registered_where("registered", self.model_name, self.model_version, kept)
        return [
            head,
            (
                f"{where}; fingerprint {self.fingerprint[:12]}; use it "
                f"with --weights {self.weights}; MLflow run {self.run_id}"
            ),
        ]

    def as_dict(self) -> dict:
        return {**asdict(self), "weights": self.weights}


def finetune_run(cfg: FinetuneConfig, spark: SparkSession | None = None) -> FinetuneSummary:
    """Fine-tune `cfg.featurizer` on the labeled images under `cfg.input` (train split only)
    with TorchDistributor; log the run and register the network as a featurizer.

    The model version is registered last, after training and logging succeeded:
    a run that dies leaves none.
    """
    uri = require_input(cfg.input)
    sources.check_input(uri, cfg.read.extensions)  # the cheap checks, before Spark starts
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
        with sources.list_images(spark, uri, cfg.read.extensions) as listing:
            if listing.count == 0:
                raise no_images(uri, cfg.read.extensions)
            plan = finetune.plan(spark, cfg, listing.frame, listing.count)
        finetune.check(plan, cfg)
        _log_plan(plan, cfg, base)
        result = finetune.fine_tune(finetune.job_for(plan, base, cfg))
        with tempfile.TemporaryDirectory(prefix="imgfeat-finetune-") as tmp:
            folder = Path(tmp) / "featurizer"
            folder.mkdir()
            tuned = finetune.save(cfg, base, plan, result, folder)
            summary = FinetuneSummary(
                run_id=run_id,
                featurizer=tuned.name,
                fingerprint=tuned.fingerprint,
                weights_sha256=tuned.weights_sha256 or "",
                task=plan.task,
                classes=plan.classes,
                counts=plan.counts,
                epochs=[asdict(e) for e in result.history],
                seconds=time.monotonic() - started,
                output=str(Path(cfg.output).absolute()) if cfg.output else None,
            )
            if run_id:
                _track_finetune(cfg, base, tuned, plan, result, folder, summary)
    return summary


def _log_plan(plan: finetune.Plan, cfg: FinetuneConfig, base: FeaturizerSpec) -> None:
    c = plan.counts
    skipped = {k.removeprefix("skipped_"): v for k, v in c.items() if k.startswith("skipped_")}
    if skipped:
        log.warning(
            "imgfeat: finetune skips %d undecodable image(s) (%s), e.g. %s",
            sum(skipped.values()),
            ", ".join(f"{k} {v}" for k, v in skipped.items()),
            plan.skipped_examples[0],
        )
    if c["unlabeled"]:
        log.warning("imgfeat: finetune: %d decodable images have no label and are not used", c["unlabeled"])
    log.warning(
        "imgfeat: fine-tuning %s (%s, %d classes) on %d train images, validating on %d (%d test images held out); "
        "%d epochs, %d process(es) x batch %d",
        base.name,
        plan.task,
        len(plan.classes),
        c["train"],
        c["validation"],
        c["test_held_out"],
        cfg.epochs,
        cfg.distributor.num_processes,
        cfg.batch_size,
    )


def _track_finetune(
    cfg: FinetuneConfig,
    base: FeaturizerSpec,
    tuned: FeaturizerSpec,
    plan: finetune.Plan,
    result: finetune.Result,
    folder: Path,
    summary: FinetuneSummary,
) -> None:
    """Log a finetune run (config, lineage tags, per-epoch and final metrics, the featurizer's
    files) and register those files as `cfg.model_name`, last."""
    tracking.log_params({**dump_config(cfg), "split_version": cv.SPLIT_VERSION})
    tracking.set_tags(
        {
            "base_fingerprint": base.fingerprint,
            "featurizer_fingerprint": tuned.fingerprint,
            "weights_sha256": summary.weights_sha256,
            "task": plan.task,
            "counts": plan.counts,
        }
    )
    for e in result.history:
        tracking.log_epoch(
            {
                "loss": e.loss,
                "images_per_second": e.images_per_second,
                **{f"validation_{k}": v for k, v in e.validation.items()},
            },
            e.epoch,
        )
    tracking.log_metrics(
        {
            "seconds": summary.seconds,
            "skipped_in_training": result.skipped,
            **{f"images_{k}": v for k, v in plan.counts.items()},
        }
    )
    source = tracking.log_artifacts(str(folder), "featurizer")
    if cfg.model_name:
        assert summary.run_id is not None  # _track_finetune runs inside the tracked run
        summary.model_name, summary.model_version = (
            cfg.model_name,
            tracking.register_artifacts(cfg.model_name, source, summary.run_id),
        )
