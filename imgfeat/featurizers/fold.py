"""Fold eval-mode BatchNorm into the convolution that feeds it.

Owns: finding conv -> BN pairs in any nn.Module, rewriting the conv's weight and
bias (``torch.nn.utils.fusion.fuse_conv_bn_weights``), removing the BN, and
checking that the folded network gives the same output. Must not: know model
names, weights sources or Spark; it works on whatever module it is given.

How pairs are found: one forward pass with hooks. A BN folds into a conv when,
on every call, the BN's input is the very tensor object the conv just returned,
unmodified (same tensor version), and the conv feeds nothing else through a BN.
This follows the real data flow, so pre-activation blocks (BN before conv, as in
DenseNet's ``norm1``) are left alone and only true conv -> BN chains fold.
A conv whose output also goes elsewhere (rare) would fold wrongly, which is why
the folded output is compared with the original one and a mismatch raises.

Folded BN layers are replaced: ``nn.BatchNorm2d`` by ``nn.Identity``, timm's
``BatchNormAct2d`` (BN + drop + activation) by ``nn.Sequential(drop, act)``.
"""

from __future__ import annotations

import weakref
from collections import defaultdict
from typing import cast

import torch
from timm.layers import BatchNormAct2d
from timm.layers.conv2d_same import Conv2dSame, Conv2dSameExport
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from imgfeat.errors import FeaturizerError

# Exact types only: subclasses such as timm's ScaledStdConv2d transform their
# weight in forward, so a folded weight would be wrong for them.
_CONV_TYPES = (nn.Conv2d, Conv2dSame, Conv2dSameExport)
_BN_TYPES = (nn.BatchNorm2d, BatchNormAct2d)

RELATIVE_TOLERANCE = 1e-3
"""Largest allowed |folded - original| relative to max(1, max |original|)."""


def fold_batchnorm(net: nn.Module, example: torch.Tensor) -> int:
    """Fold every conv -> BN pair of `net` in place; return how many were folded.

    `net` must be in eval mode; `example` is one input batch on net's device,
    used to trace the data flow and to check the result.
    Raises FeaturizerError if folding changed the output.
    """
    if net.training:
        raise ValueError("fold_batchnorm needs a model in eval mode")
    with torch.no_grad():  # not inference_mode: tensor versions are needed
        pairs, reference = _find_pairs(net, example)
        for conv, bn in pairs:
            _fold_pair(cast(nn.Conv2d, conv), cast(nn.BatchNorm2d, bn))
            _replace(net, bn, _bn_replacement(bn))
        folded = net(example)
    scale = max(1.0, reference.abs().max().item())
    error = (folded - reference).abs().max().item()
    if error > RELATIVE_TOLERANCE * scale:
        raise FeaturizerError(
            f"fold_bn changed this model's output by {error:.3g} (scale {scale:.3g}); "
            "its BatchNorm layers cannot be folded safely: use fold_bn=False"
        )
    return len(pairs)


def _find_pairs(net: nn.Module, example: torch.Tensor) -> tuple[list[tuple[nn.Module, nn.Module]], torch.Tensor]:
    """Run `net` once with hooks; return (conv, bn) pairs and the output."""
    produced: dict[int, tuple[weakref.ref, int, nn.Module]] = {}
    conv_calls: dict[nn.Module, int] = defaultdict(int)
    bn_sources: dict[nn.Module, list[nn.Module | None]] = defaultdict(list)

    def after_conv(module: nn.Module, _args: tuple, out: torch.Tensor) -> None:
        conv_calls[module] += 1
        produced[id(out)] = (weakref.ref(out), out._version, module)

    def before_bn(module: nn.Module, args: tuple) -> None:
        x = args[0]
        record = produced.get(id(x))
        same = record is not None and record[1] == x._version and record[0]() is x
        bn_sources[module].append(record[2] if record is not None and same else None)

    handles = []
    for module in net.modules():
        if type(module) in _CONV_TYPES:
            handles.append(module.register_forward_hook(after_conv))
        elif type(module) in _BN_TYPES:
            handles.append(module.register_forward_pre_hook(before_bn))
    try:
        output = net(example)
    finally:
        for handle in handles:
            handle.remove()

    pairs = []
    for bn, sources in bn_sources.items():
        conv = sources[0]
        if conv is not None and all(s is conv for s in sources) and conv_calls[conv] == len(sources):
            pairs.append((conv, bn))
    return pairs, output


def _fold_pair(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    assert bn.running_mean is not None and bn.running_var is not None  # eval-mode BN found by tracing has them
    weight, bias = fuse_conv_bn_weights(
        conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
    )
    conv.weight = weight
    conv.bias = bias


def _bn_replacement(bn: nn.Module) -> nn.Module:
    if isinstance(bn, BatchNormAct2d):
        return nn.Sequential(bn.drop, bn.act)
    return nn.Identity()


def _replace(net: nn.Module, old: nn.Module, new: nn.Module) -> None:
    """Put `new` wherever `old` is registered (a module may be shared)."""
    for name, module in list(net.named_modules(remove_duplicate=False)):
        if module is old:
            parent_name, _, attr = name.rpartition(".")
            setattr(net.get_submodule(parent_name), attr, new)
