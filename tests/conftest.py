"""One local SparkSession for the whole test session (Spark start-up is slow)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

# Workers must run the venv's Python, whatever `python` is on PATH.
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
# Tests never touch a tracking server of the user's.
os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture(scope="session")
def spark():
    from imgfeat.config import SparkConfig
    from imgfeat.session import get_spark

    session = get_spark(
        SparkConfig(
            # 2 cores, and up to 3 attempts per task as on a cluster (plain
            # local[2] never retries): the worker-kill test needs the retry.
            master="local[2,3]",
            app_name="imgfeat-tests",
            conf={
                "spark.sql.shuffle.partitions": "2",
                "spark.default.parallelism": "2",
                "spark.ui.showConsoleProgress": "false",
                "spark.driver.memory": "2g",
            },
        )
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> Path:
    """A few real photos (scikit-image's), small, as JPEG and PNG files."""
    from tests.photos import write_photos

    return write_photos(tmp_path_factory.mktemp("photos"))


@pytest.fixture
def inputs(photos: Path, tmp_path: Path) -> Path:
    """A writable copy of `photos` in the test's own folder (tests add, change or remove files)."""
    dest = tmp_path / "in"
    shutil.copytree(photos, dest)
    return dest
