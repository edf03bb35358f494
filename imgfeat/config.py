"""Typed configuration: YAML files and `--set` overrides → frozen pydantic objects.

Owns: the schema of every job's config. Loading one (YAML, `--set`, one-line
errors) is `imgfeat.config_load`'s, re-exported here as `load_config` and
`dump_config`. Must not: read environment variables for anything
but defaults documented here, or be bypassed by code below the edge (library
code takes these objects, never dicts).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# The loader's two doors, re-exported: callers import them from here with the schemas.
from imgfeat.config_load import dump_config as dump_config
from imgfeat.config_load import load_config as load_config

#: Image file extensions the listing keeps (matched case-insensitively).
DEFAULT_EXTENSIONS = (
    "jpg",
    "jpeg",
    "png",
    "bmp",
    "gif",
    "webp",
    "tif",
    "tiff",
    "jfif",
    "ppm",
    "pgm",
    "pbm",
    "heic",
    "heif",
    "avif",
)


#: One wording for the `task` key of train, select and finetune.
_TASK = (
    "auto (strings, booleans and integers with <= 20 values are classes, else regression) "
    "| classification | regression."
)


class Section(BaseModel):
    """Base for every config object: unknown keys are errors, objects are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SparkConfig(Section):
    """The Spark session a job runs in (spark-submit's or Databricks' own when one exists)."""

    master: str | None = Field(
        None, description="Spark master; null keeps the session spark-submit or Databricks gives, else local[*]."
    )
    app_name: str = Field("imgfeat", description="Spark application name (unused when a session already exists).")
    conf: dict[str, str] = Field(
        default_factory=dict, description="Extra Spark settings, e.g. {spark.executor.memory: 4g}."
    )


class TrackingConfig(Section):
    """MLflow: where runs, models and the model registry live."""

    enabled: bool = Field(True, description="Log the run (params, metrics, lineage tags) and its model to MLflow.")
    uri: str | None = Field(
        None,
        description=(
            "MLflow tracking URI; null = $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working directory."
        ),
    )
    experiment: str = Field("imgfeat", description="MLflow experiment the runs are logged under.")


class FeaturizerConfig(Section):
    """A featurizer: registry name, weights and every option that changes its numbers (all in its fingerprint)."""

    name: str = Field(
        "efficientnet_lite0", description="Registry name (`imgfeat featurizers` lists them); any timm model name works."
    )
    weights: str = Field(
        "default",
        description="default (offline package weights, else the hub) | hub | random (tests) | a checkpoint path or URI "
        "| models:/NAME/VERSION | models:/NAME/latest | runs:/ID/path.",
    )
    weights_sha256: str | None = Field(None, description="Optional pin: refuse weights whose sha256 differs.")
    pooling: Literal["avg", "max", "avgmax", "gem"] = Field(
        "avg", description="Global pooling of the final feature map: avg | max | avgmax | gem."
    )
    gem_p: float = Field(3.0, description="p of GeM pooling (pooling: gem).")
    layers: tuple[int, ...] = Field(
        (-1,),
        description="Feature levels pooled and concatenated: [-1] = the final stage, [-1, -2] = also the one before.",
    )
    fold_bn: bool = Field(
        True,
        description=(
            "Fold BatchNorm into the convolutions: same numbers within "
            "1e-4, faster on CPU; false = the network as published."
        ),
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto (the task's GPU if Spark assigned one, else CPU) | cpu | cuda."
    )
    runtime: Literal["auto", "torch", "onnxruntime"] = Field(
        "auto",
        description=(
            "auto (ONNX Runtime on CPU when the exported graph matches "
            "torch within 1e-4, else torch) | torch | onnxruntime."
        ),
    )
    onnx_cache: str = Field(
        "~/.cache/imgfeat/onnx",
        description="Driver folder where exported ONNX graphs are cached (re-exported if their bytes change).",
    )
    autocast: bool = Field(
        True,
        description="On a GPU, run under bf16 (else fp16) autocast, about 2x faster; false = fp32; no effect on CPU.",
    )
    batch_size: int = Field(32, ge=1, le=4096, description="Images per forward pass (GPU: 128-256).")
    dim: int | None = Field(
        None,
        ge=1,
        description=(
            "Reduce embeddings to this many dims with a PCA basis "
            "fitted once and kept with the table; null = full size."
        ),
    )
    pca_sample: int = Field(5000, ge=2, description="Images the PCA basis is fitted on.")


class ReadConfig(Section):
    """Which files are read, and the memory guards on reading and decoding them."""

    extensions: tuple[str, ...] = Field(DEFAULT_EXTENSIONS, description="File extensions to read (case-insensitive).")
    max_bytes_per_batch: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="Bound on encoded bytes a worker holds in flight (memory guard for big photos).",
    )
    max_pixels: int = Field(
        100_000_000,
        ge=1,
        description="Decompression-bomb guard: an image with more pixels is a row with status too_large.",
    )
    decode_threads: int = Field(0, ge=0, description="Decode threads per task; 0 = one per task core.")
    files_per_partition: int = Field(
        256, ge=1, description="Listing rows per Spark task (more tasks = better balance)."
    )
    max_image_bytes: int = Field(2**28, ge=1024, description="Most bytes one image (file, URL, zip member) may have.")
    timeout_s: float = Field(30.0, gt=0, description="Seconds one remote request (http(s), s3) may take.")
    retries: int = Field(2, ge=0, le=10, description="Retries of a remote read after a timeout or dropped connection.")
    max_archive_members: int = Field(100_000, ge=1, description="A zip declaring more members is refused whole.")


class FeaturizeConfig(Section):
    """`imgfeat featurize`: images under `input` → rows in the Delta table at `table`."""

    input: str | None = Field(
        None,
        description="Images: a directory, glob or URI (recursive), a table (CSV, Parquet, Delta) naming images, "
        "or a .zip archive; required.",
    )
    input_format: Literal["auto", "images", "csv", "parquet", "delta", "zip"] = Field(
        "auto", description="auto: by extension (.zip, .csv, .parquet), delta with a _delta_log, else images."
    )
    image_columns: tuple[str, ...] = Field(
        ("path",), min_length=1, description="Columns of a table input (or a zip's CSV) naming images: docs/inputs.md."
    )
    table: str = Field(
        "warehouse/embeddings", description="Delta table of embeddings (local path, s3://, abfss://, dbfs:/ ...)."
    )
    featurizer: FeaturizerConfig = FeaturizerConfig()
    read: ReadConfig = ReadConfig()
    spark: SparkConfig = SparkConfig()
    tracking: TrackingConfig = TrackingConfig()


class SourceConfig(Section):
    """A table of per-image columns keyed by `path` (labels, tabular features)."""

    source: str | None = Field(None, description="CSV, Parquet or Delta path/URI (or a zip's CSV) naming images.")
    path_column: str = Field("path", description="Column naming each row's image (resolved as featurize does).")
    format: Literal["auto", "csv", "parquet", "delta"] = Field(
        "auto", description="auto: Delta if a _delta_log is there, else by extension (.csv, else Parquet)."
    )


class LabelsConfig(SourceConfig):
    """Labels (and tabular feature columns) keyed by `path`; no source: the parent folder name is the label."""

    label: str = Field("folder", description="`folder` = the image's parent folder name, or a column of `source`.")
    numeric: tuple[str, ...] = Field(
        (), description="Numeric columns of `source` added to the features (missing values are NaN)."
    )
    categorical: tuple[str, ...] = Field((), description="Categorical columns of `source` used as features.")
    encoding: Literal["onehot", "index"] = Field(
        "onehot",
        description="Categorical columns as onehot (a 0/1 feature per value seen in train) or index (a number).",
    )


class SplitConfig(Section):
    """A held-out test share, and k folds over the rest, of groups of copies (byte-identical
    or perceptual-hash neighbours: never split), stratified by label (`imgfeat.cv.with_split`)."""

    test: float = Field(0.2, gt=0, lt=0.9, description="Held-out share for the final test metrics.")
    folds: int = Field(5, ge=2, le=50, description="Cross-validation folds over the non-test images.")
    parallel: int = Field(
        0, ge=0, description="Fold fits at once: 0 = as many as Spark has task slots for (at most `folds`)."
    )
    seed: int = Field(0, description="Seed of the hash that orders the groups of copies before they are dealt out.")
    near_copy_distance: int = Field(
        8, ge=0, le=20, description="Perceptual-hash bits within which two images are near-copies, kept in one split."
    )

    @model_validator(mode="before")
    @classmethod
    def _validation_was_removed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "validation" in data:
            raise ValueError(
                "split.validation was removed: train now cross-validates over split.folds folds of the "
                "non-test images (their validation curves pick the boosting rounds) and refits on all of them; "
                "delete the key"
            )
        return data


class BaselinesConfig(Section):
    """Baselines fitted beside XGBoost on the same split, to put its metrics in context."""

    linear: bool = Field(True, description="Spark ML logistic / linear regression on the same features.")
    raw_pixels: bool = Field(True, description="XGBoost on a tiny grayscale thumbnail (leakage check).")
    raw_pixel_featurizer: str = Field("grayscale16", description="Featurizer of the raw-pixel baseline.")
    leakage_margin: float = Field(0.02, ge=0, description="Warn if raw pixels come within this of the model.")
    linear_reg_param: float = Field(
        0.01, ge=0, description="L2 regularization (regParam) of the linear baseline; features are standardized."
    )


class TrainConfig(Section):
    """`imgfeat train`: embeddings (+ tabular columns) → XGBoost on Spark → MLflow model."""

    table: str = Field("warehouse/embeddings", description="Embeddings Delta table written by `imgfeat featurize`.")
    version: int | None = Field(
        None, ge=0, description="Table version to read (time travel), recorded as lineage; null = the latest."
    )
    featurizers: tuple[FeaturizerConfig, ...] = Field(
        (FeaturizerConfig(),),
        min_length=1,
        description="Featurizers whose embeddings are concatenated, in order: names or featurizer sections "
        "(comma-separated names on the command line; auto = the latest `imgfeat select` choice for the table).",
    )
    labels: LabelsConfig = LabelsConfig()
    task: Literal["auto", "classification", "regression"] = Field("auto", description=_TASK)
    split: SplitConfig = SplitConfig()
    xgboost: dict[str, Any] = Field(
        default_factory=dict,
        description="Params of xgboost.spark's SparkXGBClassifier / SparkXGBRegressor, merged over imgfeat's defaults.",
    )
    baselines: BaselinesConfig = BaselinesConfig()
    model_name: str | None = Field(
        "imgfeat",
        description="Registered MLflow model name (a new version per run); null = log the model in the run only.",
    )
    alias: str | None = Field(
        None,
        description="Point this alias (e.g. champion) at the registered version; nightly: only when it beats "
        "the aliased version on the same test split.",
    )
    spark: SparkConfig = SparkConfig()
    tracking: TrackingConfig = TrackingConfig()

    @field_validator("alias")
    @classmethod
    def _mlflow_alias(cls, value: str | None) -> str | None:
        if value is not None and (
            not re.fullmatch(r"[A-Za-z0-9_-]{1,255}", value)
            or value.lower() == "latest"
            or re.fullmatch(r"[vV]\d+", value)
        ):
            raise ValueError(f"{value!r} is not an MLflow alias (letters, digits, _ and -; not latest, not v<number>)")
        return value

    @model_validator(mode="after")
    def _alias_needs_a_registered_model(self) -> TrainConfig:
        if self.alias and not self.model_name:
            raise ValueError(f"alias {self.alias!r} needs a registered model: set model_name")
        return self

    @field_validator("featurizers", mode="before")
    @classmethod
    def _names_are_sections(cls, value: Any) -> Any:
        if isinstance(value, (str, dict)):
            value = [value]
        return [{"name": v} if isinstance(v, str) else v for v in value] if isinstance(value, (list, tuple)) else value


class SelectConfig(Section):
    """`imgfeat select`: featurize a labeled sample with each candidate featurizer (into the
    real table), cross-validate each, recommend one (see `imgfeat.selection` for the rule)."""

    input: str | None = Field(None, description="Directory, glob or URI of the images (required).")
    table: str = Field("warehouse/embeddings", description="Embeddings Delta table the sample is featurized into.")
    candidates: tuple[str, ...] = Field(
        (), description="Featurizer names; empty = every featurizer whose default weights are available offline."
    )
    floor: str | None = Field("grayscale16", description="Baseline candidate always tried; null = none.")
    pair: bool = Field(True, description="Also try the two best candidates' embeddings concatenated.")
    sample: int = Field(1000, ge=10, description="Labeled images featurized and cross-validated (stratified).")
    seed: int = Field(0, description="Seed of the stratified sample.")
    timing_images: int = Field(64, ge=1, description="Images each candidate is timed on (after it is warm).")
    labels: LabelsConfig = LabelsConfig()
    task: Literal["auto", "classification", "regression"] = Field("auto", description=_TASK)
    split: SplitConfig = SplitConfig()
    xgboost: dict[str, Any] = Field(default_factory=dict, description="As train's `xgboost:`.")
    batch_size: int = Field(32, ge=1, le=4096, description="Images per forward pass.")
    runtime: Literal["auto", "torch", "onnxruntime"] = Field(
        "auto", description="As featurize's `featurizer.runtime`: select times what featurize will run."
    )
    read: ReadConfig = ReadConfig()
    spark: SparkConfig = SparkConfig()
    tracking: TrackingConfig = TrackingConfig()

    @field_validator("candidates", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        return tuple(v.strip() for v in value.split(",") if v.strip()) if isinstance(value, str) else value


class ScoreConfig(Section):
    """`imgfeat score`: images (+ tabular columns) → a registered model → a Delta table of scores."""

    model: str | None = Field(
        None, description="models:/NAME/VERSION, models:/NAME@ALIAS, models:/NAME/latest, runs:/ID/model."
    )
    input: str | None = Field(None, description="Directory, glob or URI of images (required).")
    output: str = Field(
        "warehouse/scores", description="Scores Delta table: one row per (path, model_name, model_version)."
    )
    table: str | None = Field(
        "warehouse/embeddings", description="Embeddings table whose rows are reused; null = featurize every image."
    )
    tabular: SourceConfig = Field(
        SourceConfig(), description="The tabular feature columns the model was trained with, keyed by `path`."
    )
    batch_size: int = Field(32, ge=1, le=4096, description="Images per forward pass.")
    novelty_threshold: float = Field(
        99.0, ge=0, le=100, description="Count images whose novelty percentile is at least this."
    )
    read: ReadConfig = ReadConfig()
    spark: SparkConfig = SparkConfig()
    tracking: TrackingConfig = TrackingConfig()


class ServeLimits(Section):
    """What one request may ask of the served model; checked before any image is decoded."""

    max_body_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024,
        description="Largest request body in bytes (Databricks Model Serving caps it at 16 MB); more is HTTP 413.",
    )
    max_rows: int = Field(256, ge=1, description="Most rows (images or records) in one request; more is HTTP 400.")
    max_image_bytes: int = Field(
        12 * 1024 * 1024, ge=1024, description="Largest encoded image in one row; a bigger one is a `too_large` row."
    )
    max_pixels: int = Field(
        40_000_000,
        ge=1,
        description="Most pixels an image may declare; a bigger one is a `too_large` row, never decoded.",
    )
    busy_after_s: float = Field(
        50.0, gt=0, description="GET /ping answers 503 while a request has been scoring longer than this."
    )


class ServePaths(Section):
    """Server-side `path` input: off unless the deployer names one root the server may read."""

    root: str | None = Field(
        None,
        description="Folder (or URL prefix, with allow_urls) that `path` rows may name; null = `path` input refused.",
    )
    allow_urls: bool = Field(
        False, description="Let `path` be a URL under `root` (root must then be a URL, e.g. s3://bucket/images/)."
    )
    read_timeout_s: float = Field(
        5.0, gt=0, description="Seconds one file read may take; slower is a `read_error` row."
    )


class ServeConfig(Section):
    """`imgfeat serve`: a registered model behind MLflow's scoring server (REST)."""

    model: str | None = Field(None, description="models:/NAME/VERSION, models:/NAME/latest, models:/NAME@alias.")
    host: str = Field("127.0.0.1", description="Interface to listen on; 0.0.0.0 for every interface.")
    port: int = Field(5000, ge=1, le=65535, description="TCP port of the REST API (POST /invocations, GET /ping).")
    workers: int = Field(1, ge=1, description="Server processes; each loads the model once.")
    limits: ServeLimits = ServeLimits()
    paths: ServePaths = ServePaths()
    tracking: TrackingConfig = TrackingConfig()


class DistributorConfig(Section):
    """How `pyspark.ml.torch.distributor.TorchDistributor` runs the training processes."""

    num_processes: int = Field(1, ge=1, description="Training processes (DDP ranks); with use_gpu, one per GPU.")
    local_mode: bool = Field(
        True, description="true: the processes run on the driver; false: one per Spark barrier task (a cluster)."
    )
    use_gpu: bool = Field(False, description="Train on GPUs (nccl backend); false = CPU (gloo backend).")


class FinetuneConfig(Section):
    """`imgfeat finetune`: labeled images → a fine-tuned featurizer, registered in MLflow.

    Labels and the split are read exactly as `imgfeat train` reads them: keep
    `labels` and `split` equal to train's, so fine-tuning sees only its train split.
    """

    input: str | None = Field(None, description="Directory, glob or URI of the labeled images (required).")
    featurizer: FeaturizerConfig = Field(
        FeaturizerConfig(),
        description="The network to start from (name, weights, pooling, gem_p, layers); the other keys are unused.",
    )
    labels: LabelsConfig = LabelsConfig()
    task: Literal["auto", "classification", "regression"] = Field("auto", description=_TASK)
    split: SplitConfig = SplitConfig()
    epochs: int = Field(2, ge=1, description="Passes over the train split.")
    batch_size: int = Field(16, ge=2, le=4096, description="Images per step and process.")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate of the new head.")
    backbone_lr: float = Field(1e-4, ge=0, description="Peak learning rate of the network (0 = frozen).")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (not on biases and norms).")
    warmup: float = Field(0.1, ge=0, lt=1, description="Share of the steps with a linear warm-up; cosine decay after.")
    hflip: bool = Field(True, description="Random horizontal flips.")
    freeze_bn_stats: bool = Field(
        True, description="Keep BatchNorm running statistics (small per-process batches make them noisy)."
    )
    mixed_precision: bool = Field(True, description="On GPU: bf16 (else fp16) autocast. No effect on CPU.")
    seed: int = Field(0, description="Seed of the head's initialization and the order of the images.")
    distributor: DistributorConfig = DistributorConfig()
    model_name: str | None = Field(
        "imgfeat-finetuned",
        description="Registered MLflow model name of the fine-tuned featurizer; null = don't register.",
    )
    output: str | None = Field(None, description="Also write the backbone checkpoint to this file path.")
    read: ReadConfig = ReadConfig()
    spark: SparkConfig = SparkConfig()
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="after")
    def _keeps_a_result(self) -> FinetuneConfig:
        if self.output is None and not (self.tracking.enabled and self.model_name):
            raise ValueError(
                "nothing would keep the fine-tuned weights: set output, or tracking.enabled and model_name"
            )
        if self.labels.numeric or self.labels.categorical:
            raise ValueError("labels.numeric / labels.categorical are train's features; fine-tuning uses images only")
        if self.featurizer.dim is not None:
            raise ValueError("featurizer.dim: a PCA-reduced featurizer cannot be fine-tuned; reduce when featurizing")
        return self


class NearDuplicatesConfig(Section):
    """Pairs of images whose embeddings are nearly identical (found in Spark, never collected)."""

    threshold: float = Field(0.98, gt=0, lt=1, description="Cosine similarity at or above which a pair is reported.")
    bits: int = Field(16, ge=1, le=62, description="Random hyperplanes per blocking key (more = smaller blocks).")
    tables: int = Field(12, ge=1, le=64, description="Blocking keys per image (more = better recall, more pairs).")
    show: int = Field(24, ge=0, description="Pairs shown with thumbnails (all are counted).")


class OutliersConfig(Section):
    """Images far from their nearest neighbours (distance to the k nearest of the sample)."""

    k: int = Field(5, ge=1, description="Neighbours averaged.")
    z: float = Field(3.5, gt=0, description="Modified z-score (median/MAD) above which an image counts as an outlier.")
    show: int = Field(12, ge=0, description="Outliers shown with thumbnails.")


class InsightsConfig(Section):
    """`imgfeat insights`: a registered model + its embeddings table → one HTML report + an MLflow run."""

    model: str | None = Field(None, description="models:/NAME/VERSION, models:/NAME/latest, models:/NAME@alias.")
    table: str | None = Field(None, description="Embeddings table; null = the one the model was trained on.")
    output: str = Field("insights", description="Folder for report.html.")
    sample: int | None = Field(
        None, ge=2, description="Images projected; null = 2000 or all if fewer (more than the table has is an error)."
    )
    projection: Literal["umap", "trimap", "pca"] = Field(
        "umap",
        description="umap: repeatable for a seed; trimap: DataRobot's, not bit-repeatable; pca: linear, instant.",
    )
    seed: int = Field(0, description="Seed of the sample and the projection.")
    thumbnail_px: int = Field(64, ge=16, le=256, description="Longest side of the embedded thumbnails.")
    near_duplicates: NearDuplicatesConfig = NearDuplicatesConfig()
    outliers: OutliersConfig = OutliersConfig()
    activation_maps: int = Field(2, ge=0, description="Test images per class and outcome (right, wrong) mapped.")
    errors_per_class: int = Field(4, ge=0, description="Most confident wrong predictions shown per true class.")
    novelty_threshold: float = Field(99.0, ge=0, le=100, description="Novelty percentile counted as unlike training.")
    spark: SparkConfig = SparkConfig()
    tracking: TrackingConfig = TrackingConfig()


class RetrainPolicy(Section):
    """When the nightly job retrains: enough `ok` rows new or changed since its last training."""

    min_new_rows: int | None = Field(1000, ge=1, description="Retrain at this many new or changed rows; null = off.")
    min_new_fraction: float | None = Field(
        0.05, gt=0, description="Or at this share of the rows the model was trained on; null = off."
    )


class LockConfig(Section):
    """The table's lock (<table>/_imgfeat_lock), held for the whole nightly run."""

    stale_after_hours: float = Field(
        12.0, gt=0, description="A lock older than this is taken over (a dead owner on this host: at once)."
    )


class MaintainConfig(Section):
    """Table upkeep the nightly job does after its featurize step (`delta.maintain`)."""

    compact: bool = Field(True, description="Rewrite the featurizer's small files into files of about target_file_mb.")
    target_file_mb: int = Field(128, ge=1, description="Size compaction aims at, MB.")
    vacuum_retention_hours: int | None = Field(
        168,
        ge=168,
        description=(
            "Delete files no version of the last this-many hours uses (min 168, Delta's default); null = never."
        ),
    )


#: The alias the nightly job moves to a retrained version that beats the current one.
NIGHTLY_ALIAS = "champion"


class NightlyConfig(Section):
    """`imgfeat nightly`: featurize what is new, retrain past a threshold, score.

    `train.table` and `score.table` default to `featurize.table` (and must
    equal it), `score.input` to `featurize.input`, `train.alias` to
    `champion`; top-level `spark` and `tracking` apply to every step that
    does not set its own.
    """

    featurize: FeaturizeConfig = Field(
        FeaturizeConfig(),
        description="The featurize step: keys of conf/featurize.yaml; its table is train's and score's.",
    )
    train: TrainConfig = Field(
        TrainConfig(), description="The train step: keys of conf/train.yaml; alias defaults to champion."
    )
    score: ScoreConfig = Field(
        ScoreConfig(), description="The score step: keys of conf/score.yaml; input defaults to featurize.input."
    )
    retrain: RetrainPolicy = RetrainPolicy()
    lock: LockConfig = LockConfig()
    maintain: MaintainConfig = MaintainConfig()
    spark: SparkConfig = Field(SparkConfig(), description="Spark settings of every step that does not set its own.")
    tracking: TrackingConfig = Field(
        TrackingConfig(),
        description=(
            "MLflow settings of every step that does not set its own "
            "(keep enabled: score uses the model train registers)."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _share_table_and_settings(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        steps = {s: dict(data.get(s) or {}) for s in ("featurize", "train", "score")}
        for step in steps.values():
            for shared in ("spark", "tracking"):
                if shared in data:
                    step.setdefault(shared, data[shared])
        table = steps["featurize"].get("table", FeaturizeConfig.model_fields["table"].default)
        steps["train"].setdefault("table", table)
        if steps["train"].get("model_name", "") is not None:
            steps["train"].setdefault("alias", NIGHTLY_ALIAS)
        steps["score"].setdefault("table", table)
        if steps["featurize"].get("input"):
            steps["score"].setdefault("input", steps["featurize"]["input"])
        return {**data, **steps}

    @model_validator(mode="after")
    def _one_table(self) -> NightlyConfig:
        if not self.featurize.table == self.train.table == self.score.table:
            raise ValueError(
                f"train.table ({self.train.table}) and score.table ({self.score.table}) must be "
                f"featurize.table ({self.featurize.table}); leave them out to share it"
            )
        return self
