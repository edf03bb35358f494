"""The delta-rs commit of a run (`delta.commit`): one version per run, a row per
key, changed rows replaced, untouched files left alone, a lost race run again,
and the same rows whichever way the commit goes (replace-where or MERGE).
No Spark: `delta.commit(None, ...)` is the delta-rs writer.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from pyspark.sql import types as T

from imgfeat import delta

FEATURIZER = "grayscale16"
#: Paths SQL quoting must survive.
ODD = ["it's.jpg", "café photo.jpg", "back\\slash.jpg", "semi;colon) OR 1=1.jpg", "%41.jpg"]


def _stage(table: Path, run_id: str, rows: dict[str, str], contract: delta.Contract = delta.EMBEDDINGS) -> str:
    """Stage `rows` (name → content hash) as `delta.stage` leaves them."""
    staged = Path(delta.staging_path(str(table), run_id))
    staged.mkdir(parents=True)
    records = [
        {"path": f"file:/photos/{name}", "featurizer": FEATURIZER, "featurizer_fingerprint": "fp", "status": "ok",
         "content_sha256": sha,
         "length": len(sha), "run_id": run_id}
        for name, sha in rows.items()
    ]
    pq.write_table(pa.Table.from_pylist(records, schema=contract.arrow_schema), staged / "part-0.parquet")
    return str(staged)


def _commit(table: Path, run_id: str, rows: dict[str, str]) -> delta.Commit:
    return delta.commit(None, _stage(table, run_id, rows), str(table), FEATURIZER, run_id, {"test": run_id})


def _content(table: Path) -> dict[str, tuple[str, str]]:
    """path → (content_sha256, run_id); fails on a duplicated path."""
    rows = DeltaTable(str(table)).to_pyarrow_table().to_pylist()
    out = {r["path"].removeprefix("file:/photos/"): (r["content_sha256"], r["run_id"]) for r in rows}
    assert len(out) == len(rows), "duplicated rows"
    return out


def _files(table: Path) -> set[str]:
    return set(DeltaTable(str(table)).file_uris())


def _seeded(table: Path) -> None:
    """Three runs, three data files."""
    _commit(table, "r0", {f"a{i}.jpg": "old" for i in range(5)})
    _commit(table, "r1", {f"b{i}.jpg": "old" for i in range(5)})
    _commit(table, "r2", {name: "old" for name in ODD})


@pytest.mark.parametrize("writer", ["replace-where", "merge"])
def test_a_run_replaces_its_changed_rows_adds_new_ones_and_leaves_other_files_alone(tmp_path, monkeypatch, writer):
    if writer == "merge":  # the path runs too large for a listed predicate take
        monkeypatch.setattr(delta, "REPLACE_MAX_ROWS", 0)
    table = tmp_path / "emb"
    _seeded(table)
    before, files = _content(table), _files(table)
    run = {"a1.jpg": "new", "it's.jpg": "new", "back\\slash.jpg": "new", "c0.jpg": "new", "c1.jpg": "new"}
    result = _commit(table, "r3", run)

    assert result.committed and result.version == 3 == DeltaTable(str(table)).version()
    after = _content(table)
    assert set(after) == set(before) | {"c0.jpg", "c1.jpg"}
    for name, (sha, run_id) in after.items():
        assert (sha, run_id) == (("new", "r3") if name in run else before[name]), name
    # The b-run's file holds none of the run's keys: it is still there, not rewritten.
    b_files = {f for f in files if _file_paths(f) == {f"file:/photos/b{i}.jpg" for i in range(5)}}
    assert len(b_files) == 1 and b_files <= _files(table)


def _file_paths(uri: str) -> set[str]:
    return set(pq.read_table(uri.removeprefix("file://"), columns=["path"]).column("path").to_pylist())


def test_rerunning_a_commit_adds_nothing_and_a_run_with_nothing_new_commits_nothing(tmp_path):
    table = tmp_path / "emb"
    _seeded(table)
    first = _commit(table, "r3", {"c0.jpg": "x", "a0.jpg": "x"})
    content = _content(table)
    again = _commit(table, "r3", {"c0.jpg": "x", "a0.jpg": "x"})  # the same run retried: already landed
    assert first.committed and not again.committed and again.version == first.version
    assert _content(table) == content
    empty = delta.commit(None, _stage(table, "r4", {}), str(table), FEATURIZER, "r4", {})
    assert not empty.committed and DeltaTable(str(table)).version() == first.version


def test_a_commit_that_loses_the_race_to_a_run_adding_its_keys_is_run_again_not_rebased(tmp_path, monkeypatch):
    """Another run commits one of our keys after we loaded the table and before
    our commit: delta-rs must refuse to rebase ours (its predicate names the
    key), and the retry on the new version replaces that row instead of adding
    a second one."""
    table = tmp_path / "emb"
    _seeded(table)
    predicate = delta._replace_predicate
    raced = []

    def race_then_predicate(staged, contract, partition):
        if not raced:  # our first attempt: the other run (which comes through here too) lands first
            raced.append("racing")
            raced[0] = _commit(table, "other", {"c0.jpg": "theirs", "d0.jpg": "theirs"})
        return predicate(staged, contract, partition)

    monkeypatch.setattr(delta, "_replace_predicate", race_then_predicate)
    ours = _commit(table, "ours", {"c0.jpg": "ours", "c1.jpg": "ours"})
    assert raced[0].version == 3 and ours.version == 4
    content = _content(table)
    assert content["c0.jpg"] == ("ours", "ours") and content["d0.jpg"] == ("theirs", "other")
    assert content["c1.jpg"] == ("ours", "ours")  # a rebased commit would have left c0 twice
    ops = [h["operation"] for h in DeltaTable(str(table)).history()]
    assert len(ops) == 5  # seed x3, theirs, ours: one version per run


SCORES_LIKE = delta.Contract(
    spark_schema=T.StructType(
        [T.StructField(n, T.StringType(), True) for n in ("path", "model_name", "model_version", "run_id")]
    ),
    arrow_schema=pa.schema([pa.field(n, pa.string()) for n in ("path", "model_name", "model_version", "run_id")]),
    key=("path", "model_name", "model_version"),
    partition_by=("model_name",),
)


def test_a_multi_column_key_replaces_exactly_its_own_combinations(tmp_path):
    """The scores table's key (path, model_name, model_version): a run's
    predicate must not reach rows of another model version with the same path."""
    table = tmp_path / "scores"

    def commit(run_id: str, rows: list[tuple[str, str | None]]) -> None:
        staged = Path(delta.staging_path(str(table), run_id))
        staged.mkdir(parents=True)
        records = [{"path": p, "model_name": "m", "model_version": v, "run_id": run_id} for p, v in rows]
        pq.write_table(pa.Table.from_pylist(records, schema=SCORES_LIKE.arrow_schema), staged / "p.parquet")
        delta.commit(None, str(staged), str(table), "m", run_id, {}, contract=SCORES_LIKE)

    commit("s0", [("x", "1"), ("y", "1"), ("x", "2"), ("z", None)])
    commit("s1", [("x", "1"), ("y", "2"), ("z", None)])  # x@1 and z@null replaced, y@2 added
    rows = DeltaTable(str(table)).to_pyarrow_table().to_pylist()
    got = sorted((r["path"], r["model_version"], r["run_id"]) for r in rows)
    assert got == [("x", "1", "s1"), ("x", "2", "s0"), ("y", "1", "s0"), ("y", "2", "s1"), ("z", None, "s1")]


def _all_rows(table: Path) -> list[dict]:
    return sorted(DeltaTable(str(table)).to_pyarrow_table().to_pylist(), key=lambda r: r["path"])


def test_maintenance_compacts_and_vacuums_without_changing_a_row(tmp_path):
    table = tmp_path / "emb"
    _seeded(table)
    _commit(table, "r3", {"a1.jpg": "new", "b2.jpg": "new", "c0.jpg": "new"})  # replaces rows: old files unused
    _commit(table, "r4", {"d0.jpg": "new"})
    rows, version = _all_rows(table), DeltaTable(str(table)).version()
    live = _files(table)
    on_disk = {p for p in (table / f"featurizer={FEATURIZER}").iterdir()}
    assert len(on_disk) > len(live) >= 3  # the files whose rows were replaced are still on disk

    done = delta.maintain(None, str(table), FEATURIZER, target_file_bytes=2**20, vacuum_retention_hours=0)
    assert _all_rows(table) == rows  # the same rows, embeddings and all
    assert done.files_compacted == len(live) and done.files_written == 1 and len(_files(table)) == 1
    assert done.files_vacuumed == len(on_disk)  # replaced, and compacted away
    assert done.version == version + 3  # compaction + vacuum start/end
    assert [p.name for p in (table / f"featurizer={FEATURIZER}").iterdir()] == [
        Path(f).name for f in _files(table)
    ]
    history = DeltaTable(str(table)).history(3)
    assert [h["operation"] for h in history] == ["VACUUM END", "VACUUM START", "OPTIMIZE"]

    again = delta.maintain(None, str(table), FEATURIZER, target_file_bytes=2**20, vacuum_retention_hours=0)
    assert (again.files_compacted, again.files_vacuumed, again.version) == (0, 0, done.version)  # no new version
    # Commits after maintenance work as before.
    assert _commit(table, "r5", {"a1.jpg": "newer", "e0.jpg": "new"}).version == done.version + 1
    assert _content(table)["a1.jpg"] == ("newer", "r5") and len(_content(table)) == len(rows) + 1


def test_maintenance_of_a_missing_table_does_nothing(tmp_path):
    done = delta.maintain(None, str(tmp_path / "none"), FEATURIZER, target_file_bytes=2**20, vacuum_retention_hours=168)
    assert done.skipped == "no table yet" and not (tmp_path / "none").exists()
