"""How a spec runs: its torch network, or that network exported to ONNX and run by ONNX Runtime.

Owns: `choose_runtime` (`featurizer.runtime: auto | torch | onnxruntime` → what
a run uses, and why), exporting a spec's network to one ONNX graph (uint8 NHWC
pixels in, the embedding out: normalization, folded BatchNorm, pooling and
`layers` all inside), verifying the graph against torch on real photos, the
graph cache keyed by fingerprint and the graph's sha256, and `OnnxFeaturizer`,
the worker side (one ONNX Runtime session, no torch). Must not: import torch,
timm or onnx at module level (a worker that runs graphs has none of them),
import Spark, decode bytes, ship files to workers or cache sessions (callers do).

Why: on CPU, ONNX Runtime runs the same network 2-2.7x faster than PyTorch's
forward pass (bench/README.md), within 1e-4 of it, and a worker that only runs
graphs needs onnxruntime (tens of MB) instead of torch (gigabytes). Like
`fold_bn`, the runtime does not enter the fingerprint: the numbers are the same.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from importlib.util import find_spec
from pathlib import Path

import numpy as np
from PIL import Image

from imgfeat.errors import FeaturizerError
from imgfeat.featurizers.featurizer import GRAYSCALE_ARCH, Featurizer, ProjectedFeaturizer, TorchFeaturizer
from imgfeat.featurizers.spec import FeaturizerSpec

RUNTIMES = ("auto", "torch", "onnxruntime")
#: What a run reports for a featurizer without a network (`grayscale16`).
NO_NETWORK = "numpy"
OPSET = 17
TOLERANCE = 1e-4
INPUT, OUTPUT = "pixels", "embedding"


class RuntimeUnavailable(FeaturizerError):
    """ONNX Runtime cannot run this spec: not installed, no export, or not torch's numbers."""


@dataclass(frozen=True)
class Graph:
    """An exported, verified graph in the local cache."""

    path: str
    sha256: str
    max_abs_diff: float  # against torch on `images` real photos, when it was exported
    images: int


@dataclass(frozen=True)
class RuntimeChoice:
    """What `featurizer.runtime` resolved to for one spec."""

    requested: str
    runtime: str  # "torch", "onnxruntime", or NO_NETWORK
    graph: Graph | None = None
    note: str | None = None  # why `auto` did not pick onnxruntime on CPU; None when it did

    @property
    def graph_path(self) -> str | None:
        return self.graph.path if self.graph else None


def choose_runtime(
    spec: FeaturizerSpec,
    requested: str,
    *,
    device: str,
    gpu_visible: bool,
    photos: Sequence[Image.Image],
    cache_dir: str | os.PathLike[str],
) -> RuntimeChoice:
    """Resolve `requested` (`auto`, `torch`, `onnxruntime`) for `spec`, on the driver.

    `onnxruntime` and CPU `auto` export the network once per fingerprint (cached
    under `cache_dir`) and check it on `photos` (real RGB images) against torch.
    `auto` keeps torch on a GPU (`device: cuda`, or `auto` with `gpu_visible`)
    and falls back to torch, with a `note`, when the graph is unavailable; an
    explicit `onnxruntime` raises `RuntimeUnavailable` instead.
    """
    if requested not in RUNTIMES:
        raise FeaturizerError(f"unknown runtime {requested!r}; expected one of {', '.join(RUNTIMES)}")
    base = network_spec(spec)
    if base.arch == GRAYSCALE_ARCH:
        return RuntimeChoice(requested, NO_NETWORK)
    if requested == "torch":
        return RuntimeChoice(requested, "torch")
    if device == "cuda" and requested == "onnxruntime":
        raise RuntimeUnavailable("runtime onnxruntime runs on CPU; with device cuda use runtime torch or auto")
    if requested == "auto" and (device == "cuda" or (device == "auto" and gpu_visible)):
        return RuntimeChoice(requested, "torch", note="runtime auto: torch on GPU (CUDA autocast)")
    try:
        graph = cached_graph(base, photos, cache_dir)
    except RuntimeUnavailable as exc:
        if requested == "onnxruntime":
            raise
        return RuntimeChoice(requested, "torch", note=f"runtime auto: torch, {exc}")
    return RuntimeChoice(requested, "onnxruntime", graph)


def network_spec(spec: FeaturizerSpec) -> FeaturizerSpec:
    """The spec without its PCA projection: what the graph computes."""
    if spec.projection is None:
        return spec
    return replace(spec, dim=spec.projection.in_dim, projection=None)


# -------------------------------------------------------------------- export + cache
def cached_graph(spec: FeaturizerSpec, photos: Sequence[Image.Image], cache_dir: str | os.PathLike[str]) -> Graph:
    """The verified graph of `spec` (no projection), exported first if the cache lacks it.

    Layout: `<cache_dir>/<fingerprint>.json` names the graph file
    `<fingerprint>-<sha256[:16]>.onnx` and its sha256; a graph whose bytes no
    longer match is exported again. Both files are written atomically, so a
    concurrent or interrupted export never leaves a half-written graph in use.
    """
    require_onnxruntime()
    folder = Path(cache_dir).expanduser()
    index = folder / f"{spec.fingerprint}.json"
    cached = _read_index(index)
    if cached is not None:
        return cached
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".export-") as tmp:
        draft = Path(tmp, "graph.onnx")
        diff, images = export_verified(spec, draft, photos)
        sha = _sha256(draft)
        path = folder / f"{spec.fingerprint}-{sha[:16]}.onnx"
        os.replace(draft, path)
    graph = Graph(str(path), sha, diff, images)
    _write_atomic(
        index,
        json.dumps(
            {
                "file": path.name,
                "sha256": sha,
                "max_abs_diff": diff,
                "images": images,
                "opset": OPSET,
                "name": spec.name,
            },
            indent=1,
        ),
    )
    return graph


def export_verified(spec: FeaturizerSpec, dest: Path, photos: Sequence[Image.Image]) -> tuple[float, int]:
    """Export `spec`'s network to `dest` and check it on `photos` against torch.

    Returns (max abs difference, images compared); raises `RuntimeUnavailable`
    when the export fails or the difference exceeds `TOLERANCE`.
    """
    from imgfeat.featurizers.featurizer import load_featurizer

    if not photos:
        raise ValueError("export_verified needs at least one photo to compare on")
    reference = load_featurizer(spec)
    export(reference, dest)
    batch = np.stack([reference.prepare(im) for im in photos])
    graph = OnnxFeaturizer(spec, str(dest), threads=os.cpu_count() or 1)
    diff = float(np.abs(graph.embed(batch) - reference.embed(batch)).max())
    if not diff <= TOLERANCE:  # also catches NaN
        raise RuntimeUnavailable(
            f"{spec.name}: the ONNX graph differs from torch by {diff:.1e} on {len(batch)} photos "
            f"(tolerance {TOLERANCE:g})"
        )
    return diff, len(batch)


def export(featurizer: Featurizer, dest: Path) -> None:
    """Write `featurizer`'s network (a loaded torch featurizer) as an ONNX graph at `dest`.

    Opset 17, the TorchScript exporter (`dynamo=False`: it handles timm's models
    without a Python-level trace), a dynamic batch axis, constants folded.
    """
    import torch

    if not isinstance(featurizer, TorchFeaturizer):
        raise TypeError(f"export needs a torch featurizer, got {type(featurizer).__name__}")
    torch_featurizer = featurizer

    class PixelsToEmbedding(torch.nn.Module):
        """`TorchFeaturizer.to_input` (the same float ops) followed by the network."""

        scale: torch.Tensor  # buffers, registered below
        shift: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.network = torch_featurizer.network
            self.register_buffer("scale", torch_featurizer._scale.cpu())
            self.register_buffer("shift", torch_featurizer._shift.cpu())

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return self.network(pixels.permute(0, 3, 1, 2).float() * self.scale - self.shift)

    size = featurizer.spec.input_size
    probe = torch.zeros((2, size, size, 3), dtype=torch.uint8)
    try:
        torch.onnx.export(
            PixelsToEmbedding().eval(),
            (probe,),
            str(dest),
            opset_version=OPSET,
            dynamo=False,
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
            do_constant_folding=True,
        )
    except Exception as exc:  # unsupported ops, tracing failures, a missing `onnx` package
        raise RuntimeUnavailable(
            f"{featurizer.spec.name} does not export to ONNX ({type(exc).__name__}: {_first_line(exc)})"
        ) from exc


def prefer_graph() -> bool:
    """Whether a bundled graph should run here: onnxruntime is installed and torch
    has no CUDA device (`auto` keeps torch on GPUs). Without torch, always."""
    if find_spec("onnxruntime") is None:
        return False
    try:
        import torch
    except ImportError:
        return True
    return not torch.cuda.is_available()


def require_onnxruntime() -> None:
    if find_spec("onnxruntime") is None:
        raise RuntimeUnavailable("onnxruntime is not installed (pip install onnxruntime)")


def _read_index(index: Path) -> Graph | None:
    try:
        meta = json.loads(index.read_text())
        path = index.parent / meta["file"]
        if _sha256(path) != meta["sha256"]:
            return None
        return Graph(str(path), meta["sha256"], float(meta["max_abs_diff"]), int(meta["images"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else "no message"


# ------------------------------------------------------------------------ worker side
class OnnxFeaturizer(Featurizer):
    """A spec's network as an exported graph in an ONNX Runtime CPU session.

    `threads` intra-op threads (the task's cores) and one inter-op thread; all
    graph optimizations (ONNX Runtime fuses what BatchNorm folding left, picks
    its convolution kernels once per session).
    """

    def __init__(self, spec: FeaturizerSpec, path: str, threads: int) -> None:
        import onnxruntime as ort

        super().__init__(spec)
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path = path
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def embed(self, batch: np.ndarray) -> np.ndarray:
        self._check(batch)
        if len(batch) == 0:
            return np.zeros((0, self.spec.dim), dtype=np.float32)
        (out,) = self.session.run([OUTPUT], {INPUT: np.ascontiguousarray(batch)})
        return np.ascontiguousarray(out, dtype=np.float32)


def load_graph_featurizer(spec: FeaturizerSpec, path: str, threads: int) -> Featurizer:
    """The featurizer for `spec` from its graph file (+ its PCA basis when reduced); no torch."""
    base = OnnxFeaturizer(network_spec(spec), path, threads)
    return base if spec.projection is None else ProjectedFeaturizer(spec, base)
