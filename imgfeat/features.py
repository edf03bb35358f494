"""What a model's input is: `FeatureSpec`, and a booster's output on it.

Owns: how one image's embeddings (+ its row of tabular columns) become the
feature vector, the same function on Spark workers, in the batch score job and
in the served model, and how a booster's raw output reads as values or class
probabilities. Must not: import Spark, Delta, MLflow or any training code (the
served model imports this module).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from imgfeat.featurizers import FeaturizerSpec, Projection


@dataclass(frozen=True)
class FeatureSpec:
    """How one image (+ its row of columns) becomes the model's feature vector.

    Saved with the model, so training and serving build identical vectors:
    the featurizers' embeddings in order, then `numeric` columns (missing =
    NaN), then `categorical` columns as one-hot blocks (unseen value = all
    zeros) or as the value's index (unseen = NaN).
    """

    featurizers: tuple[FeaturizerSpec, ...]
    task: str  # classification | regression
    classes: tuple[str, ...] = ()  # class names, in label-index order
    numeric: tuple[str, ...] = ()
    categorical: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (column, categories seen in train)
    encoding: str = "onehot"
    column_types: dict[str, str] = field(default_factory=dict)  # tabular column → MLflow type

    @property
    def columns(self) -> tuple[str, ...]:
        """Tabular input columns, in feature order."""
        return self.numeric + tuple(c for c, _ in self.categorical)

    @property
    def dim(self) -> int:
        width = sum(len(cats) if self.encoding == "onehot" else 1 for _, cats in self.categorical)
        return sum(f.dim for f in self.featurizers) + len(self.numeric) + width

    def assemble(self, embeddings: Sequence[np.ndarray], columns: pd.DataFrame) -> np.ndarray:
        """(n, dim) float32 features from one (n, d_i) array per featurizer plus the columns."""
        n = len(columns)
        parts = [np.asarray(e, dtype=np.float32).reshape(n, -1) for e in embeddings]
        for name in self.numeric:
            values = pd.to_numeric(columns[name], errors="coerce").astype("float64")
            parts.append(values.to_numpy(np.float32, na_value=np.nan).reshape(n, 1))
        for name, cats in self.categorical:
            values = columns[name].map(category_text)
            if self.encoding == "onehot":
                parts.append(np.stack([(values == c).to_numpy() for c in cats], axis=1).astype(np.float32))
            else:
                index = {c: float(i) for i, c in enumerate(cats)}
                parts.append(values.map(lambda v, index=index: index.get(v, np.nan)).to_numpy(np.float32).reshape(n, 1))
        return np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float32)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FeatureSpec:
        data = json.loads(text)
        specs = tuple(_featurizer_from_dict(f) for f in data.pop("featurizers"))
        categorical = tuple((c, tuple(cats)) for c, cats in data.pop("categorical"))
        return cls(
            featurizers=specs,
            categorical=categorical,
            classes=tuple(data.pop("classes")),
            numeric=tuple(data.pop("numeric")),
            **data,
        )


def _featurizer_from_dict(data: dict[str, Any]) -> FeaturizerSpec:
    fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    if fields.get("projection") is not None:
        fields["projection"] = Projection(**fields["projection"])
    return FeaturizerSpec(**fields)


def category_text(value: Any) -> str | None:
    """Categories compare as text, the same in Spark (cast to string) and pandas."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    return str(value)


def predict_output(booster: Any, x: np.ndarray, task: str) -> np.ndarray:
    """A booster's output for the feature rows `x`: values (regression), or (n, classes)
    probabilities (a binary booster's single column is P(class 1))."""
    import xgboost

    raw = booster.predict(xgboost.DMatrix(x, missing=np.nan))
    if task == "regression":
        return raw.astype(np.float64)
    return raw if raw.ndim == 2 else np.stack([1.0 - raw, raw], axis=1)
