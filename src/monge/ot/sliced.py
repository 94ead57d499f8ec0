r"""Sliced Wasserstein distance.

.. math:: SW_p(\mu, \nu) = \Big(\mathbb{E}_{\theta \sim U(S^{d-1})} W_p^p(\theta_\# \mu, \theta_\# \nu)\Big)^{1/p},

estimated with ``n_projections`` random directions; each 1D problem is solved exactly by
sorting. Differentiable in both inputs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._validation import check_batch

__all__ = ["sliced_wasserstein"]


def sliced_wasserstein(
    x: Tensor,
    y: Tensor,
    n_projections: int = 256,
    p: float = 2.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Monte Carlo sliced :math:`W_p` between equal-size uniform clouds ``(n, *shape)``."""
    check_batch(x, "x")
    check_batch(y, "y")
    xf, yf = x.reshape(x.shape[0], -1), y.reshape(y.shape[0], -1)
    if xf.shape != yf.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    theta = torch.randn(xf.shape[1], n_projections, generator=generator, dtype=xf.dtype)
    theta = (theta / theta.norm(dim=0, keepdim=True)).to(xf.device)
    xp, _ = torch.sort(xf @ theta, dim=0)
    yp, _ = torch.sort(yf @ theta, dim=0)
    return (xp - yp).abs().pow(p).mean().pow(1.0 / p)
