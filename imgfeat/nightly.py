"""What the nightly job keeps beside the embeddings table: its lock, its state,
and the rule that decides whether to retrain.

Owns: the table lock `<table>/_imgfeat_lock` (one nightly run per table at a
time; stale locks), the state file `<table>/_imgfeat_nightly.json` (which
table version and model the last nightly train and score used), and counting
the rows committed since then. Must not: featurize, train or score
(`runs.nightly_run` runs the steps). Both files start with `_`, so Delta
ignores them.

The lock is a file created with O_CREAT|O_EXCL: atomic on local disks and
NFS v3+, unverified on FUSE mounts (Databricks' /dbfs, /Volumes). On object
stores (s3://, abfss://, gs://) it is best effort (check, then write): there,
let the scheduler forbid overlapping runs (the bundle sets
max_concurrent_runs: 1).

A lock is stale, and taken over with a warning, when its owner ran on this
host and that process is gone, or when it is older than
`lock.stale_after_hours` (an owner on another host cannot be checked).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from imgfeat import delta
from imgfeat.config import RetrainPolicy
from imgfeat.errors import ConflictError, Status
from imgfeat.sources import local_path

log = logging.getLogger("imgfeat")

LOCK_NAME = "_imgfeat_lock"
STATE_NAME = "_imgfeat_nightly.json"


@dataclass(frozen=True)
class LockOwner:
    """Who holds a table's lock; stored as JSON in the lock file."""

    run_id: str
    pid: int
    host: str
    started_at: float  # unix time
    command: str

    def describe(self) -> str:
        when = datetime.fromtimestamp(self.started_at, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"pid {self.pid} on {self.host} since {when} ({self.command}, run {self.run_id})"


@contextlib.contextmanager
def table_lock(table: str, run_id: str, command: str, stale_after_hours: float) -> Iterator[LockOwner]:
    """Hold `<table>/_imgfeat_lock` for the body; raise `ConflictError` if a live run holds it."""
    me = LockOwner(run_id, os.getpid(), socket.gethostname(), time.time(), command)
    path = _sidecar(table, LOCK_NAME)
    _acquire(path, me, stale_after_hours)
    try:
        yield me
    finally:
        if _read_owner(path) == me:  # never remove a lock someone took over from us
            _remove(path)


def _acquire(path: str, me: LockOwner, stale_after_hours: float) -> None:
    for _ in range(3):  # a takeover may race another run's: re-check each time
        if _create_exclusive(path, json.dumps(asdict(me))):
            return
        holder = _read_owner(path)
        if holder is None:  # released (or unreadable) between our two looks
            continue
        reason = _stale_reason(holder, stale_after_hours)
        if reason is None:
            raise ConflictError(
                f"{path} is held by {holder.describe()}: another run is working on this table; "
                "try again later (remove the file only if that run is dead)"
            )
        log.warning("imgfeat: taking over a stale lock %s (%s): %s", path, reason, holder.describe())
        if _read_owner(path) == holder:
            _remove(path)
    raise ConflictError(
        f"could not take the lock {path}: other runs keep taking it, or it cannot be read "
        "(remove it if no imgfeat run is active); try again later"
    )


def _stale_reason(holder: LockOwner, stale_after_hours: float) -> str | None:
    age_h = (time.time() - holder.started_at) / 3600
    if holder.host == socket.gethostname() and not _pid_alive(holder.pid):
        return f"process {holder.pid} is gone"
    if age_h > stale_after_hours:
        return f"older than {stale_after_hours:g} h"
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _read_owner(path: str) -> LockOwner | None:
    text = _read_text(path)
    if text is None:
        return None
    try:
        return LockOwner(**json.loads(text))
    except (ValueError, TypeError):
        return None  # half-written or foreign: treated as gone


# ------------------------------------------------------------------- state
@dataclass(frozen=True)
class Trained:
    """The last nightly training: what it read and what it registered."""

    table_version: int
    rows: int  # labeled rows it used (train + validation + test)
    model: str  # models:/NAME/VERSION it registered


@dataclass(frozen=True)
class Scored:
    """The last nightly scoring: with which model, after which table version."""

    model: str
    table_version: int | None


def read_state(table: str) -> dict[str, Any]:
    """The nightly state of `table` ({} before the first nightly run)."""
    text = _read_text(_sidecar(table, STATE_NAME))
    return json.loads(text) if text else {}


def last_trained(state: dict[str, Any]) -> Trained | None:
    return Trained(**state["trained"]) if state.get("trained") else None


def last_scored(state: dict[str, Any]) -> Scored | None:
    return Scored(**state["scored"]) if state.get("scored") else None


def write_state(table: str, state: dict[str, Any], **updates: Trained | Scored) -> dict[str, Any]:
    """Record `updates` (trained=..., scored=...) in the state file, atomically where local."""
    new = {**state, **{k: asdict(v) for k, v in updates.items()}, "updated_at": time.time()}
    path = _sidecar(table, STATE_NAME)
    local = local_path(path)
    if local is not None:
        tmp = f"{local}.{os.getpid()}.tmp"
        Path(local).parent.mkdir(parents=True, exist_ok=True)
        Path(tmp).write_text(json.dumps(new, indent=1))
        os.replace(tmp, local)
    else:
        _fs(path).pipe(path, json.dumps(new, indent=1).encode())
    return new


# ----------------------------------------------------------- retrain rule
def ok_rows_since(spark: SparkSession, table: str, version: int, featurizers: set[str]) -> int:
    """`ok` rows committed after `version` by featurize runs of `featurizers`.

    Read from each commit's `imgfeat.counts` (no table scan). A file whose
    bytes changed counts again: its row was replaced.
    """
    latest = delta.table_version(spark, table)
    total = 0
    for v in range(version + 1, (latest if latest is not None else version) + 1):
        meta = delta.run_metadata(spark, table, v)
        if _json(meta.get(f"{delta.META_PREFIX}featurizer")) in featurizers:
            total += int(_json(meta.get(f"{delta.META_PREFIX}counts") or "{}").get(Status.OK.value, 0))
    return total


def retrain_reason(trained: Trained | None, new_rows: int, policy: RetrainPolicy) -> str | None:
    """Why to retrain now, or None to keep the current model."""
    if trained is None:
        return "no model trained by the nightly job yet"
    if new_rows <= 0:
        return None
    if policy.min_new_rows is not None and new_rows >= policy.min_new_rows:
        return f"{new_rows} new rows >= retrain.min_new_rows {policy.min_new_rows}"
    fraction = new_rows / max(trained.rows, 1)
    if policy.min_new_fraction is not None and fraction >= policy.min_new_fraction:
        return (
            f"{new_rows} new rows = {fraction:.1%} of {trained.rows} "
            f">= retrain.min_new_fraction {policy.min_new_fraction:g}"
        )
    return None


# ------------------------------------------------------------- file access
def _sidecar(table: str, name: str) -> str:
    return f"{table.rstrip('/')}/{name}"


def _fs(path: str):  # -> fsspec.AbstractFileSystem
    import fsspec

    return fsspec.core.url_to_fs(path)[0]


def _create_exclusive(path: str, text: str) -> bool:
    local = local_path(path)
    if local is None:
        fs = _fs(path)
        if fs.exists(path):
            return False
        fs.pipe(path, text.encode())
        return True
    Path(local).parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(local, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return True


def _read_text(path: str) -> str | None:
    local = local_path(path)
    try:
        if local is not None:
            return Path(local).read_text()
        return _fs(path).cat(path).decode()
    except FileNotFoundError:
        return None


def _remove(path: str) -> None:
    local = local_path(path)
    with contextlib.suppress(FileNotFoundError):
        if local is not None:
            os.unlink(local)
        else:
            _fs(path).rm(path)


def _json(value: str | None) -> Any:
    """Commit metadata values are JSON, except plain strings stored as they are."""
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return value
