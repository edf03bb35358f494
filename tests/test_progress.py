"""imgfeat's progress lines: counts reported by Spark tasks reach the driver's stage."""

from __future__ import annotations

import io
import pickle
import time

from imgfeat import progress


def test_tasks_report_to_the_driver_and_lines_say_done_total_rate_and_bad(spark):
    shown = io.StringIO()
    progress.configure("lines", every=0.2, stream=shown)
    try:
        with progress.stage("featurize", 40, spark=spark) as stage:
            reporter = pickle.loads(pickle.dumps(stage.reporter))  # what a closure ships to the tasks

            def work(rows):
                for n in rows:
                    time.sleep(0.05)
                    reporter.add(1, n % 4 == 0)
                return []

            spark.sparkContext.parallelize(range(40), 4).mapPartitions(work).collect()
            deadline = time.monotonic() + 5
            while stage.done < 40 and time.monotonic() < deadline:  # datagrams still in flight
                time.sleep(0.05)
            assert (stage.done, stage.bad) == (40, 10)
    finally:
        progress.configure()
    lines = shown.getvalue().splitlines()
    assert len(lines) >= 2  # periodic lines while it ran, then the final one
    assert lines[-1].startswith("featurize  40/40 images  ") and " img/s  in " in lines[-1]
    assert lines[-1].endswith("bad 10")
    assert "\r" not in shown.getvalue()  # not a terminal: plain lines


def test_a_live_line_is_redrawn_in_place_and_set_replaces_the_live_counts():
    shown = io.StringIO()
    progress.configure("live", stream=shown)
    try:
        with progress.stage("score", 10) as stage:
            stage.add(2)
            time.sleep(0.3)
            stage.add(2, 1)  # two reports: a rate, so an ETA
            time.sleep(0.6)
            stage.set(10, 2)  # the exact counts, from what was written
    finally:
        progress.configure()
    text = shown.getvalue()
    assert "\rscore  4/10 images" in text and "ETA" in text
    assert text.endswith("bad 2\x1b[K\n") and "\rscore  10/10 images" in text  # ends on its own line


def test_off_prints_nothing_and_a_no_op_reporter_is_safe():
    shown = io.StringIO()
    progress.configure("off", stream=shown)
    try:
        with progress.stage("featurize", 5) as stage:
            stage.reporter.add(5)
    finally:
        progress.configure()
    assert shown.getvalue() == "" and stage.done == 0
