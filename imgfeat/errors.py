"""Errors and row statuses shared by every stage.

Owns: the exception types a user can cause (bad config, bad input, unknown
featurizer, a lost commit race) and the per-row `Status` values of the
embeddings table. Must not: import any other imgfeat module.

A user error is an `ImgfeatError`; the CLI prints its message on one line and
exits with code 2 (3 for a `ConflictError`: busy, retry later). Anything else
is a bug and keeps its stack trace.
"""

from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    """Outcome of one image; stored in the `status` column of every row."""

    OK = "ok"
    DECODE_ERROR = "decode_error"
    TOO_LARGE = "too_large"
    UNSUPPORTED = "unsupported"
    READ_ERROR = "read_error"


class ImgfeatError(Exception):
    """A problem the user can fix; shown as one line, exit code 2."""

    exit_code = 2


class ConfigError(ImgfeatError):
    """Unknown key, wrong type or bad value in a config file or --set."""


class InputError(ImgfeatError):
    """Missing, empty or unreadable input, or an unwritable output."""


class FeaturizerError(ImgfeatError):
    """Unknown featurizer name, missing or mismatched weights."""


class ConflictError(ImgfeatError):
    """Another run committed to the same table first, or holds its lock.

    Exit code 3, not 2: nothing is wrong with the command, nothing of this run
    was written, and the same command succeeds later (a scheduler retries).
    """

    exit_code = 3
