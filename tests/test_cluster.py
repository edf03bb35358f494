"""spark-submit on a real Spark standalone cluster (master + 2 workers on 127.0.0.1).

The library travels the way a user ships it: a zip of the package via
`--py-files`, or shipped by the `imgfeat` CLI itself (`imgfeat.session.ship_package`). Driver and executors run a Python environment that has the
dependencies (torch, pyspark, ...) but NOT imgfeat, so the job only works if
the shipped archive reaches every executor's `sys.path`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from deltalake import DeltaTable

from imgfeat.config import FeaturizeConfig, load_config
from imgfeat.dev.samples import write_labeled_photos
from imgfeat.runs import featurize_run
from imgfeat.session import package_zip
from scripts.cluster import Cluster, down, spark_home, up

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SUBMIT_TIMEOUT_S = 900


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Cluster:
    """Master + two 1-core/2g workers on free ports; stopped even if a test fails."""
    workdir = tmp_path_factory.mktemp("cluster")
    try:
        yield up(workdir, port=_free_port(), webui_port=_free_port(), workers=2, cores=1, memory="2g")
    finally:
        down(workdir)


@pytest.fixture(scope="module")
def shipped(tmp_path_factory) -> dict[str, Path]:
    """imgfeat as a `--py-files` zip (`imgfeat.session.package_zip`: the package and its
    METADATA, as a wheel holds them), and a Python env with the deps but not imgfeat.

    The env is a bare venv whose one `.pth` line points at this
    venv's site-packages; site-packages' own `.pth` files (the editable install
    of imgfeat among them) are not processed there.
    """
    root = tmp_path_factory.mktemp("ship")
    (root / "dist").mkdir()
    pyfiles = shutil.copy(package_zip(), root / "dist" / "imgfeat.zip")  # what the CLI ships itself
    env = root / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    site = next(p for p in map(Path, sys.path) if p.name == "site-packages" and (p / "torch").is_dir())
    (next(env.glob("lib/python3*/site-packages")) / "deps.pth").write_text(f"{site}\n")
    python = env / "bin" / "python"
    probe = subprocess.run([str(python), "-c", "import imgfeat"], cwd=root, capture_output=True)
    assert probe.returncode != 0, "the deps-only env must not see imgfeat by itself"
    return {"pyfiles": Path(pyfiles), "python": python}


@dataclass
class Submitted:
    pid: int  # the driver JVM (spark-submit execs it)
    returncode: int
    stdout: str
    stderr: str

    def problem(self) -> str:
        """Output without Spark's INFO lines and progress bars: the traceback, if any (a job
        prints it on stdout or stderr)."""
        text = f"{self.stdout}\n{self.stderr}"
        keep = [ln for ln in text.splitlines() if " INFO " not in ln and "[Stage " not in ln and ln.strip()]
        return "\n".join(keep[-60:])


def _submit(cluster: Cluster, shipped: dict[str, Path], cwd: Path, job: str, *args: str) -> Submitted:
    """`spark-submit --master spark://... --py-files imgfeat.zip jobs/<job>.py ARGS`, event log in cwd/events/<job>."""
    events = cwd / "events" / job
    events.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYSPARK_")}
    env["SPARK_LOCAL_IP"] = "127.0.0.1"
    cmd = [
        str(spark_home() / "bin" / "spark-submit"),
        "--master", cluster.master_url,
        "--py-files", str(shipped["pyfiles"]),
        "--conf", f"spark.pyspark.python={shipped['python']}",
        "--conf", "spark.executor.memory=1g",
        "--conf", "spark.scheduler.minRegisteredResourcesRatio=1.0",
        "--conf", "spark.locality.wait=0s",
        "--conf", "spark.eventLog.enabled=true",
        "--conf", f"spark.eventLog.dir={events}",
        "--conf", "spark.eventLog.compress=false",
        "--conf", "spark.eventLog.rolling.enabled=false",
        str(REPO / "jobs" / f"{job}.py"), *args,
    ]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=SUBMIT_TIMEOUT_S)
    finally:
        proc.kill()
    return Submitted(proc.pid, proc.returncode, out, err)


def _events(cwd: Path, job: str) -> list[dict]:
    (log,) = [p for p in (cwd / "events" / job).iterdir() if not p.name.endswith(".inprogress")]
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def _executor_pids(cluster: Cluster, app_id: str) -> dict[str, int]:
    """Executor id → JVM pid, from each executor's stderr in the workers' work dirs."""
    pids = {}
    for work in cluster.worker_dirs():
        for stderr in work.glob(f"{app_id}/*/stderr"):
            found = re.search(r"Started daemon with process name: (\d+)@", stderr.read_text(errors="replace"))
            assert found, f"no pid in {stderr}"
            pids[stderr.parent.name] = int(found.group(1))
    return pids


def _table(path: Path) -> dict[str, dict]:
    return {r["path"]: r for r in DeltaTable(str(path)).to_pyarrow_table().to_pylist()}


def test_spark_submit_featurize_then_train_on_standalone_cluster(cluster, shipped, spark, tmp_path):
    # 8 per class: with split.folds=2, every class then lies in both folds (train refuses a class
    # whose images all hash into one fold: that fold's model would never see it).
    images = write_labeled_photos(tmp_path / "images", per_class=8)
    n = len([p for p in images.rglob("*.jpg")])
    cluster_table, local_table = tmp_path / "emb_cluster", tmp_path / "emb_local"
    done = _submit(
        cluster, shipped, tmp_path, "featurize",
        "--input", str(images), "--table", str(cluster_table),
        "--set", "tracking.enabled=false", "--set", "featurizer.batch_size=1",
        "--summary-json", str(tmp_path / "summary.json"),
    )
    assert done.returncode == 0, done.problem()
    assert f"featurize: {n} images (ok {n})" in done.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())

    # Executors are separate processes: other ids and other PIDs than the driver.
    events = _events(tmp_path, "featurize")
    app_id = next(e["App ID"] for e in events if e["Event"] == "SparkListenerApplicationStart")
    added = {e["Executor ID"] for e in events if e["Event"] == "SparkListenerExecutorAdded"}
    ran_on = {e["Task Info"]["Executor ID"] for e in events if e["Event"] == "SparkListenerTaskEnd"}
    assert added == ran_on == {"0", "1"}
    pids = _executor_pids(cluster, app_id)
    assert set(pids) == added and len(set(pids.values())) == 2
    assert done.pid not in pids.values()

    # Each executor (one core, one reused Python worker) loads the model once,
    # although batch size 1 makes one batch per image.
    assert summary["model_loads"] == len(added) == 2 < n == summary["counts"]["ok"]

    # The executors got imgfeat only from the shipped archive.
    for work in cluster.worker_dirs():
        for executor in work.glob(f"{app_id}/*"):
            assert (executor / "imgfeat.zip").is_file()

    # Same table as a local run: same rows, embeddings within 1e-5.
    cfg = load_config(FeaturizeConfig, overrides=["tracking.enabled=false"], input=str(images), table=str(local_table))
    featurize_run(cfg, spark)
    on_cluster, local = _table(cluster_table), _table(local_table)
    assert sorted(on_cluster) == sorted(local) and len(local) == n
    for path, row in local.items():
        other = on_cluster[path]
        for col in ("content_sha256", "length", "modification_time", "featurizer", "featurizer_fingerprint",
                    "dim", "status", "error", "width", "height"):
            assert other[col] == row[col], (path, col)
        np.testing.assert_allclose(other["embedding"], row["embedding"], atol=1e-5, rtol=0)

    # Train on the cluster's table: XGBoost runs on the executors, the model is registered.
    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = _submit(
        cluster, shipped, tmp_path, "train",
        "--table", str(cluster_table), "--set", f"tracking.uri={db}",
        "--set", "baselines.linear=false", "--set", "baselines.raw_pixels=false",
        "--set", "split.folds=2",  # 5 photos per class: 2 folds leave each class in both
    )
    assert done.returncode == 0, done.problem()
    assert "model imgfeat version 1" in done.stdout
    ran_on = {e["Task Info"]["Executor ID"] for e in _events(tmp_path, "train") if e["Event"] == "SparkListenerTaskEnd"}
    assert ran_on and "driver" not in ran_on

    from mlflow import MlflowClient

    client = MlflowClient(db, db)
    (version,) = client.search_model_versions("name = 'imgfeat'")
    run = client.get_run(version.run_id)
    assert run.data.tags["imgfeat.embeddings_table"] == str(cluster_table)
    assert run.data.tags["imgfeat.embeddings_version"] == "0"
    assert run.data.metrics["xgboost.test_accuracy"] > 1 / 3  # three balanced classes


def test_cli_featurize_reaches_the_cluster_without_pyspark_env(cluster, shipped, tmp_path):
    """`imgfeat featurize --set spark.master=spark://...` from a shell with no PYSPARK_* variable:
    the CLI reads `spark.pyspark.python` from its config and ships imgfeat itself to
    executors whose Python (the deps-only env) lacks it."""
    images = write_labeled_photos(tmp_path / "images", per_class=2)
    n = len(list(images.rglob("*.jpg")))
    table = tmp_path / "emb"
    conf = {
        "spark.pyspark.python": str(shipped["python"]),
        "spark.executor.memory": "1g",
        "spark.scheduler.minRegisteredResourcesRatio": "1.0",
        "spark.locality.wait": "0s",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK_", "SPARK_"))}
    done = subprocess.run(
        [str(Path(sys.executable).with_name("imgfeat")), "featurize", "--input", str(images), "--table", str(table),
         "--set", f"spark.master={cluster.master_url}", "--set", f"spark.conf={json.dumps(conf)}",
         "--set", "tracking.enabled=false", "--summary-json", str(tmp_path / "summary.json")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=SUBMIT_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _table(table)
    assert len(rows) == n and {r["status"] for r in rows.values()} == {"ok"}
    assert all(len(r["embedding"]) == r["dim"] > 0 for r in rows.values())
    # Executors ran the deps-only Python, so they imported imgfeat from the zip the CLI shipped.
    shipped_to = [z for work in cluster.worker_dirs() for z in work.glob("app-*/*/imgfeat-*.zip")]
    assert shipped_to and len({z.name for z in shipped_to}) == 1  # one zip, built once for the run
