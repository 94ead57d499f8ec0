r"""Regression objectives: the network at :math:`(x_t, t)` regresses one quantity of the path.

With :math:`(x_t, u_t)` drawn from the path for the coupled pairs, the loss is

.. math:: \mathcal{L}(\theta) = \frac{\sum_i w_i\,\tfrac{1}{D}\|f_\theta(x_t^i, t^i) - y^i\|^2}{\sum_i w_i},

with pair weights :math:`w_i` of the coupling (1 without) and the target :math:`y` one of

- ``velocity``: :math:`y = u_t` (flow matching);
- ``noise``, ``data``, ``score``: :math:`y` = the conversion of :math:`u_t` by
  :func:`monge.predictions.convert` on the path's schedule :math:`(\alpha_t, \sigma_t)`, e.g.
  :math:`\hat x_0 = (\alpha_t u_t - \dot\alpha_t x_t)/\Delta`, :math:`\Delta = \alpha_t\dot\sigma_t -
  \sigma_t\dot\alpha_t`. The conversion is affine in :math:`u_t` at fixed :math:`x_t`, so the
  regression's optimum :math:`\mathbb E[y \mid x_t]` is the conversion of the marginal velocity:
  the model drives every sampler through :mod:`monge.predictions`. On a noise-free affine path
  the targets are :math:`x_0`, :math:`x_1` and :math:`-x_0/\sigma_t`.

The ``score`` target grows as :math:`1/\sigma_t` near the data (:math:`t \to 1`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from .._validation import check_same_shape
from ..paths import PathSample, expand_t
from ..predictions import convert_with
from .base import OBJECTIVES, Net, Objective

__all__ = ["regression_loss", "RegressionObjective", "VelocityObjective", "NoiseObjective", "DataObjective",
           "ScoreObjective"]


def regression_loss(pred: Tensor, target: Tensor, weights: Tensor | None = None) -> Tensor:
    """Weighted mean squared error, averaged over features then over the batch (weights self-normalised)."""
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


class RegressionObjective(Objective):
    """Regress ``net(x_t, t[, labels])`` onto the path's target converted to :attr:`prediction`."""

    prediction: ClassVar[str] = "velocity"

    def target(self, ps: PathSample, path: Any) -> Tensor:
        """The regression target of the path sample ``ps``: its velocity converted to :attr:`prediction`."""
        if self.prediction == "velocity":
            return ps.target
        schedule = getattr(path, "schedule", None)
        if schedule is None:
            raise ValueError(f"objective {self.prediction!r} converts the path's velocity with its alpha/sigma "
                             f"schedule; path {type(path).__name__} has none: use an affine path (linear, vp, ...)")
        tt = expand_t(ps.t, ps.x_t)
        return convert_with(ps.target, "velocity", self.prediction, ps.x_t, schedule.alpha(tt), schedule.sigma(tt),
                            schedule.d_alpha(tt), schedule.d_sigma(tt))

    def loss(self, net: Net, pairs: Any, t: Tensor, path: Any, *, labels: Tensor | None = None,
             generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        ps = path.sample(pairs.x0, pairs.x1, t, generator=generator)
        pred = net(ps.x_t, ps.t) if labels is None else net(ps.x_t, ps.t, labels)
        return regression_loss(pred.float(), self.target(ps, path), pairs.weights), {}


@OBJECTIVES.register("velocity")
class VelocityObjective(RegressionObjective):
    """Velocity regression (flow matching); the model predicts :math:`u_t`."""

    prediction = "velocity"


@OBJECTIVES.register("noise")
class NoiseObjective(RegressionObjective):
    r"""Noise regression (the :math:`\epsilon`-prediction of DDPM); the model predicts :math:`\hat x_0`."""

    prediction = "noise"


@OBJECTIVES.register("data")
class DataObjective(RegressionObjective):
    r"""Data regression (the ":math:`x_0`-prediction" of diffusion papers); the model predicts :math:`\hat x_1`."""

    prediction = "data"


@OBJECTIVES.register("score")
class ScoreObjective(RegressionObjective):
    r"""Score regression (denoising score matching); the model predicts :math:`\nabla\log p_t = -\hat x_0/\sigma_t`."""

    prediction = "score"
