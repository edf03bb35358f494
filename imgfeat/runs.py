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

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from imgfeat import delta, sources
from imgfeat.config import FeaturizeConfig, dump_config
from imgfeat.errors import InputError
from imgfeat.featurize import WorkerOptions, featurize_listing
from imgfeat.featurizers import FeaturizerSpec, resolve_featurizer
from imgfeat.session import get_spark

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
        )

    def as_dict(self) -> dict:
        return asdict(self)


def featurizer_spec(cfg: FeaturizeConfig) -> FeaturizerSpec:
    f = cfg.featurizer
    return resolve_featurizer(
        f.name,
        weights=f.weights,
        weights_sha256=f.weights_sha256,
        pooling=f.pooling,
        gem_p=f.gem_p,
        layers=f.layers,
        fold_bn=f.fold_bn,
    )


def worker_options(cfg: FeaturizeConfig) -> WorkerOptions:
    return WorkerOptions(
        batch_size=cfg.featurizer.batch_size,
        max_bytes_in_flight=cfg.read.max_bytes_per_batch,
        max_pixels=cfg.read.max_pixels,
        decode_threads=cfg.read.decode_threads,
        device=cfg.featurizer.device,
    )


def config_sha256(cfg: FeaturizeConfig) -> str:
    return hashlib.sha256(json.dumps(dump_config(cfg), sort_keys=True).encode()).hexdigest()


def featurize_run(
    cfg: FeaturizeConfig, spark: SparkSession | None = None, run_id: str | None = None
) -> FeaturizeSummary:
    """Featurize what is new under `cfg.input` into `cfg.table`, as one commit."""
    if not cfg.input:
        raise InputError("no input: pass --input DIR|GLOB|URI or set `input:` in the config")
    spark = spark or get_spark(cfg.spark)
    spec = featurizer_spec(cfg)
    run_id = run_id or uuid.uuid4().hex
    started = time.monotonic()

    listing = sources.list_images(spark, cfg.input, cfg.read.extensions).cache()
    listed = listing.count()
    if listed == 0:
        raise InputError(
            f"no images under {cfg.input} (extensions: {', '.join(cfg.read.extensions)})"
        )
    todo = sources.only_new(listing, delta.existing_keys(spark, cfg.table, spec.fingerprint))
    log.warning("imgfeat: %d images listed under %s; featurizing what is new with %s", listed, cfg.input, spec.name)

    loads = spark.sparkContext.accumulator(0)
    rows = featurize_listing(
        todo, spec, worker_options(cfg), files_per_partition=cfg.read.files_per_partition, loads=loads
    ).withColumn("run_id", F.lit(run_id)).withColumn("featurized_at", F.current_timestamp())
    staged = delta.stage(rows, cfg.table, run_id)
    counts = delta.staged_counts(staged)
    summary = FeaturizeSummary(
        run_id=run_id,
        table=cfg.table,
        featurizer=spec.name,
        fingerprint=spec.fingerprint,
        listed=listed,
        skipped=listed - sum(counts.values()),
        counts=counts,
    )
    result = delta.commit(
        spark,
        staged,
        cfg.table,
        spec.name,
        run_id,
        metadata={
            "config_sha256": config_sha256(cfg),
            "featurizer": spec.name,
            "featurizer_fingerprint": spec.fingerprint,
            "counts": counts,
            "versions": library_versions(),
        },
    )
    listing.unpersist()
    summary.version, summary.committed, summary.writer = result.version, result.committed, result.writer
    summary.seconds = time.monotonic() - started
    summary.model_loads = int(loads.value)
    return summary


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
