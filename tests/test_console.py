"""What a user sees on the terminal: imgfeat's lines and progress, the libraries' chatter in a log file."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # a CLI run in its own JVM


def test_a_cli_run_prints_imgfeat_lines_only_and_logs_spark_in_a_file(photos, tmp_path):
    log = tmp_path / "logs" / "featurize.log"
    proc = subprocess.run(
        [sys.executable, "-m", "imgfeat.cli", "featurize", "--input", str(photos), "--table", str(tmp_path / "emb"),
         "--set", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", "--log-file", str(log)],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )

    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    assert lines[0] == f"imgfeat: Spark, MLflow and XGBoost logs: {log} (--verbose shows them here)"
    assert all(line.startswith(("imgfeat: ", "featurize  ")) for line in lines), proc.stderr  # nothing else
    assert lines[-1].startswith("featurize  8/8 images  ")  # the progress line of the stage, finished
    assert proc.stdout.startswith("featurize: 8 images (ok 8)")
    logged = log.read_text()
    assert "log4j" in logged and "WARN" in logged  # the JVM's own start-up lines landed in the file
