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
from typing import IO, TYPE_CHECKING, Callable, Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from imgfeat import delta, faults, finetune, nightly, progress, reduce, sources, tracking
from imgfeat.config import (
    FeaturizeConfig,
    FeaturizerConfig,
    FinetuneConfig,
    NightlyConfig,
    ScoreConfig,
    ServeConfig,
    SparkConfig,
    TrackingConfig,
    TrainConfig,
    dump_config,
)
from imgfeat.decode import decode_image
from imgfeat.errors import ConfigError, InputError, Status
from imgfeat.featurize import MaxParam, WorkerOptions, featurize_listing, ship_graph
from imgfeat.featurizers import FeaturizerSpec
from imgfeat.featurizers.registered import BACKBONE_FILE, is_mlflow_uri
from imgfeat.featurizers.runtime import RuntimeChoice, choose_runtime
from imgfeat.session import get_spark
from imgfeat.train import TrainResult, join_columns, read_source, resolve_spec
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
    with tracking.run(cfg.tracking, "featurize", {"table": cfg.table}) as tracked:
        summary = _featurize(cfg, spec, runtime, spark, run_id or tracked)
        if tracked:
            tracking.log_params({**dump_config(cfg), "runtime": runtime.runtime})
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
    cfg: FeaturizeConfig, spec: FeaturizerSpec, runtime: RuntimeChoice, spark: SparkSession | None,
    run_id: str | None,
) -> FeaturizeSummary:
    spark = spark or get_spark(cfg.spark)
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
    use_store_for(cfg.featurizers, cfg.tracking)
    logs_model = cfg.tracking.enabled
    runtimes = [featurizer_runtime(f, resolve_spec(f), cfg.spark) for f in cfg.featurizers] if logs_model else []
    spark = spark or get_spark(cfg.spark)
    with tracking.run(cfg.tracking, "train", {"embeddings_table": cfg.table}) as run_id:
        result = train_model(spark, cfg)
        summary = TrainSummary(result, run_id)
        if run_id:
            tracking.log_params(
                {**dump_config(cfg), "xgboost": result.params, "runtime": [r.runtime for r in runtimes]}
            )
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
            logged = scoring.log_model(result, cfg.model_name, [r.graph_path for r in runtimes])
            summary.model_uri, summary.model_name, summary.model_version = logged.uri, logged.name, logged.version
    return summary


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
