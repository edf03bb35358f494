"""`featurizer.runtime`: exported ONNX graphs against torch on real photos for every
registry network, the Spark job with either runtime, bad input, and workers without torch.

Real weights for the offline default (efficientnet_lite0); seeded random weights
elsewhere: the point is that the graph computes what the torch network computes.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import pickle
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from deltalake import DeltaTable

from imgfeat import cli, runs
from imgfeat.config import FeaturizeConfig, load_config
from imgfeat.featurizers import load_featurizer, resolve_featurizer, runtime
from imgfeat.featurizers.featurizer import GRAYSCALE_ARCH
from imgfeat.featurizers.registry import ENTRIES
from imgfeat.featurizers.runtime import RuntimeUnavailable, cached_graph, choose_runtime, load_graph_featurizer
from imgfeat.runs import featurize as featurize_job
from tests.photos import PHOTOS, load_photo
from tests.test_featurizers import SLOW

REPO = Path(__file__).resolve().parents[1]
NETWORKS = [e for e in ENTRIES if e.arch != GRAYSCALE_ARCH]
#: Networks whose exported graph does not match torch within 1e-4 (absolute) on the photos with
#: seeded random weights, so it is refused and `auto` runs them on torch. Measured max abs diff:
#: efficientnetv2_s 5.3e+01, inception_v3 2.0e+05 (random-init activations are huge there; whether
#: real weights pass is not known: they are not available offline).
REFUSED = {"efficientnetv2_s", "inception_v3"}


@functools.lru_cache(maxsize=1)
def real_photos() -> tuple:
    return tuple(load_photo(name) for name in PHOTOS)


def _spec(name: str, weights: str = "default", **options):
    return resolve_featurizer(name, weights=weights, fold_bn=True, **options)


def _weights(entry) -> str:
    return "default" if entry.default_weights.startswith("package:") else "random"


# --- every registry network: graph == torch on real photos ------------------------------------


@pytest.mark.parametrize(
    "entry", [pytest.param(e, marks=pytest.mark.slow) if e.name in SLOW else e for e in NETWORKS],
    ids=lambda e: e.name,
)
def test_exported_graph_matches_torch_on_real_photos(entry, tmp_path):
    spec = _spec(entry.name, _weights(entry))
    if entry.name in REFUSED:
        with pytest.raises(RuntimeUnavailable, match="differs from torch"):
            cached_graph(spec, real_photos(), tmp_path)
        return
    graph = cached_graph(spec, real_photos(), tmp_path)
    assert graph.images == len(PHOTOS) and graph.max_abs_diff <= 1e-4

    # Checked again here, in a fresh session, at two batch sizes (the batch axis is dynamic).
    reference = load_featurizer(spec)
    batch = np.stack([reference.prepare(p) for p in real_photos()])
    onnx = load_graph_featurizer(spec, graph.path, threads=2)
    expected = reference.embed(batch)
    assert np.abs(onnx.embed(batch) - expected).max() <= 1e-4
    assert np.abs(onnx.embed(batch[:1]) - expected[:1]).max() <= 1e-4
    assert onnx.embed(batch).dtype == np.float32 and onnx.embed(batch).shape == (len(PHOTOS), entry.dim)


def test_layers_pooling_and_pca_projection_run_in_the_graph(tmp_path):
    spec = _spec("resnet18", "random", pooling="gem", layers=(-1, -2))
    graph = cached_graph(spec, real_photos(), tmp_path)
    reference = load_featurizer(spec)
    batch = np.stack([reference.prepare(p) for p in real_photos()])
    got = load_graph_featurizer(spec, graph.path, threads=1).embed(batch)
    assert got.shape == (len(PHOTOS), 512 + 256)
    assert np.abs(got - reference.embed(batch)).max() <= 1e-4


def test_graph_cache_reuses_a_graph_and_exports_again_when_its_bytes_changed(tmp_path, monkeypatch):
    spec = _spec("resnet18", "random")
    first = cached_graph(spec, real_photos()[:1], tmp_path)

    def exported_again(*args):
        raise AssertionError("exported again")

    with monkeypatch.context() as patched:
        patched.setattr(runtime, "export_verified", exported_again)
        assert cached_graph(spec, real_photos()[:1], tmp_path) == first
    Path(first.path).write_bytes(b"tampered")
    redone = cached_graph(spec, real_photos()[:1], tmp_path)
    assert hashlib.sha256(Path(redone.path).read_bytes()).hexdigest() == redone.sha256


# --- the Spark job: the same rows with either runtime -----------------------------------------


def _config(photos: Path, table: Path, cache: Path, *sets: str) -> FeaturizeConfig:
    return load_config(
        FeaturizeConfig, None, ["tracking.enabled=false", f"featurizer.onnx_cache={cache}", *sets],
        input=str(photos), table=str(table),
    )


def _rows(table: Path) -> pd.DataFrame:
    frame = DeltaTable(str(table)).to_pandas()
    return frame.sort_values("path").reset_index(drop=True)


def test_spark_job_rows_are_the_same_with_either_runtime(spark, photos, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for p in photos.iterdir():
        (inputs / p.name).write_bytes(p.read_bytes())
    (inputs / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    tables = {}
    for name in ("torch", "onnxruntime", "auto"):
        cfg = _config(inputs, tmp_path / name, tmp_path / "cache", f"featurizer.runtime={name}")
        summary = runs.featurize_run(cfg, spark)
        assert summary.runtime == ("onnxruntime" if name == "auto" else name) and summary.runtime_note is None
        assert summary.counts == {"ok": len(list(photos.iterdir())), "decode_error": 1}
        assert summary.model_loads <= spark.sparkContext.defaultParallelism
        tables[name] = _rows(tmp_path / name)

    torch_rows = tables["torch"]
    for name in ("onnxruntime", "auto"):
        rows = tables[name]
        same = ["path", "content_sha256", "length", "featurizer", "featurizer_fingerprint", "dim", "status",
                "error", "width", "height"]
        pd.testing.assert_frame_equal(rows[same], torch_rows[same])
        for got, want in zip(rows["embedding"], torch_rows["embedding"], strict=True):
            assert (got is None) == (want is None)
            if want is not None:
                assert np.abs(np.asarray(got) - np.asarray(want)).max() <= 1e-4


# --- bad input ---------------------------------------------------------------------------------


def _break(monkeypatch, failure: str) -> str:
    """Make the ONNX route fail the way `failure` names; returns what the message says."""
    if failure == "no export":
        import torch

        def unsupported(*args, **kwargs):
            raise RuntimeError("Exporting the operator 'aten::fancy_op' to ONNX opset version 17 is not supported")

        monkeypatch.setattr(torch.onnx, "export", unsupported)
        return "does not export to ONNX"
    if failure == "disagrees":
        export = runtime.export

        def other_weights(featurizer, dest):  # a graph of another network than torch runs
            export(load_featurizer(replace(featurizer.spec, weights="random:1")), dest)

        monkeypatch.setattr(runtime, "export", other_weights)
        return "differs from torch"
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(runtime, "find_spec", lambda name: None if name == "onnxruntime" else real_find_spec(name))
    return "onnxruntime is not installed"


FAILURES = ("no export", "disagrees", "no onnxruntime")


@pytest.mark.parametrize("failure", FAILURES)
def test_explicit_onnxruntime_refuses_with_one_line_exit_2_before_spark(failure, monkeypatch, photos, tmp_path, capsys):
    message = _break(monkeypatch, failure)

    def no_spark(*args, **kwargs):
        raise AssertionError("Spark started before the runtime was checked")

    monkeypatch.setattr(featurize_job, "get_spark", no_spark)
    code = cli.main([
        "featurize", "--input", str(photos), "--table", str(tmp_path / "t"), "--featurizer", "resnet18",
        "--weights", "random", "--set", "tracking.enabled=false", "--set", "featurizer.runtime=onnxruntime",
        "--set", f"featurizer.onnx_cache={tmp_path / 'cache'}",
    ])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("failure", FAILURES)
def test_auto_falls_back_to_torch_with_a_note(failure, monkeypatch, tmp_path):
    message = _break(monkeypatch, failure)
    choice = choose_runtime(_spec("resnet18", "random"), "auto", device="cpu", gpu_visible=False,
                            photos=real_photos()[:2], cache_dir=tmp_path)
    assert choice.runtime == "torch" and choice.graph is None
    assert choice.note.startswith("runtime auto: torch") and message in choice.note and "\n" not in choice.note


def test_auto_fallback_note_reaches_the_summary_and_the_rows_are_torch_s(spark, monkeypatch, photos, tmp_path):
    _break(monkeypatch, "no export")
    summary = runs.featurize_run(_config(photos, tmp_path / "t", tmp_path / "cache"), spark)
    assert summary.runtime == "torch" and "does not export to ONNX" in summary.runtime_note
    assert summary.counts == {"ok": len(list(photos.iterdir()))}
    assert "note: runtime auto: torch" in summary.line()


def test_auto_keeps_torch_on_a_gpu_and_onnxruntime_refuses_device_cuda(tmp_path):
    spec = _spec("resnet18", "random")
    on_gpu = choose_runtime(spec, "auto", device="auto", gpu_visible=True, photos=(), cache_dir=tmp_path)
    assert on_gpu.runtime == "torch" and on_gpu.graph is None and not list(tmp_path.iterdir())
    with pytest.raises(RuntimeUnavailable, match="runs on CPU"):
        choose_runtime(spec, "onnxruntime", device="cuda", gpu_visible=True, photos=(), cache_dir=tmp_path)
    grayscale = choose_runtime(resolve_featurizer("grayscale16"), "onnxruntime", device="cpu", gpu_visible=False,
                               photos=(), cache_dir=tmp_path)
    assert grayscale.runtime == runtime.NO_NETWORK


# --- workers without torch ----------------------------------------------------------------------


def _torchless(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "tests.torchless", code], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_worker_without_torch_featurizes_and_scores_from_the_graph(photos, tmp_path):
    spec = _spec("efficientnet_lite0")
    graph = cached_graph(spec, real_photos(), tmp_path / "cache")
    files = sorted(str(p) for p in photos.iterdir())
    out = tmp_path / "out.npy"
    code = f"""
import pickle, sys
import numpy as np, pandas as pd
from imgfeat.featurize import WorkerOptions, featurize_listing_batches
from imgfeat.model import _load_bundled
spec = pickle.loads(bytes.fromhex({pickle.dumps(spec).hex()!r}))
files = {files!r}
listing = pd.DataFrame({{"path": files, "modification_time": pd.Timestamp.now(), "length": 0}})
rows = pd.concat(featurize_listing_batches(iter([listing]), spec, WorkerOptions(graph={graph.path!r})))
assert rows["status"].tolist() == ["ok"] * len(files), rows["error"].tolist()
scorer = _load_bundled(spec, {{"onnx_0": {graph.path!r}}}, 0)
assert type(scorer).__name__ == "OnnxFeaturizer"
np.save({str(out)!r}, np.stack(rows["embedding"].tolist()))
loaded = sorted({{m.split(".")[0] for m in sys.modules}} & {{"torch", "timm", "torchvision"}})
assert not loaded, loaded
"""
    proc = _torchless(code)
    assert proc.returncode == 0, proc.stderr[-3000:]

    from imgfeat.decode import decode_image

    reference = load_featurizer(spec)
    batch = np.stack([reference.prepare(decode_image(Path(f).read_bytes(), draft_size=spec.resize_size).image)
                      for f in files])
    assert np.abs(np.load(out) - reference.embed(batch)).max() <= 1e-4


def test_the_torchless_hook_really_blocks_torch():
    proc = _torchless("import torch")
    assert proc.returncode != 0 and "No module named 'torch'" in proc.stderr
