r"""Shortcut models (Frans et al. 2024, "One Step Diffusion via Shortcut Models"): a flow map trained from scratch.

The step :math:`d = r - t` conditions the network :math:`u_\theta(x, t, r)`; a share of the batch
is flow matching at :math:`d = 0` (:math:`u(x_t, t, t) \approx v_t`), the rest learns
self-consistency of two half steps,

.. math:: u(x_t, t, t + 2d) \approx \mathrm{sg}\big(\tfrac12(u(x_t, t, t + d) + u(x'_{t+d}, t + d, t + 2d))\big),
          \qquad x'_{t+d} = x_t + d\,u(x_t, t, t + d),

on dyadic steps :math:`2d \in \{1, \tfrac12, \dots, 1/N\}` (``max_steps`` :math:`N`). Runs are
sampled with the ``shortcut`` sampler.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .._validation import check_number, check_positive_int
from ..paths import ProbPath, expand_t
from .base import OBJECTIVES, FlowMapObjective, Net, two_time_net, weighted_mean

__all__ = ["ShortcutObjective", "shortcut_steps", "shortcut_target"]


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
    (:func:`shortcut_target`), where the half steps of the smallest step :math:`2d = 1/N` query
    step 0 (the velocity), as in the paper. The rest of the batch regresses
    :math:`u_\theta(x_t, t, t)` onto the path's conditional velocity at the trainer's uniform times.
    The loss is the mean squared error over features and batch (pair weights of the coupling: a
    weighted mean). The half steps use the current weights (the paper also offers its EMA
    weights). The trained steps are 0 and :func:`shortcut_steps`: the ``shortcut`` sampler takes
    ``k`` steps of :math:`1/k` for ``k`` a power of two up to ``max_steps``.
    """

    sampler_kind = "shortcut"

    def __init__(self, consistency: float = 0.25, max_steps: int = 128) -> None:
        self.consistency = check_number(consistency, "shortcut consistency", 0.0, 1.0, high_open=True)
        max_steps = check_positive_int(max_steps, "shortcut max_steps")
        if max_steps & (max_steps - 1) or max_steps > 2**16:
            raise ValueError(f"shortcut max_steps must be a power of two up to 65536, got {max_steps}")
        self.max_steps = max_steps

    def loss(self, net: Net, pairs: Any, t: Tensor, path: ProbPath, *, labels: Tensor | None = None,
             generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        x0, x1 = pairs.x0, pairs.x1
        n = x0.shape[0]
        nc = round(self.consistency * n)
        f = two_time_net(net, labels)
        t = t.to(device=x0.device, dtype=x0.dtype)
        big = 2.0 ** -torch.randint(0, int(math.log2(self.max_steps)) + 1, (nc,), generator=generator,
                                    dtype=torch.float64)
        t_c = torch.floor(torch.rand(nc, generator=generator, dtype=torch.float64) / big) * big
        big, t_c = big.to(device=x0.device, dtype=x0.dtype), t_c.to(device=x0.device, dtype=x0.dtype)
        times = torch.cat([t_c, t[nc:]])
        ps = path.sample(x0, x1, times, generator=generator)
        with torch.no_grad():
            target_c = shortcut_target(two_time_net(net, None if labels is None else labels[:nc]), ps.x_t[:nc],
                                       t_c, big, self.max_steps)
        ends = torch.cat([t_c + big, t[nc:]])
        pred = f(ps.x_t, times, ends)
        target = torch.cat([target_c, ps.target[nc:]])
        per_sample = (pred.float() - target.float()).pow(2).reshape(n, -1).mean(1)
        return weighted_mean(per_sample, pairs.weights), {}

    def sampler_options(self) -> dict[str, Any]:
        """Options of the ``shortcut`` sampler for this objective's runs."""
        return {"max_steps": self.max_steps}
