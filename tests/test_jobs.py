"""The spark-submit entry points in `jobs/`: spark-submit puts a job's own folder first
on `sys.path`, so a job file named like a standard-library module (`select.py`)
shadows it for every job in the folder (subprocess then fails on `select.select`)."""

from __future__ import annotations

import sys
from pathlib import Path

JOBS = Path(__file__).resolve().parents[1] / "jobs"


def test_no_job_file_shadows_a_standard_library_module():
    names = {p.stem for p in JOBS.glob("*.py")}
    assert names, f"no jobs under {JOBS}"
    assert not names & set(sys.stdlib_module_names), sorted(names & set(sys.stdlib_module_names))
