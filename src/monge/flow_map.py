r"""Flow-map objectives: networks of two times trained from scratch for one- and few-step sampling.

A flow map jumps along the probability-flow ODE :math:`\dot x = v(x, t)` of the path in one step.
Its network :math:`u_\theta(x, t, r)` (a model built with ``second_time=True``) predicts the
*average velocity* between the current time :math:`t` and the end time :math:`r`,

.. math:: u(x_t, t, r) = \frac{1}{r - t}\int_t^r v(x_\tau, \tau)\,d\tau = \frac{x_r - x_t}{r - t},
          \qquad x_r = x_t + (r - t)\,u(x_t, t, r),

in monge's time (``t = 0`` noise, ``t = 1`` data: sampling jumps forward, :math:`r > t`), with
:math:`u(x, t, t) = v(x, t)`. Two objectives are registered beside ``velocity`` in
:data:`~monge.objectives.OBJECTIVES`; both take their pairs :math:`(x_0, x_1)` from the run's
coupling and their point :math:`x_t` and conditional velocity :math:`v_t = \tfrac{d}{dt}x_t` from
its path, so they compose with every coupling and every path of :mod:`monge.paths`.

- ``mean_flow`` (Geng et al. 2025, "Mean Flows for One-step Generative Modeling"). Differentiating
  :math:`(r - t)\,u = x_r - x_t` in :math:`t` along the trajectory gives the MeanFlow identity

  .. math:: u(x_t, t, r) = v(x_t, t) - (t - r)\,\frac{d}{dt}u(x_t, t, r),\qquad
            \frac{d}{dt}u = v\cdot\partial_x u + \partial_t u,

  whose total derivative is one Jacobian-vector product (``torch.func.jvp``) of the network at
  :math:`(x_t, t, r)` with tangents :math:`(v_t, 1, 0)`. The loss regresses
  :math:`u_\theta` onto :math:`u_{\rm tgt} = v_t - (t - r)\,\mathrm{sg}(\tfrac{d}{dt}u_\theta)`.
- ``shortcut`` (Frans et al. 2024, "One Step Diffusion via Shortcut Models"): the step
  :math:`d = r - t` conditions the network; a share of the batch is flow matching at
  :math:`d = 0` (:math:`u(x_t, t, t) \approx v_t`), the rest learns self-consistency of two half
  steps, :math:`u(x_t, t, 2d) \approx \mathrm{sg}\big(\tfrac12(u(x_t, t, d) + u(x'_{t+d}, t + d, d))\big)`,
  :math:`x'_{t+d} = x_t + d\,u(x_t, t, d)`, on dyadic steps :math:`2d \in \{1, \tfrac12, \dots,
  1/N\}` (``max_steps`` :math:`N`).

Sample their runs with the ``mean_flow`` and ``shortcut`` samplers of :mod:`monge.samplers`
(:data:`SAMPLER_OF`); :func:`check_sampler` says which sampler a run takes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ._validation import check_number, check_positive_int
from .objectives import OBJECTIVES
from .paths import ProbPath, expand_t

__all__ = [
    "SAMPLER_OF",
    "FlowMapObjective",
    "MeanFlowObjective",
    "ShortcutObjective",
    "check_model",
    "check_sampler",
    "is_flow_map",
    "mean_flow_target",
    "sampler_options",
    "shortcut_steps",
    "shortcut_target",
]

#: The sampler of each flow-map objective's runs (a velocity run takes any other sampler).
SAMPLER_OF: dict[str, str] = {"mean_flow": "mean_flow", "shortcut": "shortcut"}

Net = Callable[..., Tensor]


def is_flow_map(objective: str) -> bool:
    """Whether runs of ``objective`` train a flow map :math:`u(x, t, r)` (rather than a velocity)."""
    return objective in SAMPLER_OF


def check_sampler(objective: str, sampler: str) -> None:
    """Refuse a sampler of the wrong kind for a run trained with ``objective``, naming the right one."""
    if is_flow_map(objective) and sampler != SAMPLER_OF[objective]:
        raise ValueError(
            f"this run is a flow map trained with the {objective!r} objective (u(x, t, r), one jump per step); "
            f"sampler {sampler!r} integrates a velocity field. Use the {SAMPLER_OF[objective]!r} sampler "
            f"(--sampler {SAMPLER_OF[objective]} --nfe 1, 2, 4, ...)")
    if not is_flow_map(objective) and sampler in SAMPLER_OF.values():
        raise ValueError(
            f"sampler {sampler!r} jumps with a flow map u(x, t, r) (mean_flow / shortcut runs); this run is a "
            f"velocity model trained with the {objective!r} objective: use euler, heun, rk4, dopri5 or a "
            "diffusion sampler (ddim, dpm_solver_pp, ...)")


def sampler_options(objective: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Options of the run's sampler that its objective fixes (the shortcut's ``max_steps``)."""
    if objective == "shortcut":
        return {"max_steps": OBJECTIVES.build("shortcut", **(params or {})).max_steps}
    return {}


def check_model(objective: str, second_time: bool) -> None:
    """A flow-map objective needs a network of two times (``second_time=True``), velocity one of one."""
    if is_flow_map(objective) and not second_time:
        raise ValueError(f"objective {objective!r} trains a flow map u(x, t, r): build the model with "
                         "second_time: true (mlp or unet; a network of your own: forward(x, t, r=...) and the "
                         "attribute second_time = True)")
    if not is_flow_map(objective) and second_time:
        raise ValueError(f"the model has second_time: true (a flow map u(x, t, r)) but objective {objective!r} "
                         "trains a velocity v(x, t): use objective mean_flow or shortcut, or drop second_time")


def _weighted_mean(per_sample: Tensor, weights: Tensor | None) -> Tensor:
    """Mean over the batch, or the self-normalised weighted mean of the coupling's pair weights."""
    if weights is None:
        return per_sample.mean()
    if weights.shape != per_sample.shape:
        raise ValueError(f"weights must have shape {tuple(per_sample.shape)}, got {tuple(weights.shape)}")
    w = weights.to(per_sample.dtype)
    total = w.sum()
    if not bool((w >= 0).all()) or not bool(torch.isfinite(total)) or total <= 0:
        raise ValueError("weights must be finite and non-negative with a positive sum")
    return torch.dot(w, per_sample) / total


class FlowMapObjective:
    """Base of the flow-map objectives: :meth:`loss` takes the network and the coupled pairs."""

    flow_map = True
    prediction = "average_velocity"
    name = ""

    def loss(self, net: Net, x0: Tensor, x1: Tensor, t: Tensor, path: ProbPath, *, weights: Tensor | None = None,
             labels: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """The batch loss of pairs ``(x0, x1)`` on ``path``; ``t`` are the trainer's uniform times
        ``(batch,)`` (an objective may draw its own from ``generator``); ``net(x, t, [labels], r=r)``."""
        raise NotImplementedError


def _call(net: Net, labels: Tensor | None) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    if labels is None:
        return lambda x, t, r: net(x, t, r=r)
    return lambda x, t, r: net(x, t, labels, r=r)


def mean_flow_target(net: Callable[[Tensor, Tensor, Tensor], Tensor], x_t: Tensor, t: Tensor, r: Tensor,
                     v: Tensor) -> tuple[Tensor, Tensor]:
    r"""``(u, u_tgt)``: the network's average velocity :math:`u_\theta(x_t, t, r)` (with its graph)
    and the MeanFlow target :math:`v - (t - r)\,\mathrm{sg}(\tfrac{d}{dt}u_\theta)` (detached), the
    total derivative :math:`\tfrac{d}{dt}u = v\cdot\partial_x u + \partial_t u` by one forward-mode
    JVP of ``net(x, t, r)`` with tangents :math:`(v, 1, 0)`."""
    u, dudt = torch.func.jvp(net, (x_t, t, r), (v, torch.ones_like(t), torch.zeros_like(r)))
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
    *gradient* is that of the adaptively weighted loss.

    Cost: the JVP evaluates the network and its tangent together, about two to three forward
    passes per step (``bench/few_step.py`` measures it).
    """

    name = "mean_flow"

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

    def loss(self, net: Net, x0: Tensor, x1: Tensor, t: Tensor, path: ProbPath, *, weights: Tensor | None = None,
             labels: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        t, r = self.sample_times(x0.shape[0], generator, x0.device, x0.dtype)
        ps = path.sample(x0, x1, t, generator=generator)
        if isinstance(net, torch.nn.parallel.DistributedDataParallel):
            # DDP's forward does not run under a functorch transform: the target by the JVP of the
            # wrapped module (no graph), then u by a plain forward through DDP (one forward more)
            with torch.no_grad():
                _, target = mean_flow_target(_call(net.module, labels), ps.x_t, ps.t, r, ps.target)
            u = _call(net, labels)(ps.x_t, ps.t, r)
        else:
            u, target = mean_flow_target(_call(net, labels), ps.x_t, ps.t, r, ps.target)
        sq = (u.float() - target.float()).pow(2).reshape(u.shape[0], -1)
        norm2 = sq.sum(1)
        adaptive = _weighted_mean(norm2 / (norm2.detach() + self.c).pow(self.p), weights)
        mse = _weighted_mean(sq.mean(1), weights).detach()
        return adaptive + (mse - adaptive.detach())


def shortcut_steps(max_steps: int) -> list[float]:
    """The dyadic steps a shortcut model is trained on, ``[1, 1/2, ..., 1/max_steps]`` (and 0)."""
    return [2.0 ** -k for k in range(int(math.log2(max_steps)) + 1)]


def shortcut_target(net: Callable[[Tensor, Tensor, Tensor], Tensor], x_t: Tensor, t: Tensor, big: Tensor,
                    max_steps: int) -> Tensor:
    r"""The self-consistency target of steps ``big`` :math:`= 2d`, ``(batch,)``: the mean of two half steps
    :math:`\tfrac12(u(x_t, t, t + d) + u(x'_{t+d}, t + d, t + 2d))`, :math:`x'_{t+d} = x_t + d\,u(x_t, t, t + d)`;
    for the smallest step :math:`2d = 1/N` the half steps query step 0 (the velocity ``net(x, t, t)``)."""
    half = 0.5 * big
    query = torch.where(big > 1.0 / max_steps, half, torch.zeros_like(half))  # the step the half steps ask for
    s1 = net(x_t, t, t + query)
    s2 = net(x_t + expand_t(half, x_t) * s1, t + half, t + half + query)
    return 0.5 * (s1 + s2)


@OBJECTIVES.register("shortcut")
class ShortcutObjective(FlowMapObjective):
    r"""Shortcut models (Frans et al. 2024): flow matching at step 0 plus self-consistency of dyadic steps.

    A share ``consistency`` of the batch (default 1/4, the paper's) draws a step
    :math:`2d = 2^{-k}`, :math:`k \sim U\{0, \dots, \log_2 N\}` (``max_steps`` :math:`N`, default
    128), and a time on its grid, :math:`t = j \cdot 2d` with :math:`j \sim U\{0, \dots, 1/(2d) - 1\}`,
    and regresses :math:`u_\theta(x_t, t, t + 2d)` onto the stop-gradient mean of two half steps

    .. math:: \tfrac12\big(u(x_t, t, t + d) + u(x'_{t+d}, t + d, t + 2d)\big),\qquad
              x'_{t+d} = x_t + d\,u(x_t, t, t + d),

    where the half steps of the smallest step :math:`2d = 1/N` query step 0 (the velocity), as
    in the paper. The rest of the batch regresses :math:`u_\theta(x_t, t, t)` onto the path's
    conditional velocity at the trainer's uniform times. The loss is the mean squared error over
    features and batch (pair weights of the coupling: a weighted mean). The half steps use the
    current weights (the paper also offers its EMA weights). The trained steps are 0 and
    :func:`shortcut_steps`: the ``shortcut`` sampler takes ``k`` steps of :math:`1/k` for ``k`` a
    power of two up to ``max_steps``.
    """

    name = "shortcut"

    def __init__(self, consistency: float = 0.25, max_steps: int = 128) -> None:
        self.consistency = check_number(consistency, "shortcut consistency", 0.0, 1.0, high_open=True)
        max_steps = check_positive_int(max_steps, "shortcut max_steps")
        if max_steps & (max_steps - 1) or max_steps > 2**16:
            raise ValueError(f"shortcut max_steps must be a power of two up to 65536, got {max_steps}")
        self.max_steps = max_steps

    def loss(self, net: Net, x0: Tensor, x1: Tensor, t: Tensor, path: ProbPath, *, weights: Tensor | None = None,
             labels: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        n = x0.shape[0]
        nc = round(self.consistency * n)
        f = _call(net, labels)
        t = t.to(device=x0.device, dtype=x0.dtype)
        big = 2.0 ** -torch.randint(0, int(math.log2(self.max_steps)) + 1, (nc,), generator=generator,
                                    dtype=torch.float64)
        t_c = torch.floor(torch.rand(nc, generator=generator, dtype=torch.float64) / big) * big
        big, t_c = big.to(device=x0.device, dtype=x0.dtype), t_c.to(device=x0.device, dtype=x0.dtype)
        times = torch.cat([t_c, t[nc:]])
        ps = path.sample(x0, x1, times, generator=generator)
        with torch.no_grad():
            target_c = shortcut_target(_call(net, None if labels is None else labels[:nc]), ps.x_t[:nc], t_c, big,
                                       self.max_steps)
        ends = torch.cat([t_c + big, t[nc:]])
        pred = f(ps.x_t, times, ends)
        target = torch.cat([target_c, ps.target[nc:]])
        per_sample = (pred.float() - target.float()).pow(2).reshape(n, -1).mean(1)
        return _weighted_mean(per_sample, weights)

    def sampler_options(self) -> dict[str, Any]:
        """Options of the ``shortcut`` sampler for this objective's runs."""
        return {"max_steps": self.max_steps}
