"""The Databricks notebooks, run locally as scripts on sample photos, in order."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from deltalake import DeltaTable

from imgfeat.dev.samples import write_labeled_photos
from tests.notebook_shim import DBUtils, Widgets, run_notebook

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ("01_featurize", "02_train", "03_score", "04_explore", "05_insights", "06_finetune")


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_databricks_source_with_declared_widgets(name):
    """Its widgets (declared by `imgfeat.notebook.widgets` from the config's fields, or by hand
    for what is no config key) each have a label, and every widget the code reads is declared."""
    text = (NOTEBOOKS / f"{name}.py").read_text()
    assert text.startswith("# Databricks notebook source\n# MAGIC %md\n")
    cells = text.split("\n# COMMAND ----------\n")
    assert len(cells) >= 4
    code = "\n".join(line for line in text.splitlines() if not line.startswith("# MAGIC"))
    assert "import imgfeat" in code or "from imgfeat" in code
    assert ".whl" not in code.replace("imgfeat-*.whl", ""), "a hard-coded wheel name"
    compile(code, name, "exec")

    dbutils = DBUtils(Widgets({}))
    ns = {"dbutils": dbutils}
    for cell in cells:  # the cells that declare widgets, as Databricks runs them
        if re.search(r"^widgets\(dbutils|dbutils\.widgets\.(?:text|dropdown)\(", cell, re.MULTILINE):
            exec(compile(cell, name, "exec"), ns)  # noqa: S102 - the notebook's own widget cell
    declared = dbutils.widgets.labels
    assert declared and all(declared.values()), declared
    used = set(re.findall(r'\bw\("(\w+)"\)', code))
    assert used <= set(declared), used - set(declared)


@pytest.mark.slow
def test_notebooks_run_in_order_on_sample_photos(spark, tmp_path):
    images = write_labeled_photos(tmp_path / "images", per_class=8)
    n = len(list(images.rglob("*.jpg")))
    emb, scores = str(tmp_path / "emb"), str(tmp_path / "scores")
    tracking = {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    quick_train = tmp_path / "train.yaml"
    quick_train.write_text(yaml.safe_dump({"baselines": {"linear": False, "raw_pixels": False}, "split": {"folds": 2}}))

    ns, shown = run_notebook(
        NOTEBOOKS / "01_featurize.py", spark, {"input": str(images), "table": emb, "batch_size": "8", **tracking}
    )
    assert ns["summary"].counts == {"ok": n} and DeltaTable(emb).to_pyarrow_table().num_rows == n
    assert shown.frames[0].to_dict("records") == [{"rows": n, "status": "ok"}]

    ns, shown = run_notebook(NOTEBOOKS / "02_train.py", spark, {"table": emb, "config": str(quick_train), **tracking})
    assert ns["summary"].model_name == "imgfeat" and ns["summary"].model_version == "1"
    assert ns["summary"].result.version == 0  # lineage: the table version 01 wrote
    assert list(shown.frames[0]["model"]) == ["xgboost"]

    ns, shown = run_notebook(
        NOTEBOOKS / "03_score.py", spark, {"input": str(images), "table": emb, "output": scores, **tracking}
    )
    assert ns["summary"].counts == {"ok": n} and ns["summary"].featurized == 0  # all embeddings reused
    table = shown.frames[0]
    assert len(table) == n and set(table["model_version"]) == {"1"}
    assert set(table["predicted_class"]) <= {"brick", "grass", "gravel"}

    ns, shown = run_notebook(NOTEBOOKS / "04_explore.py", spark, {"table": emb, "queries": "6", "k": "3"})
    counts = shown.frames[0]
    assert counts[["featurizer", "status", "rows"]].to_dict("records") == [
        {"featurizer": "efficientnet_lite0", "status": "ok", "rows": n}
    ]
    near = ns["neighbours"]
    assert len(near) == 6 * 3 and (near["query"] != near["neighbour"]).all()
    assert near.groupby("query")["cosine"].apply(lambda c: c.is_monotonic_decreasing).all()
    top = near[near["rank"] == 1]
    label = lambda path: Path(path).parent.name  # noqa: E731
    assert all(label(q) == label(nb) for q, nb in zip(top["query"], top["neighbour"], strict=True))
    assert shown.html[0].count("<img ") == 6 * 4

    report = tmp_path / "insights"
    ns, shown = run_notebook(
        NOTEBOOKS / "05_insights.py", spark,
        {"model": "models:/imgfeat/1", "output": str(report), "projection": "pca", **tracking},
    )
    assert ns["summary"].sampled == n and (report / "report.html").is_file()
    assert "id='near-duplicates'" in shown.html[0]
