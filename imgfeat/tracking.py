"""MLflow: where runs go, opening a run, and what a run records.

Owns: resolving the tracking store (the embedded default is a SQLite file,
`mlflow.db`, and an artifact folder, `mlartifacts/`, in the working
directory: no server to start; `tracking.uri` in config, else
`MLFLOW_TRACKING_URI`, points elsewhere: a server, Databricks), the
experiment, opening a run (or nothing, when tracking is off), and logging
params, metrics and lineage, and the registry's version descriptions, tags
and aliases. Must not: train, featurize, or build the served model
(`scoring` logs and registers that, through this module's run).

Lineage is recorded twice, for two kinds of reader. MLflow's own dataset
inputs (`log_table_input`: a Delta source with path and version, and a
context such as `training` or `test`) are what the UI's Dataset column, the
run search and Databricks lineage understand. Tags starting with `imgfeat.`
(`imgfeat.embeddings_table`, `imgfeat.embeddings_version`, ...) are what
imgfeat's own tools and plain searches read:
`tags."imgfeat.embeddings_version" = '3'` finds every model trained on a
table version.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imgfeat import console
from imgfeat.config import TrackingConfig
from imgfeat.errors import InputError

if TYPE_CHECKING:
    from pyspark.sql.types import StructType

#: The embedded store, relative to the working directory.
DEFAULT_URI = "sqlite:///mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"
TAG_PREFIX = "imgfeat."
_MAX_PARAM = 6000  # MLflow's limit on a param value
#: MLflow 3's UI opens an experiment of this kind on its training runs
#: (without the tag it opens on the GenAI overview: traces, token usage).
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def tracking_uri(cfg: TrackingConfig) -> str:
    """`tracking.uri`, else $MLFLOW_TRACKING_URI, else the embedded SQLite store."""
    return cfg.uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def use_store(cfg: TrackingConfig) -> str:
    """Point MLflow (tracking and model registry) at the store; returns its URI.

    A relative SQLite path is made absolute, so a later change of directory
    does not move the store.
    """
    import mlflow

    # Its INFO lines on creating a new store would break the CLI's one-line errors.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no progress bars per download
    if console.log_path() is not None:
        # A quiet console: MLflow prints events (`Created version '1' of model ...`) straight to
        # stderr, past logging; imgfeat says which model version it registered itself.
        from mlflow.utils.logging_utils import disable_logging

        disable_logging()
    uri = tracking_uri(cfg)
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).absolute())
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def configure(cfg: TrackingConfig) -> str:
    """`use_store`, then select (or create) the experiment, as a model-training one.

    On a local SQLite store the experiment's artifacts go to `mlartifacts/`
    beside the database (MLflow's own default would be ./mlruns). An
    experiment without a kind (one made before imgfeat set it, or by hand)
    gets `EXPERIMENT_KIND`; a kind someone chose is kept.
    """
    import mlflow

    uri = use_store(cfg)
    if mlflow.get_experiment_by_name(cfg.experiment) is None:
        artifacts = None
        if uri.startswith("sqlite:///"):
            artifacts = (Path(uri.removeprefix("sqlite:///")).absolute().parent / DEFAULT_ARTIFACTS).as_uri()
        with contextlib.suppress(Exception):  # another process created it first
            mlflow.create_experiment(cfg.experiment, artifact_location=artifacts, tags=dict([EXPERIMENT_KIND]))
    experiment = mlflow.set_experiment(cfg.experiment)
    if EXPERIMENT_KIND[0] not in experiment.tags:
        mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, *EXPERIMENT_KIND)
    return uri


@contextlib.contextmanager
def run(
    cfg: TrackingConfig,
    job: str,
    tags: Mapping[str, str] | None = None,
    name: str | None = None,
    *,
    nested: bool = False,
) -> Iterator[str | None]:
    """Open an MLflow run for `job` (tagged `imgfeat.job` and `imgfeat.<tags>`, named
    `name` or `job`) and yield its id; yield None when tracking is off.

    Opened while another run is active (the nightly job's), it is nested
    under that run. The run ends FINISHED, or FAILED if the body raises.
    """
    if not cfg.enabled:
        yield None
        return
    import mlflow

    configure(cfg)
    all_tags = {f"{TAG_PREFIX}{k}": v for k, v in {"job": job, **(tags or {})}.items()}
    nested = nested or mlflow.active_run() is not None
    with mlflow.start_run(run_name=name or job, tags=all_tags, nested=nested) as active:
        yield active.info.run_id


def latest_tags(cfg: TrackingConfig, job: str, table: str) -> tuple[str, dict[str, str]] | None:
    """(run id, `imgfeat.` tags without the prefix) of the latest finished top-level `job` run
    on `table`, or None."""
    import mlflow

    configure(cfg)
    found = mlflow.search_runs(
        experiment_names=[cfg.experiment],
        filter_string=(
            f"tags.`{TAG_PREFIX}job` = '{job}' and tags.`{TAG_PREFIX}table` = '{table}' "
            "and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    if not found:
        return None
    tags = found[0].data.tags
    return found[0].info.run_id, {k.removeprefix(TAG_PREFIX): v for k, v in tags.items() if k.startswith(TAG_PREFIX)}


def experiment_link(experiment_id: str) -> str:
    """The MLflow UI's address (after host and port) of an experiment's training runs.

    MLflow 3.17's UI opens every experiment as its GenAI / Model training
    switch says (GenAI until a browser picks otherwise), whatever the
    experiment's kind; `workflowType=machine_learning` flips the switch, and
    the browser keeps it.
    """
    return f"/#/experiments/{experiment_id}?workflowType=machine_learning"


def name_run(name: str) -> None:
    """Rename the active run, once what tells it apart (a table version) is known."""
    import mlflow

    active = mlflow.active_run()
    assert active is not None, "name_run is called inside a tracked run"
    mlflow.MlflowClient().update_run(active.info.run_id, name=name)


def log_params(params: Mapping[str, Any], prefix: str = "") -> None:
    """Log a (nested) mapping as flat `a.b.c` params; long values are cut to MLflow's limit."""
    import mlflow

    flat = _flatten(params, prefix)
    mlflow.log_params({k: v[:_MAX_PARAM] for k, v in flat.items()})


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log metrics (at `step`, e.g. a fold's index, when given)."""
    import mlflow

    mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


def set_tags(tags: Mapping[str, Any]) -> None:
    """Set `imgfeat.`-prefixed tags (non-strings as JSON)."""
    import mlflow

    mlflow.set_tags({f"{TAG_PREFIX}{k}": v if isinstance(v, str) else json.dumps(v) for k, v in tags.items()})


def log_dict(data: Mapping[str, Any], name: str) -> None:
    import mlflow

    mlflow.log_dict(dict(data), name)


def log_table_input(
    path: str,
    version: int,
    context: str,
    *,
    rows: int | None = None,
    schema: StructType | None = None,
    subset: str = "",
) -> None:
    """Record version `version` of the Delta table at `path` as an input of the active
    run, in `context` (`training`, `test`, `scoring`, ...); a no-op without one.

    The table is never read: the dataset is its source (path + version, as
    MLflow's Delta source), a digest of those, `rows` (the profile, when
    known) and `schema` (a Spark schema, e.g. the table's contract). `subset`
    names a slice of the version (e.g. a split) so two slices of one version
    in one run stay two inputs (MLflow keeps one input per name + digest).
    """
    import mlflow

    if mlflow.active_run() is None:
        return
    location = _absolute(path)
    digest = hashlib.sha256(json.dumps([location, version, subset]).encode()).hexdigest()[:8]
    source = _classes()[0](path=location, delta_table_version=version)
    dataset = _classes()[1](source, Path(location.rstrip("/")).name, digest, _mlflow_schema(schema), rows)
    mlflow.log_input(dataset, context=context)


def log_source_input(uri: str, context: str, *, digest: str, rows: int | None = None) -> None:
    """Record a file a run read (a CSV or Parquet table naming images, a zip archive) as an
    input of the active run, in `context`: its URI (MLflow's local, S3 or HTTP source) and
    `digest`, a hash of its bytes that tells its versions apart; a no-op without a run.
    (A Delta table input is `log_table_input`: its version says it.)"""
    import warnings

    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    if mlflow.active_run() is None:
        return
    location = _absolute(uri)
    with warnings.catch_warnings():  # "can be interpreted in multiple ways": all of them local files
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(location)
    mlflow.log_input(_classes()[1](source, Path(location.rstrip("/")).name, digest, None, rows), context=context)


def _absolute(path: str) -> str:
    """A local table path made absolute (a relative one means nothing to another reader)."""
    scheme, sep, _ = path.partition(":")
    if sep and len(scheme) > 1:  # a URI (file:, s3:, dbfs:, ...); not a drive letter
        return path
    return str(Path(path).absolute())


def _mlflow_schema(schema: StructType | None):  # -> mlflow.types.Schema | None
    """A Spark schema as MLflow's (maps as `Map`: MLflow's own inference reads data for them)."""
    if schema is None:
        return None
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import Map
    from mlflow.types.utils import _infer_spark_type
    from pyspark.sql.types import MapType

    def kind(t: Any) -> Any:
        return Map(kind(t.valueType)) if isinstance(t, MapType) else _infer_spark_type(t)

    return Schema([ColSpec(kind(f.dataType), f.name, required=not f.nullable) for f in schema.fields])


@functools.cache
def _classes() -> tuple[type, type]:
    """The Delta source and dataset classes `log_table_input` records (defined on first
    use: importing mlflow.data costs every command a second, tracked or not)."""
    from mlflow.data.delta_dataset_source import DeltaDatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    class TableVersionSource(DeltaDatasetSource):
        """MLflow's Delta source leaves version 0 out of its dict (it tests `if version:`)."""

        def to_dict(self) -> dict[Any, Any]:
            return {**super().to_dict(), "delta_table_version": self.delta_table_version}

    class TableVersion(MetaDataset):
        """A Delta table version as metadata (source, digest, schema, row count); never loaded."""

        def __init__(self, source: Any, name: str, digest: str, schema: Any, rows: int | None) -> None:
            self._rows = rows
            super().__init__(source, name=name, digest=digest, schema=schema)

        @property
        def profile(self) -> dict[str, int] | None:
            return None if self._rows is None else {"num_rows": self._rows}

        def to_dict(self) -> dict[str, str]:
            out = super().to_dict()
            if self.profile is not None:
                out["profile"] = json.dumps(self.profile)
            return out

    return TableVersionSource, TableVersion


def _flatten(data: Mapping[str, Any], prefix: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value if isinstance(value, str) else json.dumps(value)
    return out


def registered_version(uri: str) -> tuple[str, str, str]:
    """(name, version, `models:/NAME/VERSION`) of a registry URI, checked to exist;
    (uri, "", uri) for other URIs (`runs:/...`, `models:/m-...`)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if not uri.startswith("models:/") or uri.startswith("models:/m-"):
        return uri, "", uri
    client = MlflowClient()
    rest = uri.removeprefix("models:/")
    try:
        if "@" in rest:
            name, alias = rest.split("@", 1)
            ver = str(client.get_model_version_by_alias(name, alias).version)
        else:
            name, _, ver = rest.partition("/")
            if ver in ("", "latest"):
                found = client.search_model_versions(f"name = '{name}'")
                if not found:
                    raise InputError(f"no registered model named {name!r}")
                ver = str(max(int(v.version) for v in found))
            else:
                client.get_model_version(name, ver)
    except MlflowException as exc:
        raise InputError(f"cannot load model {uri}: {exc.message}") from None
    return name, ver, f"models:/{name}/{ver}"


def log_epoch(metrics: Mapping[str, float], epoch: int) -> None:
    """Metrics of one training epoch (MLflow step = epoch), so they chart as curves."""
    import mlflow

    mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=epoch)


def log_artifacts(local_dir: str, artifact_path: str) -> str:
    """Log a folder's files under `artifact_path` of the active run; returns their artifact URI."""
    import mlflow

    mlflow.log_artifacts(local_dir, artifact_path)
    return mlflow.get_artifact_uri(artifact_path)


def register_artifacts(name: str, source: str, run_id: str) -> str:
    """Register logged artifacts (not an MLflow model: a weights folder) as a new
    version of `name`; returns the version. Call it last: a run that dies before
    leaves no version."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name)
    return str(client.create_model_version(name, source, run_id=run_id).version)


# ------------------------------------------------------------------------ the registry
def describe_version(name: str, version: str, description: str, tags: Mapping[str, str]) -> None:
    """Give a registered model version its description and `imgfeat.`-prefixed tags."""
    from mlflow import MlflowClient

    client = MlflowClient()
    client.update_model_version(name, version, description=description)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, f"{TAG_PREFIX}{key}", value)


def version_record(name: str, version: str) -> tuple[str, dict[str, str]]:
    """A registered version's description and its `imgfeat.` tags (prefix removed)."""
    from mlflow import MlflowClient

    found = MlflowClient().get_model_version(name, version)
    tags = {k.removeprefix(TAG_PREFIX): v for k, v in (found.tags or {}).items() if k.startswith(TAG_PREFIX)}
    return found.description or "", tags


def aliased_version(name: str, alias: str) -> str | None:
    """The version of model `name` that carries `alias`; None if none does (or no such model)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        aliases = MlflowClient().get_registered_model(name).aliases
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    return str(aliases[alias]) if alias in aliases else None


def set_alias(name: str, alias: str, version: str) -> None:
    """Point `alias` of model `name` at `version` (moving it from any other version)."""
    from mlflow import MlflowClient

    MlflowClient().set_registered_model_alias(name, alias, version)


def log_artifact(path: str) -> None:
    import mlflow

    mlflow.log_artifact(path)


def model_lineage(name: str, version: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """The train run of a registered model version: its id, params, and `imgfeat.` tags
    (prefix removed). Raises `InputError` for a model that is not registered."""
    from mlflow import MlflowClient

    if not version:
        raise InputError(f"{name} is not a registered model version: pass models:/NAME/VERSION")
    client = MlflowClient()
    run_id = client.get_model_version(name, version).run_id
    if not run_id:
        raise InputError(f"models:/{name}/{version} has no train run: insights needs the run's table and split")
    data = client.get_run(run_id).data
    tags = {k.removeprefix(TAG_PREFIX): v for k, v in data.tags.items() if k.startswith(TAG_PREFIX)}
    return run_id, dict(data.params), tags
