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

# MAGIC %pip install /Volumes/main/default/libs/imgfeat-0.1.0-py3-none-any.whl[insights]

# COMMAND ----------

dbutils.widgets.text("model", "models:/imgfeat/latest", "Model: models:/NAME/VERSION, models:/NAME/latest or models:/NAME@alias")
dbutils.widgets.text("output", "/Volumes/main/default/reports/insights", "Folder for report.html")
dbutils.widgets.text("sample", "", "Images projected (empty: 2000 or all if fewer)")
dbutils.widgets.dropdown("projection", "umap", ["umap", "trimap", "pca"], "2-D projection")
dbutils.widgets.text("config", "", "Optional YAML config (keys of conf/insights.yaml)")
dbutils.widgets.text("tracking_uri", "", "MLflow tracking URI (empty: the workspace's)")

# COMMAND ----------

from imgfeat.config import InsightsConfig, load_config
from imgfeat.runs import insights_run

w = dbutils.widgets.get
cfg = load_config(
    InsightsConfig,
    w("config") or None,
    model=w("model"),
    output=w("output"),
    sample=int(w("sample")) if w("sample") else None,
    projection=w("projection"),
    **{"tracking.uri": w("tracking_uri") or None},
)
summary = insights_run(cfg, spark)
print(summary.line())

# COMMAND ----------

displayHTML(open(summary.report, encoding="utf-8").read())
