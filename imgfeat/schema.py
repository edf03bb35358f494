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

_COLUMNS: tuple[tuple[str, T.DataType, pa.DataType], ...] = (
    ("path", T.StringType(), pa.string()),
    ("content_sha256", T.StringType(), pa.string()),
    ("length", T.LongType(), pa.int64()),
    ("modification_time", T.TimestampType(), pa.timestamp("us", tz="UTC")),
    ("featurizer", T.StringType(), pa.string()),
    ("featurizer_fingerprint", T.StringType(), pa.string()),
    ("embedding", T.ArrayType(T.FloatType()), pa.list_(pa.field("element", pa.float32()))),
    ("dim", T.IntegerType(), pa.int32()),
    ("status", T.StringType(), pa.string()),
    ("error", T.StringType(), pa.string()),
    ("width", T.IntegerType(), pa.int32()),
    ("height", T.IntegerType(), pa.int32()),
    ("run_id", T.StringType(), pa.string()),
    ("featurized_at", T.TimestampType(), pa.timestamp("us", tz="UTC")),
)

#: Columns filled in by the run, not by the worker.
RUN_COLUMNS = ("run_id", "featurized_at")

COLUMNS: tuple[str, ...] = tuple(name for name, _, _ in _COLUMNS)

TABLE_SPARK_SCHEMA = T.StructType([T.StructField(n, s, True) for n, s, _ in _COLUMNS])
TABLE_ARROW_SCHEMA = pa.schema([pa.field(n, a, True) for n, _, a in _COLUMNS])

#: What a featurize worker emits: the table minus the run columns.
WORKER_SPARK_SCHEMA = T.StructType([f for f in TABLE_SPARK_SCHEMA.fields if f.name not in RUN_COLUMNS])
