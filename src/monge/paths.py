r"""Probability paths between a source sample :math:`x_0` and a target sample :math:`x_1`.

Time runs from ``t = 0`` (source / noise) to ``t = 1`` (data). An affine path is

.. math:: x_t = \sigma_t x_0 + \alpha_t x_1, \qquad u_t = \dot\sigma_t x_0 + \dot\alpha_t x_1,

where :math:`u_t` is the conditional velocity that flow matching regresses onto. A
:class:`Schedule` holds :math:`(\alpha_t, \sigma_t)` and their derivatives; a :class:`ProbPath`
turns a coupled pair and times into a :class:`PathSample`.

Schedules (registry :data:`SCHEDULES`): ``linear`` (rectified flow / Cond-OT), ``cosine`` and
``vp_linear`` (variance preserving), ``ve`` and ``edm`` (variance exploding, :math:`\alpha_t = 1`)
``stochastic_interpolant`` (Gaussian-equivalent schedule of a stochastic interpolant) and
``ddpm`` (the discrete schedule of a DDPM-trained noise predictor, e.g. from diffusers).
Paths (registry :data:`PATHS`): ``linear``, ``vp``, ``vp_linear``, ``ve``, ``edm``,
``stochastic_interpolant`` and ``brownian_bridge``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from ._validation import check_number, check_positive, check_same_shape
from .registry import Registry

__all__ = [
    "PATHS",
    "SCHEDULES",
    "PathSample",
    "Schedule",
    "LinearSchedule",
    "CosineSchedule",
    "VPLinearSchedule",
    "VESchedule",
    "EDMSchedule",
    "InterpolantSchedule",
    "DiscreteVPSchedule",
    "ddpm_alphas_cumprod",
    "ProbPath",
    "AffinePath",
    "LinearPath",
    "VPPath",
    "VPLinearPath",
    "VEPath",
    "EDMPath",
    "StochasticInterpolantPath",
    "BrownianBridgePath",
    "expand_t",
]

PATHS: Registry[ProbPath] = Registry("path")
SCHEDULES: Registry[Schedule] = Registry("schedule")


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
    r"""Coefficients of :math:`x_t = \sigma_t x_0 + \alpha_t x_1` (``x0`` noise, ``x1`` data).

    Flow-matching schedules have ``alpha(0)=0, alpha(1)=1, sigma(1)=0``. Diffusion schedules may
    start at a finite signal-to-noise ratio instead: ``vp_linear`` has a tiny ``alpha(0)``, and
    ``ve`` / ``edm`` keep :math:`\alpha_t = 1` and run from ``sigma_max`` (t=0) down to
    ``sigma_min`` (t=1), so their start is :math:`x_1 + \sigma_{\max} z`, not pure noise.
    Subclasses give ``alpha, sigma, d_alpha, d_sigma``; :meth:`log_snr` and its inverse
    :meth:`t_from_log_snr` come for free (overridden in closed form where one exists).
    """

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

    def d_log_snr(self, t: Tensor) -> Tensor:
        r""":math:`\dot\lambda_t = 2(\dot\alpha_t / \alpha_t - \dot\sigma_t / \sigma_t)`."""
        return 2.0 * (self.d_alpha(t) / self.alpha(t) - self.d_sigma(t) / self.sigma(t))

    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        r"""Inverse of :meth:`log_snr` (increasing in ``t``), clamped to ``[0, 1]``.

        The base class bisects in float64 (60 halvings); subclasses override it in closed form.
        """
        lam = torch.as_tensor(log_snr)
        if bool(torch.isnan(lam).any()):
            raise ValueError("log_snr contains NaN; pass finite values or +-inf")
        lam64 = lam.to(torch.float64)
        lo = torch.zeros_like(lam64)
        hi = torch.ones_like(lam64)
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            below = self.log_snr(mid) < lam64
            lo = torch.where(below, mid, lo)
            hi = torch.where(below, hi, mid)
        out = 0.5 * (lo + hi)
        out = torch.where(lam64 >= self.log_snr(torch.ones_like(lam64)), torch.ones_like(out), out)
        out = torch.where(lam64 <= self.log_snr(torch.zeros_like(lam64)), torch.zeros_like(out), out)
        return out.to(lam.dtype if lam.is_floating_point() else torch.get_default_dtype())


@SCHEDULES.register("linear")
class LinearSchedule(Schedule):
    r"""Conditional-OT / rectified-flow schedule: :math:`\alpha_t = t,\ \sigma_t = 1 - t`;
    :math:`\lambda_t = 2\log\frac{t}{1-t}`, so :math:`t = \operatorname{sigmoid}(\lambda/2)`."""

    def alpha(self, t: Tensor) -> Tensor:
        return t

    def sigma(self, t: Tensor) -> Tensor:
        return 1.0 - t

    def d_alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def d_sigma(self, t: Tensor) -> Tensor:
        return -torch.ones_like(t)

    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        return torch.sigmoid(0.5 * torch.as_tensor(log_snr))


@SCHEDULES.register("cosine")
class CosineSchedule(Schedule):
    r"""Variance-preserving cosine schedule: :math:`\alpha_t = \sin(\tfrac{\pi}{2} t),\
    \sigma_t = \cos(\tfrac{\pi}{2} t)`, so :math:`\alpha_t^2 + \sigma_t^2 = 1`;
    :math:`t = \tfrac{2}{\pi}\arctan e^{\lambda/2}`."""

    def alpha(self, t: Tensor) -> Tensor:
        return torch.sin(0.5 * math.pi * t)

    def sigma(self, t: Tensor) -> Tensor:
        return torch.cos(0.5 * math.pi * t)

    def d_alpha(self, t: Tensor) -> Tensor:
        return 0.5 * math.pi * torch.cos(0.5 * math.pi * t)

    def d_sigma(self, t: Tensor) -> Tensor:
        return -0.5 * math.pi * torch.sin(0.5 * math.pi * t)

    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        return torch.atan(torch.exp(0.5 * torch.as_tensor(log_snr))) * (2.0 / math.pi)


@SCHEDULES.register("vp_linear")
class VPLinearSchedule(Schedule):
    r"""Variance-preserving schedule with linear :math:`\beta` (DDPM, Ho et al. 2020; VP-SDE of
    Song et al. 2021), written in diffusion time :math:`s = 1 - t`:

    .. math:: B(s) = \int_0^s \beta = \beta_{\min} s + \tfrac12(\beta_{\max}-\beta_{\min}) s^2,\quad
              \alpha_t = e^{-B/2},\quad \sigma_t = \sqrt{1 - e^{-B}},\quad
              \lambda_t = -\log(e^{B} - 1).

    ``alpha(0)`` is small but not zero (``exp(-5.025)`` for the defaults).
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        self.beta_min = check_positive(beta_min, "beta_min")
        self.beta_max = check_positive(beta_max, "beta_max")
        if self.beta_max < self.beta_min:
            raise ValueError(f"beta_max must be >= beta_min, got {beta_max} < {beta_min}")

    def _integral(self, t: Tensor) -> Tensor:
        s = 1.0 - t
        return self.beta_min * s + 0.5 * (self.beta_max - self.beta_min) * s * s

    def _beta(self, t: Tensor) -> Tensor:
        return self.beta_min + (self.beta_max - self.beta_min) * (1.0 - t)

    def alpha(self, t: Tensor) -> Tensor:
        return torch.exp(-0.5 * self._integral(t))

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sqrt(-torch.expm1(-self._integral(t)))

    def d_alpha(self, t: Tensor) -> Tensor:
        return 0.5 * self._beta(t) * self.alpha(t)

    def d_sigma(self, t: Tensor) -> Tensor:
        b = self._integral(t)
        return -0.5 * self._beta(t) * torch.exp(-b) / torch.sqrt(-torch.expm1(-b))

    def log_snr(self, t: Tensor) -> Tensor:
        return -torch.log(torch.expm1(self._integral(t)))

    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        lam = torch.as_tensor(log_snr)
        b = torch.nn.functional.softplus(-lam)  # B = log(1 + e^{-lambda})
        d = self.beta_max - self.beta_min
        if d == 0.0:
            s = b / self.beta_min
        else:
            s = (torch.sqrt(self.beta_min**2 + 2.0 * d * b) - self.beta_min) / d
        return (1.0 - s).clamp(0.0, 1.0)


@SCHEDULES.register("ve")
class VESchedule(Schedule):
    r"""Variance-exploding schedule (SMLD / VE-SDE, Song et al. 2021) with geometric sigma:

    .. math:: \alpha_t = 1,\qquad \sigma_t = \sigma_{\min}(\sigma_{\max}/\sigma_{\min})^{1-t}.

    t=0 is :math:`x_1 + \sigma_{\max} z` (not pure noise); t=1 keeps :math:`\sigma_{\min}` noise.
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0) -> None:
        self.sigma_min = check_positive(sigma_min, "sigma_min")
        self.sigma_max = check_positive(sigma_max, "sigma_max")
        if self.sigma_max <= self.sigma_min:
            raise ValueError(f"sigma_max must exceed sigma_min, got {sigma_max} <= {sigma_min}")
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def sigma(self, t: Tensor) -> Tensor:
        return self.sigma_min * torch.exp((1.0 - t) * self._log_ratio)

    def d_alpha(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def d_sigma(self, t: Tensor) -> Tensor:
        return -self._log_ratio * self.sigma(t)

    def log_snr(self, t: Tensor) -> Tensor:
        return -2.0 * (math.log(self.sigma_min) + (1.0 - t) * self._log_ratio)

    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        log_sigma = -0.5 * torch.as_tensor(log_snr)
        return (1.0 - (log_sigma - math.log(self.sigma_min)) / self._log_ratio).clamp(0.0, 1.0)


@SCHEDULES.register("edm")
class EDMSchedule(Schedule):
    r"""EDM sigma schedule (Karras et al. 2022): :math:`\alpha_t = 1` and

    .. math:: \sigma_t = \big(\sigma_{\max}^{1/\rho} + t\,(\sigma_{\min}^{1/\rho} - \sigma_{\max}^{1/\rho})\big)^{\rho},

    so a uniform grid in ``t`` is the Karras grid. t=0 is :math:`x_1 + \sigma_{\max} z`.
    """

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> None:
        self.sigma_min = check_positive(sigma_min, "sigma_min")
        self.sigma_max = check_positive(sigma_max, "sigma_max")
        self.rho = check_positive(rho, "rho")
        if self.sigma_max <= self.sigma_min:
            raise ValueError(f"sigma_max must exceed sigma_min, got {sigma_max} <= {sigma_min}")
        self._a = self.sigma_max ** (1.0 / self.rho)
        self._b = self.sigma_min ** (1.0 / self.rho) - self._a

    def alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def sigma(self, t: Tensor) -> Tensor:
        return (self._a + t * self._b) ** self.rho

    def d_alpha(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def d_sigma(self, t: Tensor) -> Tensor:
        return self.rho * self._b * (self._a + t * self._b) ** (self.rho - 1.0)

    def log_snr(self, t: Tensor) -> Tensor:
        return -2.0 * self.rho * torch.log(self._a + t * self._b)

    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        root = torch.exp(-0.5 * torch.as_tensor(log_snr) / self.rho)  # sigma^(1/rho)
        return ((root - self._a) / self._b).clamp(0.0, 1.0)


@SCHEDULES.register("stochastic_interpolant")
class InterpolantSchedule(Schedule):
    r"""Gaussian-equivalent schedule of the stochastic interpolant
    :math:`x_t = (1-t)x_0 + t x_1 + \gamma_t z` with :math:`\gamma_t = \sqrt{a t(1-t)}`
    (Albergo, Boffi & Vanden-Eijnden 2023): for Gaussian :math:`x_0` independent of :math:`x_1`,

    .. math:: \alpha_t = t,\qquad \sigma_t = \sqrt{(1-t)^2 + a\,t(1-t)},

    and the marginal velocity of the interpolant equals that of this affine schedule.
    ``a = 0`` is :class:`LinearSchedule`.
    """

    def __init__(self, a: float = 1.0) -> None:
        self.a = check_number(a, "a", 0.0, math.inf, high_open=True)

    def alpha(self, t: Tensor) -> Tensor:
        return t

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sqrt((1.0 - t) ** 2 + self.a * t * (1.0 - t))

    def d_alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def d_sigma(self, t: Tensor) -> Tensor:
        return (-(1.0 - t) + 0.5 * self.a * (1.0 - 2.0 * t)) / self.sigma(t)

    def log_snr(self, t: Tensor) -> Tensor:
        # alpha^2 / sigma^2 = t^2 / ((1-t)((1-t) + a t)); stays accurate near t = 1
        return 2.0 * torch.log(t) - torch.log1p(-t) - torch.log((1.0 - t) + self.a * t)

    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        lam = torch.as_tensor(log_snr)
        if self.a == 0.0:
            return torch.sigmoid(0.5 * lam)
        return super().t_from_log_snr(lam)


def ddpm_alphas_cumprod(
    num_train_timesteps: int = 1000,
    beta_schedule: str = "linear",
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
) -> Tensor:
    r""":math:`\bar\alpha_k = \prod_{i \le k} (1 - \beta_i)` of a discrete DDPM schedule (float64).

    ``beta_schedule``: ``"linear"`` (Ho et al. 2020), ``"scaled_linear"`` (Stable Diffusion:
    linear in :math:`\sqrt\beta`) or ``"squaredcos_cap_v2"`` (Nichol & Dhariwal 2021, betas
    capped at 0.999); the same definitions as diffusers' schedulers.
    """
    n = int(check_number(num_train_timesteps, "num_train_timesteps", 2, integer=True))
    if beta_schedule == "linear":
        betas = torch.linspace(beta_start, beta_end, n, dtype=torch.float64)
    elif beta_schedule == "scaled_linear":
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float64) ** 2
    elif beta_schedule == "squaredcos_cap_v2":
        f = lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        betas = torch.tensor([min(1 - f((i + 1) / n) / f(i / n), 0.999) for i in range(n)], dtype=torch.float64)
    else:
        raise ValueError(
            f"beta_schedule must be 'linear', 'scaled_linear' or 'squaredcos_cap_v2', got {beta_schedule!r}"
        )
    if not (0.0 < float(betas.min()) and float(betas.max()) < 1.0):
        raise ValueError(f"betas must lie in (0, 1); got beta_start={beta_start}, beta_end={beta_end}")
    return torch.cumprod(1.0 - betas, 0)


@SCHEDULES.register("ddpm")
class DiscreteVPSchedule(Schedule):
    r"""The discrete variance-preserving schedule of a DDPM-trained model, in flow time.

    Training step :math:`k \in \{0, \dots, T-1\}` (noise level :math:`\bar\alpha_k`) sits at

    .. math:: t_k = 1 - \frac{k + 1}{T}, \qquad
              \lambda(t) = \text{piecewise linear interpolation of }
              \lambda_k = \log\frac{\bar\alpha_k}{1 - \bar\alpha_k},

    with :math:`\alpha_t^2 = \operatorname{sigmoid}(\lambda)`, :math:`\sigma_t^2 =
    \operatorname{sigmoid}(-\lambda)`. After the last training step, on :math:`k \in [-1, 0]`,
    the variance falls linearly to zero, :math:`\sigma^2 = (1 + k)(1 - \bar\alpha_0)`, so
    :math:`t = 1` is clean data (the final ``final_sigmas_type="zero"`` step of diffusers'
    schedulers) and :math:`\lambda` stays continuous and increasing; :math:`t < 0` clamps to
    step :math:`T-1`. With this schedule monge's samplers take the same steps as diffusers' DDIM,
    DPM-Solver++ and UniPC schedulers at the same timesteps (checked in the tests), so a
    diffusers noise predictor ``eps(x, k)`` is sampled as ``model(x, t) = eps(x, schedule.timestep(t))``
    with ``prediction="noise"``.

    Parameters
    ----------
    alphas_cumprod : Tensor, optional
        :math:`\bar\alpha_k`, decreasing in ``k``, in (0, 1); e.g. ``scheduler.alphas_cumprod``
        of a diffusers scheduler. Default: :func:`ddpm_alphas_cumprod` of the next arguments.
    num_train_timesteps, beta_schedule, beta_start, beta_end
        Passed to :func:`ddpm_alphas_cumprod` when ``alphas_cumprod`` is not given.
    """

    def __init__(
        self,
        alphas_cumprod: Tensor | None = None,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "linear",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
    ) -> None:
        if alphas_cumprod is None:
            abar = ddpm_alphas_cumprod(num_train_timesteps, beta_schedule, beta_start, beta_end)
        else:
            abar = torch.as_tensor(alphas_cumprod).detach().to("cpu", torch.float64).flatten()
            if abar.numel() < 2 or not bool(torch.isfinite(abar).all()):
                raise ValueError("alphas_cumprod must hold at least 2 finite values")
            if not (float(abar.min()) > 0.0 and float(abar.max()) < 1.0):
                raise ValueError("alphas_cumprod must lie in the open interval (0, 1)")
            if not bool((abar[1:] <= abar[:-1]).all()):
                raise ValueError("alphas_cumprod must be non-increasing in the step index k")
        self.alphas_cumprod = abar
        self.T = abar.numel()
        self._lam = torch.log(abar) - torch.log1p(-abar)

    def timestep(self, t: Tensor | float) -> Tensor:
        r"""Continuous training step :math:`k = T(1 - t) - 1` of flow time ``t`` (float)."""
        return self.T * (1.0 - torch.as_tensor(t, dtype=torch.float64)) - 1.0

    def _segment(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        k = self.timestep(t)
        kk = k.clamp(0.0, self.T - 1.0)
        i = kk.floor().long().clamp(max=self.T - 2)
        return k, i, kk - i

    def _last_variance(self, k: Tensor) -> Tensor:
        r""":math:`\sigma^2 = (1 + k)(1 - \bar\alpha_0)` on the last interval :math:`k \in [-1, 0]`."""
        return (1.0 + k).clamp(0.0, 1.0) * (1.0 - float(self.alphas_cumprod[0]))

    def log_snr(self, t: Tensor) -> Tensor:
        t = torch.as_tensor(t)
        k, i, w = self._segment(t)
        lam = self._lam[i] * (1 - w) + self._lam[i + 1] * w
        v = self._last_variance(k)
        lam = torch.where(k < 0, torch.log1p(-v) - torch.log(v), lam)
        return lam.to(t.dtype if t.is_floating_point() else torch.get_default_dtype())

    def d_log_snr(self, t: Tensor) -> Tensor:
        t = torch.as_tensor(t)
        k, i, _ = self._segment(t)
        d = -self.T * (self._lam[i + 1] - self._lam[i])  # dlambda/dt = dlambda/dk * dk/dt
        v = self._last_variance(k)
        d_last = self.T * (1.0 - float(self.alphas_cumprod[0])) / (v * (1.0 - v))
        d = torch.where(k < 0, d_last, torch.where(k > self.T - 1, torch.zeros_like(d), d))
        return d.to(t.dtype if t.is_floating_point() else torch.get_default_dtype())

    def alpha(self, t: Tensor) -> Tensor:
        return torch.sigmoid(self.log_snr(t)).sqrt()

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sigmoid(-self.log_snr(t)).sqrt()

    def d_alpha(self, t: Tensor) -> Tensor:
        r""":math:`\dot\alpha = \tfrac12 \alpha\sigma^2\dot\lambda`."""
        return 0.5 * self.alpha(t) * self.sigma(t).square() * self.d_log_snr(t)

    def d_sigma(self, t: Tensor) -> Tensor:
        r""":math:`\dot\sigma = -\tfrac12 \sigma\alpha^2\dot\lambda`."""
        return -0.5 * self.sigma(t) * self.alpha(t).square() * self.d_log_snr(t)


class ProbPath(ABC):
    """Maps a coupled pair ``(x0, x1)`` and times ``t`` to ``(x_t, u_t)``."""

    @abstractmethod
    def sample(
        self, x0: Tensor, x1: Tensor, t: Tensor, generator: torch.Generator | None = None
    ) -> PathSample: ...


class AffinePath(ProbPath):
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


@PATHS.register("vp_linear")
class VPLinearPath(AffinePath):
    r"""Variance-preserving path with linear :math:`\beta` (DDPM / VP-SDE), see :class:`VPLinearSchedule`."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        super().__init__(VPLinearSchedule(beta_min, beta_max))


@PATHS.register("ve")
class VEPath(AffinePath):
    r"""Variance-exploding path :math:`x_t = x_1 + \sigma_t x_0`, see :class:`VESchedule`."""

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0) -> None:
        super().__init__(VESchedule(sigma_min, sigma_max))


@PATHS.register("edm")
class EDMPath(AffinePath):
    r"""EDM path :math:`x_t = x_1 + \sigma_t x_0` with Karras' sigma, see :class:`EDMSchedule`."""

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> None:
        super().__init__(EDMSchedule(sigma_min, sigma_max, rho))


@PATHS.register("stochastic_interpolant")
class StochasticInterpolantPath(ProbPath):
    r"""Linear stochastic interpolant (Albergo, Boffi & Vanden-Eijnden 2023):

    .. math:: x_t = (1-t)\,x_0 + t\,x_1 + \gamma_t z,\qquad \gamma_t = \sqrt{a\,t(1-t)},\qquad
              u_t = x_1 - x_0 + \dot\gamma_t z,\quad \dot\gamma_t = \frac{a(1-2t)}{2\gamma_t}.

    The target is the velocity :math:`b` of the interpolant (its ODE is :math:`\dot X = b`).
    :math:`\dot\gamma_t` diverges at ``t in {0, 1}``; ``t`` is clamped to ``[t_eps, 1 - t_eps]``
    inside :math:`\dot\gamma_t` only. ``schedule`` is the Gaussian-equivalent
    :class:`InterpolantSchedule`: exact when ``x0`` is standard normal and independent of
    ``x1`` (independent coupling), approximate for OT-paired batches.
    """

    def __init__(self, a: float = 1.0, t_eps: float = 1e-5) -> None:
        self.schedule = InterpolantSchedule(a)
        self.a = self.schedule.a
        if not isinstance(t_eps, (int, float)) or not 0.0 < t_eps < 0.5:
            raise ValueError(f"t_eps must be a float in (0, 0.5), got {t_eps!r}")
        self.t_eps = float(t_eps)

    def gamma(self, t: Tensor) -> Tensor:
        return torch.sqrt(self.a * t * (1.0 - t))

    def d_gamma(self, t: Tensor) -> Tensor:
        tc = t.clamp(self.t_eps, 1.0 - self.t_eps)
        return self.a * (1.0 - 2.0 * tc) / (2.0 * torch.sqrt(self.a * tc * (1.0 - tc)))

    def sample(
        self, x0: Tensor, x1: Tensor, t: Tensor, generator: torch.Generator | None = None
    ) -> PathSample:
        check_same_shape(x0, x1, "x0", "x1")
        tt = expand_t(t, x0)
        x_t = (1.0 - tt) * x0 + tt * x1
        target = x1 - x0
        if self.a > 0.0:
            z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
            x_t = x_t + self.gamma(tt) * z
            target = target + self.d_gamma(tt) * z
        return PathSample(x_t=x_t, t=tt.reshape(-1), target=target)


@PATHS.register("brownian_bridge")
class BrownianBridgePath(StochasticInterpolantPath):
    r"""Brownian-bridge path of Schrödinger-bridge CFM (SB-CFM, Tong et al. 2024):

    .. math:: x_t = (1-t)x_0 + t x_1 + \sigma\sqrt{t(1-t)}\,z,\qquad
              u_t = \frac{1-2t}{2t(1-t)}(x_t - \mu_t) + (x_1 - x_0),

    with :math:`\mu_t = (1-t)x_0 + t x_1`; the stochastic interpolant with :math:`a = \sigma^2`.
    Pair it with an entropic coupling of regularisation :math:`2\sigma^2`.
    """

    def __init__(self, sigma: float = 1.0, t_eps: float = 1e-5) -> None:
        sigma = check_number(sigma, "sigma", 0.0, math.inf, high_open=True)
        super().__init__(a=sigma**2, t_eps=t_eps)
        self.sigma = float(sigma)
