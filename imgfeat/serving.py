"""A registered model behind MLflow's own REST scoring server (`mlflow models serve`).

Owns: the server's command line and environment, and a running server's
life: start it, wait until it answers, stop it and every process it started.
Must not: score or load the model itself (the server loads the logged pyfunc,
`imgfeat.scoring.ImageModel`, from its code file).

Why a wrapper at all: MLflow starts `uvicorn` from PATH, so `.venv/bin/mlflow
models serve` without an activated venv fails with `exec: uvicorn: not found`;
and the model URI must be resolved against imgfeat's store (by default
`sqlite:///mlflow.db`), not MLflow's own default.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType
from typing import IO, Any

from imgfeat.errors import InputError


def server_command(model_uri: str, host: str, port: int, workers: int) -> list[str]:
    """`mlflow models serve` for `model_uri` in this interpreter's environment (no conda, no venv of its own)."""
    return [
        sys.executable, "-m", "mlflow", "models", "serve", "--model-uri", model_uri, "--env-manager", "local",
        "--host", host, "--port", str(port), "--workers", str(workers),
    ]


def server_env(tracking_uri: str) -> dict[str, str]:
    """This environment, with the interpreter's bin folder first on PATH (MLflow
    runs `uvicorn` from PATH) and the store that holds the model's registry."""
    bin_dir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_REGISTRY_URI": tracking_uri,
    }


def check_port_free(host: str, port: int) -> None:
    """Fail in one line, before the slow start, if the port is taken."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise InputError(f"cannot listen on {host}:{port} ({exc.strerror}): pass another --port") from None


class Server:
    """A running `mlflow models serve`; a context manager that always stops it.

    The server runs in its own process group, and is told to stop when this
    process dies (Linux), so no server outlives the process that started it.
    """

    def __init__(
        self, model_uri: str, tracking_uri: str, *, host: str = "127.0.0.1", port: int = 5000, workers: int = 1,
        output: IO | None = None,
    ) -> None:
        self.model_uri, self.host, self.port = model_uri, host, port
        self.url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
        self._argv = server_command(model_uri, host, port, workers)
        self._env = server_env(tracking_uri)
        self._output = output
        self.process: subprocess.Popen | None = None
        self._previous_sigterm: Any = None

    def __enter__(self) -> Server:
        if threading.current_thread() is threading.main_thread():  # SIGTERM here unwinds to `stop`
            self._previous_sigterm = signal.signal(signal.SIGTERM, _raise_exit)
        self.process = subprocess.Popen(
            self._argv, env=self._env, stdin=subprocess.DEVNULL, stdout=self._output, stderr=self._output,
            start_new_session=True, preexec_fn=_stop_with_parent,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            if self._previous_sigterm is not None:
                signal.signal(signal.SIGTERM, self._previous_sigterm)

    def wait_ready(self, timeout: float = 600.0) -> float:
        """Seconds until `GET /ping` answers 200; raises if the server exits or the time runs out."""
        assert self.process is not None
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow models serve exited with code {self.process.returncode} before answering")
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=2) as answer:
                    if answer.status == 200:
                        return time.monotonic() - started
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise TimeoutError(f"mlflow models serve did not answer on {self.url}/ping within {timeout:.0f} s")

    def wait(self) -> int:
        """Block until the server exits (Ctrl-C or SIGTERM to this process stop it)."""
        assert self.process is not None
        return self.process.wait()

    def stop(self, grace: float = 15.0) -> None:
        """Stop the server's whole process group: SIGTERM, then SIGKILL to whatever is left after `grace` s."""
        if self.process is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break  # the group is gone
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        self.process.wait()


def _stop_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)
    except OSError:
        pass


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)
