"""Reduced dimensions: a PCA basis fitted once, stored with the table, reused."""

from __future__ import annotations

import shutil

import numpy as np
from deltalake import DeltaTable

from imgfeat.config import FeaturizeConfig, load_config
from imgfeat.decode import decode_image
from imgfeat.featurizers import load_featurizer, resolve_featurizer
from imgfeat.reduce import basis_location, fit_pca
from imgfeat.runs import featurize_run


def test_fit_pca_is_orthonormal_reproducible_and_matches_svd_subspace():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 12)) @ rng.normal(size=(12, 12))
    mean, comps = fit_pca(x, 4)
    assert comps.shape == (4, 12) and mean.shape == (12,)
    np.testing.assert_allclose(comps @ comps.T, np.eye(4), atol=1e-5)
    mean2, comps2 = fit_pca(x[::-1].copy(), 4)  # row order must not flip signs
    np.testing.assert_allclose(comps, comps2, atol=1e-5)
    # Explained variance is decreasing, as principal axes must be.
    var = ((x - mean) @ comps.T).var(axis=0)
    assert np.all(np.diff(var) < 0)


def test_reduced_run_projects_with_the_stored_basis(spark, photos, tmp_path):
    inputs = tmp_path / "in"
    shutil.copytree(photos, inputs)
    table = tmp_path / "emb"
    cfg = load_config(
        FeaturizeConfig,
        overrides=["tracking.enabled=false", "featurizer.dim=3"],
        input=str(inputs),
        table=str(table),
    )
    first = featurize_run(cfg, spark)
    assert first.featurizer == "efficientnet_lite0_pca3"
    base = resolve_featurizer("efficientnet_lite0")
    assert first.fingerprint != base.fingerprint
    basis = basis_location(str(table), base, 3)
    with np.load(basis) as npz:
        mean, comps = npz["mean"], npz["components"]
    assert comps.shape == (3, 1280)

    rows = DeltaTable(str(table)).to_pyarrow_table().to_pylist()
    assert {r["featurizer"] for r in rows} == {"efficientnet_lite0_pca3"} and all(r["dim"] == 3 for r in rows)
    full = load_featurizer(base)
    for r in rows[:3]:
        path = r["path"].removeprefix("file:")
        image = decode_image(open(path, "rb").read(), draft_size=base.resize_size).image
        ref = (full.embed(full.prepare(image)[None])[0] - mean) @ comps.T
        np.testing.assert_allclose(r["embedding"], ref, atol=1e-3)

    again = featurize_run(cfg, spark)  # same basis → same fingerprint → nothing new
    assert again.fingerprint == first.fingerprint and again.featurized == 0
