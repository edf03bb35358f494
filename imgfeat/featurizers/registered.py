"""Weights from MLflow: ``models:/NAME/latest``, ``models:/NAME/VERSION``, ``runs:/ID/path``.

Owns: downloading such a URI through MLflow (from the tracking store MLflow is
pointed at: `imgfeat.tracking.use_store`), finding the weights file in what
came down, and keeping it at a stable, content-addressed local path
(``~/.cache/imgfeat/weights/<sha256>.pt``, or under ``$IMGFEAT_CACHE``), which
becomes the spec's checkpoint location; its sha256 enters the fingerprint like
any checkpoint's. Must not: pick a tracking store, build models, or import Spark.

The download happens on the driver, when a featurizer is resolved. Spark
workers read the cached file by path: on a multi-node cluster, set
``IMGFEAT_CACHE`` to storage every node mounts (e.g. ``/dbfs/...``).

A URI naming a folder (a registered `imgfeat finetune` featurizer) must hold
``backbone.pt`` or exactly one ``*.pt`` / ``*.pth`` file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from imgfeat.errors import FeaturizerError
from imgfeat.featurizers.weights import file_sha256

#: The file `imgfeat finetune` registers, preferred in a folder.
BACKBONE_FILE = "backbone.pt"
_SCHEMES = ("models:/", "runs:/")


def is_mlflow_uri(value: str) -> bool:
    return value.startswith(_SCHEMES)


def cache_dir() -> Path:
    return Path(os.environ.get("IMGFEAT_CACHE") or Path.home() / ".cache" / "imgfeat") / "weights"


def download(uri: str) -> str:
    """Download `uri`'s weights file; returns its cached local path."""
    import mlflow
    from mlflow.exceptions import MlflowException

    dest = cache_dir()
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix=".download-") as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        except (MlflowException, OSError) as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise FeaturizerError(
                f"cannot download weights {uri} from {mlflow.get_tracking_uri()}: {message}"
            ) from None
        weights = _weights_file(local, uri)
        final = dest / f"{file_sha256(str(weights))}{weights.suffix or '.pt'}"
        if not final.exists():
            os.replace(weights, final)  # atomic: a concurrent download lands the same bytes
    return str(final)


def _weights_file(local: Path, uri: str) -> Path:
    if local.is_file():
        return local
    if (local / BACKBONE_FILE).is_file():
        return local / BACKBONE_FILE
    found = sorted(p for p in local.rglob("*") if p.suffix in (".pt", ".pth") and p.is_file())
    if len(found) != 1:
        names = ", ".join(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file()) or "nothing"
        raise FeaturizerError(f"{uri} holds no single weights file ({BACKBONE_FILE}, *.pt, *.pth): {names}")
    return found[0]
