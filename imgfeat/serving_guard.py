"""MLflow's own scoring app behind two checks it lacks: a body cap and a truthful health answer.

Owns: the ASGI app `imgfeat serve` runs under uvicorn: MLflow's scoring
server (`mlflow.pyfunc.scoring_server.init`, unchanged) for the model named by
`IMGFEAT_SERVE_MODEL_URI`, wrapped so that a request body over
`limits.max_body_bytes` is refused with 413 before it is parsed or decoded,
and `GET /ping` / `/health` answer 503 while a request has been scoring longer
than `limits.busy_after_s` (MLflow answers 504 at its timeout but its thread
scores on; without this, /ping would still say 200).

Must not: import imgfeat. uvicorn loads this file as a top-level module from a
folder of its own (`serving.Server`), so the only imgfeat in a server process
is the one the model was logged with (its `code_paths`), as under
`mlflow models serve`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

MODEL_ENV = "IMGFEAT_SERVE_MODEL_URI"
POLICY_ENV = "IMGFEAT_SERVING"  # the same variable `imgfeat.served_input` reads


class Guard:
    """ASGI middleware: body cap on POST /invocations, truthful /ping and /health."""

    def __init__(self, app: App, busy_seconds: Callable[[], float], max_body_bytes: int, busy_after_s: float):
        self.app, self.busy_seconds = app, busy_seconds
        self.max_body_bytes, self.busy_after_s = max_body_bytes, busy_after_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path in ("/ping", "/health"):
            busy = self.busy_seconds()
            if busy > self.busy_after_s:
                message = (
                    f"busy: a request has been scoring for {busy:.0f} s (limits.busy_after_s = {self.busy_after_s:g})"
                )
                await _answer(send, 503, "TEMPORARILY_UNAVAILABLE", message)
                return
        elif path == "/invocations" and scope.get("method") == "POST":
            body = await self._body(scope, receive, send)
            if body is None:
                return
            receive = _replay(body, receive)
        await self.app(scope, receive, send)

    async def _body(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The whole body, or None after answering 413 (declared or streamed past the cap)."""
        declared = dict(scope.get("headers") or []).get(b"content-length")
        cap = self.max_body_bytes
        try:
            if declared is not None and int(declared) > cap:
                await _too_large(send, int(declared), cap)
                return None
        except ValueError:
            await _answer(send, 400, "BAD_REQUEST", "Content-Length is not a number")
            return None
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            if len(body) > cap:
                await _too_large(send, len(body), cap)
                return None
            if not message.get("more_body", False):
                return bytes(body)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app the body already read, then the client's own events."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _too_large(send: Send, size: int, cap: int) -> None:
    await _answer(
        send,
        413,
        "REQUEST_TOO_LARGE",
        f"request body exceeds {cap} bytes (limits.max_body_bytes): send fewer or smaller images per request",
    )


async def _answer(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error_code": code, "message": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status in (413, 503):
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app() -> App:
    """uvicorn's factory: load the model as MLflow's server does, and guard its app."""
    from mlflow.pyfunc import scoring_server

    limits = json.loads(os.environ[POLICY_ENV])["limits"]
    model = scoring_server.load_model_with_mlflow_config(os.environ[MODEL_ENV])
    busy = getattr(model.unwrap_python_model(), "busy_seconds", lambda: 0.0)
    return Guard(scoring_server.init(model), busy, int(limits["max_body_bytes"]), float(limits["busy_after_s"]))
