"""What a client may send the served model, checked before any image is decoded.

Owns: turning one request's rows into image bytes under the deployer's
limits (`ServeLimits`): base64 `content` (however MLflow's request format
delivered it), and server-side `path` input, which is off unless the
deployer names one root (`ServePaths`); and the fixed, client-safe message of
every refusal. Must not: decode images, import Spark, Delta or training
code, or put a file's bytes or an OS error's text into a message (answers go
to whoever can reach the port).

A refused `path` gets the same message whatever exists on disk (missing,
a directory, a FIFO, outside the root, unreadable): the answer is no oracle
for the server's files.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import posixpath
import stat
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from imgfeat.config import ServeConfig, ServeLimits, ServePaths
from imgfeat.errors import InputError, Status

#: The environment variable that carries `imgfeat serve`'s limits and path policy
#: (JSON of `ServeConfig.limits` and `.paths`) into the server's processes.
SERVING_ENV = "IMGFEAT_SERVING"

#: Every message a served answer may carry for a row; nothing else reaches a client.
PATHS_OFF = "path input is off on this server: send the image bytes, base64, in `content`"
PATH_REFUSED = "path is not a file this server may read: send the image bytes, base64, in `content`"
PATH_TIMEOUT = "reading the path took longer than this server allows (paths.read_timeout_s)"
NOT_BASE64 = "content is not base64 (send the image file's bytes, base64-encoded)"
NO_IMAGE = "row has neither `content` nor `path`"
TOO_MANY_BYTES = "image is larger than this server accepts (limits.max_image_bytes)"
SERVED_MESSAGES = {
    Status.DECODE_ERROR.value: "not an image this server can decode (JPEG, PNG, GIF, BMP, TIFF, WebP, ...)",
    Status.TOO_LARGE.value: "image is larger than this server accepts (limits.max_image_bytes / limits.max_pixels)",
    Status.UNSUPPORTED.value: "an image format or mode this server cannot decode",
    Status.READ_ERROR.value: "the image could not be read",
}
FIXED_MESSAGES = frozenset({PATHS_OFF, PATH_REFUSED, PATH_TIMEOUT, NOT_BASE64, NO_IMAGE, TOO_MANY_BYTES})

# One small pool for path reads, so a read that hangs (a stalled network mount) costs
# one thread of it and a `read_error` row after `read_timeout_s`, not the request.
_READERS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="imgfeat-serve-read")


class Refused(Exception):
    """A row the server will not score; `message` is one of the fixed messages above."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class ServingPolicy:
    """The limits and the path policy one served model applies to every request."""

    limits: ServeLimits = ServeLimits()
    paths: ServePaths = ServePaths()

    @classmethod
    def from_env(cls, environ: Any = os.environ) -> ServingPolicy:
        """The policy `imgfeat serve` (or the deployer, e.g. a Model Serving endpoint's
        environment) set in `IMGFEAT_SERVING`; the safe defaults when unset."""
        text = environ.get(SERVING_ENV)
        if not text:
            return cls()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{SERVING_ENV} is not JSON ({exc.msg})") from None
        cfg = ServeConfig.model_validate({k: data[k] for k in ("limits", "paths") if k in data})
        return cls(cfg.limits, cfg.paths)

    def to_env(self) -> str:
        return json.dumps({"limits": self.limits.model_dump(), "paths": self.paths.model_dump()})

    def check_rows(self, n: int) -> None:
        """A request over the row limit is refused whole, before anything is decoded."""
        if n > self.limits.max_rows:
            raise InputError(
                f"request has {n} rows; this server scores at most {self.limits.max_rows} per request "
                "(limits.max_rows): send smaller batches"
            )

    def content_bytes(self, value: Any) -> bytes:
        """A row's `content`: raw bytes (a Python caller) or base64 text (any JSON request format)."""
        if isinstance(value, (bytes, bytearray, memoryview)):
            data = bytes(value)
        elif isinstance(value, str):
            text = "".join(value.split())  # MLflow's own encoder wraps lines
            if len(text) * 3 // 4 > self.limits.max_image_bytes:
                raise Refused(Status.TOO_LARGE, TOO_MANY_BYTES)  # refused before decoding the base64
            try:
                data = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise Refused(Status.DECODE_ERROR, NOT_BASE64) from None
        else:
            raise Refused(Status.DECODE_ERROR, NOT_BASE64)
        if len(data) > self.limits.max_image_bytes:
            raise Refused(Status.TOO_LARGE, TOO_MANY_BYTES)
        return data

    def path_bytes(self, value: Any) -> bytes:
        """A row's `path`, read only if the deployer allowed paths and it lies under the root."""
        root = self.paths.root
        if root is None:
            raise Refused(Status.READ_ERROR, PATHS_OFF)
        if not isinstance(value, str) or not value or "\x00" in value:
            raise Refused(Status.READ_ERROR, PATH_REFUSED)
        if _has_scheme(value) or _has_scheme(root):
            read = self._url_reader(value)
        else:
            read = self._file_reader(value)
        future = _READERS.submit(read)
        try:
            return future.result(timeout=self.paths.read_timeout_s)
        except FutureTimeout:
            raise Refused(Status.READ_ERROR, PATH_TIMEOUT) from None

    def _file_reader(self, value: str) -> Any:
        root = os.path.realpath(self.paths.root or "")
        real = os.path.realpath(os.path.join(root, value))  # relative paths are relative to the root
        if os.path.commonpath([real, root]) != root:
            raise Refused(Status.READ_ERROR, PATH_REFUSED)
        cap = self.limits.max_image_bytes
        return lambda: _read_regular_file(real, cap)

    def _url_reader(self, value: str) -> Any:
        root = self.paths.root or ""
        if not self.paths.allow_urls or not (_has_scheme(value) and _has_scheme(root)):
            raise Refused(Status.READ_ERROR, PATH_REFUSED)
        url, base = urlsplit(value), urlsplit(root)
        inside = posixpath.normpath("/" + url.path.lstrip("/"))
        prefix = posixpath.normpath("/" + base.path.lstrip("/"))
        if (
            (url.scheme.lower(), url.netloc) != (base.scheme.lower(), base.netloc)
            or url.query
            or url.fragment
            or not (inside == prefix or inside.startswith(prefix.rstrip("/") + "/"))
        ):
            raise Refused(Status.READ_ERROR, PATH_REFUSED)
        cap = self.limits.max_image_bytes
        return lambda: _read_url(f"{url.scheme}://{url.netloc}{inside}", cap)


def _has_scheme(value: str) -> bool:
    scheme, sep, _ = value.partition(":")
    return bool(sep) and len(scheme) > 1 and scheme.replace("+", "").replace("-", "").replace(".", "").isalnum()


def _read_regular_file(path: str, cap: int) -> bytes:
    """Open without following a last symlink and without blocking (a FIFO), then
    read only a regular file no bigger than `cap`; every refusal reads the same."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        raise Refused(Status.READ_ERROR, PATH_REFUSED) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Refused(Status.READ_ERROR, PATH_REFUSED)
        if info.st_size > cap:
            raise Refused(Status.TOO_LARGE, TOO_MANY_BYTES)
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read(cap + 1)
    except OSError:
        raise Refused(Status.READ_ERROR, PATH_REFUSED) from None
    finally:
        os.close(fd)
    if len(data) > cap:  # grew while read
        raise Refused(Status.TOO_LARGE, TOO_MANY_BYTES)
    return data


def _read_url(url: str, cap: int) -> bytes:
    """A remote object under the allowed prefix, through fsspec, size-checked before reading."""
    import fsspec

    try:
        fs, target = fsspec.core.url_to_fs(url)
        size = fs.size(target)
        if size is not None and size > cap:
            raise Refused(Status.TOO_LARGE, TOO_MANY_BYTES)
        with fs.open(target, "rb") as handle:
            data = handle.read(cap + 1)
    except Refused:
        raise
    except Exception:
        raise Refused(Status.READ_ERROR, PATH_REFUSED) from None
    if len(data) > cap:
        raise Refused(Status.TOO_LARGE, TOO_MANY_BYTES)
    return data


def served_message(status: str, error: str | None) -> str | None:
    """The message a client sees for a row: a fixed one, never a file's bytes or OS text."""
    if status == Status.OK.value:
        return None
    if error in FIXED_MESSAGES:
        return error
    return SERVED_MESSAGES.get(status, SERVED_MESSAGES[Status.READ_ERROR.value])
