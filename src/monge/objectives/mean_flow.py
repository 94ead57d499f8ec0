r"""MeanFlow (Geng et al. 2025, "Mean Flows for One-step Generative Modeling"): a flow map trained from scratch.

The network :math:`u_\theta(x, t, r)` predicts the average velocity between the current time
:math:`t` and the end time :math:`r \ge t` (monge's time: ``t = 0`` noise, ``t = 1`` data),

.. math:: u(x_t, t, r) = \frac{1}{r - t}\int_t^r v(x_\tau, \tau)\,d\tau,\qquad x_r = x_t + (r - t)\,u(x_t, t, r),

with :math:`u(x, t, t) = v(x, t)`. Differentiating :math:`(r - t)\,u = x_r - x_t` in :math:`t`
along the trajectory gives the MeanFlow identity

.. math:: u(x_t, t, r) = v(x_t, t) - (t - r)\,\frac{d}{dt}u(x_t, t, r),\qquad
          \frac{d}{dt}u = v\cdot\partial_x u + \partial_t u,

whose total derivative is one Jacobian-vector product (``torch.func.jvp``) of the network at
:math:`(x_t, t, r)` with tangents :math:`(v_t, 1, 0)`. The loss regresses :math:`u_\theta` onto
:math:`u_{\rm tgt} = v_t - (t - r)\,\mathrm{sg}(\tfrac{d}{dt}u_\theta)`, with the pairs of the
run's coupling and :math:`(x_t, v_t)` of its path. Runs are sampled with the ``mean_flow`` sampler.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .._validation import check_number
from ..paths import ProbPath, expand_t
from .base import OBJECTIVES, FlowMapObjective, Net, two_time_net, weighted_mean

__all__ = ["MeanFlowObjective", "mean_flow_target"]


def mean_flow_target(net: Callable[[Tensor, Tensor, Tensor], Tensor], x_t: Tensor, t: Tensor, r: Tensor,
                     v: Tensor) -> tuple[Tensor, Tensor]:
    r"""``(u, u_tgt)``: the network's average velocity :math:`u_\theta(x_t, t, r)` (with its graph)
    and the MeanFlow target :math:`v - (t - r)\,\mathrm{sg}(\tfrac{d}{dt}u_\theta)` (detached), the
    total derivative :math:`\tfrac{d}{dt}u = v\cdot\partial_x u + \partial_t u` by one forward-mode
    JVP of ``net(x, t, r)`` with tangents :math:`(v, 1, 0)`."""
    u, dudt = torch.func.jvp(net, (x_t, t, r), (v, torch.ones_like(t), torch.zeros_like(r)))[:2]  # no aux
    target = v - expand_t(t - r, v) * dudt
    return u, target.detach()


@OBJECTIVES.register("mean_flow")
class MeanFlowObjective(FlowMapObjective):
    r"""MeanFlow (Geng et al. 2025): regress :math:`u_\theta(x_t, t, r)` onto
    :math:`v_t - (t - r)\,\mathrm{sg}(\tfrac{d}{dt}u_\theta)` with adaptive weights.

    Times: two logit-normal draws :math:`\operatorname{sigmoid}(\mathcal N(\mu, \sigma^2))`, the
    smaller is :math:`t`, the larger :math:`r` (so :math:`r \ge t`, a jump towards the data);
    on a share ``1 - ratio`` of the batch :math:`r = t` (plain flow matching, since
    :math:`u(x, t, t) = v`). Defaults are the paper's ImageNet settings: ``ratio=0.25``
    (25 % of pairs with :math:`r \ne t`), :math:`\sigma = 1` and :math:`\mu = 0.4`, the paper's
    :math:`\mu = -0.4` on its reversed time (there :math:`t = 1` is noise).

    Adaptive weighting: with :math:`\Delta = u_\theta - u_{\rm tgt}` and
    :math:`\|\Delta\|^2` summed over features, the per-sample loss is
    :math:`\mathrm{sg}(w)\,\|\Delta\|^2`, :math:`w = 1/(\|\Delta\|^2 + c)^p` (``p=1``, ``c=1e-3``
    as in the paper; ``p=0`` is the plain squared error, ``p=0.5`` a pseudo-Huber loss). Pair
    weights of the coupling (W-CFM) multiply it. The *value* returned is the plain mean squared
    error (over features and batch, as the velocity loss) so that logs compare across ``p``; the
    *gradient* is that of the adaptively weighted loss, whose value is logged as ``adaptive_loss``.

    Cost: the JVP evaluates the network and its tangent together, about two to three forward
    passes per step (``bench/few_step.py`` measures it).
    """

    sampler_kind = "mean_flow"

    def __init__(self, ratio: float = 0.25, mu: float = 0.4, sigma: float = 1.0, p: float = 1.0,
                 c: float = 1e-3) -> None:
        self.ratio = check_number(ratio, "mean_flow ratio", 0.0, 1.0)
        self.mu = check_number(mu, "mean_flow mu", -math.inf, math.inf, low_open=True, high_open=True)
        self.sigma = check_number(sigma, "mean_flow sigma", 0.0, math.inf, low_open=True, high_open=True)
        self.p = check_number(p, "mean_flow p", 0.0, math.inf, high_open=True)
        self.c = check_number(c, "mean_flow c", 0.0, math.inf, low_open=True, high_open=True)

    def sample_times(self, n: int, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
        """``(t, r)`` of ``n`` samples, ``t <= r`` (see the class docstring)."""
        a = torch.sigmoid(self.mu + self.sigma * torch.randn(2, n, generator=generator, dtype=torch.float64))
        t, r = a.min(0).values, a.max(0).values
        same = torch.rand(n, generator=generator, dtype=torch.float64) >= self.ratio
        r = torch.where(same, t, r)
        return t.to(device=device, dtype=dtype), r.to(device=device, dtype=dtype)

    def loss(self, net: Net, pairs: Any, t: Tensor, path: ProbPath, *, labels: Tensor | None = None,
             generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        x0, x1 = pairs.x0, pairs.x1
        t, r = self.sample_times(x0.shape[0], generator, x0.device, x0.dtype)
        ps = path.sample(x0, x1, t, generator=generator)
        if isinstance(net, torch.nn.parallel.DistributedDataParallel):
            # DDP's forward does not run under a functorch transform: the target by the JVP of the
            # wrapped module (no graph), then u by a plain forward through DDP (one forward more)
            with torch.no_grad():
                _, target = mean_flow_target(two_time_net(net.module, labels), ps.x_t, ps.t, r, ps.target)
            u = two_time_net(net, labels)(ps.x_t, ps.t, r)
        else:
            u, target = mean_flow_target(two_time_net(net, labels), ps.x_t, ps.t, r, ps.target)
        sq = (u.float() - target.float()).pow(2).reshape(u.shape[0], -1)
        norm2 = sq.sum(1)
        adaptive = weighted_mean(norm2 / (norm2.detach() + self.c).pow(self.p), pairs.weights)
        mse = weighted_mean(sq.mean(1), pairs.weights).detach()
        return adaptive + (mse - adaptive.detach()), {"adaptive_loss": float(adaptive.detach())}
