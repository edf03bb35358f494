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

# MAGIC %pip install /Volumes/main/default/libs/imgfeat-0.1.0-py3-none-any.whl

# COMMAND ----------

dbutils.widgets.text("table", "/Volumes/main/default/lake/embeddings", "Embeddings Delta table")
dbutils.widgets.text("featurizer", "efficientnet_lite0", "Featurizer(s) to use, comma-separated, or 'auto' (select's choice)")
dbutils.widgets.text("label", "folder", "Label: 'folder' (parent folder name) or a column of labels_source")
dbutils.widgets.text("labels_source", "", "Labels table: CSV, Parquet or Delta with a `path` column (optional)")
dbutils.widgets.text("model_name", "imgfeat", "Registered model name")
dbutils.widgets.text("config", "", "Optional YAML config (keys of conf/train.yaml)")
dbutils.widgets.text("tracking_uri", "", "MLflow tracking URI (empty: the workspace's)")
dbutils.widgets.text("select_input", "", "Images to try every offline featurizer on first (empty: skip)")

# COMMAND ----------

from imgfeat.config import SelectConfig, TrainConfig, load_config
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
    chosen = select_run(
        load_config(
            SelectConfig,
            input=w("select_input"),
            table=w("table"),
            **{
                "labels.label": w("label"),
                "labels.source": w("labels_source") or None,
                "tracking.uri": w("tracking_uri") or None,
            },
        ),
        spark,
    )
    print("\n".join(chosen.lines()))

# COMMAND ----------

cfg = load_config(
    TrainConfig,
    w("config") or None,
    table=w("table"),
    featurizers=w("featurizer").split(","),
    model_name=w("model_name"),
    **{
        "labels.label": w("label"),
        "labels.source": w("labels_source") or None,
        "tracking.uri": w("tracking_uri") or None,
    },
)
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
