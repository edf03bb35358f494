"""The registered model behind imgfeat's server, tested as a client and as an attacker.

`imgfeat.serving.Server` starts the server (as `imgfeat serve` does) for the
session's registered model on a free loopback port, with small limits so the
over-limit requests stay small. The tests POST real image bytes, base64, in
every JSON format MLflow's server takes, then the hostile requests of issue 21:
server files by path, `../` traversal, `file://`, a URL served by a canary that
must hear nothing, a FIFO, a bomb PNG, an oversize body, too many rows, and 20
concurrent requests; the server must still answer right afterwards. Answers
are read as strict JSON and must hold no byte of any server file.
"""

from __future__ import annotations

import base64
import http.server
import io
import json
import os
import socket
import statistics
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import xgboost
from PIL import Image

from imgfeat import serving
from imgfeat.config import ServeLimits
from imgfeat.served_input import PATHS_OFF, SERVED_MESSAGES, ServingPolicy
from tests.imagegen import png_bytes
from tests.test_scoring import _booster, _stored
from tests.trainset import CLASSES, MODEL_NAME, trainset  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow

LIMITS = ServeLimits(max_body_bytes=1024 * 1024, max_rows=8)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(trainset, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with open(log, "w") as output, serving.Server(
        f"models:/{MODEL_NAME}/1", trainset.tracking_uri, port=_free_port(), output=output,
        policy=ServingPolicy(limits=LIMITS),
    ) as running:
        try:
            running.wait_ready(timeout=600)
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(f"{exc}\n{log.read_text()[-3000:]}")
        yield running
    assert running.process.poll() is not None  # stopped


def _post_raw(url: str, data: bytes, timeout: float = 300) -> tuple[int, str]:
    request = urllib.request.Request(f"{url}/invocations", data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _post(url: str, body: dict) -> tuple[int, dict]:
    """POST JSON; (status, answer parsed strictly: NaN or Infinity in it fails)."""
    status, text = _post_raw(url, json.dumps(body).encode())
    return status, json.loads(text, parse_constant=lambda name: pytest.fail(f"not strict JSON: {name} in {text}"))


def _b64(blob: bytes) -> str:
    return base64.b64encode(blob).decode()


def _images(blobs: list[bytes]) -> dict:
    return {"dataframe_split": {"columns": ["content"], "data": [[_b64(b)] for b in blobs]}}


def _jpegs(trainset) -> list:
    return [sorted((trainset.photos / c).glob("*.jpg"))[2] for c in CLASSES]


def _assert_readme_request_answers_right(server, trainset) -> None:
    jpegs = _jpegs(trainset)
    png = io.BytesIO()
    Image.open(jpegs[0]).save(png, format="PNG")
    blobs = [f.read_bytes() for f in jpegs] + [png.getvalue(), b"\xff\xd8\xff\xe0 not really a JPEG"]

    status, answer = _post(server.url, _images(blobs))

    assert status == 200, answer
    rows = answer["predictions"]
    assert len(rows) == 5
    embeddings, _ = _stored(trainset.table, jpegs)
    expected = _booster(trainset).predict(xgboost.DMatrix(embeddings))
    for row, probs in zip(rows[:3], expected, strict=True):  # the JPEGs: as the booster on their stored embeddings
        assert row["status"] == "ok" and row["error"] is None
        np.testing.assert_allclose(row["probabilities"], probs, atol=1e-5)
        assert row["prediction"] == float(probs.argmax()) and row["predicted_class"] == CLASSES[int(probs.argmax())]
    decoded = rows[3]  # the PNG: decoded and scored
    assert decoded["status"] == "ok" and decoded["predicted_class"] == CLASSES[int(decoded["prediction"])]
    assert sum(decoded["probabilities"]) == pytest.approx(1.0)
    bad = rows[4]  # the corrupt file: a status, a fixed message, and null (not NaN) for what it lacks
    assert bad["status"] == "decode_error" and bad["error"] == SERVED_MESSAGES["decode_error"]
    assert bad["prediction"] is None and bad["predicted_class"] is None and bad["probabilities"] is None


def test_served_model_answers_jpeg_png_and_corrupt_bytes(server, trainset):
    _assert_readme_request_answers_right(server, trainset)


def test_a_request_without_the_image_column_is_a_clear_4xx(server):
    status, answer = _post(server.url, {"dataframe_split": {"columns": ["photo"], "data": [["aGVsbG8="]]}})

    assert 400 <= status < 500, answer
    assert "content or path" in answer["message"], answer


def test_every_json_format_takes_base64_content(server, trainset):
    blob = _b64(_jpegs(trainset)[0].read_bytes())
    bodies = {
        "dataframe_split": {"dataframe_split": {"columns": ["content"], "data": [[blob]]}},
        "dataframe_records": {"dataframe_records": [{"content": blob}]},
        "instances": {"instances": [{"content": blob}]},
        "inputs": {"inputs": {"content": [blob]}},
    }
    classes = set()
    for name, body in bodies.items():
        status, answer = _post(server.url, body)
        assert status == 200, (name, answer)
        (row,) = answer["predictions"]
        assert row["status"] == "ok", (name, row)
        classes.add(row["predicted_class"])
    assert len(classes) == 1  # the same image, the same answer whatever the format


class _Canary(http.server.BaseHTTPRequestHandler):
    heard: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        _Canary.heard.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"\x89PNG canary")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def canary():
    _Canary.heard = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Canary)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_paths_urls_and_server_files_are_refused_alike_and_nothing_leaks(server, trainset, canary, tmp_path):
    fifo = tmp_path / "fifo.jpg"
    os.mkfifo(fifo)
    big = tmp_path / "big.jpg"
    big.write_bytes(b"\xff" * (2 * 1024 * 1024))
    hostile = [
        "/etc/passwd", "/etc/shadow", "/proc/self/environ", "../../etc/hostname", "file:///etc/hostname",
        f"{canary}/photo.jpg", "s3://bucket/photo.jpg", str(fifo), str(big), str(tmp_path), "/no/such/file.jpg",
        str(trainset.photos / CLASSES[0] / f"{CLASSES[0]}_2.jpg"),  # even a real image: paths are off
    ]
    mixed = [[None, p] for p in hostile] + [[_b64(_jpegs(trainset)[0].read_bytes()), None]]
    started = time.monotonic()
    status, text = _post_raw(
        server.url,
        json.dumps({"dataframe_split": {"columns": ["content", "path"], "data": mixed[:8]}}).encode(),
    )
    status2, text2 = _post_raw(
        server.url,
        json.dumps({"dataframe_split": {"columns": ["content", "path"], "data": mixed[8:]}}).encode(),
    )

    assert time.monotonic() - started < 30  # the FIFO blocked nothing
    assert (status, status2) == (200, 200), (text, text2)
    rows = json.loads(text)["predictions"] + json.loads(text2)["predictions"]
    for path, row in zip(hostile, rows[:-1], strict=True):
        assert row == {
            "prediction": None, "predicted_class": None, "probabilities": None, "novelty": row["novelty"],
            "status": "read_error", "error": PATHS_OFF,
        }, (path, row)
    assert rows[-1]["status"] == "ok"  # the content row beside them is scored
    assert _Canary.heard == []  # the server fetched no client-given URL
    for secret in (b"root:", b"PATH=", b"localhost", os.uname().nodename.encode()):
        assert secret.decode() not in text + text2


def test_a_bomb_png_is_too_large_and_the_limits_are_checked_before_decoding(server, trainset):
    bomb = png_bytes(50_000, 50_000, 8, 2, b"\x00" * 301)
    status, answer = _post(server.url, _images([bomb]))
    assert status == 200, answer
    assert answer["predictions"][0]["status"] == "too_large"

    oversize = json.dumps(_images([os.urandom(LIMITS.max_body_bytes)])).encode()
    status, text = _post_raw(server.url, oversize)
    assert status == 413, text
    assert "limits.max_body_bytes" in json.loads(text)["message"]

    tiny = _jpegs(trainset)[0].read_bytes()
    status, answer = _post(server.url, _images([tiny] * (LIMITS.max_rows + 1)))
    assert status == 400, answer
    assert "limits.max_rows" in answer["message"]


def test_twenty_concurrent_requests_then_the_readme_request_still_answers_right(server, trainset):
    body = json.dumps(_images([f.read_bytes() for f in _jpegs(trainset)])).encode()

    def timed(_: int) -> tuple[int, float]:
        started = time.monotonic()
        status, _text = _post_raw(server.url, body)
        return status, time.monotonic() - started

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(timed, range(20)))

    assert [s for s, _ in results] == [200] * 20
    seconds = sorted(t for _, t in results)
    print(f"\n20 concurrent 3-image requests: p50 {statistics.median(seconds):.2f} s, "
          f"p95 {seconds[int(0.95 * (len(seconds) - 1))]:.2f} s")
    with urllib.request.urlopen(f"{server.url}/ping", timeout=5) as ping:
        assert ping.status == 200
    _assert_readme_request_answers_right(server, trainset)


def test_loading_the_registered_model_imports_no_job_table_training_or_tracking_code(trainset, tmp_path):
    """`mlflow.pyfunc.load_model` in a fresh process, as a server does: imgfeat's Spark-job,
    Delta, session, tracking, training and CV modules, xgboost.spark and deltalake stay out,
    and the logged code holds only what scoring needs."""
    import subprocess
    import sys

    from imgfeat.model import SERVED_CODE

    probe = (
        "import json, sys, mlflow.pyfunc\n"
        f"mlflow.set_tracking_uri({trainset.tracking_uri!r}); mlflow.set_registry_uri({trainset.tracking_uri!r})\n"
        f"model = mlflow.pyfunc.load_model('models:/{MODEL_NAME}/1')\n"
        "print(json.dumps({'modules': sorted(sys.modules), 'code': model.metadata.flavors['python_function']['code']}))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    modules = set(loaded["modules"])
    for name in ("imgfeat.train", "imgfeat.delta", "imgfeat.session", "imgfeat.tracking", "imgfeat.cv",
                 "imgfeat.runs", "imgfeat.featurize", "imgfeat.scoring", "imgfeat.sources", "xgboost.spark", "deltalake"):
        assert name not in modules, name
    assert "imgfeat.model" in modules

    import mlflow

    mlflow.set_tracking_uri(trainset.tracking_uri)
    mlflow.set_registry_uri(trainset.tracking_uri)
    local = mlflow.artifacts.download_artifacts(f"models:/{MODEL_NAME}/1", dst_path=str(tmp_path / "m"))
    code = os.path.join(local, loaded["code"], "imgfeat")
    assert sorted(n for n in os.listdir(code) if n != "__pycache__") == sorted(SERVED_CODE)


def test_a_version_logged_before_the_serving_rules_is_refused_until_reregistered(trainset, monkeypatch):
    """An old version (its logged code lacks the serving policy) does not start; `reregister`
    logs it again with today's code: the same predictions, and serve accepts it."""
    import mlflow

    from imgfeat import model as served
    from imgfeat.config import ServeConfig, load_config
    from imgfeat.errors import InputError
    from imgfeat.runs import reregister_run
    from imgfeat.runs.serve import refuse_unguarded
    from imgfeat.scoring import resolve_model

    mlflow.set_tracking_uri(trainset.tracking_uri)
    mlflow.set_registry_uri(trainset.tracking_uri)
    current = resolve_model(f"models:/{MODEL_NAME}/1")
    with monkeypatch.context() as patch:  # what an imgfeat before the serving rules logged
        patch.setattr(served, "SERVED_CODE", tuple(n for n in served.SERVED_CODE if n != "served_input.py"))
        with mlflow.start_run():
            old = served.relog(current.local_dir, "textures-old")
    old_uri = f"models:/textures-old/{old.version}"

    with pytest.raises(InputError, match=f"imgfeat reregister --model {old_uri}"):
        refuse_unguarded(old_uri)
    summary = reregister_run(load_config(ServeConfig, overrides=[f"tracking.uri={trainset.tracking_uri}"], model=old_uri))

    assert summary.source == old_uri and summary.model_uri == f"models:/textures-old/{int(old.version) + 1}"
    refuse_unguarded(summary.model_uri)  # accepted now
    frame = __import__("pandas").DataFrame({"content": [f.read_bytes() for f in _jpegs(trainset)]})
    before = served.load_image_model(current.local_dir).predict(None, frame)
    after = served.load_image_model(resolve_model(summary.model_uri).local_dir).predict(None, frame)
    np.testing.assert_allclose(np.stack(after["probabilities"]), np.stack(before["probabilities"]), atol=1e-6)
