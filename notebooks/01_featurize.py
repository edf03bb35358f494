# Databricks notebook source
# MAGIC %md
# MAGIC # 01 · Featurize images into the embeddings table
# MAGIC
# MAGIC Lists the images under a Unity Catalog volume, DBFS path or bucket and adds one row per
# MAGIC image to the embeddings Delta table (schema in the README): exactly what
# MAGIC `imgfeat featurize` and `spark-submit jobs/featurize.py` do, through the same
# MAGIC `imgfeat.runs.featurize_run`.
# MAGIC
# MAGIC **Incremental, Auto Loader-style.** Each run lists the location again and featurizes only
# MAGIC files whose (path, size, modification time) are not in the table for this featurizer's
# MAGIC fingerprint; unchanged files are skipped before any byte is read, a changed file replaces
# MAGIC its row, and the run lands as one Delta version (none if nothing is new). The table is the
# MAGIC checkpoint: re-run this notebook (or schedule it) as often as new files arrive. Auto Loader
# MAGIC (`cloudFiles`) would keep a second copy of that state in a stream checkpoint; for a batch
# MAGIC job over a volume the listing costs seconds per 100k files and needs no checkpoint to lose.
# MAGIC
# MAGIC **Cluster.** Install the wheel as a cluster library (or the next cell installs the newest
# MAGIC `imgfeat-*.whl` of a volume for this notebook); the ML runtime has
# MAGIC torch, mlflow and xgboost. CPU: any ML runtime; each task uses its `spark.task.cpus` cores
# MAGIC for decoding and torch. **GPU**: a GPU ML runtime (e.g. `15.4.x-gpu-ml-scala2.12`) on
# MAGIC one-GPU workers (AWS g4dn/g5, Azure NCasT4_v3), with `spark.task.resource.gpu.amount 1` so
# MAGIC each task owns one GPU (device `auto` or `cuda` takes the task's GPU from Spark's resources:
# MAGIC one model per GPU), `spark.task.cpus` = the worker's cores (they become decode threads),
# MAGIC and batch size 128–256. Keep `spark.python.worker.reuse` on (the default): the model stays
# MAGIC loaded across tasks. The bundle's `gpu` job cluster (`databricks.yml`) is set up this way.

# COMMAND ----------

# imgfeat: a cluster library, else the newest imgfeat wheel under LIBS, installed for this notebook.
LIBS = "/Volumes/main/default/libs"
try:
    import imgfeat  # noqa: F401
except ImportError:
    import glob
    import os

    wheels = sorted(glob.glob(f"{LIBS}/imgfeat-*.whl"), key=os.path.getmtime)
    if not wheels:
        raise ImportError(f"imgfeat is not installed and {LIBS} holds no imgfeat-*.whl: add it as a cluster library") from None
    get_ipython().run_line_magic("pip", f"install --quiet {wheels[-1]}")

# COMMAND ----------

from imgfeat.config import FeaturizeConfig
from imgfeat.notebook import config_from_widgets, widgets

# Widget name → config key; labels, defaults and choices come from the config's fields.
KEYS = {
    "input": "input", "table": "table", "featurizer": "featurizer.name", "device": "featurizer.device",
    "batch_size": "featurizer.batch_size", "tracking_uri": "tracking.uri",
}
widgets(dbutils, FeaturizeConfig, KEYS, defaults={
    "input": "/Volumes/main/default/images", "table": "/Volumes/main/default/lake/embeddings",
})

# COMMAND ----------

from imgfeat.runs import featurize_run

cfg = config_from_widgets(dbutils, FeaturizeConfig, KEYS)
summary = featurize_run(cfg, spark)
print(summary.line())

# COMMAND ----------

display(spark.createDataFrame([{"status": k, "rows": v} for k, v in sorted(summary.counts.items())] or [{"status": "nothing new", "rows": 0}]))
