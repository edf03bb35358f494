"""The serving policy without a server: paths, base64, row limits, the body cap and health.

`ServingPolicy` decides what a request may make the server read; `Guard` caps
the body and keeps /ping honest. Each is tried here with the inputs an
attacker would send; `tests/test_serving.py` sends the same through a real
server.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time

import pytest

from imgfeat import served_input, serving_guard
from imgfeat.config import ServeLimits, ServePaths
from imgfeat.errors import InputError, Status
from imgfeat.served_input import (
    NOT_BASE64,
    PATH_REFUSED,
    PATH_TIMEOUT,
    PATHS_OFF,
    TOO_MANY_BYTES,
    Refused,
    ServingPolicy,
    served_message,
)


def _refusal(call, *args) -> tuple[Status, str]:
    with pytest.raises(Refused) as caught:
        call(*args)
    return caught.value.status, caught.value.message


@pytest.fixture()
def root(tmp_path):
    (tmp_path / "root" / "sub").mkdir(parents=True)
    (tmp_path / "root" / "sub" / "a.jpg").write_bytes(b"image bytes")
    (tmp_path / "secret.txt").write_text("root:x:0:0")
    return tmp_path


def test_paths_are_off_by_default_whatever_exists(root):
    policy = ServingPolicy()
    for path in ("/etc/passwd", str(root / "root" / "sub" / "a.jpg"), "/no/such", "http://127.0.0.1:1/x"):
        assert _refusal(policy.path_bytes, path) == (Status.READ_ERROR, PATHS_OFF)


def test_an_allowed_root_reads_regular_files_under_it_only(root):
    policy = ServingPolicy(limits=ServeLimits(max_image_bytes=1024), paths=ServePaths(root=str(root / "root")))
    assert policy.path_bytes("sub/a.jpg") == b"image bytes"
    assert policy.path_bytes(str(root / "root" / "sub" / "a.jpg")) == b"image bytes"
    os.symlink(root / "secret.txt", root / "root" / "link.jpg")  # a link out of the root
    os.mkfifo(root / "root" / "fifo.jpg")
    (root / "root" / "big.jpg").write_bytes(b"x" * 2048)
    refused = (Status.READ_ERROR, PATH_REFUSED)
    for path in (
        "../secret.txt", "sub/../../secret.txt", str(root / "secret.txt"), "link.jpg", "fifo.jpg", "sub",
        "missing.jpg", "/etc/passwd", "file:///etc/passwd", "http://127.0.0.1:1/a.jpg", "a\x00.jpg", "",
    ):
        started = time.monotonic()
        assert _refusal(policy.path_bytes, path) == refused, path
        assert time.monotonic() - started < 2, path  # the FIFO does not block
    assert _refusal(policy.path_bytes, "big.jpg") == (Status.TOO_LARGE, TOO_MANY_BYTES)


def test_a_slow_read_is_a_read_error_after_the_timeout(root, monkeypatch):
    monkeypatch.setattr(served_input, "_read_regular_file", lambda path, cap: time.sleep(3) or b"late")
    policy = ServingPolicy(paths=ServePaths(root=str(root / "root"), read_timeout_s=0.2))
    started = time.monotonic()
    assert _refusal(policy.path_bytes, "sub/a.jpg") == (Status.READ_ERROR, PATH_TIMEOUT)
    assert time.monotonic() - started < 1.5


def test_urls_only_when_allowed_and_only_under_the_root_prefix(monkeypatch):
    fetched = []
    monkeypatch.setattr(served_input, "_read_url", lambda url, cap: fetched.append(url) or b"ok")
    closed = ServingPolicy(paths=ServePaths(root="s3://bucket/images/"))
    assert _refusal(closed.path_bytes, "s3://bucket/images/a.jpg") == (Status.READ_ERROR, PATH_REFUSED)
    policy = ServingPolicy(paths=ServePaths(root="s3://bucket/images/", allow_urls=True))
    assert policy.path_bytes("s3://bucket/images/a/b.jpg") == b"ok"
    for url in (
        "s3://bucket/images/../private/key", "s3://bucket/imagesX/a.jpg", "s3://other/images/a.jpg",
        "gs://bucket/images/a.jpg", "http://169.254.169.254/latest/meta-data", "/etc/passwd",
        "s3://bucket/images/a.jpg?versionId=1",
    ):
        assert _refusal(policy.path_bytes, url) == (Status.READ_ERROR, PATH_REFUSED), url
    assert fetched == ["s3://bucket/images/a/b.jpg"]


def test_content_is_bytes_or_strict_base64_within_the_byte_limit():
    policy = ServingPolicy(limits=ServeLimits(max_image_bytes=1024))
    assert policy.content_bytes(b"raw") == b"raw"
    assert policy.content_bytes(base64.encodebytes(b"x" * 100).decode()) == b"x" * 100  # MLflow's wrapped lines
    assert _refusal(policy.content_bytes, "not base64!") == (Status.DECODE_ERROR, NOT_BASE64)
    assert _refusal(policy.content_bytes, 12) == (Status.DECODE_ERROR, NOT_BASE64)
    assert _refusal(policy.content_bytes, base64.b64encode(b"x" * 4096).decode()) == (Status.TOO_LARGE, TOO_MANY_BYTES)
    policy.check_rows(256)
    with pytest.raises(InputError, match="limits.max_rows"):
        policy.check_rows(257)


def test_served_messages_are_fixed_and_leak_no_os_text():
    assert served_message("ok", None) is None
    assert served_message("read_error", "PermissionError: [Errno 13] /etc/shadow") == "the image could not be read"
    assert served_message("decode_error", "not an image (starts with b'root:x:0:0')") == (
        served_input.SERVED_MESSAGES["decode_error"]
    )
    assert served_message("read_error", PATHS_OFF) == PATHS_OFF


def test_the_policy_travels_in_the_environment_and_the_guard_reads_the_same_variable():
    policy = ServingPolicy(ServeLimits(max_rows=3), ServePaths(root="/data"))
    assert ServingPolicy.from_env({served_input.SERVING_ENV: policy.to_env()}) == policy
    assert ServingPolicy.from_env({}) == ServingPolicy()
    assert serving_guard.POLICY_ENV == served_input.SERVING_ENV


def _call(guard: serving_guard.Guard, path: str, chunks: list[bytes], headers=()) -> tuple[int, bytes, bool]:
    """Run one request through `guard`; (status, body, whether the inner app ran)."""
    ran, sent = [], []
    events = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]

    async def inner(scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        ran.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"scored " + str(len(body)).encode()})

    async def receive():
        return events.pop(0) if events else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    guard.app = inner
    scope = {"type": "http", "method": "POST" if path == "/invocations" else "GET", "path": path,
             "headers": list(headers)}
    asyncio.run(guard(scope, receive, send))
    return sent[0]["status"], sent[1]["body"], bool(ran)


def test_the_guard_caps_the_body_before_the_app_and_tells_the_truth_on_ping():
    busy = [0.0]
    guard = serving_guard.Guard(None, lambda: busy[0], max_body_bytes=100, busy_after_s=5)
    assert _call(guard, "/invocations", [b"x" * 60, b"y" * 40]) == (200, b"scored 100", True)
    status, body, ran = _call(guard, "/invocations", [b"x" * 60, b"y" * 60])  # streamed past the cap
    assert (status, ran) == (413, False) and b"limits.max_body_bytes" in body
    status, _, ran = _call(guard, "/invocations", [b""], headers=[(b"content-length", b"5000")])  # declared
    assert (status, ran) == (413, False)
    assert _call(guard, "/ping", [b""])[0] == 200
    busy[0] = 6.0  # a request stuck scoring past busy_after_s
    status, body, ran = _call(guard, "/ping", [b""])
    assert (status, ran) == (503, False) and b"busy" in body
