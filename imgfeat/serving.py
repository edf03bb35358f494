"""A registered model behind MLflow's own REST scoring app, with imgfeat's limits.

Owns: the server's command line and environment, and a running server's
life: start it, wait until it answers, stop it and every process it started.
Must not: score or load the model itself (the server process loads the logged
pyfunc, `imgfeat.model.ImageModel`, from its code file).

What runs: uvicorn with `imgfeat/serving_guard.py`, MLflow's own scoring app
(as `mlflow models serve` runs it) behind a body cap and a truthful health
check, loaded from a folder of its own so that the model's logged code is the
only imgfeat in the server. The serving policy (`ServeConfig.limits`,
`.paths`) reaches the model in `IMGFEAT_SERVING`. The model URI is resolved
against imgfeat's store (by default `sqlite:///mlflow.db`), not MLflow's own
default.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType
from typing import IO, Any

from imgfeat import serving_guard
from imgfeat.errors import InputError
from imgfeat.served_input import SERVING_ENV, ServingPolicy

_GUARD = Path(serving_guard.__file__)


def server_command(app_dir: str, host: str, port: int, workers: int) -> list[str]:
    """uvicorn serving `serving_guard` (copied into `app_dir`) in this interpreter's environment."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        app_dir,
        "--factory",
        f"{_GUARD.stem}:create_app",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-access-log",
    ]


def server_env(tracking_uri: str, model_uri: str, policy: ServingPolicy) -> dict[str, str]:
    """This environment, with the store that holds the model's registry, the model to
    load and the serving policy."""
    return {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_REGISTRY_URI": tracking_uri,
        serving_guard.MODEL_ENV: model_uri,
        SERVING_ENV: policy.to_env(),
    }


def check_port_free(host: str, port: int) -> None:
    """Fail in one line, before the slow start, if the port is taken."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise InputError(f"cannot listen on {host}:{port} ({exc.strerror}): pass another --port") from None


class Server:
    """A running model server; a context manager that always stops it.

    The server runs in its own process group, and is told to stop when this
    process dies (Linux), so no server outlives the process that started it.
    """

    def __init__(
        self,
        model_uri: str,
        tracking_uri: str,
        *,
        host: str = "127.0.0.1",
        port: int = 5000,
        workers: int = 1,
        policy: ServingPolicy = ServingPolicy(),
        output: IO | None = None,
    ) -> None:
        self.model_uri, self.host, self.port = model_uri, host, port
        self.url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
        self._app_dir = tempfile.mkdtemp(prefix="imgfeat-serve-")
        shutil.copy(_GUARD, self._app_dir)
        self._argv = server_command(self._app_dir, host, port, workers)
        self._env = server_env(tracking_uri, model_uri, policy)
        self._output = output
        self.process: subprocess.Popen | None = None
        self._previous_sigterm: Any = None

    def __enter__(self) -> Server:
        if threading.current_thread() is threading.main_thread():  # SIGTERM here unwinds to `stop`
            self._previous_sigterm = signal.signal(signal.SIGTERM, _raise_exit)
        self.process = subprocess.Popen(
            self._argv,
            env=self._env,
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=self._output,
            start_new_session=True,
            preexec_fn=_stop_with_parent,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self._app_dir, ignore_errors=True)
            if self._previous_sigterm is not None:
                signal.signal(signal.SIGTERM, self._previous_sigterm)

    def wait_ready(self, timeout: float = 600.0) -> float:
        """Seconds until `GET /ping` answers 200; raises if the server exits or the time runs out."""
        assert self.process is not None
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"the model server exited with code {self.process.returncode} before answering")
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=2) as answer:
                    if answer.status == 200:
                        return time.monotonic() - started
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise TimeoutError(f"the model server did not answer on {self.url}/ping within {timeout:.0f} s")

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
