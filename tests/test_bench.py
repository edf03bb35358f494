"""`imgfeat bench` harness: a tiny end-to-end run (not the benchmark itself)."""

from __future__ import annotations

import re

import pyarrow.parquet as pq
import pytest

from imgfeat.cli import main
from imgfeat.dev.bench import BenchOptions, bench_photos, run_bench


def test_photos_are_cached_by_n_and_seed(tmp_path):
    main_photos, extra = bench_photos(tmp_path, 3, seed=1)
    assert [p.name for p in main_photos] == ["bench_00000.jpg", "bench_00001.jpg", "bench_00002.jpg"]
    assert [p.name for p in extra] == ["bench_00003.jpg"]  # 1 % more, at least one
    stamps = [p.stat().st_mtime_ns for p in main_photos + extra]
    again, _ = bench_photos(tmp_path, 3, seed=1)
    assert again == main_photos and [p.stat().st_mtime_ns for p in main_photos + extra] == stamps
    other, _ = bench_photos(tmp_path, 3, seed=2)
    assert other[0].parent != main_photos[0].parent
    assert other[0].read_bytes() != main_photos[0].read_bytes()


def test_unknown_stage_is_a_user_error(tmp_path, capsys):
    assert main(["bench", "--n", "2", "--out", str(tmp_path), "--skip", "decode,gpu"]) == 2
    assert "unknown stage(s) to skip ['gpu']" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_bench_prints_every_figure_and_the_spark_job_matches_the_loop(spark, tmp_path):
    lines: list[str] = []
    n = 8
    figures = run_bench(
        BenchOptions(n=n, out=tmp_path, loop_batch=4, naive_batch=3, udf_batch=4, decode_sample=4),
        emit=lines.append,
        spark=spark,
    )
    assert all(re.fullmatch(r"[^:]+: \S.*", line) for line in lines), lines
    name, value = lines[-1].split(": ")
    assert name == "spark/loop ratio" and float(value) > 0
    for key in (
        "decode draft/full ratio", "model bn-folded/eager ratio", "loop img/s", "spark job cold img/s",
        "spark job img/s", "naive udf img/s", "predict_batch_udf img/s", "incremental/full ratio",
        "spark job worker peak RSS MiB", "spark/naive ratio", "spark/predict_batch_udf ratio",
    ):
        assert figures[key] > 0, key
    # Same numbers everywhere: the folded model and the Spark job match eager / the hand loop.
    assert figures["model bn-folded max abs diff"] <= 1e-4
    assert figures["spark vs loop max abs diff"] <= 1e-4
    work = tmp_path / "run"
    for output in ("loop.parquet", "naive.parquet", "udf.parquet"):
        assert pq.read_table(work / output).num_rows == n, output
    assert (tmp_path / f"results-n{n}-s0.json").exists()
