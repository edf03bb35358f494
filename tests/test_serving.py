"""The registered model behind MLflow's own REST server, tested as a real client.

`imgfeat.serving.Server` starts `mlflow models serve` (as `imgfeat serve`
does) for the session's registered model on a free loopback port; the test
POSTs real image bytes, base64 in `dataframe_split`, and reads the answers
as strict JSON. The server is always stopped (the fixture's `with`).
"""

from __future__ import annotations

import base64
import io
import json
import socket
import urllib.error
import urllib.request

import numpy as np
import pytest
import xgboost
from PIL import Image

from imgfeat import serving
from tests.test_scoring import _booster, _stored
from tests.trainset import CLASSES, MODEL_NAME, trainset  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(trainset, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with open(log, "w") as output, serving.Server(
        f"models:/{MODEL_NAME}/1", trainset.tracking_uri, port=_free_port(), output=output
    ) as running:
        try:
            running.wait_ready(timeout=600)
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(f"{exc}\n{log.read_text()[-3000:]}")
        yield running
    assert running.process.poll() is not None  # stopped


def _post(url: str, body: dict) -> tuple[int, dict]:
    """POST JSON; (status, answer parsed strictly: NaN or Infinity in it fails)."""
    request = urllib.request.Request(
        f"{url}/invocations", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=300) as answer:
            status, text = answer.status, answer.read().decode()
    except urllib.error.HTTPError as err:
        status, text = err.code, err.read().decode()
    return status, json.loads(text, parse_constant=lambda name: pytest.fail(f"not strict JSON: {name} in {text}"))


def _images(blobs: list[bytes]) -> dict:
    return {"dataframe_split": {"columns": ["content"], "data": [[base64.b64encode(b).decode()] for b in blobs]}}


def test_served_model_answers_jpeg_png_and_corrupt_bytes(server, trainset):
    jpegs = [sorted((trainset.photos / c).glob("*.jpg"))[2] for c in CLASSES]
    png = io.BytesIO()
    Image.open(jpegs[0]).save(png, format="PNG")
    blobs = [f.read_bytes() for f in jpegs] + [png.getvalue(), b"\xff\xd8\xff\xe0 not really a JPEG"]

    status, answer = _post(server.url, _images(blobs))

    assert status == 200, answer
    rows = answer["predictions"]
    assert len(rows) == 5
    embeddings, _ = _stored(trainset.table, jpegs)
    expected = _booster(trainset).predict(xgboost.DMatrix(embeddings))
    for row, probs in zip(rows[:3], expected):  # the JPEGs: as the booster on their stored embeddings
        assert row["status"] == "ok" and row["error"] is None
        np.testing.assert_allclose(row["probabilities"], probs, atol=1e-5)
        assert row["prediction"] == float(probs.argmax()) and row["predicted_class"] == CLASSES[int(probs.argmax())]
    decoded = rows[3]  # the PNG: decoded and scored
    assert decoded["status"] == "ok" and decoded["predicted_class"] == CLASSES[int(decoded["prediction"])]
    assert sum(decoded["probabilities"]) == pytest.approx(1.0)
    bad = rows[4]  # the corrupt file: a row with a status, and null (not NaN) for what it lacks
    assert bad["status"] == "decode_error" and bad["error"]
    assert bad["prediction"] is None and bad["predicted_class"] is None and bad["probabilities"] is None


def test_a_request_without_the_image_column_is_a_clear_4xx(server):
    status, answer = _post(server.url, {"dataframe_split": {"columns": ["photo"], "data": [["aGVsbG8="]]}})

    assert 400 <= status < 500, answer
    assert "content or path" in answer["message"], answer
