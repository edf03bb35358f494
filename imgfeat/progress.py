"""Progress of long jobs as a person reads it: one line per stage, in images.

Owns: counting work done on the driver while Spark tasks run, and drawing it
(`featurize  1,204/5,000 images  38.2 img/s  ETA 1m39s  bad 3`): redrawn in
place a few times a second on a terminal, one line every `every` seconds
otherwise (CI logs, spark-submit, notebooks), nothing when off. Must not:
know any job; jobs open a `stage` and feed it.

Why a side channel: Spark accumulators and the status tracker only move when
a task ends, and a featurize task holds hundreds of images for minutes, so
the line would jump 0% → 50% → 100%. Each task instead sends a tiny UDP
datagram per batch (`Reporter.add`) to the stage's socket on the driver:
fire-and-forget, it never blocks or fails a task. A lost datagram or a
retried task can only make the live count approximate; the caller sets the
exact counts at the end (`Stage.set`) from what was written.
"""

from __future__ import annotations

import io
import secrets
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TextIO

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

Mode = Literal["auto", "live", "lines", "off"]


@dataclass
class Settings:
    """How stages are shown; set once by the CLI (`configure`), defaults elsewhere."""

    mode: Mode = "auto"  # auto: live on a terminal, else lines
    every: float = 10.0  # seconds between lines when not live
    stream: TextIO | None = None  # None: sys.stderr at the time of writing


_SETTINGS = Settings()
_TICK = 0.25  # seconds between redraws of a live line, and between socket polls


def configure(mode: Mode = "auto", every: float = 10.0, stream: TextIO | None = None) -> None:
    """Choose how progress is shown for the rest of the process."""
    global _SETTINGS
    _SETTINGS = Settings(mode, every, stream)


# ---------------------------------------------------------------- the worker side
@dataclass(frozen=True)
class Reporter:
    """What a Spark task needs to report progress: small, picklable, shipped in closures.

    `port` 0 means progress is off: `add` does nothing.
    """

    host: str = ""
    port: int = 0
    token: str = ""

    def add(self, done: int, bad: int = 0) -> None:
        """`done` more images finished, `bad` of them not ok. Never raises, never blocks."""
        if not self.port or done <= 0:
            return
        try:
            _worker_socket().sendto(f"{self.token} {int(done)} {int(bad)}".encode(), (self.host, self.port))
        except OSError:
            pass  # a full buffer or an unreachable driver: progress is best effort


_SOCKET: socket.socket | None = None


def _worker_socket() -> socket.socket:
    """One UDP socket per worker process (workers are reused across tasks)."""
    global _SOCKET
    if _SOCKET is None:
        _SOCKET = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        _SOCKET.setblocking(False)
    return _SOCKET


# ---------------------------------------------------------------- the driver side
class Stage:
    """Counts of one stage of a job: `done` of `total` `unit`, `bad` of them not ok."""

    def __init__(self, name: str, total: int, unit: str, reporter: Reporter) -> None:
        self.name, self.total, self.unit, self.reporter = name, total, unit, reporter
        self.done = self.bad = 0
        self.started = time.monotonic()
        self._recent: deque[tuple[float, int]] = deque()  # (time, done) over the last ~10 s
        self._lock = threading.Lock()

    def add(self, done: int, bad: int = 0) -> None:
        """Driver-side work (or a datagram from a task): `done` more, `bad` of them not ok."""
        with self._lock:
            self.done += done
            self.bad += bad
            self._recent.append((time.monotonic(), self.done))

    def set(self, done: int, bad: int = 0) -> None:
        """The exact counts, once known (e.g. from the rows written): replaces the live ones."""
        with self._lock:
            self.done, self.bad = done, bad

    def rate(self) -> float:
        """Units per second over the last ~10 s of reports; 0 until two reports came
        (the time before the first one is start-up: workers, model loading)."""
        now = time.monotonic()
        with self._lock:
            while len(self._recent) > 2 and now - self._recent[0][0] > 10.0:
                self._recent.popleft()
            if len(self._recent) >= 2 and self._recent[-1][0] > self._recent[0][0]:
                (t0, d0), (t1, d1) = self._recent[0], self._recent[-1]
                return (d1 - d0) / (t1 - t0)
        return 0.0

    def line(self, final: bool = False) -> str:
        done = min(self.done, self.total) if self.total else self.done
        of = f"{done:,}/{self.total:,}" if self.total else f"{done:,}"
        parts = [f"{self.name}  {of} {self.unit}"]
        elapsed = time.monotonic() - self.started
        rate = self.done / elapsed if final and elapsed > 0 else self.rate()
        if rate > 0:
            parts.append(f"{rate:.1f} {_short(self.unit)}/s")
        if final:
            parts.append(f"in {_duration(elapsed)}")
        elif rate > 0 and self.total > done:
            parts.append(f"ETA {_duration((self.total - done) / rate)}")
        elif not self.done:
            parts.append("starting")
        if self.bad:
            parts.append(f"bad {self.bad:,}")
        return "  ".join(parts)


@contextmanager
def stage(name: str, total: int, unit: str = "images", spark: SparkSession | None = None) -> Iterator[Stage]:
    """Show a stage's progress while the block runs; pass `stage.reporter` to the tasks.

    With `spark`, tasks on executors report to the driver's address; without,
    only `Stage.add` on the driver counts. The last line stays on screen
    (a live one is finished with a newline), so an error prints below it.
    """
    mode = _SETTINGS.mode
    stream = _SETTINGS.stream or sys.stderr
    if mode == "auto":
        mode = "live" if _isatty(stream) else "lines"
    if mode == "off":
        yield Stage(name, total, unit, Reporter())
        return
    sock, reporter = _listen(spark)
    current = Stage(name, total, unit, reporter)
    stop = threading.Event()
    thread = threading.Thread(
        target=_watch, args=(current, sock, stream, mode == "live", stop), name=f"imgfeat-progress-{name}", daemon=True
    )
    thread.start()
    try:
        yield current
    finally:
        stop.set()
        thread.join()
        if sock is not None:
            sock.close()
        _write(stream, current.line(final=True), live=mode == "live", end="\n")


def _listen(spark: SparkSession | None) -> tuple[socket.socket | None, Reporter]:
    """A UDP socket for the stage's tasks: loopback for local Spark, else the driver's host."""
    if spark is None:
        return None, Reporter()
    conf = spark.sparkContext.getConf()
    local = (spark.sparkContext.master or "").startswith("local")
    host = "127.0.0.1" if local else conf.get("spark.driver.host", socket.gethostname())
    bind = "127.0.0.1" if local else conf.get("spark.driver.bindAddress", "0.0.0.0")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((bind, 0))
    except OSError:
        sock.close()
        return None, Reporter()
    sock.settimeout(_TICK)
    return sock, Reporter(host, sock.getsockname()[1], secrets.token_hex(8))


def _watch(current: Stage, sock: socket.socket | None, stream: TextIO, live: bool, stop: threading.Event) -> None:
    """Receive task reports and draw: every tick when live, every `every` seconds otherwise."""
    last_drawn = time.monotonic()
    last_line = ""
    token = current.reporter.token.encode()
    while not stop.is_set():
        if sock is None:
            stop.wait(_TICK)
        else:
            try:
                data = sock.recv(256)
            except (TimeoutError, OSError):
                data = b""
            parts = data.split()
            if len(parts) == 3 and parts[0] == token and parts[1].isdigit() and parts[2].isdigit():
                current.add(int(parts[1]), int(parts[2]))
        now = time.monotonic()
        if now - last_drawn >= (_TICK if live else _SETTINGS.every):
            line = current.line()
            # In a log, a line that says what the last one said is noise: skip it, up to a minute.
            if live or line != last_line or now - last_drawn >= max(60.0, _SETTINGS.every):
                _write(stream, line, live=live, end="" if live else "\n")
                last_drawn, last_line = now, line


def _write(stream: TextIO, text: str, *, live: bool, end: str) -> None:
    try:
        stream.write(("\r" + text + "\x1b[K" if live else text) + end)
        stream.flush()
    except (ValueError, OSError):  # a closed stream must not break the job
        pass


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (ValueError, io.UnsupportedOperation):
        return False


def _short(unit: str) -> str:
    return {"images": "img"}.get(unit, unit)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
