"""Registry aliases: whether a retrained model version takes an alias from the version holding it.

Owns: the promotion rule, stated once: a new version takes `alias` when no
version holds it, or when it beats the holder on the new version's own test
split (same table version, same split rule: the holder is scored again there,
not compared by what its own run logged), by the task's primary metric; a holder
trained on split version 1 (by bytes alone) is compared with the new version on
the test images both splits held out, where neither trained; and
moving the alias in the registry. Must not: train, open or log runs, or write
tables (`runs.nightly` sequences retraining and promotion).
"""

from __future__ import annotations

from pyspark.sql import SparkSession

from imgfeat import tracking
from imgfeat.config import TrainConfig
from imgfeat.cv import SPLIT_VERSION
from imgfeat.errors import InputError
from imgfeat.train import TrainResult, evaluate_on_test_split


def promote(spark: SparkSession, cfg: TrainConfig, name: str, new: str, result: TrainResult) -> tuple[bool, str]:
    """Move `cfg.alias` of model `name` to version `new` (trained as `result`) if no version
    holds it or if `new` beats the one holding it on `new`'s test split; returns whether it
    moved, and what happened as a sentence."""
    from imgfeat.model import model_booster, model_features  # imports mlflow: only promotion pays for it
    from imgfeat.scoring import resolve_model

    alias = cfg.alias
    assert alias
    current = tracking.aliased_version(name, alias)
    if current is None:
        tracking.set_alias(name, alias, new)
        return True, f"alias {alias} set on version {new}: no version held it"
    metric, value = result.headline
    before = _trained_on_split_version_1(name, current)
    try:
        held = resolve_model(f"models:/{name}/{current}")
        features = model_features(held.local_dir)
        if (features.task, features.classes) != (result.features.task, result.features.classes):
            raise InputError(f"it predicts {features.task} {list(features.classes)}")
        scores, n = evaluate_on_test_split(spark, cfg, result.version, features, model_booster(held.local_dir), before)
        if before:  # the holder may have trained on some of today's test images: compare where neither did
            mine, _ = evaluate_on_test_split(spark, cfg, result.version, result.features, result.booster, True)
            value = mine[metric.removeprefix("test_")]
        elif n != result.counts.get("test"):
            raise InputError(f"it has ok embeddings for {n} of the {result.counts.get('test')} test images")
    except InputError as exc:
        return False, (
            f"alias {alias} stays on version {current}: it cannot be scored on version {new}'s test split ({exc})"
        )
    old = scores[metric.removeprefix("test_")]
    where = (
        f"the test images both held out (version {current} was trained on split version 1)"
        if before
        else "the same test split"
    )
    versus = f"{metric} {value:.4f} vs {old:.4f} on {where} ({n} images of {result.table} version {result.version})"
    if value > old:
        tracking.set_alias(name, alias, new)
        return True, f"alias {alias} moved from version {current} to version {new}: {versus}"
    return False, f"alias {alias} stays on version {current}: version {new} does not beat it: {versus}"


def _trained_on_split_version_1(name: str, version: str) -> bool:
    """Whether the version's train run drew its test split by each image's bytes alone (no
    `split_version` param, or 1), so today's grouped split may hold images it trained on."""
    try:
        _, params, _ = tracking.model_lineage(name, version)
    except InputError:  # no train run to ask: assume the older split, the fair side to err on
        return True
    return params.get("split_version") != str(SPLIT_VERSION)
