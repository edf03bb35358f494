"""The embeddings-table contract (DESIGN.md): column names and types, once.

Owns: the ordered columns of the table, as a Spark schema (what workers emit)
and as an Arrow schema (what the delta-rs writer commits). Must not: know how
rows are produced or written. Both writers and every reader go through here,
so the Spark and delta-rs paths cannot drift apart.
"""

from __future__ import annotations

import pyarrow as pa
from pyspark.sql import types as T

#: Partition column of the table.
PARTITION_BY = ("featurizer",)
#: One row per (path, featurizer fingerprint): the merge key. Rows of one name with other
#: weights (a fine-tuned featurizer beside its pretrained one) or options sit side by side.
KEY = ("path", "featurizer_fingerprint")

#: Spark's and Arrow's type for each column type the tables use, by Spark's name for it.
_TYPES: dict[str, tuple[T.DataType, pa.DataType]] = {
    spark.simpleString(): (spark, arrow)
    for spark, arrow in (
        (T.StringType(), pa.string()),
        (T.LongType(), pa.int64()),
        (T.IntegerType(), pa.int32()),
        (T.DoubleType(), pa.float64()),
        (T.BooleanType(), pa.bool_()),
        (T.TimestampType(), pa.timestamp("us", tz="UTC")),
        (T.ArrayType(T.FloatType()), pa.list_(pa.field("element", pa.float32()))),
        (T.MapType(T.StringType(), T.DoubleType()), pa.map_(pa.string(), pa.float64())),
    )
}


def table_schemas(columns: str) -> tuple[tuple[str, ...], T.StructType, pa.Schema]:
    """A table's column names, Spark schema and Arrow schema from `"name type, ..."` (Spark's
    type names, those in `_TYPES`; every column nullable).

    Why: the embeddings and scores tables declare each column once, in Spark's DDL, and both
    writers' schemas come from that, so the Spark and delta-rs paths cannot drift apart.
    """
    named = [(name, _TYPES[kind]) for name, kind in (column.split() for column in columns.split(", "))]
    return (
        tuple(name for name, _ in named),
        T.StructType([T.StructField(name, spark, True) for name, (spark, _) in named]),
        pa.schema([pa.field(name, arrow, True) for name, (_, arrow) in named]),
    )


COLUMNS, TABLE_SPARK_SCHEMA, TABLE_ARROW_SCHEMA = table_schemas(
    "path string, content_sha256 string, length bigint, modification_time timestamp, featurizer string, "
    "featurizer_fingerprint string, embedding array<float>, dim int, status string, error string, "
    "width int, height int, phash bigint, run_id string, featurized_at timestamp"
)

#: Columns filled in by the run, not by the worker.
RUN_COLUMNS = ("run_id", "featurized_at")

#: What a featurize worker emits: the table minus the run columns.
WORKER_SPARK_SCHEMA = T.StructType([f for f in TABLE_SPARK_SCHEMA.fields if f.name not in RUN_COLUMNS])
