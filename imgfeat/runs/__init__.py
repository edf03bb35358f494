"""Job-level orchestration: one module per job, called by the CLI, the spark-submit
entry points in `jobs/` and the notebooks alike.

Owns: for each job (featurize, train, select, finetune, score, serve, nightly,
insights: the names of `conf/`, `jobs/` and the CLI; reregister, a serving
admin step that reads serve's config; rehash, a table fix that reads featurize's), the order of its stages,
what its MLflow run records, and its summary; `_shared` holds what several
jobs use. Must not: hold stage logic (reading labels, fitting, featurizing,
the selection or promotion rule live in the stage modules), parse arguments,
or print anything but progress (callers decide what to show).

The names below are the package's public API (`from imgfeat.runs import train_run`).
"""

from imgfeat.runs._shared import featurizer_spec, verification_photos
from imgfeat.runs.featurize import FeaturizeSummary, featurize_run
from imgfeat.runs.finetune import FinetuneSummary, finetune_run
from imgfeat.runs.insights import InsightsSummary, insights_run
from imgfeat.runs.nightly import NIGHTLY_STEPS, NightlySummary, _promote, nightly_run
from imgfeat.runs.rehash import RehashSummary, rehash_run
from imgfeat.runs.reregister import ReregisterSummary, reregister_run
from imgfeat.runs.score import ScoreSummary, score_run
from imgfeat.runs.select import SelectSummary, select_run
from imgfeat.runs.serve import serve_run
from imgfeat.runs.train import TrainSummary, train_run

__all__ = [
    "NIGHTLY_STEPS",
    "FeaturizeSummary",
    "FinetuneSummary",
    "InsightsSummary",
    "NightlySummary",
    "RehashSummary",
    "ReregisterSummary",
    "ScoreSummary",
    "SelectSummary",
    "TrainSummary",
    "_promote",
    "featurize_run",
    "featurizer_spec",
    "finetune_run",
    "insights_run",
    "nightly_run",
    "rehash_run",
    "reregister_run",
    "score_run",
    "select_run",
    "serve_run",
    "train_run",
    "verification_photos",
]
