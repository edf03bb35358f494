# Databricks notebook source
# MAGIC %md
# MAGIC # 02 · Train, log and register a model on the embeddings
# MAGIC
# MAGIC XGBoost on Spark over the embeddings table (plus any tabular columns of a labels table),
# MAGIC with the linear and raw-pixel baselines side by side, logged to MLflow with lineage (the
# MAGIC embeddings table version it read) and registered as one model that scores raw images.
# MAGIC The same `imgfeat.runs.train_run` as `imgfeat train` and `jobs/train.py`; every key of
# MAGIC `conf/train.yaml` can come from the optional config file.
# MAGIC
# MAGIC On Databricks, leave `tracking_uri` empty: runs go to the workspace's MLflow and the
# MAGIC model to its registry (Unity Catalog: name it `catalog.schema.model`).

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

from imgfeat.config import SelectConfig, TrainConfig
from imgfeat.notebook import config_from_widgets, widgets

# Widget name → config key; labels, defaults and choices come from the config's fields.
KEYS = {
    "table": "table", "featurizer": "featurizers", "label": "labels.label", "labels_source": "labels.source",
    "model_name": "model_name", "tracking_uri": "tracking.uri",
}
SELECT_KEYS = {
    "select_input": "input", "table": "table", "label": "labels.label", "labels_source": "labels.source",
    "tracking_uri": "tracking.uri",
}
widgets(dbutils, TrainConfig, KEYS, defaults={"table": "/Volumes/main/default/lake/embeddings"})
dbutils.widgets.text("select_input", "", "Images to try every offline featurizer on first (empty: skip)")

# COMMAND ----------

from imgfeat.runs import select_run, train_run

w = dbutils.widgets.get

# COMMAND ----------

# MAGIC %md
# MAGIC Optional: which featurizer fits these images? With `select_input` set, `select_run` (as
# MAGIC `imgfeat select`) featurizes a stratified labeled sample (1,000 images) with every featurizer
# MAGIC whose weights are available offline, `grayscale16` as the floor and the best pair, into the
# MAGIC embeddings table, cross-validates each and recommends one (README, "Choosing a featurizer").
# MAGIC Set `featurizer` to `auto` to train on its choice.

# COMMAND ----------

if w("select_input"):
    chosen = select_run(config_from_widgets(dbutils, SelectConfig, SELECT_KEYS, config=False), spark)
    print("\n".join(chosen.lines()))

# COMMAND ----------

cfg = config_from_widgets(dbutils, TrainConfig, KEYS)
summary = train_run(cfg, spark)
print("\n".join(summary.lines()))

# COMMAND ----------

display(
    spark.createDataFrame(
        [
            {"model": m, **{f"cv_{k}_mean": v for k, v in s.mean().items()},
             **{f"cv_{k}_std": v for k, v in s.std().items()}, **{f"test_{k}": v for k, v in s.test.items()}}
            for m, s in summary.result.scores.items()
        ]
    )
)
