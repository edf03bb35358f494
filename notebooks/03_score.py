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

# MAGIC %pip install /Volumes/main/default/libs/imgfeat-0.1.0-py3-none-any.whl

# COMMAND ----------

dbutils.widgets.text("model", "models:/imgfeat/latest", "Model: models:/NAME/VERSION, models:/NAME/latest or models:/NAME@alias")
dbutils.widgets.text("input", "/Volumes/main/default/new_images", "Images to score")
dbutils.widgets.text("output", "/Volumes/main/default/lake/scores", "Scores Delta table")
dbutils.widgets.text("table", "/Volumes/main/default/lake/embeddings", "Embeddings table to reuse rows from (empty: featurize all)")
dbutils.widgets.text("config", "", "Optional YAML config (keys of conf/score.yaml)")
dbutils.widgets.text("tracking_uri", "", "MLflow tracking URI (empty: the workspace's)")

# COMMAND ----------

from imgfeat import delta
from imgfeat.config import ScoreConfig, load_config
from imgfeat.runs import score_run

w = dbutils.widgets.get
cfg = load_config(
    ScoreConfig,
    w("config") or None,
    [] if w("table") else ["table=null"],
    model=w("model"),
    table=w("table") or None,
    input=w("input"),
    output=w("output"),
    **{"tracking.uri": w("tracking_uri") or None},
)
summary = score_run(cfg, spark)
print(summary.line())

# COMMAND ----------

scores = delta.read_table(spark, cfg.output, contract=None)
display(scores.where(scores.model_version == summary.model_version).orderBy("path").limit(100))
