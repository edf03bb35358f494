"""Near-duplicate search at scale: `insights.near_duplicates` on N synthetic rows, in Spark.

    PYTHONPATH=. .venv/bin/python bench/near_duplicates.py [--n 100000] [--dim 1280] [--pairs 1000]

Rows are non-negative vectors around a shared mean (as pooled CNN features
are), with `pairs` planted near-copies (cosine ~0.99). Prints the time of the
whole search (blocking keys, candidate join, exact cosine, count), the pairs
found, the planted pairs recalled, and the peak RSS of the driver JVM + Python
+ workers together (sampled every 0.2 s). Nothing is collected to the driver
but the mean vector and the count.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq


def _write(path: str, n: int, dim: int, pairs: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    chunk, writer = 10_000, None
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        block = np.abs(1.0 + 0.5 * rng.standard_normal((size, dim))).astype(np.float32)
        for i in range(size):  # the last `pairs` rows copy rows 0..pairs-1 with 1 % noise
            j = start + i
            if j >= n - pairs:
                src = np.abs(1.0 + 0.5 * np.random.default_rng((seed, j - (n - pairs))).standard_normal(dim))
                block[i] = (src * (1 + 0.01 * rng.standard_normal(dim))).astype(np.float32)
            elif j < pairs:
                block[i] = np.abs(1.0 + 0.5 * np.random.default_rng((seed, j)).standard_normal(dim)).astype(np.float32)
        table = pa.table({
            "path": [f"img_{j:07d}" for j in range(start, start + size)],
            "emb_0": pa.FixedSizeListArray.from_arrays(pa.array(block.ravel()), dim).cast(pa.list_(pa.float32())),
        })
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()


class PeakRss:
    """Peak RSS of this process and all its children (JVM, Python workers) together."""

    def __init__(self) -> None:
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(0.2):
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

    from pyspark.sql import functions as F

    from imgfeat import insights
    from imgfeat.config import InsightsConfig, SparkConfig
    from imgfeat.session import get_spark

    nd = InsightsConfig().near_duplicates
    print(f"load average at start: {os.getloadavg()[0]:.1f} (2-core machine shared with other jobs)", flush=True)
    with tempfile.TemporaryDirectory(prefix="imgfeat-bench-nd-") as tmp:
        data = f"{tmp}/rows.parquet"
        _write(data, args.n, args.dim, args.pairs, 0)
        spark = get_spark(SparkConfig(master=args.master, conf={
            "spark.driver.memory": "4g", "spark.sql.shuffle.partitions": "16", "spark.ui.showConsoleProgress": "false",
        }))
        rows = spark.read.parquet(data).repartition(16)
        with PeakRss() as rss:
            started = time.monotonic()
            units = insights.with_units(rows, ["emb_0"])
            pairs = insights.near_duplicates(units, nd.threshold, nd.bits, nd.tables, seed=0).cache()
            found = pairs.count()
            seconds = time.monotonic() - started
        planted = pairs.where(
            F.substring("path_b", 5, 7).cast("int") - F.substring("path_a", 5, 7).cast("int") == args.n - args.pairs
        ).count()
        print(f"rows: {args.n} x {args.dim}; threshold {nd.threshold}, {nd.bits} bits x {nd.tables} tables")
        print(f"near-duplicate search: {seconds:.1f} s, {args.n / seconds:.0f} rows/s")
        print(f"pairs found: {found}; planted pairs recalled: {planted}/{args.pairs} ({planted / args.pairs:.1%})")
        print(f"peak RSS, driver + JVM + workers: {rss.peak / 2**20:.0f} MiB")
        print(f"load average at end: {os.getloadavg()[0]:.1f}")
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
