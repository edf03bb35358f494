"""The nightly job: idempotent reruns, retrain threshold, the table lock, the bundle."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from deltalake import DeltaTable
from mlflow import MlflowClient
from PIL import Image

from imgfeat import nightly
from imgfeat.cli import build_parser, main, nightly_config
from imgfeat.config import RetrainPolicy
from imgfeat.dev.samples import write_labeled_photos
from imgfeat.errors import ConflictError
from imgfeat.runs import nightly_run
from imgfeat.runs.nightly import _check_score_input

REPO = Path(__file__).resolve().parents[1]


def _nightly_argv(tmp: Path, images: Path, *sets: str) -> list[str]:
    """`imgfeat nightly` arguments on sample photos, with everything under `tmp`."""
    sets = (
        f"score.output={tmp / 'scores'}",
        f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}",
        "featurize.featurizer.batch_size=8",
        "train.baselines.linear=false",
        "train.baselines.raw_pixels=false",
        "train.split.folds=2",  # 8 photos per class: with 2 folds every class lies in both
        *sets,
    )
    return ["nightly", "--config", str(REPO / "conf" / "nightly.yaml"), "--input", str(images),
            "--table", str(tmp / "emb"), *(arg for s in sets for arg in ("--set", s))]


def _versions(model_name: str, uri: str) -> list[str]:
    return sorted(str(v.version) for v in MlflowClient(uri, uri).search_model_versions(f"name = '{model_name}'"))


@pytest.mark.slow
def test_nightly_twice_adds_nothing_and_new_rows_below_threshold_do_not_retrain(spark, tmp_path):
    images = write_labeled_photos(tmp_path / "images", per_class=8)
    n = len(list(images.rglob("*.jpg")))
    argv = _nightly_argv(tmp_path, images, "retrain.min_new_rows=1000", "retrain.min_new_fraction=0.5")
    cfg = nightly_config(build_parser().parse_args(argv))
    db = f"sqlite:///{tmp_path / 'mlflow.db'}"

    first = nightly_run(cfg, spark=spark)
    assert first.featurize.committed and first.featurize.counts == {"ok": n}
    assert first.retrained == "no model trained by the nightly job yet" and first.train is not None
    assert first.score.counts == {"ok": n} and first.score.model_version == first.train.model_version
    assert _versions("imgfeat", db) == [first.train.model_version]
    # One parent run holds the three steps' runs; the first version takes the alias; score uses it.
    client = MlflowClient(db, db)
    parents = {client.get_run(s.run_id).data.tags.get("mlflow.parentRunId")
               for s in (first.featurize, first.train, first.score)}
    assert len(parents) == 1 and None not in parents
    parent = client.get_run(parents.pop())
    assert parent.info.run_name == "nightly emb" and parent.data.tags["imgfeat.job"] == "nightly"
    assert first.promotion == f"alias champion set on version {first.train.model_version}: no version held it"
    assert client.get_registered_model("imgfeat").aliases == {"champion": int(first.train.model_version)}
    assert client.get_run(first.score.run_id).data.tags["imgfeat.model"] == "models:/imgfeat@champion"
    emb_version = DeltaTable(str(tmp_path / "emb")).version()
    scores_version = DeltaTable(str(tmp_path / "scores")).version()

    # The second run goes through the CLI, as cron runs it.
    assert main([*argv, "--summary-json", str(tmp_path / "second.json")]) == 0
    second = json.loads((tmp_path / "second.json").read_text())
    assert not second["featurize"]["committed"] and second["featurize"]["counts"] == {}
    assert second["new_rows"] == 0 and second["retrained"] is None and second["score"] is None
    assert set(second["skipped"]) == {"train", "score"}
    assert DeltaTable(str(tmp_path / "emb")).version() == emb_version
    assert DeltaTable(str(tmp_path / "scores")).version() == scores_version
    assert _versions("imgfeat", db) == [first.train.model_version]
    assert not (tmp_path / "emb" / nightly.LOCK_NAME).exists()

    # Two new images: 2 < 1000 rows and 2/n < 50%: no retrain, but they get scored.
    for i, src in enumerate(sorted((images / "brick").glob("*.jpg"))[:2]):
        Image.open(src).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(images / "brick" / f"new_{i}.jpg")
    third = nightly_run(cfg, spark=spark)
    assert third.featurize.counts == {"ok": 2} and third.new_rows == 2
    assert third.train is None and "2 new ok rows" in third.skipped["train"]
    assert third.score.model_version == first.train.model_version and third.score.counts == {"ok": n + 2}
    scored = DeltaTable(str(tmp_path / "scores")).to_pyarrow_table(columns=["path"]).column("path").to_pylist()
    assert len(scored) == len(set(scored)) == n + 2
    assert _versions("imgfeat", db) == [first.train.model_version]


def test_retrain_rule():
    policy = RetrainPolicy(min_new_rows=100, min_new_fraction=0.1)
    trained = nightly.Trained(table_version=3, rows=500, model="models:/m/1")
    assert nightly.retrain_reason(None, 0, policy) == "no model trained by the nightly job yet"
    assert nightly.retrain_reason(trained, 0, policy) is None
    assert nightly.retrain_reason(trained, 49, policy) is None
    assert "10.0% of 500" in nightly.retrain_reason(trained, 50, policy)
    assert "min_new_rows 100" in nightly.retrain_reason(trained, 100, RetrainPolicy(min_new_rows=100, min_new_fraction=None))
    assert nightly.retrain_reason(trained, 99, RetrainPolicy(min_new_rows=100, min_new_fraction=None)) is None


def test_nightly_refused_while_the_lock_is_held(tmp_path, capsys):
    table = tmp_path / "emb"
    with nightly.table_lock(str(table), "other-run", "imgfeat nightly", stale_after_hours=12):
        code = main(["nightly", "--config", str(REPO / "conf" / "nightly.yaml"),
                     "--input", str(tmp_path), "--table", str(table)])
        held = json.loads((table / nightly.LOCK_NAME).read_text())
    err = capsys.readouterr().err
    assert code == 3
    assert re.search(rf"held by pid {os.getpid()} on {re.escape(socket.gethostname())} since .*other-run", err)
    assert held["run_id"] == "other-run"  # the refused run left the lock alone
    assert sorted(p.name for p in table.iterdir()) == []  # and wrote nothing; the lock is released


def test_a_zip_or_table_input_needs_a_folder_for_the_score_step(tmp_path, capsys):
    argv = ["nightly", "--config", str(REPO / "conf" / "nightly.yaml"), "--table", str(tmp_path / "emb")]
    code = main([*argv, "--input", str(tmp_path / "photos.zip")])
    assert code == 2 and "set score.input to the images' folder" in capsys.readouterr().err
    assert not (tmp_path / "emb").exists()  # refused before the lock or any step
    elsewhere = nightly_config(build_parser().parse_args([*argv, "--input", "t.csv", "--set", f"score.input={tmp_path}"]))
    _check_score_input(elsewhere)  # a folder to score: accepted


def _write_lock(table: Path, **owner) -> None:
    table.mkdir(parents=True, exist_ok=True)
    base = {"run_id": "old", "pid": os.getpid(), "host": socket.gethostname(), "started_at": time.time(), "command": "x"}
    (table / nightly.LOCK_NAME).write_text(json.dumps({**base, **owner}))


def test_stale_locks_are_taken_over_live_ones_are_not(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    cases = {
        "dead pid, this host": ({"pid": dead.pid}, True),
        "other host, old": ({"host": "elsewhere", "started_at": time.time() - 13 * 3600}, True),
        "other host, recent": ({"host": "elsewhere"}, False),
        "live pid, this host, old": ({"started_at": time.time() - 13 * 3600}, True),
        "live pid, this host": ({}, False),
    }
    for i, (case, (owner, taken)) in enumerate(cases.items()):
        table = tmp_path / f"t{i}"
        _write_lock(table, **owner)
        if taken:
            with nightly.table_lock(str(table), "new", "imgfeat nightly", stale_after_hours=12) as me:
                assert json.loads((table / nightly.LOCK_NAME).read_text())["run_id"] == me.run_id == "new", case
            assert not (table / nightly.LOCK_NAME).exists(), case
        else:
            with pytest.raises(ConflictError, match="held by"):
                with nightly.table_lock(str(table), "new", "imgfeat nightly", stale_after_hours=12):
                    pass
            assert json.loads((table / nightly.LOCK_NAME).read_text())["run_id"] == "old", case


def _bundle() -> dict:
    """databricks.yml with `${var.*}` replaced by their defaults and the workspace path by this repo."""
    text = (REPO / "databricks.yml").read_text()
    variables = yaml.safe_load(text)["variables"]
    text = re.sub(r"\$\{var\.(\w+)\}", lambda m: str(variables[m.group(1)]["default"]), text)
    text = text.replace("${workspace.file_path}", str(REPO))
    assert "${" not in text, re.findall(r"\$\{[^}]*\}", text)
    return yaml.safe_load(text)


def test_bundle_tasks_run_the_nightly_steps_with_flags_the_cli_accepts():
    bundle = _bundle()
    (job,) = bundle["resources"]["jobs"].values()
    assert job["max_concurrent_runs"] == 1 and len(job["schedule"]["quartz_cron_expression"].split()) == 6
    clusters = {c["job_cluster_key"]: c["new_cluster"] for c in job["job_clusters"]}
    assert "gpu" in clusters["gpu"]["spark_version"] and "gpu" not in clusters["cpu"]["spark_version"]
    assert clusters["gpu"]["spark_conf"]["spark.task.resource.gpu.amount"] == "1"
    (artifact,) = bundle["artifacts"].values()
    assert artifact["type"] == "whl" and artifact["build"].endswith("-w dist")

    tasks = {t["task_key"]: t for t in job["tasks"]}
    assert list(tasks) == ["featurize", "train", "score"]
    assert tasks["train"]["depends_on"] == [{"task_key": "featurize"}]
    assert tasks["score"]["depends_on"] == [{"task_key": "train"}]
    for key, task in tasks.items():
        assert task["job_cluster_key"] in clusters and task["libraries"] == [{"whl": "./dist/*.whl"}]
        entry = REPO / task["spark_python_task"]["python_file"]
        (command,) = re.findall(r'main\(\["(\w+)", \*sys\.argv\[1:\]\]\)', entry.read_text())
        try:
            args = build_parser().parse_args([command, *task["spark_python_task"]["parameters"]])
        except SystemExit:
            pytest.fail(f"task {key}: `imgfeat {command}` rejects its parameters")
        assert args.step == [key]
        cfg = nightly_config(args)  # every --set key exists in NightlyConfig
        assert cfg.tracking.uri == "databricks" and cfg.train.tracking.uri == "databricks"
        if task["job_cluster_key"] == "gpu":
            assert cfg.featurize.featurizer.device == "cuda"
