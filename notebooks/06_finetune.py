# Databricks notebook source
# MAGIC %md
# MAGIC # 06 · Fine-tune a featurizer on your labels (TorchDistributor)
# MAGIC
# MAGIC Frozen ImageNet features fall short on images far from ImageNet (X-rays, microscopy,
# MAGIC inspection). This fine-tunes a registry featurizer (default `efficientnet_lite0`, the whole
# MAGIC network, 2 epochs with horizontal flips) with a classification or regression head,
# MAGIC distributed with `pyspark.ml.torch.distributor.TorchDistributor`, on the **train split only**
# MAGIC of the split `imgfeat train` uses (same seed, same hash of the bytes). The network (head
# MAGIC dropped) is registered in MLflow; use it as `weights: models:/NAME/latest` wherever a
# MAGIC featurizer is configured: its rows sit beside the pretrained rows in the embeddings table.
# MAGIC The same `imgfeat.runs.finetune_run` as `imgfeat finetune` and `jobs/finetune.py`; every key
# MAGIC of `conf/finetune.yaml` can come from the optional config file.
# MAGIC
# MAGIC On a GPU cluster set `use_gpu` to true and `num_processes` to the number of GPUs; with
# MAGIC `local_mode` false the processes run as Spark barrier tasks on the workers.

# COMMAND ----------

# MAGIC %pip install /Volumes/main/default/libs/imgfeat-0.1.0-py3-none-any.whl

# COMMAND ----------

dbutils.widgets.text("input", "/Volumes/main/default/lake/photos", "Labeled images (directory, glob or URI)")
dbutils.widgets.text("label", "folder", "Label: 'folder' (parent folder name) or a column of labels_source")
dbutils.widgets.text("labels_source", "", "Labels table: CSV, Parquet or Delta with a `path` column (optional)")
dbutils.widgets.text("featurizer", "efficientnet_lite0", "Featurizer to fine-tune")
dbutils.widgets.text("epochs", "2", "Epochs")
dbutils.widgets.text("num_processes", "2", "TorchDistributor processes")
dbutils.widgets.dropdown("local_mode", "true", ["true", "false"], "Processes on the driver (true) or the workers")
dbutils.widgets.dropdown("use_gpu", "false", ["true", "false"], "Train on GPUs")
dbutils.widgets.text("model_name", "imgfeat-finetuned", "Registered name of the fine-tuned featurizer")
dbutils.widgets.text("config", "", "Optional YAML config (keys of conf/finetune.yaml)")
dbutils.widgets.text("tracking_uri", "", "MLflow tracking URI (empty: the workspace's)")

# COMMAND ----------

from imgfeat.config import FinetuneConfig, load_config
from imgfeat.runs import finetune_run

w = dbutils.widgets.get
cfg = load_config(
    FinetuneConfig,
    w("config") or None,
    input=w("input"),
    model_name=w("model_name"),
    epochs=int(w("epochs")),
    **{
        "featurizer.name": w("featurizer"),
        "labels.label": w("label"),
        "labels.source": w("labels_source") or None,
        "distributor.num_processes": int(w("num_processes")),
        "distributor.local_mode": w("local_mode") == "true",
        "distributor.use_gpu": w("use_gpu") == "true",
        "tracking.uri": w("tracking_uri") or None,
    },
)
summary = finetune_run(cfg, spark)
print("\n".join(summary.lines()))

# COMMAND ----------

# MAGIC %md
# MAGIC Loss and validation metric per epoch (also charted in the MLflow run). Next: featurize with
# MAGIC the printed `weights` (notebook 01, `weights` widget or `featurizer.weights` in the config)
# MAGIC and train on both featurizers (notebook 02 with a config listing
# MAGIC `featurizers: [efficientnet_lite0, {name: efficientnet_lite0, weights: 'models:/NAME/latest'}]`).

# COMMAND ----------

display(spark.createDataFrame([{"epoch": e["epoch"], "loss": e["loss"], "images_per_second": e["images_per_second"],
                                **e["validation"]} for e in summary.epochs]))
print("weights:", summary.weights)
