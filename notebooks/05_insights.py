# Databricks notebook source
# MAGIC %md
# MAGIC # 05 · Insights: see what the model sees
# MAGIC
# MAGIC One self-contained HTML report for a registered model, on the embeddings table version and
# MAGIC split it was trained on: the embedding projection coloured by label (wrong test predictions
# MAGIC ringed, thumbnails on hover), SHAP-weighted activation maps, outliers, near-duplicate pairs
# MAGIC (leakage across train/test, conflicting labels; found in Spark), errors by class, and how
# MAGIC unlike the training images the test images are. Logged as an artifact of an MLflow run whose
# MAGIC tags name the model, its train run and the table version.
# MAGIC The same `imgfeat.runs.insights_run` as `imgfeat insights` and `jobs/insights.py`.

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
    get_ipython().run_line_magic("pip", f"install --quiet {wheels[-1]}[insights]")

# COMMAND ----------

from imgfeat.config import InsightsConfig
from imgfeat.notebook import config_from_widgets, widgets

# Widget name → config key; labels, defaults and choices come from the config's fields.
KEYS = {"model": "model", "output": "output", "sample": "sample", "projection": "projection", "tracking_uri": "tracking.uri"}
widgets(dbutils, InsightsConfig, KEYS, defaults={
    "model": "models:/imgfeat/latest", "output": "/Volumes/main/default/reports/insights",
})

# COMMAND ----------

from imgfeat.runs import insights_run

cfg = config_from_widgets(dbutils, InsightsConfig, KEYS)
summary = insights_run(cfg, spark)
print(summary.line())

# COMMAND ----------

displayHTML(open(summary.report, encoding="utf-8").read())
