"""Looking at the embeddings table: counts by status, nearest neighbours, thumbnails.

Owns: read-only views of the table for people (the `04_explore` notebook,
an interactive session): rows per featurizer and status, the k most similar
images of a few query images by cosine similarity of their embeddings
(computed in Spark: no embedding is collected to the driver), and an HTML
strip of thumbnails.
Must not: write anything.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence

import pandas as pd
from pyspark.sql import SparkSession, Window
from pyspark.sql import functions as F

from imgfeat import delta
from imgfeat.errors import InputError, Status
from imgfeat.sources import read_bytes


def status_counts(spark: SparkSession, table: str) -> pd.DataFrame:
    """Rows per (featurizer, status), with a sample error message per group."""
    rows = (
        delta.read_table(spark, table)
        .groupBy("featurizer", "status")
        .agg(F.count(F.lit(1)).alias("rows"), F.first("error", ignorenulls=True).alias("example_error"))
    )
    return rows.orderBy("featurizer", "status").toPandas()


def nearest_neighbours(
    spark: SparkSession,
    table: str,
    *,
    featurizer: str | None = None,
    queries: int | Sequence[str] = 5,
    k: int = 3,
) -> pd.DataFrame:
    """The `k` images most similar to each query image (cosine of embeddings).

    `queries` is a number of query images (the first paths in sort order) or a
    list of paths. The query itself is left out of its neighbours. Returns
    columns query, rank (1 = closest), neighbour, cosine.
    """
    frame = delta.read_table(spark, table, partitions=[featurizer] if featurizer else None)
    ok = frame.where(F.col("status") == Status.OK.value)
    names = [r["featurizer"] for r in ok.select("featurizer").distinct().collect()]
    if len(names) != 1:
        raise InputError(f"{table}: pick one featurizer of {sorted(names)}" if names else f"{table}: no ok rows")
    unit = ok.select("path", _normalized("embedding").alias("unit"))
    if isinstance(queries, int):
        picked = unit.orderBy("path").limit(queries)
    else:
        picked = unit.where(F.col("path").isin(list(queries)))
    pairs = F.broadcast(picked.select(F.col("path").alias("query"), F.col("unit").alias("q"))).crossJoin(unit)
    scored = pairs.where(F.col("query") != F.col("path")).select(
        "query", F.col("path").alias("neighbour"), _dot("q", "unit").alias("cosine")
    )
    ranked = scored.withColumn("rank", F.row_number().over(Window.partitionBy("query").orderBy(F.desc("cosine"))))
    out = ranked.where(F.col("rank") <= k).select("query", "rank", "neighbour", "cosine")
    return out.orderBy("query", "rank").toPandas()


def neighbours_html(neighbours: pd.DataFrame, size: int = 112) -> str:
    """One row per query: its thumbnail, then its neighbours' with their cosine."""
    cells = []
    for query, group in neighbours.groupby("query", sort=True):
        row = [_figure(query, "query", size)]
        row += [_figure(r.neighbour, f"{r.cosine:.3f}", size) for r in group.sort_values("rank").itertuples()]
        cells.append("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    return "<table>" + "".join(cells) + "</table>"


def _normalized(column: str) -> F.Column:
    norm = F.sqrt(F.aggregate(F.col(column), F.lit(0.0), lambda acc, x: acc + x * x))
    return F.transform(F.col(column), lambda x: x / F.greatest(norm, F.lit(1e-12)))


def _dot(a: str, b: str) -> F.Column:
    return F.aggregate(F.zip_with(F.col(a), F.col(b), lambda x, y: x * y), F.lit(0.0), lambda acc, x: acc + x)


def _figure(path: str, caption: str, size: int) -> str:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(read_bytes(path))) as opened:
            img = opened.convert("RGB")
            img.thumbnail((size, size))
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=80)
        src = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
        pic = f'<img src="{src}" title="{html.escape(path)}"/>'
    except Exception as exc:  # a file gone since it was featurized: say so, keep the row
        pic = f"<i>{html.escape(type(exc).__name__)}</i>"
    name = html.escape(path.rsplit("/", 1)[-1])
    return f"<figure>{pic}<figcaption>{name}<br/>{html.escape(caption)}</figcaption></figure>"
