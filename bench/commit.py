"""`make bench-commit`: what a run's commit costs against the size of the table.

    .venv/bin/python bench/commit.py [--sizes 10000,100000,1000000] [--repeats 3] [--out bench/out/commit]

Builds embeddings tables of 10k, 100k and 1M synthetic rows (1280-d float32,
paths spread at random over the key space, 5 KB a row: 1M rows is 5 GB), once,
in chunks, cached under `--out` and reused by later runs. Then times, on a
fresh copy of each table (data files hard-linked: nothing is copied), the
commit of a run through imgfeat's own commit (`delta.commit`, the delta-rs
writer this machine has):

- `500 new`: a 500-row run of new images;
- `1% new`: a run of new images, 1 % of the table's rows;
- `500, 5 changed`: 495 new images and 5 whose bytes changed, spread over
  the table (their rows are replaced: each file holding one is rewritten).

Each figure is the median of `--repeats` commits. Every commit is checked:
one new version, rows = before + new. Ends with
`commit 1M/10k ratio: X` (the 500-row commit into the largest table over the
same into the smallest). Not part of `make bench`: building the 1M table
takes minutes the first time.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable, write_deltalake

from imgfeat import delta
from imgfeat.schema import TABLE_ARROW_SCHEMA

FEATURIZER = "efficientnet_lite0"
DIM = 1280
FINGERPRINT = "f" * 16
CHUNK = 10_000  # rows generated and written at a time: ~50 MB of embeddings


def synthetic_rows(start: int, stop: int, tag: str, seed: int, fingerprint: str = FINGERPRINT) -> pa.RecordBatch:
    """Rows `start..stop` of a synthetic run: random-looking paths (a hash of
    the index), random unit-free float32 embeddings and perceptual hashes, all `ok`."""
    n = stop - start
    names = [hashlib.sha1(f"{tag}-{i}".encode()).hexdigest() for i in range(start, stop)]
    rng = np.random.default_rng([seed, start])
    values = pa.array(rng.standard_normal(n * DIM, dtype=np.float32))
    offsets = pa.array(np.arange(0, (n + 1) * DIM, DIM, dtype=np.int32))
    now = pa.scalar(int(time.time() * 1e6), pa.timestamp("us", tz="UTC"))
    columns = {
        "path": pa.array([f"file:/data/photos/{h[:2]}/{h}.jpg" for h in names]),
        "content_sha256": pa.array([hashlib.sha256(f"{h}-{seed}".encode()).hexdigest() for h in names]),
        "length": pa.array(np.full(n, 123_456, dtype=np.int64)),
        "modification_time": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
        "featurizer": pa.array([FEATURIZER] * n),
        "featurizer_fingerprint": pa.array([fingerprint] * n),
        "embedding": pa.ListArray.from_arrays(offsets, values),
        "dim": pa.array(np.full(n, DIM, dtype=np.int32)),
        "status": pa.array(["ok"] * n),
        "error": pa.nulls(n, pa.string()),
        "width": pa.array(np.full(n, 640, dtype=np.int32)),
        "height": pa.array(np.full(n, 480, dtype=np.int32)),
        "phash": pa.array(rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64)),
        "run_id": pa.array([tag] * n),
        "featurized_at": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
    }
    return pa.RecordBatch.from_pydict({name: columns[name] for name in TABLE_ARROW_SCHEMA.names}).cast(
        TABLE_ARROW_SCHEMA
    )


def base_table(out: Path, rows: int, fingerprint: str = FINGERPRINT) -> Path:
    """The cached table of `rows` rows, built in chunks the first time (`out/base-<rows>`)."""
    path = out / f"base-{rows}"
    if DeltaTable.is_deltatable(str(path)):
        return path
    shutil.rmtree(path, ignore_errors=True)
    started = time.monotonic()

    def chunks() -> Iterator[pa.RecordBatch]:
        for start in range(0, rows, CHUNK):
            yield synthetic_rows(start, min(start + CHUNK, rows), "base", seed=0, fingerprint=fingerprint)

    reader = pa.RecordBatchReader.from_batches(TABLE_ARROW_SCHEMA, chunks())
    write_deltalake(str(path), reader, mode="error", partition_by=list(delta.EMBEDDINGS.partition_by))
    print(f"built table of {rows} rows in {time.monotonic() - started:.0f} s: {path}", flush=True)
    return path


def copy_table(base: Path, dest: Path) -> None:
    """A private copy to commit into: the log copied, the (immutable) data files hard-linked."""
    shutil.rmtree(dest, ignore_errors=True)
    for root, _, files in os.walk(base):
        rel = Path(root).relative_to(base)
        (dest / rel).mkdir(parents=True, exist_ok=True)
        for name in files:
            src, dst = Path(root) / name, dest / rel / name
            if "_delta_log" in rel.parts:
                shutil.copy2(src, dst)
            else:
                os.link(src, dst)


def stage_run(table: Path, run_id: str, new: int, changed: list[str], fingerprint: str = FINGERPRINT) -> str:
    """A run's rows staged the way `delta.stage` leaves them: `new` new images,
    plus new bytes for the existing paths `changed`."""
    staged = Path(delta.staging_path(str(table), run_id))
    staged.mkdir(parents=True)
    batch = synthetic_rows(0, new + len(changed), run_id, seed=1, fingerprint=fingerprint)
    if changed:
        paths = batch.column("path").to_pylist()[:new] + changed
        batch = batch.set_column(0, "path", pa.array(paths))
    pq.write_table(pa.Table.from_batches([batch]), staged / "part-0.parquet")
    return str(staged)


def time_commit(
    base: Path, work: Path, rows: int, new: int, changed: int, run_id: str, fingerprint: str = FINGERPRINT
) -> float:
    """Seconds `delta.commit` takes to land one run on a fresh copy of `base`."""
    copy_table(base, work)
    before = DeltaTable(str(work))
    existing = []
    if changed:  # spread over the table: each in its own file, where there are enough files
        paths = before.to_pyarrow_dataset().to_table(columns=["path"]).column("path")
        existing = [paths[i].as_py() for i in range(0, rows, rows // changed)][:changed]
    staged = stage_run(work, run_id, new, existing, fingerprint)
    started = time.monotonic()
    result = delta.commit(None, staged, str(work), FEATURIZER, run_id, {"bench": "commit"})
    seconds = time.monotonic() - started
    after = DeltaTable(str(work))
    counted = sum(after.get_add_actions(flatten=True).column("num_records").to_pylist())
    assert result.committed and after.version() == before.version() + 1, (result, after.version())
    assert counted == rows + new, f"{counted} rows after committing {new} new into {rows}"
    return seconds


def label(rows: int) -> str:
    return f"{rows // 1_000_000}M" if rows >= 1_000_000 else f"{rows // 1000}k"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="table sizes, comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/out/commit"))
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    cases = {"500 new": lambda n: (500, 0), "1% new": lambda n: (n // 100, 0), "500, 5 changed": lambda n: (495, 5)}
    results: dict[tuple[int, str], float] = {}
    for rows in sizes:
        base = base_table(args.out, rows)
        files = len(DeltaTable(str(base)).file_uris())
        for case, shape in cases.items():
            new, changed = shape(rows)
            times = [
                time_commit(base, args.out / "work", rows, new, changed, f"{label(rows)}-{i}")
                for i in range(args.repeats)
            ]
            results[rows, case] = statistics.median(times)
            print(
                f"commit {case} into {label(rows)} ({files} files) s: {results[rows, case]:.2f} "
                f"(runs: {', '.join(f'{t:.2f}' for t in times)})",
                flush=True,
            )
        shutil.rmtree(args.out / "work", ignore_errors=True)
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()
    print("| table rows | " + " | ".join(cases) + " |")
    print("|---|" + "---|" * len(cases))
    for rows in sizes:
        print(f"| {rows:,} | " + " | ".join(f"{results[rows, c]:.2f} s" for c in cases) + " |")
    small, large = sizes[0], sizes[-1]
    print(f"commit {label(large)}/{label(small)} ratio: {results[large, '500 new'] / results[small, '500 new']:.2f}")


if __name__ == "__main__":
    main()
