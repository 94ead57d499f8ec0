r"""Training objectives.

Flow matching regresses a network :math:`v_\theta(x_t, t)` onto the conditional velocity

.. math:: \mathcal{L}(\theta) = \frac{1}{B}\sum_{i=1}^{B} w_i\,\frac{1}{D}\|v_\theta(x_t^i, t^i) - u_t^i\|^2,

with optional per-pair weights :math:`w_i` normalised to mean 1 (e.g. W-CFM's Gibbs weights).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._validation import check_same_shape
from .registry import Registry

__all__ = ["OBJECTIVES", "velocity_loss", "VelocityObjective"]

OBJECTIVES: Registry["VelocityObjective"] = Registry("objective")


def velocity_loss(pred: Tensor, target: Tensor, weights: Tensor | None = None) -> Tensor:
    """Weighted mean squared error, averaged over features then over the batch."""
    check_same_shape(pred, target, "pred", "target")
    per_sample = (pred - target).pow(2).reshape(pred.shape[0], -1).mean(1)
    if weights is None:
        return per_sample.mean()
    if weights.shape != (pred.shape[0],):
        raise ValueError(f"weights must have shape ({pred.shape[0]},), got {tuple(weights.shape)}")
    total = weights.sum()
    # non-negative (NaN fails >= 0) with a finite sum  <=>  finite and non-negative
    if not bool((weights >= 0).all()) or not bool(torch.isfinite(total)):
        raise ValueError("weights must be finite and non-negative")
    if total <= 0:
        raise ValueError("weights sum to zero")
    return torch.dot(weights.to(per_sample.dtype), per_sample) / total


@OBJECTIVES.register("velocity")
class VelocityObjective:
    """Velocity regression (flow matching); the model predicts :math:`u_t`."""

    prediction = "velocity"

    def __call__(self, pred: Tensor, target: Tensor, weights: Tensor | None = None) -> Tensor:
        return velocity_loss(pred, target, weights)
