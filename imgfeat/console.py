"""What reaches the user's terminal: imgfeat's own lines, progress and errors.

Owns: sending the chatter of the libraries underneath (Spark's log4j and the
JVM's stderr, Python workers' prints such as XGBoost's `Task 0 got rank 0`,
Py4J, MLflow and XGBoost loggers, Python warnings) to one log file per
command, whose path is printed once, when the first process that writes
there (the JVM, a model server) starts.
Must not: decide what a job prints (callers do) or touch a JVM that is
already running (spark-submit and Databricks own their driver's logs).

Two halves, because the chatter comes from two processes: Python logging and
warnings are routed here, in this process; the JVM that `imgfeat.session`
starts gets the log file as its stdout and stderr (`child_output`), and the
Python workers it forks inherit them.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

#: Loggers whose messages are imgfeat's own lines; they stay on the terminal.
OWN_LOGGER = "imgfeat"

_LOG_PATH: Path | None = None
_ANNOUNCED = False


def default_log_path(command: str) -> Path:
    """A fresh file per command under the system temp folder: `imgfeat-logs/<command>-<time>-<pid>.log`."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(tempfile.gettempdir()) / "imgfeat-logs" / f"{command}-{stamp}-{os.getpid()}.log"


def quiet(path: Path) -> None:
    """From now on, library chatter goes to `path`; imgfeat's own log lines stay on stderr."""
    global _LOG_PATH
    _LOG_PATH = path
    # MLflow installs its own stderr handlers at import unless told not to (and
    # draws a progress bar per artifact download).
    os.environ["MLFLOW_CONFIGURE_LOGGING"] = "false"
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    for name in list(logging.root.manager.loggerDict):
        logger = logging.getLogger(name)
        if name != OWN_LOGGER and not name.startswith(OWN_LOGGER + "."):
            for handler in list(logger.handlers):  # e.g. mlflow's, if it was imported already
                logger.removeHandler(handler)
            logger.propagate = True
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_LazyFileHandler(path))
    root.setLevel(logging.INFO)
    own = logging.getLogger(OWN_LOGGER)
    for handler in list(own.handlers):  # a second call (tests call `main` twice) must not double lines
        own.removeHandler(handler)
    own.addHandler(_StderrHandler())
    own.setLevel(logging.INFO)  # its records reach the file too, through the root
    logging.captureWarnings(True)  # warnings.warn(...) → the `py.warnings` logger → the file


def verbose() -> None:
    """Everything on the terminal, as the libraries print it."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")


def under_spark_submit() -> bool:
    """True when a JVM started this process (spark-submit, Databricks jobs): the
    cluster collects the driver's stdout and stderr, so logs must stay there."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def log_path() -> Path | None:
    """The log file of this command, when `quiet` is on."""
    return _LOG_PATH


def child_output() -> IO | None:
    """Where a process this one starts (the JVM, a model server) should write its
    stdout and stderr: the log file when `quiet` is on (its path is printed
    then, once: where the chatter would have started), else None (the terminal)."""
    if _LOG_PATH is None:
        return None
    global _ANNOUNCED
    if not _ANNOUNCED:
        _ANNOUNCED = True
        print(
            f"imgfeat: Spark, MLflow and XGBoost logs: {_LOG_PATH} (--verbose shows them here)",
            file=sys.stderr,
            flush=True,
        )
    _LOG_PATH.parent.mkdir(parents=True, exist_ok=True)
    return open(_LOG_PATH, "a", buffering=1)


class _LazyFileHandler(logging.FileHandler):
    """A file handler that creates its folder and file on the first record only,
    so a command that logs nothing leaves no file behind."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, mode="a", encoding="utf-8", delay=True)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def _open(self):  # type: ignore[override]
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


class _StderrHandler(logging.StreamHandler):
    """imgfeat's own lines, to whatever `sys.stderr` is when they are written
    (pytest and notebooks swap it), as plain messages."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass
