"""Build the network a spec names and cut it down to "image tensor → embedding".

Owns: creating timm / torchvision models with their weights (hub, seeded random,
package, checkpoint), the meaning of `layers`, and `LayerPlan`, the per-arch
answer to "which feature maps, how many channels", found by running the model
on the ``meta`` device (no weights allocated, no arithmetic done). Must not:
preprocess images, pick devices or threads, cache models, or import Spark.

What ``layers`` means (timm models; torchvision models only support ``(-1,)``):

- ``-1`` is the final feature map, ``forward_features(x)``, globally pooled.
  For a token model (ViT & co.), whose final features are not a 2D map, ``-1`` is
  the model's own pre-logits pooling (``forward_head(pre_logits=True)``, e.g. the
  class token) and `pooling` does not apply to it.
- ``-2, -3, ...`` walk back through the model's feature pyramid (timm
  ``feature_info`` / ``forward_intermediates``), skipping a stage that *is* the
  final map. For ResNets the last stage is the final map, so ``-2`` is ``layer3``
  (1024 ch for resnet50). For EfficientNets the final map comes from a 1×1 head
  conv, so ``-1`` is that 1280-ch head (efficientnet_lite0/b0) and ``-2`` the last
  stage's 320 channels, ``-3`` the 112-ch stage before it.
- Several layers are pooled one by one and concatenated in the order given.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

from imgfeat.errors import FeaturizerError
from imgfeat.featurizers import weights as wts
from imgfeat.featurizers.pooling import global_pool
from imgfeat.featurizers.spec import FeaturizerSpec

#: A timm model: `forward_features`, `forward_intermediates`, `forward_head` and
#: `pretrained_cfg` are timm's, not `nn.Module`'s (whose `__getattr__` types them Tensor | Module).
TimmModel = Any

# torchvision models whose final feature map is one submodule called on the image
# (their first pooling op is elsewhere, e.g. SqueezeNet pools class maps).
_TV_TRUNK_MODULES = {"alexnet": "features", "squeezenet1_0": "features", "squeezenet1_1": "features"}
_POOL_MODULES = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten)
_POOL_FUNCTIONS = (F.adaptive_avg_pool2d, F.adaptive_max_pool2d, torch.flatten)


@dataclass(frozen=True)
class LayerPlan:
    """How to compute the requested `layers` for one arch.

    `order` has one entry per requested layer: None for the final features, else
    the index into ``forward_intermediates`` outputs. `indices` are those indices,
    sorted. `dims` are the channels each entry contributes.
    """

    order: tuple[int | None, ...]
    indices: tuple[int, ...]
    dims: tuple[int, ...]
    token_final: bool
    channels_last_output: bool

    @property
    def dim(self) -> int:
        return sum(self.dims)

    @property
    def needs_final(self) -> bool:
        return None in self.order


def is_torchvision(arch: str) -> bool:
    return arch.startswith("tv:")


@functools.lru_cache(maxsize=128)
def plan_layers(arch: str, layers: tuple[int, ...], input_size: int) -> LayerPlan:
    """Work out `layers` (distinct negative ints) for `arch` with a forward pass on the meta device."""
    with torch.device("meta"):
        model = _create_plain(arch).eval()
        x = torch.empty(1, 3, input_size, input_size)
        if is_torchvision(arch):
            if layers != (-1,):
                raise FeaturizerError(f"layers {layers}: torchvision models support only (-1,); use a timm model")
            final = _tv_trunk(model, arch[3:])(x)
            return LayerPlan((None,), (), (final.shape[1],), token_final=False, channels_last_output=False)
        return _timm_plan(model, arch, layers, x)


def _timm_plan(model: TimmModel, arch: str, layers: tuple[int, ...], x: torch.Tensor) -> LayerPlan:
    final = model.forward_features(x)
    token_final = final.ndim != 4
    nhwc = str(getattr(model, "output_fmt", "NCHW")).endswith("NHWC")
    if token_final:
        final_dim = model.forward_head(final, pre_logits=True).shape[-1]
    else:
        final_dim = final.shape[3] if nhwc else final.shape[1]
    if layers == (-1,):
        return LayerPlan((None,), (), (final_dim,), token_final, nhwc)
    if not hasattr(model, "forward_intermediates"):
        raise FeaturizerError(f"layers {layers}: {arch} has no forward_intermediates; only (-1,) works")
    last, intermediates = model.forward_intermediates(x)
    n = len(intermediates)
    skip_last = last is intermediates[-1]
    levels: list[int | None] = [None] + [i for i in reversed(range(n)) if not (skip_last and i == n - 1)]
    if -min(layers) > len(levels):
        raise FeaturizerError(f"layers {layers}: {arch} has {len(levels)} levels, -1 to -{len(levels)}")
    order = tuple(levels[-k - 1] for k in layers)
    dims = tuple(final_dim if i is None else intermediates[i].shape[1] for i in order)
    indices = tuple(sorted(i for i in order if i is not None))
    return LayerPlan(order, indices, dims, token_final, nhwc)


def build_network(spec: FeaturizerSpec) -> nn.Module:
    """The model for `spec` with its weights, cut to (N,3,H,W) float → (N, dim), eval, CPU."""
    plan = plan_layers(spec.arch, spec.layers, spec.input_size)
    if plan.dim != spec.dim:
        raise FeaturizerError(
            f"{spec.name}: this {spec.arch} gives {plan.dim} values but the spec says {spec.dim}; "
            "resolve the featurizer again with this version of imgfeat / timm"
        )
    model = _create_with_weights(spec).eval()
    if is_torchvision(spec.arch):
        name = spec.arch[3:]
        return _PooledTrunk(_tv_trunk(model, name), spec.pooling, spec.gem_p, _TV_TRUNK_MODULES.get(name, ""))
    return _TimmFeatures(model, plan, spec.pooling, spec.gem_p)


def checkpoint_state_dict(network: nn.Module) -> dict[str, torch.Tensor]:
    """The weights of a `build_network` result in its architecture's own naming:
    a checkpoint that ``weights=<file>`` loads back into the same arch (fine-tuning
    saves its backbone with this). A torchvision model's classifier is left out."""
    if isinstance(network, _TimmFeatures):
        return network.model.state_dict()
    if isinstance(network, _PooledTrunk):
        prefix = f"{network.prefix}." if network.prefix else ""
        return {prefix + k: v for k, v in network.trunk.state_dict().items()}
    raise TypeError(f"not a build_network result: {type(network).__name__}")


def _create_plain(arch: str) -> nn.Module:
    """The architecture with its own (unseeded) init and no pretrained weights."""
    if is_torchvision(arch):
        from torchvision.models import get_model

        return get_model(arch[3:], weights=None)
    return timm.create_model(arch, pretrained=False)


def _create_with_weights(spec: FeaturizerSpec) -> nn.Module:
    kind = wts.source_kind(spec.weights)
    if kind == "hub":
        return _create_from_hub(spec.arch, spec.weights.partition(":")[2])
    if kind == "random":
        with wts.seeded(int(spec.weights.partition(":")[2])):
            return _create_plain(spec.arch)
    model = _create_plain(spec.arch)
    package = wts.package_for(spec.weights)
    if package is not None:
        location = package.path()
        state = wts.state_dict_from_bytes(wts.read_verified(location, spec.weights_sha256), location)
        wts.load_checkpoint(model, wts.map_by_order(state, model.state_dict()), (), location)
    else:
        state = wts.state_dict_from_bytes(wts.read_verified(spec.weights, spec.weights_sha256), spec.weights)
        wts.load_checkpoint(model, state, _classifier_names(model, spec.arch), spec.weights)
    return model


def _create_from_hub(arch: str, tag: str) -> nn.Module:
    try:
        if is_torchvision(arch):
            from torchvision.models import get_model

            return get_model(arch[3:], weights=tag.removeprefix("tv:"))
        return timm.create_model(tag, pretrained=True)
    except Exception as exc:  # network, cache and hub errors come in many types
        raise FeaturizerError(
            f"could not load hub weights {tag} ({type(exc).__name__}: {exc}); hub weights need network access "
            "on every worker: use the offline default, weights='random', or a checkpoint path"
        ) from exc


def _classifier_names(model: TimmModel, arch: str) -> tuple[str, ...]:
    """Module names of the classifier, whose tensors a checkpoint may omit."""
    if is_torchvision(arch):
        return tuple(n for n in ("fc", "classifier", "heads", "head") if hasattr(model, n))
    names = model.pretrained_cfg.get("classifier") or ()
    return (names,) if isinstance(names, str) else tuple(names)


def _tv_trunk(model: nn.Module, name: str) -> nn.Module:
    """The part of a torchvision classifier that maps the image to its final feature map.

    A known submodule (`_TV_TRUNK_MODULES`), else the traced graph cut just before
    its first global pooling or flatten.
    """
    if name in _TV_TRUNK_MODULES:
        return model.get_submodule(_TV_TRUNK_MODULES[name])
    try:
        graph_module = torch.fx.symbolic_trace(model)
    except Exception as exc:  # tracing fails in model-specific ways
        raise FeaturizerError(f"cannot find the feature map of tv:{name} ({exc}); use a timm model") from exc
    graph = graph_module.graph
    feature = next((node.args[0] for node in graph.nodes if _is_global_pool(graph_module, node)), None)
    if feature is None:
        raise FeaturizerError(f"tv:{name} has no global pooling to cut at; use a timm model")
    output = next(node for node in graph.nodes if node.op == "output")
    output.args = (feature,)
    graph.eliminate_dead_code()
    graph_module.recompile()
    graph_module.delete_all_unused_submodules()
    return graph_module


def _is_global_pool(graph_module: torch.fx.GraphModule, node: torch.fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(node.target, str) and isinstance(graph_module.get_submodule(node.target), _POOL_MODULES)
    if node.op == "call_function":
        return node.target in _POOL_FUNCTIONS
    return node.op == "call_method" and node.target in ("mean", "flatten")


class _PooledTrunk(nn.Module):
    """A feature-map trunk followed by global pooling; `prefix` is the trunk's
    module name in the full torchvision model ("" for a traced graph, which keeps
    the original names)."""

    def __init__(self, trunk: nn.Module, pooling: str, gem_p: float, prefix: str = "") -> None:
        super().__init__()
        self.trunk = trunk
        self.prefix = prefix
        self.pooling = pooling
        self.gem_p = gem_p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return global_pool(self.feature_map(x), self.pooling, self.gem_p)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The (N, C, H, W) map `forward` pools."""
        return self.trunk(x)


class _TimmFeatures(nn.Module):
    """A timm model's pooled final features and/or pyramid stages, per a `LayerPlan`."""

    def __init__(self, model: TimmModel, plan: LayerPlan, pooling: str, gem_p: float) -> None:
        super().__init__()
        self.model: TimmModel = model
        self.plan = plan
        self.pooling = pooling
        self.gem_p = gem_p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plan = self.plan
        final: Any = None  # set whenever plan.order asks for it (None in the order)
        maps: dict[int, torch.Tensor] = {}
        if not plan.indices:
            final = self.model.forward_features(x)
        elif plan.needs_final:
            final, intermediates = self.model.forward_intermediates(x, indices=list(plan.indices))
            maps = dict(zip(plan.indices, intermediates, strict=True))
        else:
            intermediates = self.model.forward_intermediates(
                x, indices=list(plan.indices), intermediates_only=True, stop_early=True
            )
            maps = dict(zip(plan.indices, intermediates, strict=True))
        parts = [self._pool_final(final) if i is None else self._pool(maps[i]) for i in plan.order]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The (N, C, H, W) final map `forward` pools; only for a single `-1` layer of a CNN."""
        if self.plan.order != (None,) or self.plan.token_final:
            raise FeaturizerError("a feature map exists only for layers (-1,) of a model with a 2D final map")
        final = self.model.forward_features(x)
        return final.permute(0, 3, 1, 2) if self.plan.channels_last_output else final

    def _pool(self, feature_map: torch.Tensor) -> torch.Tensor:
        return global_pool(feature_map, self.pooling, self.gem_p)

    def _pool_final(self, final: torch.Tensor) -> torch.Tensor:
        if self.plan.token_final:
            return self.model.forward_head(final, pre_logits=True).float()
        if self.plan.channels_last_output:
            final = final.permute(0, 3, 1, 2)
        return self._pool(final)
