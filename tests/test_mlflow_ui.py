"""The MLflow UI in a real browser (headless Chromium), on a store the pipeline wrote:
the link imgfeat prints opens the experiment on its training runs, named, with
their Delta datasets.

The server is `mlflow ui` from the venv on a free loopback port, stopped
(its whole process group) when the test ends, pass or fail.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
from mlflow import MlflowClient

from imgfeat import tracking
from tests.trainset import trainset  # noqa: F401  (fixture)

CHROMIUM = Path("/usr/bin/chromium")
STARTUP_SECONDS = 180  # a cold `mlflow ui` imports a lot; the shared test machine is slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_ui(store_uri: str, workdir: Path) -> Iterator[str]:
    """`mlflow ui` on `store_uri` at a free 127.0.0.1 port; yields its base URL."""
    port = _free_port()
    log = open(workdir / "mlflow-ui.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store_uri,
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            assert server.poll() is None, f"mlflow ui exited: {(workdir / 'mlflow-ui.log').read_text()[-2000:]}"
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{base}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            assert time.monotonic() < deadline, "mlflow ui did not answer /health in time"
            time.sleep(1)
        yield base
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its uvicorn worker
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


@pytest.fixture
def page():
    """A headless Chromium page (Debian's chromium, driven by Python playwright)."""
    if not CHROMIUM.is_file():
        pytest.skip(f"no {CHROMIUM}: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield browser.new_page(viewport={"width": 1600, "height": 900})
        finally:
            browser.close()


@pytest.mark.slow
def test_the_experiment_link_opens_on_training_runs_with_their_delta_datasets(trainset, page, tmp_path):
    experiment = MlflowClient(trainset.tracking_uri).get_experiment_by_name("imgfeat")
    link = tracking.experiment_link(experiment.experiment_id)
    shot = tmp_path / "mlflow-ui.png"
    with mlflow_ui(trainset.tracking_uri, tmp_path) as base:
        page.goto(base + link, wait_until="commit", timeout=120_000)
        page.get_by_text(f"train efficientnet_lite0 v{trainset.trained.result.version}").first.wait_for(timeout=120_000)
        page.get_by_text(f"featurize efficientnet_lite0 v{trainset.featurized.version}").first.wait_for(timeout=30_000)
        page.wait_for_function(  # the Dataset column fills in last
            "['Training', 'Featurization'].every(t => document.body.innerText.includes(t))", timeout=120_000
        )
        with contextlib.suppress(Exception):  # the assistant panel, when shown, hides half the table
            page.locator("[aria-label*='Close' i]").last.click(timeout=5_000)
        page.screenshot(path=str(shot))
        text = page.inner_text("body")
    # The runs table, not the GenAI overview; each run's Dataset cell: table name (digest) and context.
    assert "/runs" in page.url and "Run Name" in text and "Dataset" in text, f"{page.url}; see {shot}"
    assert text.count("embeddings (") >= 2, f"no embeddings datasets listed; see {shot}"
