"""Resolving a config's `featurizer:` section into a `FeaturizerSpec`.

Owns: the one mapping from a `FeaturizerConfig` (name, weights, pooling,
layers, BN folding) to the registry's `resolve_featurizer` call, used by every
job that names a featurizer (featurize, select, train, finetune). Must not:
import Spark or Delta, or read a table: the featurizer a table's rows came from
(with its stored PCA basis) is `imgfeat.dataset.table_spec`.
"""

from __future__ import annotations

from imgfeat.config import FeaturizerConfig
from imgfeat.featurizers.spec import FeaturizerSpec


def resolve_spec(f: FeaturizerConfig) -> FeaturizerSpec:
    """The featurizer a config section names (validated, weights hashed), before any PCA."""
    from imgfeat.featurizers.registry import resolve_featurizer  # imports timm and torch: drivers only

    return resolve_featurizer(
        f.name,
        weights=f.weights,
        weights_sha256=f.weights_sha256,
        pooling=f.pooling,
        gem_p=f.gem_p,
        layers=f.layers,
        fold_bn=f.fold_bn,
    )
