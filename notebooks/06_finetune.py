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

from imgfeat.config import FinetuneConfig
from imgfeat.notebook import config_from_widgets, widgets

# Widget name → config key; labels, defaults and choices come from the config's fields.
KEYS = {
    "input": "input", "label": "labels.label", "labels_source": "labels.source", "featurizer": "featurizer.name",
    "epochs": "epochs", "num_processes": "distributor.num_processes", "local_mode": "distributor.local_mode",
    "use_gpu": "distributor.use_gpu", "model_name": "model_name", "tracking_uri": "tracking.uri",
}
widgets(dbutils, FinetuneConfig, KEYS, defaults={"input": "/Volumes/main/default/lake/photos", "num_processes": "2"})

# COMMAND ----------

from imgfeat.runs import finetune_run

cfg = config_from_widgets(dbutils, FinetuneConfig, KEYS)
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
