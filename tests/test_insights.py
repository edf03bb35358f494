"""Insights computations on data with a known answer (Spark where the job uses Spark)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from imgfeat import insights
from imgfeat.novelty import NoveltyReference, unit_rows


def _positive_cloud(n: int, dim: int, seed: int) -> np.ndarray:
    """Non-negative vectors around a shared mean, as pooled ReLU/SiLU features are."""
    rng = np.random.default_rng(seed)
    return np.abs(1.0 + 0.5 * rng.standard_normal((n, dim))).astype(np.float32)


def _frame(spark, vectors: np.ndarray, splits=None, labels=None):
    n = len(vectors)
    pdf = pd.DataFrame(
        {
            "path": [f"img_{i:04d}" for i in range(n)],
            "content_sha256": [f"{i:064x}" for i in range(n)],
            "emb_0": [v.tolist() for v in vectors],
            "split": splits if splits is not None else ["train"] * n,
            "label": labels if labels is not None else ["a"] * n,
        }
    )
    return spark.createDataFrame(pdf, "path string, content_sha256 string, emb_0 array<float>, split string, label string")


def test_near_duplicates_finds_the_planted_pair_across_splits_and_nothing_else(spark):
    vectors = _positive_cloud(400, 64, 0)
    rng = np.random.default_rng(1)
    vectors[399] = vectors[7] * (1 + 0.02 * rng.standard_normal(64)).astype(np.float32)  # a recompressed copy
    unit = unit_rows([vectors])
    exact = {(i, j) for i in range(400) for j in range(i + 1, 400) if unit[i] @ unit[j] >= 0.98}
    assert exact == {(7, 399)}  # the cloud alone has no pair that close: the answer is known

    splits = ["train"] * 399 + ["test"]
    labels = ["a"] * 399 + ["b"]
    rows = _frame(spark, vectors, splits, labels)
    units = insights.with_units(rows, ["emb_0"])
    pairs = insights.classify_pairs(insights.near_duplicates(units, 0.98, 16, 12, seed=0), rows).toPandas()

    assert list(zip(pairs.path_a, pairs.path_b, strict=True)) == [("img_0007", "img_0399")]
    row = pairs.iloc[0]
    assert row.cosine == pytest.approx(float(unit[7] @ unit[399]), abs=1e-5)
    assert row.leak and row.noise and (row.split_a, row.split_b) == ("train", "test")


def test_the_planted_outlier_ranks_first(spark):
    vectors = _positive_cloud(200, 32, 2)
    vectors[123] = np.zeros(32, dtype=np.float32)
    vectors[123][:4] = 5.0  # points somewhere the cloud never goes
    units = insights.with_units(_frame(spark, vectors), ["emb_0"])
    reference = unit_rows([vectors[::2]])
    paths = [f"img_{i:04d}" for i in range(0, 200, 2)]
    out = insights.outliers(units, reference, paths, k=5, z=3.5, show=3)

    assert out.top.path.iloc[0] == "img_0123"
    assert out.count >= 1 and out.top.z.iloc[0] > 3.5
    assert out.top.z.iloc[1] < out.top.z.iloc[0]


def _blobs(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = 3.0 * rng.standard_normal((3, 48))
    labels = np.repeat(np.arange(3), 60)
    return unit_rows([centres[labels] + 0.4 * rng.standard_normal((180, 48))]), labels


@pytest.mark.parametrize(
    "method", [pytest.param("trimap", marks=pytest.mark.slow), pytest.param("umap", marks=pytest.mark.slow), "pca"]
)
def test_projection_keeps_separate_clusters_separate(method):
    vectors, labels = _blobs(3)
    xy = insights.project(vectors, method, seed=0)
    assert xy.shape == (180, 2) and np.isfinite(xy).all()
    d = ((xy[:, None] - xy[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert np.mean(labels[d.argmin(axis=1)] == labels) > 0.97  # each point's 2-D neighbour is of its cluster
    if method != "trimap":  # TriMap samples triplets in parallel numba threads: not bit-repeatable
        np.testing.assert_allclose(insights.project(vectors, method, seed=0), xy, atol=1e-4)


def test_novelty_is_a_percentile_of_the_training_rows_own_distances():
    vectors, _ = _blobs(4)
    reference = NoveltyReference.fit([vectors[::2]])
    inside = reference.score([vectors[1::2]])
    far = reference.score([-vectors[:5]])
    assert 20 < np.median(inside) < 80  # held-out rows of the same clusters look typical
    assert (far == 100).all()  # farther than any training row from its own neighbour
    assert (reference.score([vectors[::2][:5]]) == 0).all()  # a training row is at distance 0
