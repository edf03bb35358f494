"""Reduced dimensions: a PCA basis fitted once per (featurizer, dim) and kept with the table.

Owns: fitting the basis on a deterministic sample of the input, storing it as
`<table>/_imgfeat_pca/<base fingerprint>-<dim>.npz` (Delta ignores `_`
folders), and turning a full featurizer spec into the reduced one whose
fingerprint includes the basis' sha256. Must not: write table rows.

Why fit once and store: a projection refitted on every run would give the
same image different numbers in different runs; storing the basis beside the
table makes later runs (and scoring) project identically, and a new basis
(another sample, another dim) is a new fingerprint, so old rows never mix
with new ones.
"""

from __future__ import annotations

import io
import os
from dataclasses import replace

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from imgfeat.errors import InputError
from imgfeat.featurize import WorkerOptions, featurize_listing
from imgfeat.featurizers import FeaturizerSpec, Projection
from imgfeat.featurizers.weights import file_sha256
from imgfeat.sources import local_path

PCA_DIR = "_imgfeat_pca"


def basis_location(table: str, base: FeaturizerSpec, dim: int) -> str:
    return f"{table.rstrip('/')}/{PCA_DIR}/{base.fingerprint}-{dim}.npz"


def reduced_spec(base: FeaturizerSpec, location: str, dim: int) -> FeaturizerSpec:
    """`base` followed by the stored basis at `location`: a new name and fingerprint."""
    projection = Projection(location=location, sha256=file_sha256(location), in_dim=base.dim)
    return replace(base, name=f"{base.name}_pca{dim}", dim=dim, projection=projection)


def fit_pca(x: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and top-`dim` principal axes of `x` (rows = samples), signs fixed.

    The sign of each axis is chosen so its largest-magnitude loading is
    positive: SVD signs are arbitrary, and a stored basis must be reproducible.
    """
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    components = vt[:dim]
    flip = np.sign(components[np.arange(dim), np.abs(components).argmax(axis=1)])
    return mean.astype(np.float32), (components * flip[:, None]).astype(np.float32)


def ensure_basis(
    listing: DataFrame,
    base: FeaturizerSpec,
    table: str,
    dim: int,
    sample_size: int,
    opts: WorkerOptions,
) -> FeaturizerSpec:
    """The reduced spec, fitting and storing the basis first if the table has none.

    The sample is the first `sample_size` listed files ordered by a hash of
    their path (deterministic, spread over folders); it is featurized at full
    dimension on the cluster and the basis is fitted on the driver.
    """
    if not 1 <= dim < base.dim:
        raise InputError(f"featurizer.dim must be between 1 and {base.dim - 1} for {base.name}, got {dim}")
    location = basis_location(table, base, dim)
    if not _exists(location):
        sample = listing.orderBy(F.xxhash64("path"), "path").limit(sample_size)
        rows = featurize_listing(sample, base, opts).where(F.col("status") == "ok").select("embedding")
        vectors = rows.toArrow().column("embedding").to_pylist()
        if len(vectors) <= dim:
            raise InputError(
                f"PCA to {dim} dimensions needs more than {dim} readable images in the sample; "
                f"found {len(vectors)} (raise read.pca_sample or lower featurizer.dim)"
            )
        mean, components = fit_pca(np.asarray(vectors, dtype=np.float32), dim)
        _write_atomically(location, mean, components)
    return reduced_spec(base, location, dim)


def _exists(location: str) -> bool:
    local = local_path(location)
    if local is not None:
        return os.path.exists(local)
    import fsspec

    fs, path = fsspec.core.url_to_fs(location)
    return fs.exists(path)


def _write_atomically(location: str, mean: np.ndarray, components: np.ndarray) -> None:
    """Write then rename, so a concurrent or crashed run never sees half a basis."""
    buffer = io.BytesIO()
    np.savez(buffer, mean=mean, components=components)
    local = local_path(location)
    if local is not None:
        os.makedirs(os.path.dirname(os.path.abspath(local)), exist_ok=True)
        tmp = f"{local}.tmp-{os.getpid()}"
        with open(tmp, "wb") as handle:
            handle.write(buffer.getvalue())
        os.replace(tmp, local)
        return
    import fsspec

    with fsspec.open(location, "wb") as handle:  # object stores: a PUT is atomic
        handle.write(buffer.getvalue())
