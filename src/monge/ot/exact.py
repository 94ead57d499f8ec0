r"""Exact optimal transport between point clouds.

The assignment problem :math:`\min_{\sigma \in S_n} \sum_i C_{i\sigma(i)}` is solved on the CPU
by SciPy's ``linear_sum_assignment`` (the cost matrix is copied to NumPy); results come back on
the input's device.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from .._validation import check_batch

__all__ = ["squared_euclidean_cost", "assignment"]


def squared_euclidean_cost(x: Tensor, y: Tensor) -> Tensor:
    r"""Cost matrix :math:`C_{ij} = \|x_i - y_j\|^2` of flattened ``(n, *shape)``, ``(m, *shape)``."""
    check_batch(x, "x")
    check_batch(y, "y")
    xf, yf = x.reshape(x.shape[0], -1), y.reshape(y.shape[0], -1)
    if xf.shape[1] != yf.shape[1]:
        raise ValueError(f"x and y must have the same feature size, got {xf.shape[1]} and {yf.shape[1]}")
    cost = (xf * xf).sum(1, keepdim=True) + (yf * yf).sum(1)[None, :] - 2.0 * xf @ yf.T
    return cost.clamp_min_(0.0)


def assignment(cost: Tensor) -> Tensor:
    r"""Optimal permutation ``perm`` with :math:`\sum_i C_{i, perm[i]}` minimal, for a square cost."""
    if not torch.is_tensor(cost) or cost.dim() != 2 or cost.shape[0] != cost.shape[1]:
        raise ValueError(f"cost must be a square 2D tensor, got shape {tuple(getattr(cost, 'shape', ()))}")
    if not bool(torch.isfinite(cost).all()):
        raise ValueError("cost contains NaN/Inf values")
    c = cost.detach().to("cpu", torch.float64).numpy()
    _, cols = linear_sum_assignment(c)
    return torch.from_numpy(np.ascontiguousarray(cols)).to(cost.device)
