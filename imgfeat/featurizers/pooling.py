"""Global pooling of a feature map (N, C, H, W) into a vector (N, C).

Owns: the pooling kinds a spec may name and their exact formulas. Must not:
know about models, weights or Spark.

- ``avg``: mean over H, W.
- ``max``: max over H, W.
- ``avgmax``: 0.5 * (avg + max), the same as timm's ``adaptive_avgmax_pool2d``
  (timm's ``catavgmax``, which concatenates and doubles the dim, is not offered).
- ``gem``: generalized mean, ``mean(clamp(x, eps) ** p) ** (1 / p)`` with
  eps = 1e-6 (Radenović et al.); p = 1 is avg of the clamped map, large p tends
  to max. The clamp makes negative activations count as eps.
"""

from __future__ import annotations

import torch

POOLINGS = ("avg", "max", "avgmax", "gem")
GEM_EPS = 1e-6


def global_pool(x: torch.Tensor, kind: str, p: float = 3.0) -> torch.Tensor:
    """Pool an (N, C, H, W) map to (N, C) with `kind` (one of `POOLINGS`).

    Computes in float32 even under autocast, so GeM's power cannot overflow fp16.
    """
    x = x.float()
    if kind == "avg":
        return x.mean(dim=(2, 3))
    if kind == "max":
        return x.amax(dim=(2, 3))
    if kind == "avgmax":
        return 0.5 * (x.mean(dim=(2, 3)) + x.amax(dim=(2, 3)))
    if kind == "gem":
        return x.clamp(min=GEM_EPS).pow(p).mean(dim=(2, 3)).pow(1.0 / p)
    raise ValueError(f"unknown pooling {kind!r}; expected one of {', '.join(POOLINGS)}")
