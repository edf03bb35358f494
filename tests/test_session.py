"""imgfeat.session: the workers' Python, the shipped package, an executor's missing module as one line.

The end-to-end run against a real standalone cluster is in tests/test_cluster.py (slow).
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import zipfile

import pytest

from imgfeat import session
from imgfeat.errors import ConfigError


def test_a_missing_module_on_an_executor_becomes_one_line(spark):
    def needs_a_module(_):
        import imgfeat_no_such_module  # noqa: F401

    with pytest.raises(Exception) as failed:
        spark.sparkContext.parallelize([0], 1).map(needs_a_module).collect()
    error = session.executor_error(failed.value)
    assert error is not None and error.exit_code == 2
    text = str(error)
    assert "\n" not in text and "no module 'imgfeat_no_such_module'" in text
    assert "install it" in text and "spark.pyspark.python" in text


def test_a_missing_module_on_the_driver_keeps_its_traceback():
    try:
        import imgfeat_no_such_module  # noqa: F401
    except ModuleNotFoundError as exc:
        assert session.executor_error(exc) is None


def test_package_zip_imports_alone_with_its_metadata(tmp_path):
    archive = session.package_zip()
    names = zipfile.ZipFile(archive).namelist()
    assert "imgfeat/session.py" in names and not any("__pycache__" in n for n in names)
    probe = (
        f"import sys; sys.path.insert(0, {str(archive)!r}); import imgfeat.errors, importlib.metadata as m; "
        "print(imgfeat.errors.__file__); print(m.version('imgfeat'))"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True)
    where, version = out.stdout.split()
    assert where.startswith(str(archive)) and version == importlib.metadata.version("imgfeat")
    assert session.package_zip() == archive  # built once


def test_local_masters_ship_nothing(spark):
    assert session.is_local(spark.sparkContext.master)
    assert session.ship_package(spark) is None
    assert not session.is_local("local-cluster[2,1,1024]") and not session.is_local("spark://h:7077")


def test_workers_python_from_config_and_a_foreign_driver_python_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("PYSPARK_PYTHON", "/from/env/python")
    session._use_workers_python({"spark.pyspark.python": "/cluster/env/bin/python"})
    assert os.environ["PYSPARK_PYTHON"] == "/cluster/env/bin/python"  # the config wins, as in spark-submit
    monkeypatch.delenv("PYSPARK_PYTHON")
    session._use_workers_python({})
    assert os.environ["PYSPARK_PYTHON"] == sys.executable
    session._use_workers_python({"spark.pyspark.driver.python": sys.executable})  # this very driver: fine
    other = tmp_path / "python"
    other.write_text("#!/bin/sh\n")
    other.chmod(0o755)
    with pytest.raises(ConfigError, match="spark.pyspark.driver.python"):
        session._use_workers_python({"spark.pyspark.driver.python": str(other)})
