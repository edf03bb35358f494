"""How unlike the training images an image is: its nearest-neighbour distance as a percentile.

Owns: `unit_rows` (the embedding geometry insights and novelty share: each
featurizer's block L2-normalized, blocks concatenated and scaled so a row has
norm 1; Euclidean distance between such rows is sqrt(2 - 2 cos)) and
`NoveltyReference`: a sample of the training split's rows with each sample
row's distance to its nearest *other* sample row. An image's novelty is the
percentage of those distances smaller than its own distance to the nearest
sample row: about 50 for a typical training-like image, 100 for one farther
from the training images than any of them is from its neighbour. Must not:
import Spark or MLflow (the scoring pyfunc loads it on workers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_CHUNK = 1024  # rows per distance block: bounds memory at CHUNK x reference size


def unit_rows(embeddings: Sequence[np.ndarray]) -> np.ndarray:
    """(n, sum d_i) float32: each (n, d_i) block normalized, concatenated, divided by sqrt(blocks)."""
    blocks = [np.asarray(e, dtype=np.float32) for e in embeddings]
    parts = [b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12) for b in blocks]
    return np.ascontiguousarray(np.concatenate(parts, axis=1) / np.sqrt(len(parts)), dtype=np.float32)


def nearest_distances(queries: np.ndarray, reference: np.ndarray, k: int = 1, exclude_self: bool = False) -> np.ndarray:
    """(n, k) ascending Euclidean distances from unit `queries` to their k nearest unit `reference` rows.

    With `exclude_self`, queries ARE the reference and row i skips itself.
    """
    out = np.empty((len(queries), k), dtype=np.float32)
    for start in range(0, len(queries), _CHUNK):
        block = queries[start : start + _CHUNK]
        sq = np.maximum(2.0 - 2.0 * (block @ reference.T), 0.0)
        if exclude_self:
            sq[np.arange(len(block)), np.arange(start, start + len(block))] = np.inf
        nearest = np.partition(sq, k - 1, axis=1)[:, :k] if k < sq.shape[1] else sq
        out[start : start + len(block)] = np.sqrt(np.sort(nearest, axis=1)[:, :k])
    return out


@dataclass(frozen=True)
class NoveltyReference:
    """Training rows (unit, see `unit_rows`) and their own sorted nearest-neighbour distances."""

    vectors: np.ndarray  # (n, d) float32
    nn_distances: np.ndarray  # (n,) float32, ascending

    @classmethod
    def fit(cls, embeddings: Sequence[np.ndarray]) -> NoveltyReference:
        vectors = unit_rows(embeddings)
        if len(vectors) < 2:
            raise ValueError("a novelty reference needs at least 2 training rows")
        own = nearest_distances(vectors, vectors, exclude_self=True)[:, 0]
        return cls(vectors, np.sort(own))

    def distances(self, embeddings: Sequence[np.ndarray]) -> np.ndarray:
        """Each row's distance to its nearest reference row."""
        return nearest_distances(unit_rows(embeddings), self.vectors)[:, 0]

    def percentile(self, distances: np.ndarray) -> np.ndarray:
        """0..100: the share of reference rows whose own nearest neighbour is closer."""
        below = np.searchsorted(self.nn_distances, np.asarray(distances, dtype=np.float32), side="left")
        return 100.0 * below / len(self.nn_distances)

    def score(self, embeddings: Sequence[np.ndarray]) -> np.ndarray:
        return self.percentile(self.distances(embeddings))

    def save(self, path: str) -> None:
        with open(path, "wb") as f:
            np.savez_compressed(f, vectors=self.vectors, nn_distances=self.nn_distances)

    @classmethod
    def load(cls, path: str) -> NoveltyReference:
        with np.load(path) as data:
            return cls(data["vectors"].astype(np.float32), data["nn_distances"].astype(np.float32))
