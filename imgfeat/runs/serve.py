"""The serve job: a registered model behind MLflow's scoring server, until it stops.

Owns: the checks before the server's slow start (model given, port free,
version resolved) and the server's life. Must not: load the model, answer
requests or hold the serving policy itself (`serving` and `served_input` do),
parse arguments, or print (`on_ready` and `output` are the caller's).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import IO

from imgfeat import tracking
from imgfeat.config import ServeConfig
from imgfeat.errors import InputError
from imgfeat.model import follows_serving_rules
from imgfeat.runs._shared import require_model
from imgfeat.served_input import ServingPolicy


def serve_run(
    cfg: ServeConfig,
    on_ready: Callable[[str, str, float], None],
    output: Callable[[], IO | None] = lambda: None,
) -> int:
    """Serve `cfg.model` with MLflow's scoring server until it stops (Ctrl-C, SIGTERM).

    The model and the port are checked first, so a typo fails in one line
    instead of after the server's slow start; a version logged before the
    serving rules is refused (`imgfeat reregister` brings it under them). `on_ready(url, model, seconds)`
    is called once the server answers; `output()` gives the stream for the
    server's own logs (None: the terminal). Returns the server's exit code.
    """
    from imgfeat import serving

    model = require_model(cfg.model)
    serving.check_port_free(cfg.host, cfg.port)
    uri = tracking.use_store(cfg.tracking)
    concrete = tracking.registered_version(model)[2]
    refuse_unguarded(concrete)
    policy = ServingPolicy(cfg.limits, cfg.paths)
    with serving.Server(
        concrete, uri, host=cfg.host, port=cfg.port, workers=cfg.workers, policy=policy, output=output()
    ) as server:
        on_ready(server.url, concrete, server.wait_ready())
        return server.wait()


def refuse_unguarded(model_uri: str) -> None:
    """Refuse a version logged before the serving rules: its code reads any file or URL
    a client names."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="imgfeat-serve-check-") as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp)
        if follows_serving_rules(local):
            return
    raise InputError(
        f"{model_uri} was logged by an imgfeat older than its serving rules (it would read any file or URL a "
        f"client names): run `imgfeat reregister --model {model_uri}` and serve the version it prints"
    )
