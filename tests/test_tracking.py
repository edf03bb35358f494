"""MLflow tracking: the embedded store, tracked featurize runs, train lineage, the registered model."""

from __future__ import annotations

import json
import re
import shutil

import mlflow
import pytest
from deltalake import DeltaTable
from mlflow import MlflowClient
from PIL import Image

from imgfeat import tracking
from imgfeat.config import FeaturizeConfig, ScoreConfig, TrackingConfig, TrainConfig, load_config
from imgfeat.runs import TrainSummary, _promote, featurize_run, score_run, train_run
from imgfeat.scoring import SCORES, log_model
from tests.trainset import ALIAS, CLASSES, MODEL_NAME, PER_CLASS, trainset  # noqa: F401  (fixture)


def test_embedded_default_is_sqlite_and_mlartifacts_in_the_working_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = TrackingConfig(experiment="t")
    assert tracking.tracking_uri(cfg) == "sqlite:///mlflow.db"
    with tracking.run(cfg, "probe", {"table": "x"}) as run_id:
        tracking.log_params({"a": {"b": 1}, "c": "d"})
    run = MlflowClient("sqlite:///mlflow.db").get_run(run_id)
    assert run.data.params == {"a.b": "1", "c": "d"}
    assert run.data.tags["imgfeat.job"] == "probe" and run.data.tags["imgfeat.table"] == "x"
    assert run.info.status == "FINISHED"
    assert (tmp_path / "mlflow.db").is_file()
    assert run.info.artifact_uri.startswith((tmp_path / "mlartifacts").as_uri())

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    assert tracking.tracking_uri(cfg) == "sqlite:///elsewhere.db"
    assert tracking.tracking_uri(TrackingConfig(uri="http://mlflow:5000")) == "http://mlflow:5000"
    with tracking.run(TrackingConfig(enabled=False), "off") as nothing:
        assert nothing is None


def test_experiment_opens_on_training_runs_and_runs_nest_under_an_active_run(tmp_path):
    cfg = TrackingConfig(uri=f"sqlite:///{tmp_path}/m.db", experiment="kind")
    client = MlflowClient(cfg.uri)
    with tracking.run(cfg, "outer", name="nightly embeddings") as outer:
        with tracking.run(cfg, "inner", name="featurize x") as inner:
            tracking.name_run("featurize x v3")
    experiment = client.get_experiment_by_name("kind")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert client.get_run(outer).info.run_name == "nightly embeddings"
    assert client.get_run(inner).info.run_name == "featurize x v3"
    assert client.get_run(inner).data.tags["mlflow.parentRunId"] == outer
    assert "mlflow.parentRunId" not in client.get_run(outer).data.tags

    # An experiment made before (no kind) gets it; a kind someone chose is kept.
    other = client.create_experiment("made-by-hand")
    with tracking.run(TrackingConfig(uri=cfg.uri, experiment="made-by-hand"), "probe"):
        pass
    assert client.get_experiment(other).tags["mlflow.experimentKind"] == "custom_model_development"
    genai = client.create_experiment("genai", tags={"mlflow.experimentKind": "genai_development"})
    with tracking.run(TrackingConfig(uri=cfg.uri, experiment="genai"), "probe"):
        pass
    assert client.get_experiment(genai).tags["mlflow.experimentKind"] == "genai_development"


def test_table_inputs_are_delta_sources_with_path_version_rows_and_schema(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = TrackingConfig(uri=f"sqlite:///{tmp_path}/m.db", experiment="t")
    tracking.log_table_input("warehouse/embeddings", 0, "training")  # no active run: nothing, no error
    with tracking.run(cfg, "probe") as run_id:
        tracking.log_table_input("warehouse/embeddings", 0, "training", rows=5, schema=SCORES.spark_schema,
                                 subset="train")
        tracking.log_table_input("warehouse/embeddings", 0, "test", rows=2, subset="test")
        tracking.log_table_input("s3://bucket/scores", 7, "scoring")
    inputs = MlflowClient(cfg.uri).get_run(run_id).inputs.dataset_inputs
    by_context = {i.tags[0].value: i.dataset for i in inputs}
    assert set(by_context) == {"training", "test", "scoring"}
    training, test, scored = by_context["training"], by_context["test"], by_context["scoring"]
    assert training.name == "embeddings" and training.source_type == "delta_table"
    assert json.loads(training.source) == {"path": str(tmp_path / "warehouse" / "embeddings"), "delta_table_version": 0}
    assert json.loads(training.profile) == {"num_rows": 5} and json.loads(test.profile) == {"num_rows": 2}
    assert training.digest != test.digest  # two slices of one version stay two inputs
    columns = {c["name"]: c["type"] for c in json.loads(training.schema)["mlflow_colspec"]}
    assert columns["path"] == "string" and columns["probabilities"] == "map" and columns["scored_at"] == "datetime"
    assert json.loads(scored.source) == {"path": "s3://bucket/scores", "delta_table_version": 7}
    assert scored.profile is None and scored.schema in (None, "")


def test_a_failed_run_is_marked_failed(tmp_path):
    cfg = TrackingConfig(uri=f"sqlite:///{tmp_path}/m.db", experiment="t")
    with pytest.raises(RuntimeError), tracking.run(cfg, "boom"):
        raise RuntimeError("boom")
    runs = MlflowClient(cfg.uri).search_runs([mlflow.get_experiment_by_name("t").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]


@pytest.mark.slow
def test_featurize_run_is_tracked_and_its_run_id_is_in_the_table(trainset):
    client = MlflowClient(trainset.tracking_uri)
    summary = trainset.featurized
    run = client.get_run(summary.run_id)
    rows = DeltaTable(trainset.table).to_pyarrow_table(columns=["run_id", "featurizer_fingerprint"]).to_pylist()
    assert {r["run_id"] for r in rows} == {run.info.run_id}
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["imgfeat.job"] == "featurize"
    assert tags["imgfeat.table"] == trainset.table and tags["imgfeat.table_version"] == "0"
    assert {r["featurizer_fingerprint"] for r in rows} == {tags["imgfeat.featurizer_fingerprint"]}
    assert metrics["count_ok"] == len(rows) == 3 * PER_CLASS
    assert metrics["images_per_second"] > 0
    assert run.data.params["featurizer.name"] == "efficientnet_lite0"


@pytest.mark.slow
def test_registered_model_has_signature_input_example_and_its_run(trainset):
    client = MlflowClient(trainset.tracking_uri, registry_uri=trainset.tracking_uri)
    trained = trainset.trained
    version = client.get_model_version(MODEL_NAME, trained.model_version)
    assert trained.model_version == "1" and version.run_id == trained.run_id
    mlflow.set_tracking_uri(trainset.tracking_uri)
    mlflow.set_registry_uri(trainset.tracking_uri)
    info = mlflow.models.get_model_info(f"models:/{MODEL_NAME}/1")
    inputs = {c.name: (c.type.name, c.required) for c in info.signature.inputs.inputs}
    assert inputs == {"content": ("string", False), "path": ("string", False)}  # base64 text, decoded by the model
    assert [c.name for c in info.signature.outputs.inputs][:3] == ["prediction", "predicted_class", "probabilities"]
    assert info.saved_input_example_info is not None
    run = client.get_run(trained.run_id)
    assert run.data.metrics["xgboost.test_accuracy"] == trained.result.metrics["xgboost"]["accuracy"]
    assert "raw_pixels.test_accuracy" in run.data.metrics and "linear.test_log_loss" in run.data.metrics
    cv = trained.result.scores["xgboost"]
    assert run.data.metrics["xgboost.cv_accuracy_mean"] == pytest.approx(cv.mean()["accuracy"])
    assert run.data.metrics["linear.cv_auc_std"] == pytest.approx(trained.result.scores["linear"].std()["auc"])
    folds = client.get_metric_history(trained.run_id, "xgboost.fold_accuracy")  # one step per fold
    assert [m.step for m in folds] == [0, 1, 2, 3, 4] and [m.value for m in folds] == [f["accuracy"] for f in cv.folds]
    assert run.data.params["xgboost.max_depth"] == "4"


@pytest.mark.slow
def test_train_lineage_tags_name_the_table_version_it_read(spark, trainset, tmp_path):
    # A copy of the table gains a version 1 with two more images; train on version 0.
    table = tmp_path / "embeddings"
    shutil.copytree(trainset.table, table)
    extra = tmp_path / "extra" / "brick"
    extra.mkdir(parents=True)
    for i, src in enumerate(sorted((trainset.photos / "brick").glob("*.jpg"))[:2]):
        Image.open(src).transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(extra / f"flipped_{i}.jpg")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    added = featurize_run(
        load_config(FeaturizeConfig, overrides=["tracking.enabled=false"], input=str(tmp_path / "extra"), table=str(table)),
        spark,
    )
    assert added.version == 1

    summary = train_run(
        load_config(
            TrainConfig,
            overrides=[f"tracking.uri={uri}", "model_name=null", "baselines.raw_pixels=false", "baselines.linear=false"],
            table=str(table),
            version=0,
        ),
        spark,
    )
    run = MlflowClient(uri).get_run(summary.run_id)
    tags = run.data.tags
    assert tags["imgfeat.embeddings_table"] == str(table)
    assert tags["imgfeat.embeddings_version"] == "0"
    assert tags["imgfeat.featurizer_fingerprints"] == f'["{trainset.featurized.fingerprint}"]'
    assert tags["imgfeat.labels_source"] == "the image paths (label: folder)"
    rows = sum(v for k, v in run.data.metrics.items() if k.startswith("rows_"))
    assert rows == 3 * PER_CLASS  # version 0's images, not version 1's extra two
    assert summary.model_version is None and summary.model_uri  # logged, not registered


@pytest.mark.slow
def test_runs_have_names_and_delta_datasets_the_model_version_describes_itself(spark, trainset, tmp_path):
    client = MlflowClient(trainset.tracking_uri, registry_uri=trainset.tracking_uri)
    table = DeltaTable(trainset.table)
    featurize = client.get_run(trainset.featurized.run_id)
    assert featurize.info.run_name == "featurize efficientnet_lite0 v0"
    [written] = featurize.inputs.dataset_inputs
    assert [t.value for t in written.tags] == ["featurization"]
    assert json.loads(written.dataset.source) == {"path": trainset.table, "delta_table_version": 0}
    assert json.loads(written.dataset.profile) == {"num_rows": len(table.to_pyarrow_table(columns=["path"]))}

    trained = trainset.trained
    train = client.get_run(trained.run_id)
    assert train.info.run_name == "train efficientnet_lite0 v0"
    inputs = {i.tags[0].value: i.dataset for i in train.inputs.dataset_inputs}
    assert set(inputs) == {"training", "test"}
    counts = trained.result.counts
    assert json.loads(inputs["test"].profile) == {"num_rows": counts["test"]}
    assert json.loads(inputs["training"].profile) == {"num_rows": sum(counts.values()) - counts["test"]}
    assert {json.loads(d.source)["delta_table_version"] for d in inputs.values()} == {0}
    # The run search finds runs by the dataset they used, as the UI's Dataset filter does.
    found = {r.info.run_id for r in client.search_runs([train.info.experiment_id], "dataset.context = 'test'")}
    assert trained.run_id in found and featurize.info.run_id not in found

    version = client.get_model_version(MODEL_NAME, trained.model_version)
    accuracy = trained.result.metrics["xgboost"]["accuracy"]
    assert version.tags == {
        "imgfeat.embeddings_table": trainset.table,
        "imgfeat.embeddings_version": "0",
        "imgfeat.featurizers": '["efficientnet_lite0"]',
        "imgfeat.featurizer_fingerprints": f'["{trainset.featurized.fingerprint}"]',
        "imgfeat.task": "classification",
        "imgfeat.test_accuracy": f"{accuracy:.4f}",
    }
    text = version.description
    assert f"efficientnet_lite0 (fingerprint {trainset.featurized.fingerprint[:12]})" in text
    assert f"`{trainset.table}`, Delta version 0" in text and f"classes {', '.join(CLASSES)}" in text
    assert f"xgboost.test_accuracy {accuracy:.4f}" in text and "raw_pixels.test_accuracy" in text
    assert client.get_registered_model(MODEL_NAME).aliases == {ALIAS: int(trained.model_version)}
    assert f"(alias {ALIAS})" in trained.lines()[-1]

    # Scoring through the alias records the version it resolved to.
    photos = tmp_path / "few"
    shutil.copytree(trainset.photos / "grass", photos)
    scored = score_run(
        load_config(ScoreConfig, overrides=[f"tracking.uri={trainset.tracking_uri}"], model=f"models:/{MODEL_NAME}@{ALIAS}",
                    input=str(photos), table=trainset.table, output=str(tmp_path / "scores")),
        spark,
    )
    run = client.get_run(scored.run_id)
    assert scored.model_version == trained.model_version
    assert run.info.run_name == f"score {MODEL_NAME}/{trained.model_version}"
    assert run.data.tags["imgfeat.model"] == f"models:/{MODEL_NAME}@{ALIAS}"
    assert run.data.tags["imgfeat.model_version"] == trained.model_version
    [output] = run.inputs.dataset_inputs
    assert output.tags[0].value == "scoring" and json.loads(output.dataset.profile) == {"num_rows": PER_CLASS}
    assert json.loads(output.dataset.source) == {"path": str(tmp_path / "scores"), "delta_table_version": scored.version}


@pytest.mark.slow
def test_the_alias_moves_only_to_a_version_that_beats_it_on_the_same_test_split(spark, trainset):
    name = "textures-promotion"
    cfg = load_config(
        TrainConfig,
        overrides=[f"tracking.uri={trainset.tracking_uri}", f"model_name={name}", "baselines.raw_pixels=false",
                   "baselines.linear=false", "xgboost.n_estimators=1", "xgboost.max_depth=1"],
        table=trainset.table,
    )
    good = trainset.trained
    with tracking.run(cfg.tracking, "train") as run_id:  # the good model again, as version 1 of `name`
        logged = log_model(good.result, name)
    good = TrainSummary(good.result, run_id, logged.uri, name, logged.version)
    weak = train_run(cfg, spark)  # one stump per class: version 2
    (metric, best), (_, worse) = good.headline, weak.headline
    assert (logged.version, weak.model_version, metric) == ("1", "2", "test_accuracy") and worse < best

    client = MlflowClient(trainset.tracking_uri, registry_uri=trainset.tracking_uri)
    client.set_registered_model_alias(name, ALIAS, "1")
    line = _promote(cfg.model_copy(update={"alias": ALIAS}), spark, weak)
    # Version 1's run logged no split_version (as runs before split version 2): both are scored
    # on the test images split version 1 held out too, a part of version 2's test split.
    found = re.fullmatch(
        rf"alias {ALIAS} stays on version 1: version 2 does not beat it: test_accuracy (\S+) vs (\S+) on the "
        rf"test images both held out \(version 1 was trained on split version 1\) \((\d+) images of "
        rf"{re.escape(trainset.table)} version 0\)",
        line,
    )
    assert found, line
    weak_there, good_there, n = float(found[1]), float(found[2]), int(found[3])
    assert 0 < n < good.result.counts["test"] and weak_there < good_there
    assert client.get_registered_model(name).aliases == {ALIAS: 1} and weak.alias is None

    client.set_registered_model_alias(name, ALIAS, "2")
    line = _promote(cfg.model_copy(update={"alias": ALIAS}), spark, good)
    # Version 2 (train_run: split version 2), scored again on the same test split, scores what its run logged.
    assert line == (
        f"alias {ALIAS} moved from version 2 to version 1: test_accuracy {best:.4f} vs {worse:.4f} on the same "
        f"test split ({good.result.counts['test']} images of {trainset.table} version 0)"
    )
    assert client.get_registered_model(name).aliases == {ALIAS: 1} and good.alias == ALIAS
