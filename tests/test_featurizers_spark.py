"""Every tested featurizer name runs through the Spark job into one table."""

from __future__ import annotations

import shutil

import pytest
from deltalake import DeltaTable

from imgfeat.config import FeaturizeConfig, load_config
from imgfeat.featurizers import list_featurizers
from imgfeat.runs import featurize_run


@pytest.mark.slow
def test_every_listed_featurizer_lands_in_the_table(spark, photos, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("chelsea.jpg", "coffee.jpg"):
        shutil.copy(photos / name, inputs / name)
    table = tmp_path / "emb"
    names = [info.name for info in list_featurizers()]
    for name in names:
        cfg = load_config(
            FeaturizeConfig,
            overrides=[
                "tracking.enabled=false",
                # grayscale16 has no weights; every network gets seeded random ones.
                f"featurizer.weights={'default' if name == 'grayscale16' else 'random'}",
                "featurizer.batch_size=2",
            ],
            input=str(inputs),
            table=str(table),
            **{"featurizer.name": name},
        )
        summary = featurize_run(cfg, spark)
        assert summary.counts == {"ok": 2}, (name, summary.counts)

    rows = DeltaTable(str(table)).to_pyarrow_table().to_pylist()
    assert sorted({r["featurizer"] for r in rows}) == sorted(names)
    assert len(rows) == 2 * len(names)
    dims = {info.name: info.dim for info in list_featurizers()}
    for r in rows:
        assert r["dim"] == dims[r["featurizer"]] == len(r["embedding"]), r["featurizer"]
