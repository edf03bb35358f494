"""Safety of what imgfeat loads: checkpoints, YAML, pinned weights.

A checkpoint or config file can come from anywhere (a colleague, a bucket);
loading one must never run code, and a pinned checkpoint must be the one
pinned before any of it is used.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from imgfeat.config import FeaturizeConfig, load_config
from imgfeat.errors import ConfigError, FeaturizerError
from imgfeat.featurizers import load_featurizer, resolve_featurizer

#: Small (2.5 M parameters) and registered: its checkpoint is ~10 MB.
ARCH = "mobilenetv3_small_100"


class _RunsCode:
    """Unpickling this calls `exec`, the way a malicious checkpoint would."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def test_a_checkpoint_that_runs_code_is_refused_unrun(tmp_path):
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {"conv.weight": _RunsCode(marker)}}, evil)
    spec = resolve_featurizer(ARCH, weights=str(evil))  # hashing only: nothing is unpickled yet
    with pytest.raises(FeaturizerError, match="cannot read checkpoint"):
        load_featurizer(spec)
    assert not marker.exists(), "torch.load ran code from the checkpoint"


def test_yaml_tags_that_build_objects_are_refused_unrun(tmp_path):
    marker = tmp_path / "code-ran"
    config = tmp_path / "evil.yaml"
    config.write_text(f'input: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(FeaturizeConfig, config)
    assert not marker.exists(), "the config file ran a command"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[Path, str]:
    """A real checkpoint for ARCH (seeded random weights) and its sha256."""
    import timm

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "finetuned.pth"
    torch.save({"state_dict": timm.create_model(ARCH).state_dict()}, path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_pinned_sha256_is_checked_before_use(checkpoint, tmp_path):
    path, sha = checkpoint
    spec = resolve_featurizer(ARCH, weights=str(path), weights_sha256=sha.upper())  # case does not matter
    assert spec.weights_sha256 == sha
    batch = np.random.default_rng(0).integers(0, 256, (2, spec.input_size, spec.input_size, 3), dtype=np.uint8)
    assert load_featurizer(spec).embed(batch).shape == (2, 576)

    other = "f" * 64
    with pytest.raises(FeaturizerError, match=f"sha256 {sha}, but {other} was pinned"):
        resolve_featurizer(ARCH, weights=str(path), weights_sha256=other)


def test_checkpoint_changed_after_resolving_is_refused_on_the_worker(checkpoint, tmp_path):
    """The driver resolves (and hashes) once; a worker loads later and checks
    the bytes it read against that hash, so a file swapped in between is never used."""
    import shutil

    path, _ = checkpoint
    copy = tmp_path / "copy.pth"
    shutil.copy(path, copy)
    spec = resolve_featurizer(ARCH, weights=str(copy))
    state = torch.load(copy, weights_only=True)
    state["state_dict"]["conv_stem.weight"] += 1  # same shapes: it would load fine
    torch.save(state, copy)
    with pytest.raises(FeaturizerError, match="changed since the featurizer was resolved"):
        load_featurizer(spec)
