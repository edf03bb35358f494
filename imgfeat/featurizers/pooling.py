"""Global pooling of a feature map (N, C, H, W) into a vector (N, C).

Owns: the pooling kinds a spec may name, their exact formulas, and
`pool_shares`: how much of each pooled value each map position contributed
(what activation maps spread a pooled feature's importance with). Must not:
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


def pool_shares(x: torch.Tensor, kind: str, p: float = 3.0) -> torch.Tensor:
    """(N, C, H, W) non-negative weights summing to 1 over H, W: each position's share of
    channel c's pooled value. avg: x / sum x (clamped at 0); max: the argmax position;
    avgmax: the mean of those two; gem: x^p / sum x^p. A channel that is zero
    everywhere spreads evenly."""
    x = x.float()
    flat = x.flatten(2)
    uniform = torch.full_like(flat, 1.0 / flat.shape[2])

    def normalized(w: torch.Tensor) -> torch.Tensor:
        total = w.sum(dim=2, keepdim=True)
        return torch.where(total > 0, w / total.clamp(min=1e-30), uniform)

    if kind == "avg":
        shares = normalized(flat.clamp(min=0))
    elif kind == "max":
        shares = torch.zeros_like(flat).scatter_(2, flat.argmax(dim=2, keepdim=True), 1.0)
    elif kind == "avgmax":
        return 0.5 * (pool_shares(x, "avg") + pool_shares(x, "max"))
    elif kind == "gem":
        shares = normalized(flat.clamp(min=GEM_EPS).pow(p))
    else:
        raise ValueError(f"unknown pooling {kind!r}; expected one of {', '.join(POOLINGS)}")
    return shares.view_as(x)
