# Databricks notebook source
# MAGIC %md
# MAGIC # 04 · Explore the embeddings table
# MAGIC
# MAGIC Rows by featurizer and status (with an example error for each bad status), then a few
# MAGIC images beside their nearest neighbours by cosine similarity of their embeddings, computed
# MAGIC in Spark (`imgfeat.explore`). Good embeddings put look-alikes next to each other; a
# MAGIC neighbour that looks unrelated is worth a look (a duplicate with another label, a broken
# MAGIC crop, a leaking watermark).

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

dbutils.widgets.text("table", "/Volumes/main/default/lake/embeddings", "Embeddings Delta table")
dbutils.widgets.text("featurizer", "efficientnet_lite0", "Featurizer (one table can hold several)")
dbutils.widgets.text("queries", "6", "Query images (the first N paths)")
dbutils.widgets.text("k", "4", "Neighbours per query")

# COMMAND ----------

from imgfeat import explore

w = dbutils.widgets.get
counts = explore.status_counts(spark, w("table"))
display(counts)

# COMMAND ----------

neighbours = explore.nearest_neighbours(
    spark, w("table"), featurizer=w("featurizer"), queries=int(w("queries")), k=int(w("k"))
)
displayHTML(explore.neighbours_html(neighbours))
