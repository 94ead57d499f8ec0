r"""Probability paths between a source sample :math:`x_0` and a target sample :math:`x_1`.

Time runs from ``t = 0`` (source / noise) to ``t = 1`` (data). An affine path is

.. math:: x_t = \sigma_t x_0 + \alpha_t x_1, \qquad u_t = \dot\sigma_t x_0 + \dot\alpha_t x_1,

where :math:`u_t` is the conditional velocity that flow matching regresses onto. A
:class:`Schedule` holds :math:`(\alpha_t, \sigma_t)` and their derivatives; a :class:`Path`
turns a coupled pair and times into a :class:`PathSample`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from ._validation import check_same_shape
from .registry import Registry

__all__ = [
    "PATHS",
    "SCHEDULES",
    "PathSample",
    "Schedule",
    "LinearSchedule",
    "CosineSchedule",
    "Path",
    "AffinePath",
    "LinearPath",
    "VPPath",
    "expand_t",
]

PATHS: Registry["Path"] = Registry("path")
SCHEDULES: Registry["Schedule"] = Registry("schedule")


def expand_t(t: Tensor | float, x: Tensor) -> Tensor:
    """Broadcast times of shape ``(batch,)`` (or a scalar) against ``x`` of shape ``(batch, *shape)``."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.dim() == 0:
        t = t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(f"t must be a scalar or have shape ({x.shape[0]},), got {tuple(t.shape)}")
    return t.reshape(-1, *([1] * (x.dim() - 1)))


@dataclass(frozen=True)
class PathSample:
    """A point on the path: ``x_t`` at time ``t`` and the velocity target ``u_t``."""

    x_t: Tensor
    t: Tensor
    target: Tensor


class Schedule(ABC):
    r"""Coefficients of :math:`x_t = \sigma_t x_0 + \alpha_t x_1` with ``alpha(0)=0, alpha(1)=1``."""

    @abstractmethod
    def alpha(self, t: Tensor) -> Tensor: ...

    @abstractmethod
    def sigma(self, t: Tensor) -> Tensor: ...

    @abstractmethod
    def d_alpha(self, t: Tensor) -> Tensor: ...

    @abstractmethod
    def d_sigma(self, t: Tensor) -> Tensor: ...

    def log_snr(self, t: Tensor) -> Tensor:
        r""":math:`\lambda_t = \log(\alpha_t^2 / \sigma_t^2)`."""
        return 2.0 * (torch.log(self.alpha(t)) - torch.log(self.sigma(t)))


@SCHEDULES.register("linear")
class LinearSchedule(Schedule):
    r"""Conditional-OT / rectified-flow schedule: :math:`\alpha_t = t,\ \sigma_t = 1 - t`."""

    def alpha(self, t: Tensor) -> Tensor:
        return t

    def sigma(self, t: Tensor) -> Tensor:
        return 1.0 - t

    def d_alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def d_sigma(self, t: Tensor) -> Tensor:
        return -torch.ones_like(t)


@SCHEDULES.register("cosine")
class CosineSchedule(Schedule):
    r"""Variance-preserving cosine schedule: :math:`\alpha_t = \sin(\tfrac{\pi}{2} t),\
    \sigma_t = \cos(\tfrac{\pi}{2} t)`, so :math:`\alpha_t^2 + \sigma_t^2 = 1`."""

    def alpha(self, t: Tensor) -> Tensor:
        return torch.sin(0.5 * math.pi * t)

    def sigma(self, t: Tensor) -> Tensor:
        return torch.cos(0.5 * math.pi * t)

    def d_alpha(self, t: Tensor) -> Tensor:
        return 0.5 * math.pi * torch.cos(0.5 * math.pi * t)

    def d_sigma(self, t: Tensor) -> Tensor:
        return -0.5 * math.pi * torch.sin(0.5 * math.pi * t)


class Path(ABC):
    """Maps a coupled pair ``(x0, x1)`` and times ``t`` to ``(x_t, u_t)``."""

    @abstractmethod
    def sample(
        self, x0: Tensor, x1: Tensor, t: Tensor, generator: torch.Generator | None = None
    ) -> PathSample: ...

    def sample_t(
        self, batch: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> Tensor:
        """Training times, ``t ~ U[0, 1]``."""
        return torch.rand(batch, device=device, generator=generator)


class AffinePath(Path):
    r""":math:`x_t = \sigma_t x_0 + \alpha_t x_1`, target :math:`u_t = \dot\sigma_t x_0 + \dot\alpha_t x_1`."""

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule

    def sample(
        self, x0: Tensor, x1: Tensor, t: Tensor, generator: torch.Generator | None = None
    ) -> PathSample:
        check_same_shape(x0, x1, "x0", "x1")
        s = self.schedule
        tt = expand_t(t, x0)
        x_t = s.sigma(tt) * x0 + s.alpha(tt) * x1
        target = s.d_sigma(tt) * x0 + s.d_alpha(tt) * x1
        return PathSample(x_t=x_t, t=tt.reshape(-1), target=target)


@PATHS.register("linear")
class LinearPath(AffinePath):
    r"""Linear (conditional OT) path with optional constant noise :math:`\sigma_{\min}`:

    .. math:: x_t = (1 - t) x_0 + t x_1 + \sigma_{\min} z,\quad z \sim N(0, I),\qquad u_t = x_1 - x_0.

    ``sigma=0`` is rectified flow / Cond-OT; ``sigma=0.1`` is I-CFM / OT-CFM of Tong et al. (2023).
    """

    def __init__(self, sigma: float = 0.0) -> None:
        if not isinstance(sigma, (int, float)) or sigma < 0 or not math.isfinite(sigma):
            raise ValueError(f"sigma must be a finite float >= 0, got {sigma!r}")
        super().__init__(LinearSchedule())
        self.sigma = float(sigma)

    def sample(
        self, x0: Tensor, x1: Tensor, t: Tensor, generator: torch.Generator | None = None
    ) -> PathSample:
        out = super().sample(x0, x1, t)
        if self.sigma == 0.0:
            return out
        z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return PathSample(x_t=out.x_t + self.sigma * z, t=out.t, target=out.target)


@PATHS.register("vp")
class VPPath(AffinePath):
    r"""Variance-preserving cosine diffusion path (flow convention, t=0 noise):

    .. math:: x_t = \cos(\tfrac{\pi}{2}t)\, x_0 + \sin(\tfrac{\pi}{2}t)\, x_1,\qquad
              u_t = \tfrac{\pi}{2}\big(\cos(\tfrac{\pi}{2}t)\, x_1 - \sin(\tfrac{\pi}{2}t)\, x_0\big).
    """

    def __init__(self) -> None:
        super().__init__(CosineSchedule())
