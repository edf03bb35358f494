"""The embeddings table: reading its keys, and committing one run atomically.

Owns: the Delta table contract on disk (schema from `imgfeat.schema`,
partitioned by `featurizer`, one row per (path, featurizer_fingerprint)), staging a run's
rows, and the single commit that publishes them. The staging and commit
machinery takes a `Contract` (schema, merge key, partitioning), so other
tables imgfeat writes (the scores table of `imgfeat.scoring`) land the same
way; the embeddings contract is the default. Must not: featurize, track,
or decide which files are new (that is `sources.only_new`).

How a run lands — the same for both writers:

1. workers' rows are staged as Parquet under `<table>/_imgfeat_staging/<run_id>`
   (Delta ignores `_`-prefixed folders; a crash here leaves no table version);
2. one commit on the contract's key, e.g. (path, featurizer_fingerprint), publishes them as ONE new version: new
   files are inserted, files whose bytes changed replace their row, so a rerun
   can never duplicate a row; run metadata rides in the commit;
3. the staging folder is removed.

Writers: Spark's own Delta source when the session has it (Databricks, or a
cluster with delta-spark jars): a MERGE. Else delta-rs (`deltalake`): a
*replace-where* write whose predicate names the run's partition and exactly
its keys. It removes the rows with those keys and adds the run's rows in one
commit, like the MERGE, but reads only the key column to find the files that
hold such rows and rewrites only those, where a MERGE reads every column of
every file of the partition: a small run's commit costs O(its rows), not
O(table) (`bench/commit.py`). The predicate is also the commit's conflict
check: a concurrent commit that may have added one of the keys fails ours,
and it is run again on the new version. Runs too large for a predicate that
lists their keys are MERGEd. Both writers give the same schema, partitioning
and rows.

Table maintenance (compaction of small files, vacuum) is `maintain`, run by
the nightly job.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.dataset as ds
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from imgfeat.errors import ConflictError, InputError
from imgfeat.schema import KEY, PARTITION_BY, TABLE_ARROW_SCHEMA, TABLE_SPARK_SCHEMA
from imgfeat.session import has_spark_delta
from imgfeat.sources import local_path

STAGING_DIR = "_imgfeat_staging"
#: How often a delta-rs commit that lost a commit race is run again on the new version.
MERGE_ATTEMPTS = 5
#: Runs of at most this many rows commit by replace-where, their keys listed in
#: the predicate; larger runs MERGE. delta-rs 1.6.6's time on such a predicate
#: grows with the square of its keys (whole commits into a 100k-row table:
#: 0.9 s with 1k keys, 1.7 s with 3k, 5.4 s with 10k; 33 s with 20k into 10k
#: rows; a SIGSEGV with 30k), so the list stays short.
REPLACE_MAX_ROWS = 10_000
#: Staging folders older than this belong to dead runs and are removed by the next run.
STALE_STAGING_SECONDS = 24 * 3600
#: Prefix of the keys imgfeat puts in a commit's metadata.
META_PREFIX = "imgfeat."


@dataclass(frozen=True)
class Contract:
    """What a table must look like: columns (Spark and Arrow), merge key, partitioning."""

    spark_schema: T.StructType
    arrow_schema: pa.Schema
    key: tuple[str, ...]
    partition_by: tuple[str, ...]


#: The embeddings table (DESIGN.md).
EMBEDDINGS = Contract(TABLE_SPARK_SCHEMA, TABLE_ARROW_SCHEMA, KEY, PARTITION_BY)


@dataclass(frozen=True)
class Commit:
    """What a run's commit did."""

    version: int | None  # table version after the run; None if the table does not exist
    committed: bool  # False when there was nothing to write
    writer: str  # "delta-rs" or "spark-delta"


def table_version(spark: SparkSession, table: str) -> int | None:
    """Latest version of the table, or None if there is no table yet."""
    if has_spark_delta(spark):
        if not _spark_table_exists(spark, table):
            return None
        row = spark.sql(f"DESCRIBE HISTORY delta.`{table}` LIMIT 1").first()
        return int(row["version"]) if row else None
    dt = _deltars_table(table)
    return None if dt is None else dt.version()


def read_table(
    spark: SparkSession,
    table: str,
    version: int | None = None,
    *,
    contract: Contract | None = EMBEDDINGS,
    partitions: Sequence[str] | None = None,
) -> DataFrame:
    """The table (optionally at a version, and only the given values of its
    partition column, e.g. some featurizers) as a Spark DataFrame.

    With `contract=None` any Delta table is read as it is (no partition filter).
    """
    part = contract.partition_by[0] if contract is not None else None
    if has_spark_delta(spark):
        reader = spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        frame = reader.load(table)
        if contract is not None:  # a column added to the contract after the table was made reads as null
            for f in contract.spark_schema:
                frame = frame if f.name in frame.columns else frame.withColumn(f.name, F.lit(None).cast(f.dataType))
        return frame if partitions is None or part is None else frame.where(frame[part].isin(list(partitions)))
    from deltalake import DeltaTable

    if _deltars_table(table) is None:
        raise InputError(f"no Delta table at {table}")
    try:
        dataset = DeltaTable(table, version=version).to_pyarrow_dataset()
    except Exception as exc:  # delta-rs raises several types for a missing version
        raise InputError(f"cannot read {table} at version {version}: {exc}") from None
    where = None if partitions is None else ds.field(part).isin(list(partitions))
    arrow = dataset.to_table(filter=where)
    if contract is None:
        return spark.createDataFrame(arrow)
    return spark.createDataFrame(_conform(arrow, contract.arrow_schema), schema=contract.spark_schema)


def _conform(arrow: pa.Table, schema: pa.Schema) -> pa.Table:
    """`arrow` in `schema`'s column order and types; a column the table predates is null.

    Why: older tables lack columns added to the contract since (e.g. `phash`), and a
    merged-in column sits last on disk, not where the contract puts it."""
    for field in schema:
        if field.name not in arrow.column_names:
            arrow = arrow.append_column(field, pa.nulls(len(arrow), field.type))
    return arrow.select(schema.names).cast(schema)


def existing_keys(spark: SparkSession, table: str, fingerprint: str) -> DataFrame | None:
    """(path, length, modification_time, status) of rows made with `fingerprint`."""
    cols = ["path", "length", "modification_time", "status"]
    if has_spark_delta(spark):
        if not _spark_table_exists(spark, table):
            return None
        from pyspark.sql import functions as F

        frame = spark.read.format("delta").load(table)
        return frame.where(F.col("featurizer_fingerprint") == fingerprint).select(*cols)
    dt = _deltars_table(table)
    if dt is None:
        return None
    keys = dt.to_pyarrow_dataset().to_table(columns=cols, filter=ds.field("featurizer_fingerprint") == fingerprint)
    schema = TABLE_SPARK_SCHEMA
    sub = type(schema)([schema[c] for c in cols])
    return spark.createDataFrame(keys.cast(pa.schema([TABLE_ARROW_SCHEMA.field(c) for c in cols])), schema=sub)


def staging_path(table: str, run_id: str) -> str:
    return f"{table.rstrip('/')}/{STAGING_DIR}/{run_id}"


def stage(rows: DataFrame, table: str, run_id: str, *, contract: Contract = EMBEDDINGS) -> str:
    """Materialize a run's rows once, as Parquet next to the table; returns the path."""
    spark = rows.sparkSession
    # Micros with UTC adjustment: what Delta and Arrow expect for `timestamp`.
    spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
    path = staging_path(table, run_id)
    rows.select(*contract.spark_schema.fieldNames()).write.mode("overwrite").parquet(path)
    return path


def staged_counts(staged: str, *columns: str) -> dict:
    """Rows by status (or by the values of `columns`: a tuple key when several) in a
    staged run; read from Parquet, cheap: only those columns."""
    names = list(columns or ("status",))
    table = ds.dataset(_local_or_uri(staged), format="parquet").to_table(columns=names)
    if table.num_rows == 0:
        return {}
    groups = table.group_by(names).aggregate([([], "count_all")]).to_pylist()
    key = (lambda g: g[names[0]]) if len(names) == 1 else (lambda g: tuple(g[n] for n in names))
    return {key(g): int(g["count_all"]) for g in groups}


def staged_at_least(staged: str, column: str, value: float) -> int:
    """Rows of a staged run whose `column` is at least `value` (nulls do not count)."""
    import pyarrow.compute as pc

    table = ds.dataset(_local_or_uri(staged), format="parquet").to_table(columns=[column])
    return int(pc.sum(pc.greater_equal(table[column], value)).as_py() or 0)


def missing_columns(table: str, contract: Contract) -> list[str]:
    """Contract columns an existing local table lacks (written by an older imgfeat);
    [] for a table that does not exist yet or is not local."""
    local = local_path(table)
    dt = None if local is None else _deltars_table(local)
    if dt is None:
        return []
    have = {f.name for f in dt.schema().fields}
    return [f.name for f in contract.arrow_schema if f.name not in have]


def ok_rows(table: str, version: int, specs: Sequence[Any]) -> int | None:
    """Ok rows of the featurizer(s) (`FeaturizerSpec`s) at `version` of a local table, read
    with delta-rs before Spark starts (the fewest over the featurizers); None for a
    remote table. Raises `InputError` for a missing table or version, or no such rows."""
    from deltalake import DeltaTable

    local = local_path(table)
    if local is None:
        return None
    if _deltars_table(local) is None:
        raise InputError(f"no embeddings table at {table}")
    try:
        dataset = DeltaTable(local, version=version).to_pyarrow_dataset()
    except Exception:  # delta-rs raises several types for a version that is gone
        raise InputError(f"{table} has no version {version} (vacuumed or never written)") from None
    counts = []
    for spec in specs:
        where = (ds.field("featurizer") == spec.name) & (ds.field("featurizer_fingerprint") == spec.fingerprint)
        n = dataset.count_rows(filter=where & (ds.field("status") == "ok"))
        if n == 0:
            raise InputError(f"{table} version {version} has no ok rows of {spec.name} ({spec.fingerprint[:12]})")
        counts.append(n)
    return min(counts)


def commit(
    spark: SparkSession,
    staged: str,
    table: str,
    partition: str | None,
    run_id: str,
    metadata: Mapping[str, object],
    *,
    contract: Contract = EMBEDDINGS,
) -> Commit:
    """Publish the staged rows of one run as exactly one table version (or none).

    Every staged row has `partition` in the contract's partition column (for
    the embeddings table: the featurizer), which narrows the merge to it; None:
    the rows span partitions (a rehash of the whole table).
    `metadata` is stored in the commit under `imgfeat.*` keys (JSON values).
    Raises `ConflictError` if a concurrent run committed overlapping rows first:
    nothing of this run is then in the table, and a rerun completes the work.
    """
    meta = {f"{META_PREFIX}{k}": v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    meta[f"{META_PREFIX}run_id"] = run_id
    try:
        if has_spark_delta(spark):
            return _commit_spark(spark, staged, table, partition, meta, contract)
        return _commit_deltars(staged, table, partition, run_id, meta, contract)
    finally:
        remove_staging(staged)


def unchanged(spark: SparkSession, table: str) -> Commit:
    """What `commit` reports for a run with nothing to write, without staging anything."""
    return Commit(table_version(spark, table), False, "spark-delta" if has_spark_delta(spark) else "delta-rs")


def remove_staging(staged: str) -> None:
    local = local_path(staged)
    if local is not None:
        shutil.rmtree(local, ignore_errors=True)
    else:
        import fsspec

        fs, path = fsspec.core.url_to_fs(staged)
        if fs.exists(path):
            fs.rm(path, recursive=True)


def remove_stale_staging(table: str, max_age_seconds: float = STALE_STAGING_SECONDS) -> list[str]:
    """Remove the staging folders of runs that died before committing (local
    tables; a live run's folder is younger than a day). Returns their run ids."""
    local = local_path(f"{table.rstrip('/')}/{STAGING_DIR}")
    if local is None or not os.path.isdir(local):
        return []
    cutoff = time.time() - max_age_seconds
    stale = [e for e in os.scandir(local) if e.is_dir(follow_symlinks=False) and e.stat().st_mtime < cutoff]
    for entry in stale:
        shutil.rmtree(entry.path, ignore_errors=True)
    return [e.name for e in stale]


def check_writable(table: str) -> None:
    """Fail fast, before any Spark work, when a local table path cannot be a
    table: a file, a folder of other things, or a place this user cannot write.
    Remote stores are checked by their first write."""
    from deltalake import DeltaTable

    local = local_path(table)
    if local is None:
        return
    path = Path(local).absolute()
    if path.is_dir() and not DeltaTable.is_deltatable(str(path)):
        others = sorted(p.name for p in path.iterdir() if not p.name.startswith(("_", ".")))
        if others:
            raise InputError(f"table path {table} is a folder that is not a Delta table (holds {others[0]!r})")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise InputError(f"table path {table} is not writable: {existing} is a file")
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".imgfeat-write-check-"):
            pass
    except OSError as exc:
        raise InputError(f"table path {table} is not writable: {exc.strerror} in {existing}") from None


def may_exist(table: str) -> bool:
    """False only when a local table path surely holds no Delta table, so a
    job can say so before Spark starts; remote stores are answered by the read."""
    from deltalake import DeltaTable

    local = local_path(table)
    return local is None or DeltaTable.is_deltatable(local)


@dataclass(frozen=True)
class Upkeep:
    """What `maintain` did to a table."""

    files_compacted: int  # small files rewritten ...
    files_written: int  # ... into this many
    files_vacuumed: int  # unreferenced files deleted
    version: int | None
    skipped: str | None = None  # why nothing was done

    def line(self) -> str:
        if self.skipped:
            return f"maintain: skipped: {self.skipped}"
        return (
            f"maintain: compacted {self.files_compacted} small files into {self.files_written}, "
            f"vacuumed {self.files_vacuumed} unreferenced files; table version {self.version}"
        )


def maintain(
    spark: SparkSession | None,
    table: str,
    partition: str,
    *,
    target_file_bytes: int | None,
    vacuum_retention_hours: int | None,
    contract: Contract = EMBEDDINGS,
) -> Upkeep:
    """Keep a delta-rs table cheap to commit into and to read, without changing its rows.

    Every run adds at least one small file; a commit reads the key column of
    every file of its partition, so small files add up. Compaction rewrites
    the partition's files smaller than `target_file_bytes` into files of
    about that size (one commit, `dataChange=false`: readers and the
    incremental counts see no new rows; a no-op when there is nothing to
    merge). Vacuum then deletes files no version younger than
    `vacuum_retention_hours` refers to (replaced rows, compacted files):
    older versions can no longer be read after it. None skips a step.
    """
    if spark is not None and has_spark_delta(spark):
        return Upkeep(0, 0, 0, table_version(spark, table), "the Spark Delta writer's table: use OPTIMIZE and VACUUM")
    dt = _deltars_table(table)
    if dt is None:
        return Upkeep(0, 0, 0, None, "no table yet")
    compacted = written = 0
    if target_file_bytes is not None:
        metrics = dt.optimize.compact(
            partition_filters=[(contract.partition_by[0], "=", partition)], target_size=target_file_bytes
        )
        compacted, written = int(metrics["numFilesRemoved"]), int(metrics["numFilesAdded"])
    vacuumed = 0
    if vacuum_retention_hours is not None:
        # A dry run first: delta-rs lists a removed file until its tombstone
        # expires, deleted or not, and a vacuum commits two versions even when
        # nothing is left to delete (a new version makes the nightly score run again).
        hours = vacuum_retention_hours
        doomed = dt.vacuum(retention_hours=hours, dry_run=True, enforce_retention_duration=False)
        vacuumed = sum(_exists(f"{table.rstrip('/')}/{rel}") for rel in doomed)
        if vacuumed:
            dt.vacuum(retention_hours=hours, dry_run=False, enforce_retention_duration=False)
    return Upkeep(compacted, written, vacuumed, _deltars_table(table).version())


def _exists(path: str) -> bool:
    local = local_path(path)
    if local is not None:
        return os.path.exists(local)
    import fsspec

    fs, inner = fsspec.core.url_to_fs(path)
    return bool(fs.exists(inner))


def row_count(spark: SparkSession, table: str, version: int) -> int | None:
    """Rows in `version` of the table, from the log's per-file statistics (no data
    file is read); None where the log has no row counts."""
    if has_spark_delta(spark):  # answered from the same statistics (Delta >= 2.4)
        return spark.read.format("delta").option("versionAsOf", version).load(table).count()
    from deltalake import DeltaTable

    counts = pa.table(DeltaTable(table, version=version).get_add_actions(flatten=True)).column("num_records")
    return None if counts.null_count else int(pa.compute.sum(counts).as_py() or 0)


def run_metadata(spark: SparkSession, table: str, version: int) -> dict[str, str]:
    """The `imgfeat.*` metadata recorded in the commit of `version`."""
    if has_spark_delta(spark):
        row = spark.sql(f"DESCRIBE HISTORY delta.`{table}`").where(f"version = {version}").first()
        return json.loads(row["userMetadata"]) if row and row["userMetadata"] else {}
    from deltalake import DeltaTable

    for entry in DeltaTable(table).history():
        if entry.get("version") == version:
            return {k: v for k, v in entry.items() if k.startswith(META_PREFIX)}
    return {}


# ----------------------------------------------------------------- delta-rs
def _deltars_table(table: str):  # -> DeltaTable | None
    from deltalake import DeltaTable

    return DeltaTable(table) if DeltaTable.is_deltatable(table) else None


def _staged_reader(staged: str, schema: pa.Schema) -> tuple[pa.RecordBatchReader, int]:
    dataset = ds.dataset(_local_or_uri(staged), format="parquet")
    rows = dataset.count_rows()
    batches = (b.cast(schema) for b in dataset.to_batches(columns=schema.names))
    return pa.RecordBatchReader.from_batches(schema, batches), rows


def _merge_predicate(contract: Contract, partition: str | None) -> str:
    """Key equality, narrowed to the run's partition (if it has one)."""
    key = " AND ".join(f"t.{k} = s.{k}" for k in contract.key)
    return key if partition is None else f"{key} AND t.{contract.partition_by[0]} = '{_sql_str(partition)}'"


def _replace_predicate(staged: str, contract: Contract, partition: str | None) -> str:
    """The rows a run replaces: its partition, and exactly the keys it staged.

    The key's first column other than the partition (`path`) is listed with
    IN, grouped by the values of its other columns, so a multi-column key
    (the scores table's path, model_name, model_version) matches exactly
    its own combinations. A null key value matches null.
    """
    part = contract.partition_by[0]
    listed, *others = [k for k in contract.key if k != part]
    keys = ds.dataset(_local_or_uri(staged), format="parquet").to_table(columns=[listed, *others])
    groups: dict[tuple, list] = {}
    for row in keys.to_pylist():
        groups.setdefault(tuple(row[c] for c in others), []).append(row[listed])
    terms = []
    for values, members in groups.items():
        listing = ", ".join(sorted({_sql_literal(v) for v in members}))
        terms.append(" AND ".join([f"{listed} IN ({listing})", *map(_sql_equals, others, values)]))
    either = terms[0] if len(terms) == 1 else " OR ".join(f"({t})" for t in terms)
    return f"({either})" if partition is None else f"{part} = {_sql_literal(partition)} AND ({either})"


def _commit_deltars(
    staged: str, table: str, partition: str | None, run_id: str, meta: dict[str, str], contract: Contract
) -> Commit:
    from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
    from deltalake.exceptions import CommitFailedError, DeltaError

    app_id = f"imgfeat-run-{run_id}"
    props = CommitProperties(custom_metadata=meta, app_transactions=[Transaction(app_id, 1)])
    dt = _deltars_table(table)
    reader, rows = _staged_reader(staged, contract.arrow_schema)
    if rows == 0:
        return Commit(None if dt is None else dt.version(), False, "delta-rs")
    if dt is None:
        # No commit retries for the create: delta-rs would rebase a create that
        # lost the race for version 0 onto the winner's table as a blind append,
        # duplicating every row both runs staged. Failing, it commits below instead.
        create = CommitProperties(custom_metadata=meta, app_transactions=[Transaction(app_id, 1)], max_commit_retries=0)
        try:
            write_deltalake(
                table, reader, mode="error", partition_by=list(contract.partition_by), commit_properties=create
            )
            return Commit(_deltars_table(table).version(), True, "delta-rs")
        except (DeltaError, OSError):
            dt = _deltars_table(table)  # another run created it first: commit into it
            if dt is None:
                raise
    replace = _replace_predicate(staged, contract, partition) if rows <= REPLACE_MAX_ROWS else None
    for _ in range(MERGE_ATTEMPTS):
        if dt.transaction_version(app_id) is not None:  # this run already landed (retried call)
            return Commit(dt.version(), False, "delta-rs")
        reader, _ = _staged_reader(staged, contract.arrow_schema)
        try:
            if replace is not None:
                write_deltalake(
                    dt,
                    reader,
                    mode="overwrite",
                    schema_mode="merge",  # a table made before a contract column was added gains it
                    predicate=replace,
                    partition_by=list(contract.partition_by),
                    commit_properties=props,
                )
            else:
                (
                    dt.merge(
                        reader,
                        predicate=_merge_predicate(contract, partition),
                        source_alias="s",
                        target_alias="t",
                        merge_schema=True,
                        commit_properties=props,
                    )
                    .when_matched_update_all()
                    .when_not_matched_insert_all()
                    .execute()
                )
            return Commit(dt.version(), True, "delta-rs")
        except CommitFailedError as exc:
            # A concurrent commit touched our partition (for replace-where: it
            # may have added one of our keys). The commit is a pure function of
            # the staged rows and the table, so running it again on the new
            # version is exactly what a rerun would do, minus featurizing.
            lost = str(exc).strip().splitlines()[0]
            dt = DeltaTable(table)
    raise ConflictError(
        f"other runs kept committing to {table}; this run wrote nothing after "
        f"{MERGE_ATTEMPTS} attempts (re-run to add its images): {lost}"
    )


# -------------------------------------------------------------- Spark Delta
def _spark_table_exists(spark: SparkSession, table: str) -> bool:
    jvm = spark.sparkContext._jvm
    assert jvm is not None  # set while the SparkContext is up
    return bool(jvm.io.delta.tables.DeltaTable.isDeltaTable(spark._jsparkSession, table))


def _commit_spark(
    spark: SparkSession, staged: str, table: str, partition: str | None, meta: dict[str, str], contract: Contract
) -> Commit:
    source = spark.read.parquet(staged)
    if source.isEmpty():
        return Commit(table_version(spark, table), False, "spark-delta")
    conf_key = "spark.databricks.delta.commitInfo.userMetadata"
    evolve = "spark.databricks.delta.schema.autoMerge.enabled"  # MERGE adds contract columns a table predates
    spark.conf.set(conf_key, json.dumps(meta))
    spark.conf.set(evolve, "true")
    try:
        if not _spark_table_exists(spark, table):
            source.write.format("delta").partitionBy(*contract.partition_by).mode("errorifexists").save(table)
        else:
            source.createOrReplaceTempView("imgfeat_staged")
            spark.sql(
                f"MERGE INTO delta.`{table}` t USING imgfeat_staged s "
                f"ON {_merge_predicate(contract, partition)} "
                "WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *"
            )
    except Exception as exc:
        if "Concurrent" in type(exc).__name__ or "Concurrent" in str(exc)[:200]:
            raise ConflictError(f"another run committed to {table} at the same time: {exc}") from None
        raise
    finally:
        spark.conf.unset(conf_key)
        spark.conf.unset(evolve)
    return Commit(table_version(spark, table), True, "spark-delta")


def _sql_str(value: str) -> str:
    return value.replace("'", "''")


def _sql_literal(value: object) -> str:
    if isinstance(value, str):
        return f"'{_sql_str(value)}'"
    if isinstance(value, (bool, int, float)):
        return str(value).lower() if isinstance(value, bool) else repr(value)
    raise TypeError(f"no SQL literal for key value {value!r}")


def _sql_equals(column: str, value: object) -> str:
    return f"{column} IS NULL" if value is None else f"{column} = {_sql_literal(value)}"


def _local_or_uri(path: str) -> str:
    return local_path(path) or path
