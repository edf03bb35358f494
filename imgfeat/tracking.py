"""MLflow: where runs go, opening a run, and what a run records.

Owns: resolving the tracking store (the embedded default is a SQLite file,
`mlflow.db`, and an artifact folder, `mlartifacts/`, in the working
directory: no server to start; `tracking.uri` in config, else
`MLFLOW_TRACKING_URI`, points elsewhere: a server, Databricks), the
experiment, opening a run (or nothing, when tracking is off), and logging
params, metrics and lineage tags. Must not: train, featurize, or build the
served model (`scoring` logs and registers that, through this module's run).

Lineage tags all start with `imgfeat.` (`imgfeat.embeddings_table`,
`imgfeat.embeddings_version`, ...), so a search like
`tags."imgfeat.embeddings_version" = '3'` finds every model trained on a
table version.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

from imgfeat import console
from imgfeat.config import TrackingConfig
from imgfeat.errors import InputError

#: The embedded store, relative to the working directory.
DEFAULT_URI = "sqlite:///mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"
TAG_PREFIX = "imgfeat."
_MAX_PARAM = 6000  # MLflow's limit on a param value


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
    """`use_store`, then select (or create) the experiment.

    On a local SQLite store the experiment's artifacts go to `mlartifacts/`
    beside the database (MLflow's own default would be ./mlruns).
    """
    import mlflow

    uri = use_store(cfg)
    if mlflow.get_experiment_by_name(cfg.experiment) is None and uri.startswith("sqlite:///"):
        artifacts = Path(uri.removeprefix("sqlite:///")).absolute().parent / DEFAULT_ARTIFACTS
        with contextlib.suppress(Exception):  # another process created it first
            mlflow.create_experiment(cfg.experiment, artifact_location=artifacts.as_uri())
    mlflow.set_experiment(cfg.experiment)
    return uri


@contextlib.contextmanager
def run(cfg: TrackingConfig, job: str, tags: Mapping[str, str] | None = None) -> Iterator[str | None]:
    """Open an MLflow run for `job` (tagged `imgfeat.job` and `imgfeat.<tags>`) and
    yield its id; yield None when tracking is off.

    The run ends FINISHED, or FAILED if the body raises.
    """
    if not cfg.enabled:
        yield None
        return
    import mlflow

    configure(cfg)
    all_tags = {f"{TAG_PREFIX}{k}": v for k, v in {"job": job, **(tags or {})}.items()}
    with mlflow.start_run(run_name=job, tags=all_tags) as active:
        yield active.info.run_id


def log_params(params: Mapping[str, Any], prefix: str = "") -> None:
    """Log a (nested) mapping as flat `a.b.c` params; long values are cut to MLflow's limit."""
    import mlflow

    flat = _flatten(params, prefix)
    mlflow.log_params({k: v[:_MAX_PARAM] for k, v in flat.items()})


def log_metrics(metrics: Mapping[str, float]) -> None:
    import mlflow

    mlflow.log_metrics({k: float(v) for k, v in metrics.items()})


def set_tags(tags: Mapping[str, Any]) -> None:
    """Set `imgfeat.`-prefixed tags (non-strings as JSON)."""
    import mlflow

    mlflow.set_tags({f"{TAG_PREFIX}{k}": v if isinstance(v, str) else json.dumps(v) for k, v in tags.items()})


def log_dict(data: Mapping[str, Any], name: str) -> None:
    import mlflow

    mlflow.log_dict(dict(data), name)


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
