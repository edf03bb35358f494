"""The spark-submit entry points in `jobs/`: spark-submit puts a job's own folder first
on `sys.path`, so a job file named like a standard-library module (`select.py`)
shadows it for every job in the folder (subprocess then fails on `select.select`)."""

from __future__ import annotations

import sys
from pathlib import Path

JOBS = Path(__file__).resolve().parents[1] / "jobs"


def test_no_job_file_shadows_a_standard_library_module():
    names = {p.stem for p in JOBS.glob("*.py")}
    assert names, f"no jobs under {JOBS}"
    assert not names & set(sys.stdlib_module_names), sorted(names & set(sys.stdlib_module_names))


CONFIGS = {
    "featurize": "FeaturizeConfig", "train": "TrainConfig", "select": "SelectConfig", "score": "ScoreConfig",
    "serve": "ServeConfig", "finetune": "FinetuneConfig", "insights": "InsightsConfig", "nightly": "NightlyConfig",
}


def _keys(model, prefix: str = "") -> set[str]:
    """Every key of a config class, nested sections as dotted paths."""
    from pydantic import BaseModel

    out = set()
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            out |= _keys(kind, f"{prefix}{name}.")
        else:
            out.add(prefix + name)
    return out


def _yaml_keys(data: dict, prefix: str = "") -> set[str]:
    out = set()
    for name, value in data.items():
        out |= _yaml_keys(value, f"{prefix}{name}.") if isinstance(value, dict) and value else {prefix + name}
    return out


#: finetune.yaml leaves out the featurizer keys fine-tuning ignores; nightly.yaml refers to
#: the featurize/train/score files for its sections' keys. Both must still load.
PARTIAL = {"finetune", "nightly"}


def test_every_conf_file_loads_and_lists_every_key_of_its_config():
    """The conf/*.yaml files are the reference of every key ("every key, with its default")."""
    import yaml

    from imgfeat import config

    conf = JOBS.parent / "conf"
    assert sorted(p.stem for p in conf.glob("*.yaml")) == sorted(CONFIGS)
    for stem, cls_name in CONFIGS.items():
        cls = getattr(config, cls_name)
        config.load_config(cls, path=conf / f"{stem}.yaml")  # validates
        if stem in PARTIAL:
            continue
        written = _yaml_keys(yaml.safe_load((conf / f"{stem}.yaml").read_text()))
        missing = {k for k in _keys(cls) if not any(w == k or w.startswith(k + ".") for w in written)}
        assert not missing, f"conf/{stem}.yaml does not document {sorted(missing)}"
