r"""Isotropic Gaussian mixtures with closed-form marginal fields: the test oracle of monge.

For data :math:`x_1 \sim p_1 = \sum_k w_k \mathcal N(m_k, s_k^2 I)`, noise
:math:`x_0 \sim \mathcal N(0, I)` and an affine path :math:`x_t = \sigma_t x_0 + \alpha_t x_1`,
the marginal :math:`p_t` is again a mixture, with component variances
:math:`v_k = \sigma_t^2 + \alpha_t^2 s_k^2` and means :math:`\alpha_t m_k`. Writing
:math:`r_k(x)` for the posterior responsibilities of :math:`p_t`,

.. math::
    \mathbb E[x_1 \mid x_t = x] &= \sum_k r_k(x)\Big(m_k + \frac{\alpha_t s_k^2}{v_k}(x - \alpha_t m_k)\Big), \\
    \mathbb E[x_0 \mid x_t = x] &= \sum_k r_k(x)\,\frac{\sigma_t}{v_k}(x - \alpha_t m_k), \\
    \nabla \log p_t(x) &= -\sum_k r_k(x)\,\frac{x - \alpha_t m_k}{v_k}, \\
    u_t(x) &= \dot\alpha_t\,\mathbb E[x_1 \mid x] + \dot\sigma_t\,\mathbb E[x_0 \mid x].

:math:`u_t` is the exact marginal (flow-matching) velocity: integrating it from :math:`p_0`
reproduces :math:`p_1`. All of it is computed in float64 and returned in the input's dtype.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._validation import MAX_SAMPLES_PER_CALL, check_batch, check_positive_int
from ..paths import LinearSchedule, Schedule, expand_t

__all__ = ["GaussianMixture"]


class GaussianMixture:
    r"""Mixture :math:`\sum_k w_k \mathcal N(m_k, s_k^2 I_d)`.

    Parameters
    ----------
    means : Tensor
        ``(K, d)`` component means.
    stds : Tensor or float
        Scalar or ``(K,)`` positive standard deviations.
    weights : Tensor, optional
        ``(K,)`` non-negative weights summing to one; uniform by default.
    """

    def __init__(self, means: Tensor, stds: Tensor | float = 1.0, weights: Tensor | None = None) -> None:
        if not torch.is_tensor(means) or means.dim() != 2 or means.shape[0] == 0:
            raise ValueError("means must be a (K, d) tensor with K >= 1")
        check_batch(means, "means")
        k = means.shape[0]
        stds_t = torch.as_tensor(stds, dtype=torch.float64)
        if stds_t.dim() == 0:
            stds_t = stds_t.expand(k)
        if stds_t.shape != (k,):
            raise ValueError(f"stds must be a scalar or have shape ({k},), got {tuple(stds_t.shape)}")
        if not bool(torch.isfinite(stds_t).all()) or bool((stds_t <= 0).any()):
            raise ValueError("stds must be finite and > 0")
        if weights is None:
            w = torch.full((k,), 1.0 / k, dtype=torch.float64)
        else:
            w = torch.as_tensor(weights, dtype=torch.float64)
            if w.shape != (k,):
                raise ValueError(f"weights must have shape ({k},), got {tuple(w.shape)}")
            if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
                raise ValueError("weights must be finite and non-negative")
            if abs(float(w.sum()) - 1.0) > 1e-6:
                raise ValueError(f"weights must sum to 1 (got {float(w.sum()):.6g}); divide by their sum")
        if means.is_floating_point():
            top = torch.finfo(means.dtype).max
            if float(means.detach().abs().max()) + 10.0 * float(stds_t.max()) >= top:
                raise ValueError(
                    f"means and stds must keep samples within {means.dtype}'s range (|mean| + 10 std < {top:.3g}); "
                    "rescale the mixture or pass float64 means"
                )
        self.means = means.detach().to(torch.float64)
        self.stds = stds_t.clone().to(self.means.device)
        self.weights = w.to(self.means.device)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    def to(self, device: torch.device | str | None = None) -> GaussianMixture:
        """A copy on ``device`` (parameters stay float64)."""
        return GaussianMixture(self.means.to(device), self.stds.to(device), self.weights.to(device))

    # ------------------------------------------------------------------ standard sets
    @classmethod
    def eight_gaussians(cls, radius: float = 2.0 * math.sqrt(2.0), std: float = math.sqrt(2.0) / 4) -> GaussianMixture:
        r"""Eight equal components at :math:`r(\cos\frac{k\pi}4, \sin\frac{k\pi}4)` (the ``8gaussians`` toy set)."""
        a = torch.arange(8, dtype=torch.float64) * (math.pi / 4)
        return cls(radius * torch.stack([a.cos(), a.sin()], 1), std)

    @classmethod
    def grid(cls, n_per_side: int = 5, spacing: float = 1.0, std: float = 0.1) -> GaussianMixture:
        r"""Equal components on a centred ``n x n`` grid (``25gaussians`` for ``n = 5``)."""
        n = check_positive_int(n_per_side, "n_per_side")
        c = (torch.arange(n, dtype=torch.float64) - (n - 1) / 2) * spacing
        gx, gy = torch.meshgrid(c, c, indexing="ij")
        return cls(torch.stack([gx.flatten(), gy.flatten()], 1), std)

    # ------------------------------------------------------------------ the data law
    def sample(
        self, n: int, generator: torch.Generator | None = None, return_labels: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """``n`` samples (and their component labels), drawn on the generator's device."""
        n = check_positive_int(n, "n", MAX_SAMPLES_PER_CALL)
        dev = generator.device if generator is not None else self.means.device
        labels = torch.multinomial(self.weights.to(dev), n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64, device=dev)
        x = self.means.to(dev)[labels] + self.stds.to(dev)[labels, None] * z
        x = x.to(dtype)
        return (x, labels) if return_labels else x

    def _log_resp(self, x: Tensor, mean_scale: Tensor, var: Tensor) -> tuple[Tensor, Tensor]:
        """Per-component log densities ``(n, K)`` (with weights) and centred ``x - c m_k``."""
        d = self.dim
        diff = x[:, None, :] - mean_scale[:, None, None] * self.means[None]  # (n, K, d)
        logn = -0.5 * (diff.pow(2).sum(-1) / var + d * torch.log(2 * math.pi * var))
        return logn + self.weights.log()[None], diff

    def _check_x(self, x: Tensor) -> Tensor:
        check_batch(x, "x")
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (batch, {self.dim}), got {tuple(x.shape)}")
        return x.to(device=self.means.device, dtype=torch.float64)

    def log_prob(self, x: Tensor) -> Tensor:
        r""":math:`\log p_1(x)`, shape ``(batch,)``."""
        x64 = self._check_x(x)
        lp, _ = self._log_resp(
            x64,
            torch.ones(x64.shape[0], dtype=torch.float64, device=x64.device),
            self.stds.pow(2)[None].expand(x64.shape[0], -1),
        )
        return torch.logsumexp(lp, 1).to(x.dtype)

    def score(self, x: Tensor) -> Tensor:
        r""":math:`\nabla \log p_1(x)`."""
        return self.score_t(x, torch.ones(x.shape[0]), LinearSchedule())

    # ------------------------------------------------------------------ path marginals
    def _coeffs(self, x: Tensor, t: Tensor | float, schedule: Schedule):
        x64 = self._check_x(x)
        tt = expand_t(torch.as_tensor(t, dtype=torch.float64, device=x64.device), x64[:, 0])
        if tt.shape != (x64.shape[0],):
            raise ValueError(f"t must be a scalar or have shape ({x64.shape[0]},), got "
                             f"{tuple(torch.as_tensor(t).shape)}")
        a, s = schedule.alpha(tt), schedule.sigma(tt)
        var = s[:, None] ** 2 + a[:, None] ** 2 * self.stds[None] ** 2  # (n, K)
        lp, diff = self._log_resp(x64, a, var)
        r = torch.softmax(lp, dim=1)  # (n, K)
        return x64, tt, a, s, var, r, diff

    def marginal(self, t: float, schedule: Schedule | None = None) -> GaussianMixture:
        r"""Law of :math:`x_t = \sigma_t x_0 + \alpha_t x_1`: components :math:`\mathcal N(\alpha_t m_k, v_k I)`."""
        schedule = schedule or LinearSchedule()
        tt = torch.as_tensor(float(t), dtype=torch.float64)
        a, s = schedule.alpha(tt), schedule.sigma(tt)
        return GaussianMixture(a * self.means, torch.sqrt(s**2 + a**2 * self.stds**2), self.weights)

    def posterior_mean(self, x: Tensor, t: Tensor | float, schedule: Schedule | None = None) -> Tensor:
        r""":math:`\mathbb E[x_1 \mid x_t = x]`, the ideal data (x0-) prediction."""
        x64, _, a, _, var, r, diff = self._coeffs(x, t, schedule or LinearSchedule())
        comp = self.means[None] + (a[:, None, None] * self.stds[None, :, None] ** 2 / var[..., None]) * diff
        return (r[..., None] * comp).sum(1).to(x.dtype)

    def noise_mean(self, x: Tensor, t: Tensor | float, schedule: Schedule | None = None) -> Tensor:
        r""":math:`\mathbb E[x_0 \mid x_t = x]`, the ideal noise (epsilon-) prediction."""
        x64, _, _, s, var, r, diff = self._coeffs(x, t, schedule or LinearSchedule())
        return (r[..., None] * (s[:, None, None] / var[..., None]) * diff).sum(1).to(x.dtype)

    def score_t(self, x: Tensor, t: Tensor | float, schedule: Schedule | None = None) -> Tensor:
        r""":math:`\nabla_x \log p_t(x) = -\sum_k r_k (x - \alpha_t m_k) / v_k`."""
        _, _, _, _, var, r, diff = self._coeffs(x, t, schedule or LinearSchedule())
        return (-(r / var)[..., None] * diff).sum(1).to(x.dtype)

    def velocity(self, x: Tensor, t: Tensor | float, schedule: Schedule | None = None) -> Tensor:
        r"""Exact marginal velocity :math:`u_t(x) = \dot\alpha_t \mathbb E[x_1|x] + \dot\sigma_t \mathbb E[x_0|x]`."""
        schedule = schedule or LinearSchedule()
        _, tt, a, s, var, r, diff = self._coeffs(x, t, schedule)
        e1 = (
            r[..., None]
            * (self.means[None] + (a[:, None, None] * self.stds[None, :, None] ** 2 / var[..., None]) * diff)
        ).sum(1)
        e0 = (r[..., None] * (s[:, None, None] / var[..., None]) * diff).sum(1)
        v = schedule.d_alpha(tt)[:, None] * e1 + schedule.d_sigma(tt)[:, None] * e0
        return v.to(x.dtype)

    def field(self, schedule: Schedule | None = None):
        """``(x, t) -> velocity(x, t, schedule)``, ready for :func:`monge.samplers.sample`."""
        schedule = schedule or LinearSchedule()
        return lambda x, t: self.velocity(x, t, schedule)
