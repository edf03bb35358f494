"""Zip archives as inputs: their members' keys, listing them, and reading one in a worker.

Owns: the key of a member (`zip://<member>::<archive URI>`, fsspec's chained-URL
form), listing an archive's images or the members its one CSV names
(`list_members`, on the driver: the central directory only, no byte inflated),
reading one member inside a worker without extracting anything to disk
(`read_member`, the archive opened once per worker process), and the CSV inside
(`read_csv`). Must not: decode, use Spark, or write anything.

Hostile archives: a member's declared size past `read.max_image_bytes` is never
inflated, and an inflating member is cut at the cap (the header is not trusted):
both are `too_large` rows; a member named `../x` or `/x` is an `unsupported`
row (nothing is extracted, but such a name is an attack, not an image); an
archive declaring more than `read.max_archive_members` members is refused whole
before its directory is parsed (its listing alone would exhaust memory).
"""

from __future__ import annotations

import io
import os
import posixpath
import re
import threading
import zipfile
import zlib
from collections.abc import Sequence
from typing import IO, Any

import pandas as pd

from imgfeat.errors import InputError
from imgfeat.readers import (
    DEFAULT_LIMITS,
    Damaged,
    ReadLimits,
    Refused,
    TooLarge,
    filesystem,
    local_path,
    open_remote,
    read_capped,
    retried,
)

PREFIX = "zip://"
_SEP = "::"
#: Archives a worker process keeps open (the archive of its current task, and a few more).
_KEEP_OPEN = 4
_OPEN: dict[str, tuple[Any, zipfile.ZipFile]] = {}
_OPEN_LOCK = threading.Lock()


def is_archive(uri: str) -> bool:
    return uri.lower().rstrip("/").endswith(".zip")


def archive_uri(uri: str) -> str:
    """An archive's URI as its keys carry it: a local file as `file:/absolute/path`, else as given."""
    local = local_path(uri)
    return f"file:{os.path.abspath(local)}" if local is not None and not uri.startswith("dbfs:") else uri


def member_key(archive: str, member: str) -> str:
    return f"{PREFIX}{member}{_SEP}{archive}"


def is_member_key(path: str) -> bool:
    return path.startswith(PREFIX) and _SEP in path


def split_key(key: str) -> tuple[str, str]:
    """(archive URI, member name) of a member key. The last `::` splits: member names are
    the archive author's (hostile), the archive's URI is the user's own."""
    member, _, archive = key[len(PREFIX) :].rpartition(_SEP)
    return archive, member


def list_members(
    uri: str, extensions: Sequence[str], columns: Sequence[str], limits: ReadLimits, max_members: int
) -> pd.DataFrame:
    """Listing rows (path, modification_time, length) of an archive's images.

    With exactly one CSV inside, its `columns` name the images (relative to the
    CSV's folder; a name the archive lacks is listed and becomes a `read_error`
    row); else every member with one of `extensions`. A member's time is its
    date plus its CRC-32 mod 1000 as milliseconds (zip dates have a 2-second
    step): a member rewritten with the same size and date still counts as changed.
    """
    archive = archive_uri(uri)
    try:
        zf = _open(archive, limits, max_members)
    except (OSError, zipfile.BadZipFile) as exc:
        raise InputError(f"cannot read archive {uri}: {exc}") from None
    with zf:
        infos = {i.filename: i for i in zf.infolist() if not i.is_dir() and not _resource_fork(i.filename)}
        csv = _inner_csv(infos, uri)
        if csv is not None:
            names = _named_members(zf, csv, columns, limits, uri)
        else:
            suffixes = tuple(f".{e.lower().lstrip('.')}" for e in extensions)
            names = [n for n in infos if n.lower().endswith(suffixes)]
    found = [infos.get(n) for n in names]
    return pd.DataFrame(
        {
            "path": [member_key(archive, n) for n in names],
            "modification_time": pd.to_datetime([_member_time(i) for i in found], utc=True),
            "length": pd.array([i.file_size if i else 0 for i in found], dtype="Int64"),
        }
    )


def read_csv(uri: str, limits: ReadLimits, max_members: int | None = None) -> tuple[str, pd.DataFrame]:
    """(member name, rows as strings) of the one CSV inside an archive."""
    archive = archive_uri(uri)
    with _open(archive, limits, max_members) as zf:
        csv = _inner_csv({i.filename: i for i in zf.infolist() if not _resource_fork(i.filename)}, uri)
        if csv is None:
            raise InputError(f"{uri} holds no CSV file: a labels source in a zip is the CSV inside it")
        return csv, _csv_frame(zf, csv, limits)


def resolve_member(cell: str, folder: str) -> str:
    """A CSV cell naming a member, relative to `folder` (the CSV's folder inside the archive);
    a name that climbs out of the archive stays so (`../x`) and is refused when read."""
    return posixpath.normpath(posixpath.join(folder, cell.strip()))


def read_member(key: str, limits: ReadLimits = DEFAULT_LIMITS) -> bytes:
    """The inflated bytes of one member, read from this process's open archive.

    Raises `Refused` (an unsafe name), `TooLarge` (declared or inflated past
    the cap), `Damaged` (a CRC or inflate failure), KeyError / OSError (a
    missing member, an unreadable archive).
    """
    archive, member = split_key(key)
    if _unsafe(member):
        raise Refused(f"unsafe member name {member!r} (absolute or with '..')")
    zf = _opened(archive, limits)
    info = zf.getinfo(member)
    if info.file_size > limits.max_bytes:
        raise TooLarge(f"{member} declares {info.file_size} bytes, more than {limits.max_bytes} (read.max_image_bytes)")
    try:
        with zf.open(info) as handle:
            return read_capped(handle, limits, member)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:  # a CRC or inflate failure: damaged bytes
        raise Damaged(f"{member}: {exc}") from None


# ----------------------------------------------------------------------------- helpers
def _named_members(zf: zipfile.ZipFile, csv: str, columns: Sequence[str], limits: ReadLimits, uri: str) -> list[str]:
    """The distinct non-empty members the CSV's `columns` name, in their first order."""
    frame = _csv_frame(zf, csv, limits)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(f"{csv} in {uri} lacks column(s) {', '.join(missing)} (has {', '.join(frame.columns)})")
    folder = posixpath.dirname(csv)
    cells = [c for column in columns for c in frame[column].dropna() if str(c).strip()]
    return list(dict.fromkeys(resolve_member(str(c), folder) for c in cells))


def _inner_csv(infos: dict[str, zipfile.ZipInfo], uri: str) -> str | None:
    """The archive's one CSV file, None without one; two are an error (which would name the images?)."""
    csvs = [n for n, i in infos.items() if n.lower().endswith(".csv") and not i.is_dir()]
    if len(csvs) > 1:
        raise InputError(f"{uri} holds {len(csvs)} CSV files ({', '.join(csvs[:3])}): keep one, or none")
    return csvs[0] if csvs else None


def _resource_fork(member: str) -> bool:
    """macOS's AppleDouble copies (`__MACOSX/`, `._x.jpg`): metadata named like the images, not images."""
    return member.startswith("__MACOSX/") or posixpath.basename(member).startswith("._")


def _csv_frame(zf: zipfile.ZipFile, csv: str, limits: ReadLimits) -> pd.DataFrame:
    info = zf.getinfo(csv)
    if info.file_size > limits.max_bytes:
        raise InputError(f"{csv} declares {info.file_size} bytes, more than read.max_image_bytes")
    with zf.open(info) as handle:
        data = read_capped(handle, limits, csv)
    rows = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, na_values=[""])
    return rows.astype(object).where(rows.notna(), None)  # empty cells as None: Spark's null


def _unsafe(member: str) -> bool:
    return member.startswith(("/", "\\")) or bool(re.match(r"^[A-Za-z]:", member)) or ".." in re.split(r"[/\\]", member)


def _member_time(info: zipfile.ZipInfo | None) -> pd.Timestamp | None:
    if info is None:
        return None
    try:
        return pd.Timestamp(*info.date_time, tz="UTC") + pd.Timedelta(milliseconds=info.CRC % 1000)
    except ValueError:  # a date the archive's writer left invalid (month 0)
        return None


def _opened(archive: str, limits: ReadLimits) -> zipfile.ZipFile:
    """This process's open `archive`, reopened when the file changed since it was opened."""
    version = _version(archive, limits)
    with _OPEN_LOCK:
        held = _OPEN.get(archive)
        if held is not None and held[0] == version:
            return held[1]
        if held is not None:
            held[1].close()
        elif len(_OPEN) >= _KEEP_OPEN:
            _OPEN.pop(next(iter(_OPEN)))[1].close()
        zf = _open(archive, limits, None)  # the driver refused an archive with too many
        _OPEN[archive] = (version, zf)
        return zf


def _version(archive: str, limits: ReadLimits) -> Any:
    """What tells a rewritten archive from the one opened: (mtime, size), or the store's info."""
    local = local_path(archive)
    if local is not None:
        st = os.stat(local)
        return st.st_mtime_ns, st.st_size
    fs, path = filesystem(archive, limits)
    info = retried(lambda: fs.info(path), limits)
    return tuple(str(info.get(k)) for k in ("size", "ETag", "mtime", "LastModified", "last_modified"))


class _Archive(zipfile.ZipFile):
    """A ZipFile that closes the file object it was opened on (ZipFile leaves a passed one open)."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        super().__init__(handle)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._handle.close()


def _open(archive: str, limits: ReadLimits, max_members: int | None) -> zipfile.ZipFile:
    """`archive` as a ZipFile, refused before its directory is parsed past `max_members`."""
    local = local_path(archive)
    handle: IO[bytes] = open(local, "rb") if local is not None else open_remote(archive, limits)  # noqa: SIM115
    try:
        end = zipfile._EndRecData(handle)  # type: ignore[attr-defined]  # the end record; stable since 2.x
        declared = end[zipfile._ECD_ENTRIES_TOTAL] if end else 0  # type: ignore[attr-defined]
        if max_members is not None and declared > max_members:
            raise InputError(
                f"archive {archive} declares {declared} members, more than read.max_archive_members ({max_members})"
            )
        return _Archive(handle)
    except BaseException:
        handle.close()
        raise
