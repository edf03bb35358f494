"""Activation maps: which regions of an image drove the model's prediction.

Owns: `ShapCAM`, the class activation map of an XGBoost model on pooled CNN
features (docs/insights.md derives it): the featurizer's last feature map
A (C×h×w, before pooling), each channel's SHAP contribution phi_c to the
predicted class's margin (xgboost `pred_contribs`), spread over the map by
the channel's pooling shares s_c(ij) (`pool_shares`: for avg pooling
A_c(ij) / sum A_c), summed over channels: M(ij) = sum_c phi_c s_c(ij). M sums to
the featurizer's part of the margin, so a region's value is how much of the
prediction it explains. Shown: the positive part, upsampled, scaled to [0, 1].
Must not: decode files, render images, or import Spark (insights does that).

Maps exist for the first featurizer of a model when it is a torch CNN pooled
from its final map (not PCA-reduced, one layer, not a token model). A model
that scores with an ONNX graph is mapped through the torch network of the
same weights (`model.torch_featurizers`), once `agreement` shows that network
gives the graph's embeddings (cosine > `AGREEMENT` on the mapped images).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from imgfeat.errors import FeaturizerError
from imgfeat.features import FeatureSpec
from imgfeat.featurizers import Featurizer
from imgfeat.featurizers.featurizer import TorchFeaturizer
from imgfeat.featurizers.pooling import pool_shares

#: The least cosine between the torch network's and the scoring graph's embeddings
#: of an image for maps of that network to explain the graph's predictions.
AGREEMENT = 0.999


def agreement(trunk: Featurizer, scoring: Featurizer, batch: np.ndarray) -> float:
    """The least cosine over `batch` (prepared images) between `trunk`'s and `scoring`'s embeddings."""
    a, b = trunk.embed(batch).astype(np.float64), scoring.embed(batch).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cosine = (a * b).sum(axis=1) / np.maximum(norms, 1e-12)
    return float(cosine.min()) if len(cosine) else 1.0


def unsupported(featurizer: Featurizer) -> str | None:
    """Why `featurizer` has no activation maps, or None when it has."""
    spec = featurizer.spec
    if spec.projection is not None:
        return f"{spec.name} is PCA-reduced to {spec.dim} dims: its dims are not channels"
    if not isinstance(featurizer, TorchFeaturizer) or not hasattr(featurizer.network, "feature_map"):
        return f"{spec.name} is not a CNN with a feature map"
    if tuple(spec.layers) != (-1,):
        return f"{spec.name} concatenates layers {spec.layers}: maps need the final map alone"
    return None


class ShapCAM:
    """SHAP-weighted CAM of `booster` (features per `features`) through the first featurizer."""

    def __init__(self, featurizer: Featurizer, booster: Any, features: FeatureSpec) -> None:
        why = unsupported(featurizer)
        if why:
            raise FeaturizerError(f"no activation maps: {why}")
        if features.task != "classification":
            raise FeaturizerError("no activation maps: the model is a regression")
        assert isinstance(featurizer, TorchFeaturizer)
        self.featurizer = featurizer
        self.booster = booster
        self.features = features

    def feature_maps(self, batch: np.ndarray) -> torch.Tensor:
        """(N, S, S, 3) uint8 prepared images → (N, C, h, w) float32 final feature maps."""
        with torch.inference_mode():
            network: Any = self.featurizer.network  # our backbone module: `feature_map` is not nn.Module's
            return network.feature_map(self.featurizer.to_input(batch)).float().cpu()

    def contributions(self, x: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """(N, C) SHAP contributions of the first featurizer's dims to each row's class margin."""
        import xgboost

        phi = self.booster.predict(xgboost.DMatrix(x, missing=np.nan), pred_contribs=True)
        channels = self.featurizer.spec.dim
        if phi.ndim == 3:  # multi-class: (N, classes, features + bias)
            return phi[np.arange(len(x)), classes, :channels]
        sign = np.where(np.asarray(classes) == 1, 1.0, -1.0)[:, None]  # binary: toward class 1's logit
        return sign * phi[:, :channels]

    def raw(self, batch: np.ndarray, x: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """(N, h, w) M(ij) = sum_c phi_c s_c(ij); each map sums to the featurizer's margin share."""
        maps = self.feature_maps(batch)
        spec = self.featurizer.spec
        shares = pool_shares(maps, spec.pooling, spec.gem_p)
        phi = torch.from_numpy(np.ascontiguousarray(self.contributions(x, classes), dtype=np.float32))
        return torch.einsum("nc,nchw->nhw", phi, shares).numpy()

    def __call__(self, batch: np.ndarray, x: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """(N, S, S) maps in [0, 1] at the prepared image's size: the positive part of `raw`."""
        raw = torch.from_numpy(self.raw(batch, x, classes)).clamp(min=0)[:, None]
        size = batch.shape[1:3]
        up = F.interpolate(raw, size=size, mode="bilinear", align_corners=False)[:, 0]
        peak = up.flatten(1).amax(dim=1).clamp(min=1e-12).view(-1, 1, 1)
        return (up / peak).numpy()
