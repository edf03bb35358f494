"""Reading one file's bytes, and stating one path, wherever it lives.

Owns: telling a local file from a remote URI (`local_path`), the fsspec
filesystem of a remote one with a timeout on its requests (`filesystem`),
reading a local file or a remote object (http(s), s3, abfss, gs, dbfs ...)
with bounded retries and a byte cap (`read_file`, `read_capped`, `retried`), a
path's (modification time, size) (`stat`), and the row status a read failure
becomes (`read_status`). Must not: list inputs, open archives, decode, or use Spark.

Why a cap on every read: an input names whatever it likes (a URL that streams
forever, a 10 GB file, a zip member that inflates without end); the cap makes
those `too_large` rows instead of a worker out of memory.
"""

from __future__ import annotations

import email.utils
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, TypeVar

import pandas as pd

from imgfeat.errors import Status

T = TypeVar("T")


@dataclass(frozen=True)
class ReadLimits:
    """How long one remote request may take, how often a failed one is retried, and the
    most bytes one image may have (`read.timeout_s`, `read.retries`, `read.max_image_bytes`)."""

    timeout_s: float = 30.0
    retries: int = 2
    max_bytes: int = 256 * 2**20


#: The limits of a read that names none (the config's defaults).
DEFAULT_LIMITS = ReadLimits()
_CHUNK = 2**20  # bytes asked of a stream at a time


class TooLarge(OSError):
    """An image (file, object, zip member) with more bytes than `ReadLimits.max_bytes`."""


class Refused(OSError):
    """A name imgfeat will not read (a zip member named `../x` or `/x`): an `unsupported` row."""


class Damaged(OSError):
    """Bytes that fail their own check (a zip member's CRC): a `decode_error` row, which a
    rerun does not retry as it retries a `read_error` (the archive is damaged, not busy)."""


def read_status(exc: BaseException) -> Status:
    """The row status of a failed read: too_large, unsupported, decode_error, else read_error."""
    if isinstance(exc, TooLarge):
        return Status.TOO_LARGE
    if isinstance(exc, Refused):
        return Status.UNSUPPORTED
    if isinstance(exc, Damaged):
        return Status.DECODE_ERROR
    return Status.READ_ERROR


def local_path(path: str) -> str | None:
    """The local file behind a Spark path, or None for a remote store.

    Spark lists paths unescaped (`file:/data/café photo#1.jpg`), so they are
    split on the scheme only, never URL-parsed. DBFS is mounted at /dbfs.
    """
    scheme, sep, rest = path.partition(":")
    if not sep or len(scheme) == 1:  # no scheme, or a Windows drive letter
        return path
    scheme = scheme.lower()
    if scheme == "file":
        return "/" + rest.lstrip("/") if rest.startswith("/") else rest
    if scheme == "dbfs":
        return "/dbfs/" + rest.lstrip("/")
    return None


def fsspec_url(path: str) -> str:
    """Hadoop's s3a:// and s3n:// are fsspec's s3://."""
    return path.replace("s3a://", "s3://", 1).replace("s3n://", "s3://", 1)


def read_file(path: str, limits: ReadLimits = DEFAULT_LIMITS) -> bytes:
    """The bytes of a local file or remote object; raises `TooLarge` past the cap, else OSError.

    Remote reads stream (never more than the cap + 1 bytes held) and are tried
    `1 + limits.retries` times, except for a missing object or one too large.
    """
    local = local_path(path)
    if local is not None:
        if os.path.getsize(local) > limits.max_bytes:
            raise TooLarge(_too_large(path, limits))
        with open(local, "rb") as handle:
            return read_capped(handle, limits, path)
    return retried(lambda: _read_remote(path, limits), limits)


def open_remote(path: str, limits: ReadLimits) -> IO[bytes]:
    """A seekable binary file object over a remote object (for archives), with `limits`' timeout."""
    fs, key = filesystem(path, limits)
    return retried(lambda: fs.open(key, "rb"), limits)


def read_capped(handle: IO[bytes], limits: ReadLimits, what: str) -> bytes:
    """Read `handle` to its end, holding at most `limits.max_bytes` + 1 bytes; `TooLarge` past it.

    In chunks: a stream's `read(n)` may return fewer than n bytes before its end
    (an HTTP body), and a file's `read(n)` would allocate n bytes up front.
    """
    chunks: list[bytes] = []
    held = 0
    while chunk := handle.read(min(_CHUNK, limits.max_bytes + 1 - held)):
        chunks.append(chunk)
        held += len(chunk)
        if held > limits.max_bytes:
            raise TooLarge(_too_large(what, limits))
    return b"".join(chunks)


def stat(path: str, limits: ReadLimits = DEFAULT_LIMITS) -> tuple[pd.Timestamp | None, int]:
    """(modification time to the millisecond, as Spark lists it; size) of a file or object,
    or (None, 0) when it cannot be stated (its read then fails: a `read_error` row)."""
    try:
        local = local_path(path)
        if local is not None:
            st = os.stat(local)
            return pd.Timestamp(st.st_mtime_ns // 1_000_000, unit="ms", tz="UTC"), st.st_size
        fs, key = filesystem(path, limits)
        info = retried(lambda: fs.info(key), limits)
    except (OSError, ValueError):
        return None, 0
    return _info_time(info), int(info.get("size") or 0)


def retried(call: Callable[[], T], limits: ReadLimits) -> T:
    """`call()`, tried again (after 0.2 s, 0.4 s, ...) up to `limits.retries` times on a transient
    error; a missing object, a refusal or a too-large one fails at once."""
    for attempt in range(limits.retries + 1):
        try:
            return call()
        except (OSError, ValueError) as exc:  # timeouts are OSError (TimeoutError) too
            failure = _transient(exc)
            if failure is None:
                raise
            if attempt == limits.retries:
                raise failure from exc
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


def _transient(exc: BaseException) -> OSError | None:
    """The error to report if `exc` is worth a retry (a timeout, a dropped connection), else None.

    fsspec's http driver reports a request that timed out as FileNotFoundError
    (it tries HEAD, then GET, then gives up); its cause tells the two apart.
    """
    if isinstance(exc, FileNotFoundError) and isinstance(exc.__cause__, (TimeoutError, ConnectionError)):
        return TimeoutError(f"no answer within read.timeout_s: {exc}")
    if isinstance(exc, (FileNotFoundError, PermissionError, TooLarge, Refused, Damaged)):
        return None
    return exc if isinstance(exc, OSError) and str(exc) else OSError(f"{type(exc).__name__}: {exc}")


def _read_remote(path: str, limits: ReadLimits) -> bytes:
    fs, key = filesystem(path, limits)
    streamed = {"block_size": 0} if fs.protocol[0] in ("http", "https") else {}  # one GET, no range requests
    with fs.open(key, "rb", **streamed) as handle:
        size = getattr(handle, "size", None)
        if isinstance(size, int) and size > limits.max_bytes:
            raise TooLarge(_too_large(path, limits))
        return read_capped(handle, limits, path)


def filesystem(path: str, limits: ReadLimits) -> tuple[Any, str]:
    """fsspec's filesystem for `path` with `limits.timeout_s` on every request it makes
    (http(s) through aiohttp, s3 through botocore; other stores keep their driver's own)."""
    import fsspec

    url = fsspec_url(path)
    protocol = url.partition("://")[0].lower()
    options: dict[str, Any] = {}
    if protocol in ("http", "https"):
        import aiohttp

        options = {"client_kwargs": {"timeout": aiohttp.ClientTimeout(total=limits.timeout_s)}}
    elif protocol == "s3":
        options = {"config_kwargs": {"connect_timeout": limits.timeout_s, "read_timeout": limits.timeout_s}}
    return fsspec.core.url_to_fs(url, **options)


def _info_time(info: dict[str, Any]) -> pd.Timestamp | None:
    """An fsspec info's modification time as a UTC timestamp (http: the Last-Modified header)."""
    keys = ("mtime", "LastModified", "last_modified", "Last-Modified", "created")
    stamp = next((info[k] for k in keys if info.get(k)), None)
    if stamp is None:
        return None
    if isinstance(stamp, (int, float)):
        when = pd.Timestamp(stamp, unit="s")
    elif isinstance(stamp, str) and "," in stamp:  # an HTTP date: Tue, 08 Dec 2026 10:00:00 GMT
        when = pd.Timestamp(email.utils.parsedate_to_datetime(stamp))
    else:
        when = pd.Timestamp(stamp)
    return when.tz_localize("UTC") if when.tzinfo is None else when.tz_convert("UTC")


def _too_large(what: str, limits: ReadLimits) -> str:
    return f"{what} has more than {limits.max_bytes} bytes (read.max_image_bytes)"
