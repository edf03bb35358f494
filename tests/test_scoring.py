"""The pyfunc that scores raw images, and the batch score job."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import xgboost
from deltalake import DeltaTable
from mlflow import MlflowClient
from PIL import Image

from imgfeat.config import ScoreConfig, load_config
from imgfeat.runs import score_run
from tests.trainset import CLASSES, MODEL_NAME, trainset  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow

_FRESH = textwrap.dedent(
    """
    import json, sys
    import mlflow, pandas as pd
    mlflow.set_tracking_uri(sys.argv[1])
    mlflow.set_registry_uri(sys.argv[1])
    model = mlflow.pyfunc.load_model(sys.argv[2])
    blobs = [open(p, "rb").read() for p in sys.argv[3:]] + [b"not an image"]
    out = model.predict(pd.DataFrame({"content": blobs}))
    print(json.dumps({c: out[c].tolist() for c in out.columns}))
    """
)


def _stored(table: str, files: list) -> tuple[np.ndarray, list[str]]:
    """Stored embeddings of `files`, in order, and their content hashes."""
    rows = {r["path"]: r for r in DeltaTable(table).to_pyarrow_table().to_pylist()}
    picked = [rows[f"file:{f}"] for f in files]
    return np.array([r["embedding"] for r in picked], dtype=np.float32), [r["content_sha256"] for r in picked]


def _booster(trainset) -> xgboost.Booster:
    return trainset.trained.result.booster


def test_registered_model_in_a_fresh_process_scores_raw_bytes_like_the_booster_on_stored_embeddings(trainset):
    files = [sorted((trainset.photos / c).glob("*.jpg"))[i] for c in CLASSES for i in (0, 5)]
    embeddings, _ = _stored(trainset.table, files)
    expected = _booster(trainset).predict(xgboost.DMatrix(embeddings))

    proc = subprocess.run(
        [sys.executable, "-c", _FRESH, trainset.tracking_uri, f"models:/{MODEL_NAME}/1", *map(str, files)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])

    np.testing.assert_allclose(np.array(out["probabilities"][:-1]), expected, atol=1e-5, rtol=0)
    assert out["predicted_class"][:-1] == [CLASSES[k] for k in expected.argmax(axis=1)]
    assert out["prediction"][:-1] == [float(k) for k in expected.argmax(axis=1)]
    assert out["status"] == ["ok"] * len(files) + ["decode_error"]
    assert out["error"][-1] and out["probabilities"][-1] is None and out["prediction"][-1] is None  # null, not NaN


def test_the_model_works_through_spark_udf(spark, trainset):
    import mlflow

    mlflow.set_tracking_uri(trainset.tracking_uri)
    mlflow.set_registry_uri(trainset.tracking_uri)
    uri = f"models:/{MODEL_NAME}/1"
    udf = mlflow.pyfunc.spark_udf(
        spark, uri, env_manager="local",
        result_type="prediction double, predicted_class string, probabilities array<double>, status string, error string",
    )
    images = spark.read.format("binaryFile").load(str(trainset.photos / "grass")).orderBy("path").limit(4)
    scored = images.select("path", udf("content").alias("out")).select("path", "out.*").toPandas()

    direct = mlflow.pyfunc.load_model(uri).predict(images.select("content").toPandas())
    assert list(scored["status"]) == ["ok"] * 4
    assert list(scored["predicted_class"]) == list(direct["predicted_class"])
    np.testing.assert_allclose(np.stack(scored["probabilities"]), np.stack(direct["probabilities"]), atol=1e-6)


def test_score_job_reuses_stored_embeddings_featurizes_the_rest_and_keeps_bad_images(spark, trainset, tmp_path):
    inputs = tmp_path / "new"
    inputs.mkdir()
    stored = [sorted((trainset.photos / c).glob("*.jpg"))[1] for c in CLASSES]
    for src in stored:  # bytes already in the table, under a new name: reused by content hash
        shutil.copy(src, inputs / f"copy_of_{src.name}")
    for src in stored[:2]:  # new bytes: featurized
        Image.open(src).transpose(Image.Transpose.ROTATE_180).save(inputs / f"rotated_{src.name}", quality=92)
    (inputs / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")

    cfg = load_config(
        ScoreConfig,
        overrides=[f"tracking.uri={trainset.tracking_uri}"],
        model=f"models:/{MODEL_NAME}/latest",
        input=str(inputs),
        table=trainset.table,
        output=str(tmp_path / "scores"),
    )
    summary = score_run(cfg, spark)
    assert summary.counts == {"ok": 5, "decode_error": 1}
    assert summary.featurized == 3  # two rotated + the broken file; the copies were not featurized
    assert summary.reused == 3
    assert summary.model_version == "1" and summary.version == 0

    rows = {r["path"].rsplit("/", 1)[1]: r for r in DeltaTable(str(tmp_path / "scores")).to_pyarrow_table().to_pylist()}
    assert len(rows) == 6
    broken = rows["broken.jpg"]
    assert broken["status"] == "decode_error" and broken["error"] and broken["prediction"] is None
    assert broken["probabilities"] is None and broken["featurized"]

    embeddings, shas = _stored(trainset.table, stored)
    expected = _booster(trainset).predict(xgboost.DMatrix(embeddings))
    for src, sha, probs in zip(stored, shas, expected, strict=True):
        row = rows[f"copy_of_{src.name}"]
        assert row["content_sha256"] == sha and not row["featurized"]
        assert row["model_name"] == MODEL_NAME and row["model_version"] == "1"
        got = dict(row["probabilities"])
        np.testing.assert_allclose([got[c] for c in CLASSES], probs, atol=1e-6)
        assert row["predicted_class"] == CLASSES[int(probs.argmax())] and row["prediction"] == probs.argmax()
    for src in stored[:2]:
        row = rows[f"rotated_{src.name}"]
        assert row["featurized"] and row["status"] == "ok" and row["content_sha256"] not in shas

    run = MlflowClient(trainset.tracking_uri).get_run(summary.run_id)  # the score run is tracked
    assert {r["run_id"] for r in rows.values()} == {run.info.run_id}
    assert run.data.tags["imgfeat.job"] == "score" and run.data.tags["imgfeat.model_version"] == "1"
    assert run.data.tags["imgfeat.scores_table"] == str(tmp_path / "scores")
    assert run.data.tags["imgfeat.scores_version"] == "0"
    assert run.data.metrics["reused"] == 3 and run.data.metrics["count_decode_error"] == 1

    again = score_run(cfg, spark)  # a rerun replaces its rows, never duplicates them
    assert again.version == 1
    assert DeltaTable(str(tmp_path / "scores")).to_pyarrow_table().num_rows == 6


def test_the_model_is_logged_as_code_and_an_old_pickled_version_still_loads(trainset, tmp_path, monkeypatch):
    import os

    import mlflow
    import pandas as pd
    from mlflow.models import Model

    from imgfeat import scoring
    from imgfeat.errors import InputError

    mlflow.set_tracking_uri(trainset.tracking_uri)
    mlflow.set_registry_uri(trainset.tracking_uri)
    local = mlflow.artifacts.download_artifacts(f"models:/{MODEL_NAME}/1")
    flavor = Model.load(local).flavors["python_function"]
    assert "model_code_path" in flavor and not any(f.endswith(".pkl") for f in os.listdir(local))  # nothing pickled

    old = tmp_path / "old"  # what imgfeat logged before models from code: a pickled ImageModel, same artifacts
    mlflow.pyfunc.save_model(
        old, python_model=scoring.ImageModel(),
        artifacts={name: os.path.join(local, a["path"]) for name, a in flavor["artifacts"].items()},
    )
    assert "python_model.pkl" in os.listdir(old)
    photo = sorted((trainset.photos / CLASSES[0]).glob("*.jpg"))[3].read_bytes()
    frame = pd.DataFrame({"content": [photo, b"not an image"]})
    expected = scoring.load_image_model(local).predict(None, frame)
    got = scoring.load_image_model(str(old)).predict(None, frame)
    assert list(got["status"]) == ["ok", "decode_error"]
    np.testing.assert_allclose(got["probabilities"][0], expected["probabilities"][0], atol=1e-6)

    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")  # MLflow's own switch against unpickling
    with pytest.raises(InputError, match="pickled model logged by an older imgfeat.*imgfeat train"):
        scoring.load_image_model(str(old))
    assert tuple(scoring.load_image_model(local).features.classes) == CLASSES  # code-logged: still loads
