r"""Sliced Wasserstein distance (Rabin et al. 2011; Bonneel et al. 2015).

.. math:: SW_p(\mu, \nu) = \Big(\mathbb{E}_{\theta \sim U(S^{d-1})}
          W_p^p(\theta_\# \mu, \theta_\# \nu)\Big)^{1/p},

estimated with ``n_projections`` random directions; each 1D problem between equal-size
uniform clouds is solved exactly by sorting,
:math:`W_p^p = \frac1n \sum_i |x_{(i)} - y_{(i)}|^p`. Differentiable in both inputs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._validation import check_batch, check_positive_int
from ._checks import check_positive_float

__all__ = ["sliced_wasserstein", "random_directions"]


def random_directions(
    d: int,
    n_projections: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """``(d, n_projections)`` directions drawn uniformly on the sphere :math:`S^{d-1}`.

    Drawn on the generator's device (CPU by default) so a seed gives the same directions
    whatever ``device`` they are moved to.
    """
    d = check_positive_int(d, "d")
    n_projections = check_positive_int(n_projections, "n_projections")
    gen_device = generator.device if generator is not None else torch.device("cpu")
    theta = torch.randn(d, n_projections, generator=generator, dtype=dtype, device=gen_device)
    theta = theta / theta.norm(dim=0, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
    return theta.to(device) if device is not None else theta


def sliced_wasserstein(
    x: Tensor,
    y: Tensor,
    n_projections: int = 256,
    p: float = 2.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Monte Carlo sliced :math:`W_p` between equal-size uniform clouds ``(n, *shape)``.

    Parameters
    ----------
    x, y : Tensor
        ``(n, *shape)`` point clouds (flattened to ``(n, d)``), same shape, finite.
    n_projections : int
        Number of random directions.
    p : float
        Order, ``p >= 1``.
    generator : torch.Generator, optional
        Source of the random directions (the same seed gives the same directions, so the
        estimate is symmetric in ``x`` and ``y`` and zero for ``x == y``).

    Returns
    -------
    Tensor
        Scalar :math:`SW_p` on ``x``'s device and dtype, differentiable in ``x`` and ``y``.
    """
    check_batch(x, "x")
    check_batch(y, "y")
    n_projections = check_positive_int(n_projections, "n_projections")
    p = check_positive_float(p, "p")
    if p < 1:
        raise ValueError(f"p must be >= 1 for a Wasserstein distance, got {p}")
    xf, yf = x.reshape(x.shape[0], -1), y.reshape(y.shape[0], -1)
    if xf.shape != yf.shape:
        raise ValueError(
            f"x and y must have the same shape (equal-size clouds), got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if x.dtype != y.dtype or not x.is_floating_point():
        raise ValueError(f"x and y must share one floating dtype, got {x.dtype} and {y.dtype}")
    theta = random_directions(xf.shape[1], n_projections, generator, xf.dtype, xf.device)
    xp, _ = torch.sort(xf @ theta, dim=0)
    yp, _ = torch.sort(yf @ theta, dim=0)
    return (xp - yp).abs().pow(p).mean().pow(1.0 / p)
