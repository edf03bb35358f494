# Databricks notebook source
# MAGIC %md
# MAGIC # 03 · Batch-score new images with the registered model
# MAGIC
# MAGIC Scores every image under `input` with a registered model into a Delta table of scores
# MAGIC (`path`, `prediction`, probabilities, `status`, `error`, model name and version). Images
# MAGIC whose bytes and featurizer are already in the embeddings table reuse their stored
# MAGIC embedding; only the others are featurized. Bad images are rows with a status. Re-scoring
# MAGIC with the same model version replaces rows, never duplicates them.
# MAGIC The same `imgfeat.runs.score_run` as `imgfeat score` and `jobs/score.py`.

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

from imgfeat.config import ScoreConfig
from imgfeat.notebook import config_from_widgets, widgets

# Widget name → config key; labels, defaults and choices come from the config's fields.
# An empty `table` is null: every image is featurized.
KEYS = {"model": "model", "input": "input", "output": "output", "table": "table", "tracking_uri": "tracking.uri"}
widgets(dbutils, ScoreConfig, KEYS, defaults={
    "model": "models:/imgfeat/latest", "input": "/Volumes/main/default/new_images",
    "output": "/Volumes/main/default/lake/scores", "table": "/Volumes/main/default/lake/embeddings",
})

# COMMAND ----------

from imgfeat import delta
from imgfeat.runs import score_run

cfg = config_from_widgets(dbutils, ScoreConfig, KEYS)
summary = score_run(cfg, spark)
print(summary.line())

# COMMAND ----------

scores = delta.read_table(spark, cfg.output, contract=None)
display(scores.where(scores.model_version == summary.model_version).orderBy("path").limit(100))
