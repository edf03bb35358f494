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
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from imgfeat import tracking
from tests.browser import browser  # noqa: F401  (fixture)
from tests.trainset import trainset  # noqa: F401  (fixture)

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


def _wait_for_text(driver, texts: tuple[str, ...], seconds: float) -> str:
    """The page's text once it shows every one of `texts` (the UI fills in as its requests return)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def shown(d) -> str | bool:
        text = d.find_element(By.TAG_NAME, "body").text
        return text if all(t in text for t in texts) else False

    return WebDriverWait(driver, seconds, poll_frequency=1).until(shown)


@pytest.mark.slow
def test_the_experiment_link_opens_on_training_runs_with_their_delta_datasets(trainset, browser, tmp_path):
    experiment = MlflowClient(trainset.tracking_uri).get_experiment_by_name("imgfeat")
    link = tracking.experiment_link(experiment.experiment_id)
    shot = tmp_path / "mlflow-ui.png"
    names = (f"train efficientnet_lite0 v{trainset.trained.result.version}",
             f"featurize efficientnet_lite0 v{trainset.featurized.version}")
    browser.set_window_size(1600, 900)  # wide enough for the runs table's Dataset column
    with mlflow_ui(trainset.tracking_uri, tmp_path) as base:
        browser.get(base + link)
        # The runs table (not the GenAI overview): run names, and each run's Dataset cell,
        # table name (digest) and context, which fills in last.
        text = _wait_for_text(browser, ("Run Name", "Dataset", *names, "Training", "Featurization"), 240)
        browser.save_screenshot(str(shot))
        url = browser.current_url
    assert "/runs" in url, f"{url}; see {shot}"
    assert text.count("embeddings (") >= 2, f"no embeddings datasets listed; see {shot}"
