"""What several job modules of `imgfeat.runs` share: the checks and errors written once,
the worker options built once, the featurizer resolved for a job, what a run records.

Owns: what run summaries derive and log alike (`CountedRun`, `registered_where`,
`log_written_table`), the "no input" / "no model" / "no images" errors, `WorkerOptions` built
from a job's config (`worker_options`), pointing MLflow at a run's store when
weights come from it (`use_store_for`), resolving a featurizer and its runtime
on the driver (`featurizer_spec`, `featurizer_runtime`, `verification_photos`),
and the numbers runs record (`library_versions`, `config_sha256`, `bad_count`,
`cv_metrics`, `log_fold_metrics`). Must not: run a job or a stage itself.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from imgfeat import delta, sources, tracking
from imgfeat.config import FeaturizeConfig, FeaturizerConfig, ReadConfig, SparkConfig, TrackingConfig, dump_config
from imgfeat.cv import Scores
from imgfeat.decode import decode_image
from imgfeat.errors import InputError, Status
from imgfeat.featurize import WorkerOptions
from imgfeat.featurizers import FeaturizerSpec
from imgfeat.featurizers.registered import is_mlflow_uri
from imgfeat.featurizers.resolve import resolve_spec
from imgfeat.featurizers.runtime import RuntimeChoice, choose_runtime
from imgfeat.readers import ReadLimits

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


class CountedRun:
    """What a run summary derives from its `counts` (images by status) and `seconds`.

    Why: the featurize and score summaries count, time and list their images alike.
    """

    counts: dict[str, int]
    seconds: float
    version: int | None  # the table version the run wrote

    @property
    def images(self) -> int:
        """The images the run counted, whatever their status."""
        return sum(self.counts.values())

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def by_status(self, none: str) -> str:
        """`counts` as a summary line shows them (`bad 1, ok 9`); `none` where there are none."""
        return ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items())) or none

    def counted_metrics(self, version_key: str) -> dict[str, Any]:
        """The MLflow metrics every counted run logs beside its own: seconds, images per second,
        the table version it wrote (as `version_key`) and a `count_<status>` per status."""
        return {
            "seconds": self.seconds,
            "images_per_second": self.images_per_second,
            **({version_key: self.version} if self.version is not None else {}),
            **{f"count_{k}": v for k, v in self.counts.items()},
        }


def log_written_table(spark: SparkSession, table: str, version: int, context: str, contract: delta.Contract) -> None:
    """Record the table version a run wrote as its MLflow dataset (`context`), with its rows and schema."""
    rows = delta.row_count(spark, table, version)
    tracking.log_table_input(table, version, context, rows=rows, schema=contract.spark_schema)


def registered_where(kind: str, name: str | None, version: str | None, otherwise: str) -> str:
    """Where a run's model went, as its summary line says it: `<kind> NAME version V` when the
    run registered a version, else `otherwise` (a checkpoint, an unregistered model, not kept)."""
    return f"{kind} {name} version {version}" if version else otherwise


def require_input(given: str | None) -> str:
    """`given` (a job's `input:`), or the one "no input" error every job that reads images raises."""
    if not given:
        raise InputError("no input: pass --input DIR|GLOB|URI or set `input:` in the config")
    return given


def require_model(given: str | None) -> str:
    """`given` (a job's `model:`), or the one "no model" error every job that uses a model raises."""
    if not given:
        raise InputError("no model: pass --model models:/NAME/VERSION (or models:/NAME/latest)")
    return given


def no_images(where: str | None, extensions: Sequence[str]) -> InputError:
    """The error of a listing that found nothing under `where`."""
    return InputError(f"no images under {where} (extensions: {', '.join(extensions)})")


def worker_options(
    read: ReadConfig, batch_size: int, featurizer: FeaturizerConfig | None = None, graph: str | None = None
) -> WorkerOptions:
    """What Spark workers need besides the model: `read`'s limits, `batch_size`, and the
    featurizer's device and autocast (WorkerOptions' defaults without one)."""
    where: dict[str, Any] = {"device": featurizer.device, "autocast": featurizer.autocast} if featurizer else {}
    return WorkerOptions(
        batch_size=batch_size,
        max_bytes_in_flight=read.max_bytes_per_batch,
        max_pixels=read.max_pixels,
        decode_threads=read.decode_threads,
        graph=graph,
        read=read_limits(read),
        **where,
    )


def read_limits(read: ReadConfig) -> ReadLimits:
    """`read`'s timeout, retries and byte cap, as the readers take them."""
    return ReadLimits(timeout_s=read.timeout_s, retries=read.retries, max_bytes=read.max_image_bytes)


def use_store_for(featurizers: Sequence[FeaturizerConfig], cfg: TrackingConfig) -> None:
    """Point MLflow at the run's store when a featurizer's weights are a models:/ or runs:/ URI
    (they are downloaded from there while the featurizer is resolved)."""
    if any(is_mlflow_uri(f.weights) for f in featurizers):
        tracking.use_store(cfg)


def featurizer_spec(cfg: FeaturizeConfig) -> FeaturizerSpec:
    """The featurizer a featurize config names, resolved (from the run's store if need be)."""
    use_store_for([cfg.featurizer], cfg.tracking)
    return resolve_spec(cfg.featurizer)


def featurizer_runtime(
    f: FeaturizerConfig, spec: FeaturizerSpec, spark_cfg: SparkConfig, photos: Sequence[str] = ()
) -> RuntimeChoice:
    """`f.runtime` resolved for `spec` on the driver, before Spark starts: exports
    and verifies the ONNX graph (cached) on scikit-learn's two sample photos plus
    `photos` (files of the run's own input). Raises `RuntimeUnavailable` (exit 2)
    only for an explicit `runtime: onnxruntime`."""
    return choose_runtime(
        spec,
        f.runtime,
        device=f.device,
        gpu_visible=_gpu_visible(spark_cfg),
        photos=verification_photos(photos),
        cache_dir=f.onnx_cache,
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


def bad_count(counts: dict[str, int]) -> int:
    """Images whose status is not ok, from counts by status."""
    return sum(n for status, n in counts.items() if status != Status.OK.value)


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
