r"""Training times: the law of :math:`t` at which the regression loss of a flow is drawn.

Flow matching averages its loss over :math:`t \sim p(t)`; any :math:`p` with full support on
:math:`[0, 1]` has the same minimiser (the marginal velocity at every :math:`t`), but a finite network
spends its capacity where :math:`p` puts the mass. Registry :data:`TIMES`:

- ``uniform``: :math:`t \sim \mathcal U[0, 1]` (Lipman et al. 2023; the default).
- ``logit_normal``: :math:`t = \operatorname{sigmoid}(m + s\,n)`, :math:`n \sim \mathcal N(0, 1)`
  (Esser et al. 2024), of density

  .. math:: p(t) = \frac{1}{s\sqrt{2\pi}}\,\frac{1}{t(1-t)}\,
            \exp\Big(-\frac{(\operatorname{logit} t - m)^2}{2 s^2}\Big);

  :math:`m > 0` weights the data end (:math:`t = 1`), :math:`m < 0` the noise end, small :math:`s`
  concentrates the mass around :math:`\operatorname{sigmoid}(m)`.

In a recipe: ``train: {time_sampling: {name: logit_normal, loc: 0.0, scale: 1.0}}``. Flow-map
objectives (``mean_flow``, ``shortcut``) draw their own times and refuse any but ``uniform``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from ._validation import check_number
from .registry import Registry

__all__ = ["TIMES", "TimeSampler", "UniformTimes", "LogitNormalTimes"]

#: name -> training-time law (``train.time_sampling``)
TIMES: Registry[TimeSampler] = Registry("time sampling")


class TimeSampler(ABC):
    """Draws the ``(n,)`` float32 training times of a batch on the CPU from ``generator``."""

    @abstractmethod
    def __call__(self, n: int, generator: torch.Generator | None = None) -> Tensor: ...

    @abstractmethod
    def density(self, t: Tensor) -> Tensor:
        """The density :math:`p(t)` on :math:`(0, 1)`."""


@TIMES.register("uniform")
class UniformTimes(TimeSampler):
    r""":math:`t \sim \mathcal U[0, 1]`."""

    def __call__(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.rand(n, generator=generator)

    def density(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def __repr__(self) -> str:
        return "UniformTimes()"


@TIMES.register("logit_normal")
class LogitNormalTimes(TimeSampler):
    r""":math:`t = \operatorname{sigmoid}(\mathrm{loc} + \mathrm{scale}\cdot n)`, :math:`n \sim \mathcal N(0, 1)`."""

    def __init__(self, loc: float = 0.0, scale: float = 1.0) -> None:
        self.loc = check_number(loc, "logit_normal loc", -10.0, 10.0)
        self.scale = check_number(scale, "logit_normal scale", 0.0, 10.0, low_open=True)

    def __call__(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.sigmoid(self.loc + self.scale * torch.randn(n, generator=generator))

    def density(self, t: Tensor) -> Tensor:
        logit = torch.log(t) - torch.log1p(-t)
        z = (logit - self.loc) / self.scale
        return torch.exp(-0.5 * z * z) / (self.scale * math.sqrt(2.0 * math.pi) * t * (1.0 - t))

    def __repr__(self) -> str:
        return f"LogitNormalTimes(loc={self.loc:g}, scale={self.scale:g})"
