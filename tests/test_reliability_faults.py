"""Faults during a featurize run: a killed worker, a killed driver, two runs
at once, files that vanish between listing and reading. After each, the
table reads, holds exactly one row per file, and the next run completes.

The kills are real SIGKILLs, placed by the hooks in `imgfeat.faults`.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from imgfeat import delta, faults
from imgfeat.config import FeaturizeConfig, load_config
from imgfeat.errors import ConflictError
from imgfeat.schema import TABLE_ARROW_SCHEMA

REPO = Path(__file__).resolve().parents[1]
#: No model to load (a 16x16 thumbnail): these tests are about rows, not numbers.
FEATURIZER = "grayscale16"


def _cfg(inputs: Path, table: Path, *sets: str) -> FeaturizeConfig:
    return load_config(
        FeaturizeConfig,
        overrides=["tracking.enabled=false", f"featurizer.name={FEATURIZER}", *sets],
        input=str(inputs),
        table=str(table),
    )


def _rows(table: Path) -> list[dict]:
    return DeltaTable(str(table)).to_pyarrow_table().to_pylist()


def _assert_one_row_per_file(table: Path, inputs: Path) -> list[dict]:
    rows = _rows(table)
    files = {str(p) for p in inputs.rglob("*") if p.is_file()}
    paths = Counter(r["path"].removeprefix("file:") for r in rows)
    assert [p for p, n in paths.items() if n > 1] == [], "duplicated rows"
    assert set(paths) == files
    return rows


@pytest.fixture
def inputs(photos: Path, tmp_path: Path) -> Path:
    """8 small photos, twice over (16 files)."""
    dest = tmp_path / "in"
    shutil.copytree(photos, dest / "a")
    shutil.copytree(photos, dest / "b")
    return dest


def test_killed_worker_task_is_retried_and_rows_stay_exact(spark, inputs, tmp_path):
    from imgfeat.runs import featurize_run

    marker = tmp_path / "worker-killed"
    env = spark.sparkContext.environment  # reaches the Python workers of plans made from now on
    env[faults.KILL_WORKER] = str(marker)
    try:
        summary = featurize_run(_cfg(inputs, tmp_path / "emb", "featurizer.batch_size=2"), spark)
    finally:
        del env[faults.KILL_WORKER]
    assert marker.exists(), "no worker was killed: the hook did not run"
    rows = _assert_one_row_per_file(tmp_path / "emb", inputs)
    assert summary.counts == {"ok": 16} and {r["status"] for r in rows} == {"ok"}
    assert summary.committed and DeltaTable(str(tmp_path / "emb")).version() == 0


def _featurize_process(inputs: Path, table: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`imgfeat featurize` in its own process group (so the test can clean up its JVM)."""
    command = [
        sys.executable, "-m", "imgfeat.cli", "featurize", "--input", str(inputs), "--table", str(table),
        "--featurizer", FEATURIZER, "--set", "tracking.enabled=false", "--set", "spark.master=local[1]",
        "--set", "spark.conf={spark.ui.showConsoleProgress: 'false'}",
    ]
    return subprocess.Popen(
        command, cwd=table.parent, env={**os.environ, **(env or {})}, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the run's own group: its JVM, if still there
        except ProcessLookupError:
            pass
    return proc.returncode, out, err


@pytest.mark.slow
def test_job_killed_before_commit_leaves_the_table_as_it_was(spark, inputs, tmp_path, caplog):
    from imgfeat.runs import featurize_run

    table = tmp_path / "emb"
    cfg = _cfg(inputs, table)
    new = inputs / "b"
    shutil.move(new, tmp_path / "later")
    first = featurize_run(cfg, spark)
    assert first.counts == {"ok": 8} and first.version == 0
    shutil.move(tmp_path / "later", new)

    marker = tmp_path / "driver-killed"
    rc, out, err = _finish(_featurize_process(inputs, table, {faults.KILL_BEFORE_COMMIT: str(marker)}))
    assert rc == -signal.SIGKILL and marker.exists(), (rc, err[-2000:])
    staging = table / delta.STAGING_DIR
    (dead,) = staging.iterdir()  # the dead run staged its 8 rows, then died
    assert len(list(dead.glob("*.parquet"))) >= 1
    dt = DeltaTable(str(table))
    assert dt.version() == 0 and len(_rows(table)) == 8  # no new version; the table reads

    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(dead, (two_days_ago, two_days_ago))
    again = featurize_run(cfg, spark)
    assert again.committed and again.version == 1 and again.counts == {"ok": 8} and again.skipped == 8
    _assert_one_row_per_file(table, inputs)
    assert not staging.exists() or list(staging.iterdir()) == []  # the dead run's staging is gone
    assert f"removed the staging folder of run {dead.name}" in caplog.text


@pytest.mark.slow
def test_two_runs_at_once_never_duplicate(inputs, tmp_path):
    table = tmp_path / "emb"
    procs = [_featurize_process(inputs, table) for _ in range(2)]
    results = [_finish(p) for p in procs]
    codes = sorted(rc for rc, _, _ in results)
    assert codes in ([0, 0], [0, ConflictError.exit_code]), [(rc, err[-2000:]) for rc, _, err in results]
    for rc, out, err in results:
        if rc == ConflictError.exit_code:  # the loser says so on one line, and wrote nothing
            (line,) = err.strip().splitlines()[-1:]
            assert line.startswith("imgfeat: error:") and "Traceback" not in err, err[-2000:]
        else:  # 0 images: it listed after the other had committed all 16
            assert re.match(r"featurize: (16|0) images", out.strip().splitlines()[-1]), out
    rows = _assert_one_row_per_file(table, inputs)
    assert len(rows) == 16 and DeltaTable(str(table)).version() <= 1


def _staged_run(root: Path, run_id: str, names: list[str]) -> str:
    """A run's rows, staged as `delta.stage` leaves them (one Parquet file)."""
    staged = Path(delta.staging_path(str(root), run_id))
    staged.mkdir(parents=True)
    rows = [
        {"path": f"file:/photos/{n}.jpg", "featurizer": FEATURIZER, "status": "ok", "length": 1, "run_id": run_id}
        for n in names
    ]
    pq.write_table(pa.Table.from_pylist(rows, schema=TABLE_ARROW_SCHEMA), staged / "part-0.parquet")
    return str(staged)


def _commit_when_both_ready(barrier, jobs: list[tuple[str, str, str]], results) -> None:
    """Spawned process: for each (staged, table, run_id), wait for the other
    process, then commit at the same moment. No Spark here: `has_spark_delta`
    of no session is False, so the delta-rs writer commits."""
    for staged, table, run_id in jobs:
        barrier.wait()
        try:
            delta.commit(None, staged, table, FEATURIZER, run_id, {"test": "race"})
            results.put((table, run_id, "ok"))
        except ConflictError as exc:
            results.put((table, run_id, f"conflict: {exc}"))


def test_concurrent_commits_on_one_table_never_duplicate_rows(tmp_path):
    """Two processes commit overlapping runs to the same table at the same
    instant, many times: creating the table, and merging into it. delta-rs
    1.6.6 rebases a create that lost the race onto the winner's table as an
    append (both runs' rows, twice); `delta.commit` must never let that happen."""
    trials = 8
    a_names = [f"img{i}" for i in range(0, 12)]
    b_names = [f"img{i}" for i in range(6, 18)]  # 6 shared with a
    jobs: dict[str, list] = {"a": [], "b": []}
    tables = []
    for t in range(trials):
        for kind in ("create", "merge"):
            table = tmp_path / f"{kind}{t}"
            if kind == "merge":  # an existing table holding some of the rows
                delta.commit(None, _staged_run(table, "seed", ["img0", "img7", "img99"]), str(table),
                             FEATURIZER, "seed", {})
            tables.append(table)
            for who, names in (("a", a_names), ("b", b_names)):
                run_id = f"{who}{kind}{t}"
                jobs[who].append((_staged_run(table, run_id, names), str(table), run_id))
    ctx = multiprocessing.get_context("spawn")  # delta-rs's runtime does not survive fork
    barrier, results = ctx.Barrier(2, timeout=120), ctx.Queue()
    procs = [ctx.Process(target=_commit_when_both_ready, args=(barrier, jobs[w], results)) for w in "ab"]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=300) for _ in range(2 * len(tables))]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0

    for table in tables:
        paths = Counter(r["path"] for r in _rows(table))
        assert max(paths.values()) == 1, f"{table.name}: duplicated rows {paths}"
        landed = {run for tab, run, how in outcomes if tab == str(table) and how == "ok"}
        want = set()
        for run in landed:
            want |= {f"file:/photos/{n}.jpg" for n in (a_names if run.startswith("a") else b_names)}
        if table.name.startswith("merge"):
            want |= {"file:/photos/img0.jpg", "file:/photos/img7.jpg", "file:/photos/img99.jpg"}
        assert set(paths) == want, table.name
    # A merge that loses a race runs again on the winner's version: with two
    # writers the second attempt always lands, so no run fails here.
    assert [how for _, _, how in outcomes if how != "ok"] == []


def test_files_gone_between_listing_and_reading_are_read_error_rows(spark, inputs, tmp_path, monkeypatch):
    """A file deleted, and one replaced by a folder, after the listing and
    before the workers read them: read_error rows; a rerun retries them."""
    from imgfeat import runs, sources

    deleted, replaced = inputs / "a" / "coffee.jpg", inputs / "b" / "rocket.jpg"
    saved = {p: p.read_bytes() for p in (deleted, replaced)}
    only_new = sources.only_new

    def vanish_then_filter(listing, existing):  # runs after the listing is cached and counted
        deleted.unlink()
        replaced.unlink()
        replaced.mkdir()
        return only_new(listing, existing)

    table = tmp_path / "emb"
    cfg = _cfg(inputs, table)
    monkeypatch.setattr(sources, "only_new", vanish_then_filter)
    summary = runs.featurize_run(cfg, spark)
    monkeypatch.setattr(sources, "only_new", only_new)

    by_path = {r["path"].removeprefix("file:"): r for r in _rows(table)}
    assert len(by_path) == summary.listed == 16 and summary.counts == {"ok": 14, "read_error": 2}
    gone, folder = by_path[str(deleted)], by_path[str(replaced)]
    assert gone["status"] == folder["status"] == "read_error"
    assert gone["error"].startswith("FileNotFoundError") and folder["error"].startswith("IsADirectoryError")
    assert gone["embedding"] is None and gone["content_sha256"] is None

    replaced.rmdir()
    for path, data in saved.items():
        path.write_bytes(data)
    again = runs.featurize_run(cfg, spark)
    assert again.counts == {"ok": 2} and again.skipped == 14
    rows = _assert_one_row_per_file(table, inputs)
    assert {r["status"] for r in rows} == {"ok"}
