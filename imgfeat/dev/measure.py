"""How the bench takes a figure: cores, wall-clock timing, best-of rates, the
machine's description, and sampling the peak memory of this process and of
Spark's Python workers. Knows nothing of what is measured (`imgfeat.dev.bench`).
"""

from __future__ import annotations

import os
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

MIB = 1024 * 1024


def cores() -> int:
    return os.cpu_count() or 1


# ----------------------------------------------------------------- the run


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def rate(fn: Callable[[], Any], count: int, reps: int = 2) -> float:
    """Items per second of `fn`, best of `reps` runs (other load only slows a run down)."""
    return count / min(timed(fn)[1] for _ in range(reps))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{cpu}, {cores()} cores, {mem:.0f} GiB, Python {platform.python_version()}, "
        f"torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M %Z')}"
    )


# ----------------------------------------------------------------- memory
class RssSampler:
    """Samples, every 0.2 s, the RSS of this process and of its Python
    descendants (Spark's Python workers), keeping the peak per measured block.
    """

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self._peaks: dict[str, tuple[float, float]] = {}  # name -> (max one, max total)
        self._active: tuple[str, bool] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="imgfeat-bench-rss", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def measure(self, name: str, own: bool = False) -> _Block:
        return _Block(self, name, own)

    def peak(self, name: str, total: bool = False) -> float:
        one, whole = self._peaks.get(name, (0.0, 0.0))
        return (whole if total else one) / MIB

    def _loop(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.wait(self.interval):
            active = self._active
            if active is None:
                continue
            name, own = active
            if own:
                sizes = [me.memory_info().rss]
            else:
                sizes = [_rss(p) for p in me.children(recursive=True) if _is_python_worker(p)]
            one, whole = self._peaks.get(name, (0.0, 0.0))
            self._peaks[name] = (max(one, max(sizes, default=0)), max(whole, sum(sizes)))


@dataclass
class _Block:
    sampler: RssSampler
    name: str
    own: bool

    def __enter__(self) -> None:
        self.sampler._active = (self.name, self.own)

    def __exit__(self, *exc: object) -> None:
        self.sampler._active = None


def _is_python_worker(proc: Any) -> bool:
    try:
        return "pyspark" in " ".join(proc.cmdline()) and "java" not in proc.name()
    except Exception:  # the worker exited between listing and reading
        return False


def _rss(proc: Any) -> int:
    try:
        return proc.memory_info().rss
    except Exception:
        return 0
