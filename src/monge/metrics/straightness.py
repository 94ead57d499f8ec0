r"""Straightness of sampled ODE trajectories (Liu et al., "Flow straight and fast", ICLR 2023).

.. math:: S(Z) = \int_0^1 \mathbb E\big\|(Z_1 - Z_0) - \dot Z_t\big\|^2\,dt,

zero exactly when every trajectory is a straight line traversed at constant speed, which is
what lets a one-step Euler sampler be exact (rectified flow). Estimated from a discretised
trajectory by finite differences :math:`\dot Z \approx \Delta Z_k / \Delta t_k` on each step,
weighted by :math:`\Delta t_k`: exact for piecewise-linear (e.g. Euler) trajectories.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._validation import check_finite

__all__ = ["straightness"]


def straightness(trajectory: Tensor, times: Tensor) -> float:
    r"""Path straightness :math:`S` of a trajectory ``(n_times, batch, *shape)`` at ``times`` ``(n_times,)``.

    .. math:: \hat S = \frac1B \sum_b \frac1{|t_K - t_0|} \sum_{k=1}^{K} |\Delta t_k|\,
              \Big\| \bar v_b - \frac{\Delta z_{b,k}}{\Delta t_k} \Big\|^2,
              \qquad \bar v_b = \frac{z_{b,K} - z_{b,0}}{t_K - t_0}.

    On ``times`` spanning ``[0, 1]`` this is Liu et al.'s :math:`S`; on another span it is the
    time average over that span. ``times`` must be strictly monotone (increasing or decreasing);
    the squared norm sums over all sample dimensions.
    """
    check_finite(trajectory, "trajectory")
    check_finite(times, "times")
    if trajectory.dim() < 3:
        raise ValueError(
            f"trajectory must have shape (n_times, batch, *shape), got {tuple(trajectory.shape)}"
        )
    n_times, batch = trajectory.shape[0], trajectory.shape[1]
    if n_times < 2 or batch < 1:
        raise ValueError(f"trajectory needs at least 2 time points and 1 sample, got shape {tuple(trajectory.shape)}")
    if times.shape != (n_times,):
        raise ValueError(f"times must have shape ({n_times},) to match trajectory, got {tuple(times.shape)}")
    z = trajectory.detach().reshape(n_times, batch, -1).to(torch.float64)
    t = times.detach().to(device=z.device, dtype=torch.float64)
    dt = t[1:] - t[:-1]
    if not (bool((dt > 0).all()) or bool((dt < 0).all())):
        raise ValueError("times must be strictly increasing or strictly decreasing (no repeated times)")
    span = t[-1] - t[0]
    mean_velocity = (z[-1] - z[0]) / span  # (batch, d)
    step_velocity = (z[1:] - z[:-1]) / dt[:, None, None]  # (K, batch, d)
    sq = (step_velocity - mean_velocity).square().sum(-1)  # (K, batch)
    return float((dt.abs()[:, None] * sq).sum(0).mean() / span.abs())
