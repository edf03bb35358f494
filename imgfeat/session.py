"""SparkSession builder: one place that decides how imgfeat talks to Spark.

Owns: reusing the active session (spark-submit, Databricks, notebooks) or
building a local one with the settings the featurizer relies on, and telling
whether the session can write Delta through Spark. Must not: run any job.
"""

from __future__ import annotations

import os
import sys

from pyspark import SparkConf, SparkContext
from pyspark.java_gateway import launch_gateway
from pyspark.sql import SparkSession

from imgfeat import console
from imgfeat.config import SparkConfig

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
        return active
    options = {"spark.app.name": cfg.app_name, **DEFAULT_CONF, **cfg.conf}
    if cfg.master:  # else spark-submit's --master, or Spark's own default local[*]
        options["spark.master"] = cfg.master
    if "PYSPARK_GATEWAY_PORT" not in os.environ and (cfg.master or "local").startswith("local"):
        # Local workers must run this interpreter (the venv), not `python3` from PATH.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    _launch_jvm(options)
    builder = SparkSession.builder
    for key, value in options.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


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
