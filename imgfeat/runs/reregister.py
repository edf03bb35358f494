"""The reregister job: a registered version logged again with this imgfeat's code.

Owns: bringing a version logged by an older imgfeat (one that reads any path a
client names) under today's serving rules: download it, log its artifacts
again as a new version of the same name (`imgfeat.model.relog`) in a run
that carries the original train run's params and tags (so lineage and
`imgfeat insights` still work), and copy the version's description and tags.
Must not: retrain, change the booster or the featurizers, or move aliases (the
deployer points endpoints at the new version).
"""

from __future__ import annotations

from dataclasses import dataclass

from imgfeat import tracking
from imgfeat.config import ServeConfig
from imgfeat.errors import InputError
from imgfeat.model import relog
from imgfeat.runs._shared import require_model
from imgfeat.scoring import resolve_model


@dataclass(frozen=True)
class ReregisterSummary:
    source: str  # models:/NAME/OLD
    model_uri: str  # models:/NAME/NEW
    run_id: str

    def lines(self) -> list[str]:
        return [f"reregister: {self.source} → {self.model_uri} (same booster and featurizers, today's serving rules)"]


def reregister_run(cfg: ServeConfig) -> ReregisterSummary:
    """Log `cfg.model` again with this imgfeat's code, as the next version of its name."""
    tracking.use_store(cfg.tracking)
    model = resolve_model(require_model(cfg.model))
    if not model.version:
        raise InputError(f"{cfg.model} is not a registered version: pass models:/NAME/VERSION")
    source = f"models:/{model.name}/{model.version}"
    train_run_id, params, tags = tracking.model_lineage(model.name, model.version)
    description, version_tags = tracking.version_record(model.name, model.version)
    with tracking.run(cfg.tracking, "reregister", {**tags, "reregistered_from": source}) as run_id:
        tracking.log_params({k: v for k, v in params.items()})
        tracking.set_tags({"train_run_id": train_run_id})
        logged = relog(model.local_dir, model.name)
        tracking.describe_version(
            model.name,
            logged.version or "",
            f"{description}\n\nRe-registered from {source} with today's serving rules.",
            {**version_tags, "reregistered_from": source},
        )
    return ReregisterSummary(source, f"models:/{model.name}/{logged.version}", run_id or "")
