"""Input checks shared by the OT solvers (private). Each raises ``ValueError`` naming the argument."""

from __future__ import annotations

import torch
from torch import Tensor

from .._validation import check_positive

__all__ = ["check_weights", "check_cost", "check_positive_float"]

#: Tolerance on ``|sum(w) - 1|`` (relative to the dtype's resolution it is generous).
SUM_TOL = 1e-4


def check_positive_float(value: object, name: str, allow_inf: bool = False) -> float:
    """Return ``float(value)`` or raise unless it is a positive number (finite unless ``allow_inf``)."""
    return check_positive(value, name, allow_inf=allow_inf)


def check_cost(cost: object, name: str = "cost", batched: bool = False) -> Tensor:
    """Validate a finite floating cost matrix ``(n, m)`` (or ``(B, n, m)`` when ``batched``)."""
    if not torch.is_tensor(cost):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(cost).__name__}")
    dims = (2, 3) if batched else (2,)
    if cost.dim() not in dims:
        want = "(n, m) or (batch, n, m)" if batched else "(n, m)"
        raise ValueError(f"{name} must have shape {want}, got {tuple(cost.shape)}")
    if cost.shape[-1] == 0 or cost.shape[-2] == 0 or cost.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(cost.shape)}); both point sets need >= 1 point")
    if not cost.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got dtype {cost.dtype}; call .float()")
    if not bool(torch.isfinite(cost).all()):
        bad = int((~torch.isfinite(cost)).sum())
        raise ValueError(f"{name} contains {bad} NaN/Inf values; clean the inputs first")
    return cost


def check_weights(
    w: Tensor | None,
    n: int,
    name: str,
    like: Tensor,
    batch: tuple[int, ...] = (),
) -> Tensor:
    """Return probability weights of shape ``(*batch, n)`` on ``like``'s device and dtype.

    ``None`` gives uniform weights ``1/n``. A tensor must be finite, non-negative, of length
    ``n`` in its last dim (a leading batch dim may be omitted; it is broadcast) and sum to one
    within ``SUM_TOL``; it is then renormalised exactly.
    """
    if w is None:
        return torch.full((*batch, n), 1.0 / n, dtype=like.dtype, device=like.device)
    if not torch.is_tensor(w):
        raise ValueError(f"{name} must be a torch.Tensor or None, got {type(w).__name__}")
    if w.numel() == 0:
        raise ValueError(f"{name} is empty; pass one weight per point ({n}) or None for uniform")
    if w.dim() == 0 or w.shape[-1] != n or (w.dim() > 1 and tuple(w.shape[:-1]) != batch):
        raise ValueError(
            f"{name} must have shape {(*batch, n) if batch else (n,)} (one weight per point), "
            f"got {tuple(w.shape)}"
        )
    if w.dim() > 1 + len(batch):
        raise ValueError(f"{name} has too many dims: {tuple(w.shape)}")
    if not w.is_floating_point():
        w = w.to(like.dtype)
    if bool(torch.isnan(w).any()):
        raise ValueError(f"{name} contains NaN; weights must be finite and non-negative")
    if not bool(torch.isfinite(w).all()):
        raise ValueError(f"{name} contains Inf; weights must be finite and non-negative")
    if bool((w < 0).any()):
        raise ValueError(f"{name} has negative entries (min {float(w.min()):.3g}); weights must be >= 0")
    s = w.sum(-1, keepdim=True)
    if bool(((s - 1.0).abs() > SUM_TOL).any()):
        worst = float(s.flatten()[(s.flatten() - 1).abs().argmax()])
        raise ValueError(
            f"{name} must sum to 1 (got {worst:.6g}); normalise it with {name} / {name}.sum()"
        )
    w = (w / s).to(device=like.device, dtype=like.dtype)
    return w.expand(*batch, n) if batch else w
