"""The worker-side featurizer: load once, then pure per-batch work (Ray Data style).

Owns: `Featurizer` (`prepare` one PIL image, `embed` a uint8 batch), its torch
and grayscale kinds, and `load_featurizer`. Must not: decode bytes, cache
featurizers across calls (the caller keeps one per worker process), set torch's
thread count, use autocast (the caller may wrap `embed` in it; output is always
float32), import Spark, or import torch at module level (a worker that runs
exported ONNX graphs has no torch; see `runtime`).
"""

from __future__ import annotations

import io
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from imgfeat.errors import FeaturizerError
from imgfeat.featurizers.spec import FeaturizerSpec
from imgfeat.featurizers.weights import read_verified

if TYPE_CHECKING:
    import torch

GRAYSCALE_ARCH = "grayscale16"
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as PIL's "L"
_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


class Featurizer:
    """Base: holds the spec and prepares images; subclasses implement `embed`."""

    def __init__(self, spec: FeaturizerSpec) -> None:
        self.spec = spec
        self._resample = _RESAMPLE[spec.interpolation]

    def prepare(self, image: Image.Image) -> np.ndarray:
        """RGB PIL image → uint8 (input_size, input_size, 3).

        Resizes the shorter side to `resize_size` (longer side scaled and
        truncated, as torchvision's Resize), then centre crops (torchvision's
        rounding). Pure function of its input: safe to call from many threads.
        """
        if image.mode != "RGB":
            image = image.convert("RGB")
        width, height = image.size
        short = self.spec.resize_size
        if width <= height:
            size = (short, int(short * height / width))
        else:
            size = (int(short * width / height), short)
        if size != image.size:
            image = image.resize(size, self._resample)
        crop = self.spec.input_size
        left = int(round((size[0] - crop) / 2.0))
        top = int(round((size[1] - crop) / 2.0))
        if size != (crop, crop):
            image = image.crop((left, top, left + crop, top + crop))
        return np.asarray(image, dtype=np.uint8)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """(N, input_size, input_size, 3) uint8 → (N, dim) float32, C-contiguous."""
        raise NotImplementedError

    def _check(self, batch: np.ndarray) -> None:
        size = self.spec.input_size
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[1:] != (size, size, 3):
            raise ValueError(f"expected a uint8 batch of shape (N, {size}, {size}, 3), got {batch.dtype} {batch.shape}")


class TorchFeaturizer(Featurizer):
    """A torch network on one device; normalization happens inside `embed`."""

    def __init__(self, spec: FeaturizerSpec, network: torch.nn.Module, device: torch.device) -> None:
        import torch

        super().__init__(spec)
        self.network = network
        self.device = device
        mean = torch.tensor(spec.mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        std = torch.tensor(spec.std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        # (x / 255 - mean) / std  ==  x * scale - shift
        self._scale = 1.0 / (255.0 * std)
        self._shift = mean / std

    def embed(self, batch: np.ndarray) -> np.ndarray:
        self._check(batch)
        if len(batch) == 0:
            return np.zeros((0, self.spec.dim), dtype=np.float32)
        import torch

        with torch.inference_mode():
            out = self.network(self.to_input(batch))
        return np.ascontiguousarray(out.float().cpu().numpy())

    def to_input(self, batch: np.ndarray) -> torch.Tensor:
        """uint8 NHWC batch → normalized float (N, 3, H, W) in channels_last memory."""
        import torch

        pixels = torch.from_numpy(np.require(batch, requirements=("C", "W")))
        if self.device.type == "cuda":
            pixels = pixels.pin_memory()  # page-locked, so the copy below really is asynchronous
        # NHWC memory viewed as NCHW is exactly the channels_last layout.
        x = pixels.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        return x.mul_(self._scale).sub_(self._shift)


class GrayscaleFeaturizer(Featurizer):
    """`grayscale16`: the prepared 16×16 image as luma in 0..1 (256 values, row-major).

    A no-model baseline for leakage checks: if a model on these pixels scores as
    well as one on deep embeddings, the target leaks through trivial image
    properties (size, brightness, borders, watermarks).
    """

    def embed(self, batch: np.ndarray) -> np.ndarray:
        self._check(batch)
        luma = batch.astype(np.float32) @ (_LUMA / 255.0)
        return np.ascontiguousarray(luma.reshape(len(batch), self.spec.dim), dtype=np.float32)


class ProjectedFeaturizer(Featurizer):
    """A featurizer followed by its fitted PCA basis (`spec.projection`)."""

    def __init__(self, spec: FeaturizerSpec, base: Featurizer) -> None:
        super().__init__(spec)
        self.base = base
        projection = spec.projection
        if projection is None:
            raise ValueError(f"{spec.name}: a projected featurizer needs spec.projection")
        with np.load(io.BytesIO(read_verified(projection.location, projection.sha256))) as basis:
            self._mean = basis["mean"].astype(np.float32)
            self._components_t = np.ascontiguousarray(basis["components"].T, dtype=np.float32)
        if self._components_t.shape != (projection.in_dim, spec.dim):
            raise FeaturizerError(
                f"PCA basis {projection.location} has shape {self._components_t.shape[::-1]}, "
                f"expected ({spec.dim}, {projection.in_dim})"
            )

    def embed(self, batch: np.ndarray) -> np.ndarray:
        full = self.base.embed(batch)
        return np.ascontiguousarray((full - self._mean) @ self._components_t, dtype=np.float32)


def load_featurizer(spec: FeaturizerSpec, *, device: str = "cpu") -> Featurizer:
    """Build the featurizer for `spec` on `device` (run once per worker process).

    Loads and verifies the weights, puts the network in eval mode and
    channels_last memory (on every device: it is what oneDNN and cuDNN convs
    prefer), and folds BatchNorm when `spec.fold_bn`, checked on one random
    probe image.
    """
    if spec.projection is not None:
        base = load_featurizer(replace(spec, dim=spec.projection.in_dim, projection=None), device=device)
        return ProjectedFeaturizer(spec, base)
    if spec.arch == GRAYSCALE_ARCH:
        return GrayscaleFeaturizer(spec)
    import torch

    from imgfeat.featurizers.backbone import build_network
    from imgfeat.featurizers.fold import fold_batchnorm

    target = torch.device(device)
    network = build_network(spec).to(target, memory_format=torch.channels_last).eval()  # type: ignore[call-overload]  # stubs: no memory_format
    featurizer = TorchFeaturizer(spec, network, target)
    if spec.fold_bn:
        probe = np.random.default_rng(0).integers(0, 256, (1, spec.input_size, spec.input_size, 3), dtype=np.uint8)
        fold_batchnorm(network, featurizer.to_input(probe))
    return featurizer
