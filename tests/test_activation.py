"""Activation maps' two sanity checks: they find a planted signal, and they depend on the weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xgboost

from imgfeat.activation import ShapCAM
from imgfeat.features import FeatureSpec
from imgfeat.featurizers import load_featurizer, resolve_featurizer
from imgfeat.featurizers.pooling import global_pool, pool_shares

SIZE, HALF, PATCH = 224, 112, 56


def _images(n: int, patch: bool, rng: np.random.Generator) -> np.ndarray:
    """Grey-green noise textures; with `patch`, a red square somewhere in the top-left quadrant."""
    base = rng.integers(60, 140, (n, SIZE // 8, SIZE // 8, 3)).astype(np.uint8)
    out = np.repeat(np.repeat(base, 8, axis=1), 8, axis=2)
    out = (out + rng.integers(0, 40, out.shape)).clip(0, 255).astype(np.uint8)
    if patch:
        for img in out:
            top, left = rng.integers(0, HALF - PATCH, 2)
            img[top : top + PATCH, left : left + PATCH] = (220, 30, 30)
    return out


@pytest.mark.parametrize("kind", ["avg", "max", "avgmax", "gem"])
def test_pool_shares_sum_to_one_and_rebuild_the_pooled_value(kind):
    x = torch.rand(2, 5, 4, 4) + 0.1
    shares = pool_shares(x, kind)
    torch.testing.assert_close(shares.sum(dim=(2, 3)), torch.ones(2, 5))
    if kind == "avg":  # each position's share of the mean: its own value over the sum
        torch.testing.assert_close(shares * 16 * global_pool(x, "avg")[..., None, None], x)
    if kind == "max":  # all of it at the maximum
        torch.testing.assert_close((shares * x).sum(dim=(2, 3)), global_pool(x, "max"))


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(0)
    spec = resolve_featurizer("efficientnet_lite0")
    featurizer = load_featurizer(spec)
    train = np.concatenate([_images(24, False, rng), _images(24, True, rng)])
    y = np.repeat([0, 1], 24)
    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 2, "eta": 0.3}, xgboost.DMatrix(featurizer.embed(train), y), 30
    )
    features = FeatureSpec(featurizers=(spec,), task="classification", classes=("plain", "patch"))
    test = _images(12, True, rng)
    return spec, featurizer, booster, features, test


def test_the_map_peaks_where_the_class_signal_is(trained):
    _, featurizer, booster, features, test = trained
    x = featurizer.embed(test)
    assert (booster.predict(xgboost.DMatrix(x)) > 0.5).mean() > 0.9  # the model learned the patch
    heat = ShapCAM(featurizer, booster, features)(test, x, np.ones(len(test), dtype=int))
    assert heat.shape == (len(test), SIZE, SIZE) and heat.max() == pytest.approx(1.0)
    peaks = [np.unravel_index(h.argmax(), h.shape) for h in heat]
    inside = np.mean([r < HALF and c < HALF for r, c in peaks])
    assert inside >= 0.75, peaks  # the top-left quadrant holds a quarter of the image


def test_randomized_weights_change_the_maps(trained):
    spec, featurizer, booster, features, test = trained
    heat = ShapCAM(featurizer, booster, features)(test, featurizer.embed(test), np.ones(len(test), dtype=int))
    randomized = load_featurizer(resolve_featurizer("efficientnet_lite0", weights="random"))
    x = randomized.embed(test)
    other = ShapCAM(randomized, booster, FeatureSpec((randomized.spec,), "classification", features.classes))(
        test, x, np.ones(len(test), dtype=int)
    )
    corr = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(heat, other, strict=True)]
    assert np.nanmean(corr) < 0.5, corr
