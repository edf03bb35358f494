"""Fault injection for the reliability tests: die once, at a named point.

Owns: the test-only hooks that SIGKILL a Python worker in the middle of a
task, or the driver right before its commit, so tests can show that Spark's
task retries and the staged single commit keep the table exact. Must not:
do anything unless its environment variable is set (it never is outside
tests), or import any other imgfeat module.

Each variable names a marker file. The first process to reach the point
creates the marker atomically (O_CREAT | O_EXCL, so exactly one process
dies even when several reach it at once) and kills itself; everyone after
that, a retried task or the next run, finds the marker and goes on.
"""

from __future__ import annotations

import os
import signal

#: Set in a Python worker's environment: the first worker past its first batch dies.
KILL_WORKER = "IMGFEAT_TEST_KILL_WORKER_ONCE"
#: Set in the driver's environment: the first fine-tuning process past its first step dies.
KILL_FINETUNE = "IMGFEAT_TEST_KILL_FINETUNE_ONCE"
#: Set in the driver's environment: the first featurize run to finish staging dies before committing.
KILL_BEFORE_COMMIT = "IMGFEAT_TEST_KILL_BEFORE_COMMIT_ONCE"


def die_once(variable: str) -> None:
    """SIGKILL this process if `variable` names a marker file nobody has created yet."""
    marker = os.environ.get(variable)
    if not marker:
        return
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    os.kill(os.getpid(), signal.SIGKILL)
