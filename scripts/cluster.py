"""A real Spark standalone cluster on this machine: one master, N workers, 127.0.0.1.

Owns: starting and stopping the standalone daemons that ship inside the
`pyspark` package (`bin/spark-class org.apache.spark.deploy.master.Master`,
`...deploy.worker.Worker`), waiting until every worker has registered, and
keeping their PIDs and logs in one folder. Must not: submit jobs or know
about imgfeat (the tests and `make` targets do that).

    python scripts/cluster.py up     # master spark://127.0.0.1:7077, UI :8080, 2 workers x 1 core, 2g
    python scripts/cluster.py down   # stops them (also any executors they started)

Every daemon runs in its own process group, so `down` also stops the
executor JVMs and Python workers a worker started. Executors run
`spark.pyspark.python` (default: this script's Python, via PYSPARK_PYTHON in
the daemons' environment), so a venv's Python and packages are what they see.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
DEFAULT_DIR = Path(tempfile.gettempdir()) / "imgfeat-cluster"


@dataclass(frozen=True)
class Cluster:
    """A running cluster: where to submit, where its UI, PIDs and logs are."""

    master_url: str
    webui_url: str
    workdir: Path

    def worker_dirs(self) -> list[Path]:
        """Each worker's work dir: `<app-id>/<executor-id>/stderr` per executor."""
        return sorted(self.workdir.glob("worker-*/work"))


def spark_home() -> Path:
    """The Spark distribution inside the installed `pyspark` package."""
    import pyspark

    return Path(pyspark.__file__).parent


def up(
    workdir: Path = DEFAULT_DIR,
    *,
    port: int = 7077,
    webui_port: int = 8080,
    workers: int = 2,
    cores: int = 1,
    memory: str = "2g",
    python: str = sys.executable,
    timeout_s: float = 180.0,
) -> Cluster:
    """Start a master and `workers` workers; return once all have registered.

    On failure (a daemon exits, or the timeout passes) everything started is
    stopped again and a RuntimeError carries the tail of the failing log.
    """
    workdir = Path(workdir).absolute()
    for pidfile in workdir.glob("*.pid"):
        if _alive(int(pidfile.read_text())):
            raise RuntimeError(f"a cluster is already running from {workdir} (run `down` first)")
        pidfile.unlink()  # left by a crashed run
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    master_url = f"spark://{HOST}:{port}"
    webui_url = f"http://{HOST}:{webui_port}"
    cls = "org.apache.spark.deploy"
    _start(workdir, "master", python,
           [f"{cls}.master.Master", "--host", HOST, "--port", str(port), "--webui-port", str(webui_port)])
    for i in range(1, workers + 1):
        work = workdir / f"worker-{i}" / "work"
        work.mkdir(parents=True, exist_ok=True)
        _start(workdir, f"worker-{i}", python, [
            f"{cls}.worker.Worker", master_url, "--host", HOST, "--cores", str(cores),
            "--memory", memory, "--work-dir", str(work), "--webui-port", "0",
        ])
    cluster = Cluster(master_url, webui_url, workdir)
    try:
        _wait_ready(cluster, workers, timeout_s)
    except BaseException:
        down(workdir)
        raise
    return cluster


def down(workdir: Path = DEFAULT_DIR, *, grace_s: float = 15.0) -> list[str]:
    """Stop every daemon started from `workdir` (workers first); returns their names."""
    workdir = Path(workdir).absolute()
    pidfiles = sorted(workdir.glob("*.pid"), key=lambda p: p.stem == "master")
    for pidfile in pidfiles:
        _signal_group(int(pidfile.read_text()), signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for pidfile in pidfiles:
        pid = int(pidfile.read_text())
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        _signal_group(pid, signal.SIGKILL)
        pidfile.unlink()
    return [p.stem for p in pidfiles]


def status(cluster_webui: str) -> dict:
    """The master's JSON status (`aliveworkers`, `workers`, `activeapps`, ...)."""
    with urllib.request.urlopen(f"{cluster_webui}/json/", timeout=5) as resp:
        return json.loads(resp.read())


def _start(workdir: Path, name: str, python: str, args: list[str]) -> None:
    home = spark_home()
    env = {
        **os.environ,
        "SPARK_HOME": str(home),
        "SPARK_LOCAL_IP": HOST,
        "SPARK_DAEMON_MEMORY": os.environ.get("SPARK_DAEMON_MEMORY", "512m"),
        "PYSPARK_PYTHON": python,
        "SPARK_LOG_DIR": str(workdir / "logs"),
        "SPARK_LOCAL_DIRS": str(workdir / "scratch"),  # executors' shuffle and fetched files
    }
    log = open(workdir / "logs" / f"{name}.log", "ab")
    proc = subprocess.Popen(
        [str(home / "bin" / "spark-class"), *args],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env=env, cwd=workdir, start_new_session=True,
    )
    log.close()
    (workdir / f"{name}.pid").write_text(str(proc.pid))


def _wait_ready(cluster: Cluster, workers: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        for pidfile in cluster.workdir.glob("*.pid"):
            if not _alive(int(pidfile.read_text())):
                raise RuntimeError(f"{pidfile.stem} exited:\n{_tail(cluster.workdir, pidfile.stem)}")
        try:
            if status(cluster.webui_url).get("aliveworkers", 0) >= workers:
                return
        except OSError:
            pass  # master UI not up yet
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"cluster not ready after {timeout_s:.0f} s:\n{_tail(cluster.workdir, 'master')}"
            )
        time.sleep(1.0)


def _tail(workdir: Path, name: str, lines: int = 20) -> str:
    log = workdir / "logs" / f"{name}.log"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # reap our own children
        if waited == pid:
            return False
    except ChildProcessError:
        pass  # not our child (started by an earlier `up`)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)  # the daemon leads its own group: executors and Python workers too
    except (ProcessLookupError, PermissionError):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"PIDs, logs, work dirs (default {DEFAULT_DIR})")
    parser.add_argument("--port", type=int, default=7077)
    parser.add_argument("--webui-port", type=int, default=8080)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cores", type=int, default=1, help="cores per worker")
    parser.add_argument("--memory", default="2g", help="memory per worker for executors")
    args = parser.parse_args(argv)
    if args.action == "down":
        stopped = down(args.dir)
        print(f"stopped {', '.join(stopped) or 'nothing'} ({args.dir})")
        return 0
    if args.action == "status":
        print(json.dumps(status(f"http://{HOST}:{args.webui_port}"), indent=1))
        return 0
    cluster = up(args.dir, port=args.port, webui_port=args.webui_port, workers=args.workers,
                 cores=args.cores, memory=args.memory)
    print(f"master {cluster.master_url}  UI {cluster.webui_url}  "
          f"{args.workers} workers x {args.cores} core, {args.memory}; logs {cluster.workdir}/logs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
