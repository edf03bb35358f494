"""SparkSession builder: one place that decides how imgfeat talks to Spark.

Owns: reusing the active session (spark-submit, Databricks, notebooks) or
building one with the settings the featurizer relies on; reaching a non-local
master the way spark-submit does (the workers' Python from `spark.pyspark.python`,
imgfeat shipped to executors as a zip, as `--py-files` ships it); telling whether
the session can write Delta through Spark; and saying in one line what an
executor lacks when a Spark job fails on a missing module. Must not: run any job.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import tempfile
import zipfile
from functools import cache
from pathlib import Path

from pyspark import SparkConf, SparkContext
from pyspark.java_gateway import launch_gateway
from pyspark.sql import SparkSession

from imgfeat import console
from imgfeat.config import SparkConfig
from imgfeat.errors import ConfigError, ImgfeatError

#: Settings imgfeat wants unless the user overrides them in `spark.conf`.
DEFAULT_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    # Workers are reused, so the per-worker model cache survives across tasks.
    "spark.python.worker.reuse": "true",
    # Spark's stage bars (`[Stage 10:> (0 + 2) / 2]`) say nothing about images:
    # imgfeat draws its own progress (imgfeat.progress).
    "spark.ui.showConsoleProgress": "false",
    "spark.ui.enabled": "false",
    "spark.sql.shuffle.partitions": "8",
}


def get_spark(cfg: SparkConfig | None = None) -> SparkSession:
    """Return the active session, or build one (default master `local[*]`).

    An active session (spark-submit, Databricks, a test fixture) is reused as
    is: the cluster's own settings win over ours, except `spark.conf` keys the
    user set explicitly, which are applied where Spark allows it at runtime.
    """
    cfg = cfg or SparkConfig()
    active = SparkSession.getActiveSession()
    if active is not None:
        for key, value in cfg.conf.items():
            try:
                active.conf.set(key, value)
            except Exception:  # static conf of a running session: keep the cluster's
                pass
        ship_package(active)
        return active
    options = {"spark.app.name": cfg.app_name, **DEFAULT_CONF, **cfg.conf}
    if cfg.master:  # else spark-submit's --master, or Spark's own default local[*]
        options["spark.master"] = cfg.master
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        _use_workers_python(options)
    _launch_jvm(options)
    builder = SparkSession.builder
    for key, value in options.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    ship_package(spark)
    return spark


def _use_workers_python(options: dict[str, str]) -> None:
    """What spark-submit does with `spark.pyspark.python` / `spark.pyspark.driver.python`,
    for a session this process starts (pyspark itself reads only $PYSPARK_PYTHON).

    Workers run `spark.pyspark.python`, else $PYSPARK_PYTHON, else this interpreter: a
    venv's Python, not the `python3` on the executors' PATH (which lacks the
    dependencies). The driver is this process, so a different driver Python is refused.
    """
    python = options.get("spark.pyspark.python") or os.environ.get("PYSPARK_PYTHON") or sys.executable
    os.environ["PYSPARK_PYTHON"] = python
    driver = options.get("spark.pyspark.driver.python")
    if driver and not _same_program(driver, sys.executable):
        raise ConfigError(
            f"spark.pyspark.driver.python is {driver}, but this driver runs {sys.executable}: "
            f"start imgfeat with that Python (`{driver} -m imgfeat.cli ...`) or drop the setting"
        )


def _same_program(name: str, path: str) -> bool:
    import shutil

    found = shutil.which(name)
    return found is not None and os.path.abspath(found) == os.path.abspath(path)


def is_local(master: str) -> bool:
    """True for masters whose Python workers run in this machine's environment (`local`, `local[4]`);
    `local-cluster[...]` and real masters start executors that may not have imgfeat."""
    return master == "local" or master.startswith("local[")


#: applicationIds whose executors already got imgfeat from `ship_package`.
_SHIPPED: set[str] = set()


def ship_package(spark: SparkSession) -> Path | None:
    """Send imgfeat to the executors of a non-local master (`SparkContext.addPyFile`), as
    `spark-submit --py-files imgfeat.zip` does; returns the zip, or None when not needed.

    Not needed: local masters (workers import this very installation), Databricks
    (cluster and notebook libraries reach the executors), and an imgfeat imported from
    a shipped zip already (spark-submit). Executors that have imgfeat installed run the
    driver's copy too, so driver and executors never run two versions.
    """
    sc = spark.sparkContext
    local = is_local(sc.master or "local")
    if (
        local
        or "DATABRICKS_RUNTIME_VERSION" in os.environ
        or not _package_dir().is_dir()
        or sc.applicationId in _SHIPPED
    ):
        return None
    archive = package_zip()
    sc.addPyFile(str(archive))
    _SHIPPED.add(sc.applicationId)
    return archive


def _package_dir() -> Path:
    import imgfeat

    return Path(imgfeat.__file__).parent


@cache
def package_zip(dest: Path | None = None) -> Path:
    """The installed imgfeat package as a zip executors import from (`imgfeat/...` at its root,
    no `__pycache__`), built once per content: named by the hash of its files, under
    `dest` (default $TMPDIR/imgfeat-ship).

    Why a zip, not the wheel: pyspark puts only `.zip`, `.egg` and `.jar` py-files on
    executors' sys.path (`SparkContext.PACKAGE_EXTENSIONS`), and zipping the package
    works the same for an editable install (a clone) as for an installed wheel.
    """
    package = _package_dir()
    files = sorted(p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    metadata = _metadata()
    digest = hashlib.sha256(repr(metadata).encode())
    for path in files:
        digest.update(str(path.relative_to(package.parent)).encode() + b"\0" + path.read_bytes())
    folder = Path(dest or Path(tempfile.gettempdir()) / "imgfeat-ship")
    archive = folder / f"imgfeat-{digest.hexdigest()[:16]}.zip"
    if not archive.exists():
        folder.mkdir(parents=True, exist_ok=True)
        partial = archive.with_suffix(f".{os.getpid()}.partial")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in files:
                zf.write(path, path.relative_to(package.parent))
            if metadata:
                zf.writestr(*metadata)
        partial.replace(archive)  # atomic: a concurrent build never ships half a zip
    return archive


def _metadata() -> tuple[str, str] | None:
    """imgfeat's METADATA and its name inside a zip: `importlib.metadata` finds it there, so
    code that reads imgfeat's version or requirements works from the zip as from a wheel."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution("imgfeat")
    except PackageNotFoundError:  # a source tree on sys.path, never installed
        return None
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    return f"imgfeat-{dist.version}.dist-info/METADATA", text


_MISSING_MODULE = re.compile(r"(?:ModuleNotFoundError|ImportError): No module named '([\w.]+)'")
_NO_PYTHON = re.compile(r'Cannot run program "([^"]+)"')


def executor_error(exc: BaseException) -> ImgfeatError | None:
    """A Spark job that failed because an executor's Python lacks a module (or the Python
    itself is missing), as one line saying what to install or set; None for any other error.

    Only errors that came back through Spark (py4j, pyspark) are read: a missing module
    on the driver keeps its own traceback.
    """
    chain = [exc]
    while (cause := chain[-1].__cause__ or chain[-1].__context__) is not None and cause not in chain:
        chain.append(cause)
    text = "\n".join(str(e) for e in chain if type(e).__module__.startswith(("py4j", "pyspark")))
    python = os.environ.get("PYSPARK_PYTHON", "python3")
    if found := _MISSING_MODULE.search(text):
        module = found.group(1).split(".")[0]
        fix = (
            "it is shipped to non-local masters; under spark-submit pass --py-files imgfeat.zip (docs/cluster.md)"
            if module == "imgfeat"
            else f"install it (pip install '{module}', or imgfeat with its dependencies) in the executors' Python"
        )
        return ImgfeatError(
            f"an executor's Python ({python}) has no module '{module}': {fix}, "
            "or set spark.conf {spark.pyspark.python: <a Python that has it on every node>}"
        )
    if found := _NO_PYTHON.search(text):
        return ImgfeatError(
            f"executors cannot run Python {found.group(1)}: set spark.conf "
            "{spark.pyspark.python: <the path of a Python with imgfeat's dependencies on every node>}"
        )
    return None


def _launch_jvm(options: dict[str, str]) -> None:
    """Start the JVM with its stdout and stderr in imgfeat's log file, when the
    console is quiet (`imgfeat.console`); else leave it to Spark, which lets the
    JVM write to the terminal. A JVM already running (spark-submit, a stopped
    session's) is left as it is."""
    if SparkContext._gateway is not None or "PYSPARK_GATEWAY_PORT" in os.environ:
        return
    output = console.child_output()
    if output is None:
        return
    conf = SparkConf(loadDefaults=False).setAll(list(options.items()))
    SparkContext._ensure_initialized(gateway=launch_gateway(conf, {"stdout": output, "stderr": output}), conf=conf)


#: applicationId → whether its JVM has Delta; a classpath never changes within an application.
_DELTA_IN_JVM: dict[str, bool] = {}


def has_spark_delta(spark: SparkSession | None) -> bool:
    """True when the JVM has Delta Lake (Databricks, or delta-spark jars on the classpath);
    False without a session (delta-rs then writes alone).

    Asked once per application: a failed class lookup costs ~0.1 s of Py4J
    error handling, paid several times per run otherwise.
    """
    if spark is None:
        return False
    app = spark.sparkContext.applicationId
    if app not in _DELTA_IN_JVM:
        try:
            spark.sparkContext._jvm.java.lang.Class.forName("io.delta.tables.DeltaTable")  # type: ignore[union-attr]
            _DELTA_IN_JVM[app] = True
        except Exception:
            _DELTA_IN_JVM[app] = False
    return _DELTA_IN_JVM[app]
