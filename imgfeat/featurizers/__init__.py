"""Featurizers: a registry of image → embedding models, in the manner of timm.

Owns: the public featurizer API used by the rest of imgfeat. On the driver,
`resolve_featurizer(name, weights=..., pooling=..., layers=..., fold_bn=...)`
turns a request into a `FeaturizerSpec` (picklable data with a `fingerprint`);
on a worker, `load_featurizer(spec)` builds a `Featurizer` once, whose
`prepare(image)` and `embed(batch)` do the per-image and per-batch work.
`list_featurizers()` lists the tested names. Must not: decode bytes, cache
models across calls, or import Spark; those belong to decode / featurize.

Modules: `spec` (the spec and its fingerprint), `registry` (names, preprocessing,
resolve), `weights` (weights sources, sha256, checkpoints), `backbone` (timm /
torchvision networks, `layers`), `pooling`, `fold` (BatchNorm folding),
`featurizer` (the worker-side objects), `runtime` (torch or an exported ONNX
graph run by ONNX Runtime), `resolve` (a config's `featurizer:` section → spec).
"""

from typing import Any

from imgfeat.featurizers.featurizer import Featurizer, load_featurizer
from imgfeat.featurizers.spec import FeaturizerSpec, Projection

_REGISTRY_NAMES = ("DEFAULT_FEATURIZER", "FeaturizerInfo", "list_featurizers", "resolve_featurizer")


def __getattr__(name: str) -> Any:
    """The registry's names, imported on first use: the registry imports timm and
    torch, which a worker running exported ONNX graphs neither needs nor has."""
    if name in _REGISTRY_NAMES:
        from imgfeat.featurizers import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_FEATURIZER",
    "Featurizer",
    "FeaturizerInfo",
    "FeaturizerSpec",
    "Projection",
    "list_featurizers",
    "load_featurizer",
    "resolve_featurizer",
]
