r"""Few-step diffusion samplers on data (:math:`\hat x_1`) predictions: DDIM, DPM-Solver++, UniPC, EDM-Heun.

Every sampler has the one signature of :mod:`monge.samplers.base`,
``sampler(model, x, schedule=None, ts, *, prediction="velocity", generator=None,
return_trajectory=False, **options) -> SampleOutput`` where ``model(x, t)`` returns the prediction
type ``prediction`` (see :mod:`monge.predictions`; it is converted exactly, so a velocity model runs
through DPM-Solver++ and a noise model through Euler), ``schedule`` is the alpha/sigma schedule
(``None``: linear) and ``ts`` is a strictly increasing grid of **flow times** (``t = 0`` noise,
``t = 1`` data, :math:`x_t = \sigma_t x_0 + \alpha_t x_1`).
Diffusion papers run their time the other way (:math:`s = 1 - t`, noise at :math:`s = T`); the
conversion happens here, at the boundary: a step from ``t_k`` to ``t_{k+1}`` is their step from
:math:`s` to the smaller :math:`s' = 1 - t_{k+1}`.

With half log-SNR :math:`\ell_t = \log(\alpha_t / \sigma_t)`, step size :math:`h = \ell_{k+1} - \ell_k`
and the denoiser :math:`D_k = \hat x_1(x_k, t_k)`:

- ``ddim`` (Song et al. 2021): :math:`x_{k+1} = \alpha_{k+1} D_k + \sqrt{\sigma_{k+1}^2 - c^2}\,\hat\epsilon_k
  + c z`, :math:`c = \eta\,\sigma_{k+1}\sqrt{1 - e^{-2h}}`; ``eta=0`` is deterministic, ``eta=1`` DDPM.
- ``dpm_solver_pp`` (Lu et al. 2022, "DPM-Solver++"), multistep 2M / 3M:
  :math:`x_{k+1} = \frac{\sigma_{k+1}}{\sigma_k} x_k
  - \alpha_{k+1}(e^{-h} - 1)\big(D_k + \tfrac{1}{2 r}(D_k - D_{k-1})\big)`
  for 2M, :math:`r = h_{k-1}/h`; 3M adds the second divided difference.
- ``unipc`` (Zhao et al. 2023, "UniPC"): UniP predictor of order ``order`` and UniC corrector with
  :math:`B(h) = h` (``bh1``) or :math:`e^h - 1` (``bh2``); the corrector reuses the next model
  evaluation, so it costs no extra NFE.
- ``heun_edm`` (Karras et al. 2022, "EDM", Algorithm 1 without churn): Heun's method on
  :math:`d\tilde x / d\tilde\sigma = \hat\epsilon` in the scaled variables
  :math:`\tilde x = x / \alpha_t,\ \tilde\sigma = \sigma_t / \alpha_t`; the step into
  :math:`\sigma = 0` (and out of :math:`\alpha = 0`) is an Euler (= DDIM) step.

The warm-up and the final steps follow diffusers: multistep methods start at first order and
raise it as history accrues; with ``lower_order_final`` the last step (into :math:`\sigma = 0`, or
of a grid with fewer than 15 steps) is first order and, for 3M, the one before it second order;
UniPC lowers its order to the number of steps left. A step from or into an infinite log-SNR
(:math:`\alpha = 0` at pure noise, :math:`\sigma = 0` at clean data) is always first order and
uncorrected. NFE is one model evaluation per step (two per Heun step); the final grid point is
never evaluated.

All are registered in :data:`monge.samplers.SAMPLERS` with their cost per step;
:func:`monge.samplers.sample` runs any of them by name.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from .._validation import check_number
from ..paths import Schedule
from ..predictions import Model
from .base import SAMPLERS, SampleOutput, SamplingGrid, finish, prepare_sampling

__all__ = ["ddim", "dpm_solver_pp", "unipc", "heun_edm"]


# ---------------------------------------------------------------------------- first-order step
def _first_order(x: Tensor, d0: Tensor, g: SamplingGrid, k: int) -> Tensor:
    r"""DDIM / DPM-Solver++(1): :math:`\frac{\sigma_{k+1}}{\sigma_k}x + \alpha_{k+1}(1 - e^{-h}) D`."""
    h = g.ell[k + 1] - g.ell[k]
    return (g.sigma[k + 1] / g.sigma[k]) * x - g.alpha[k + 1] * torch.expm1(-h) * d0


# ---------------------------------------------------------------------------- DDIM
@SAMPLERS.register("ddim", evals_per_step=1, needs_schedule=True)
def ddim(
    model: Model, x: Tensor, schedule: Schedule | None = None, ts: Tensor | None = None, *,
    prediction: str = "velocity",
    generator: torch.Generator | None = None, return_trajectory: bool = False, eta: float = 0.0,
) -> SampleOutput:
    r"""DDIM (Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models").

    .. math:: x_{k+1} = \alpha_{k+1} D_k + \sqrt{\sigma_{k+1}^2 - c_k^2}\;\hat\epsilon_k + c_k z_k,\qquad
              c_k = \eta\,\sigma_{k+1}\sqrt{1 - \tfrac{\alpha_k^2\sigma_{k+1}^2}{\sigma_k^2\alpha_{k+1}^2}},

    with :math:`\hat\epsilon_k = (x_k - \alpha_k D_k)/\sigma_k`. ``eta=0`` is the deterministic
    DDIM (the first-order DPM-Solver++ and Euler in the EDM variables), ``eta=1`` ancestral DDPM.
    """
    check_number(eta, "eta", 0.0, 1.0)
    den, g = prepare_sampling(model, x, schedule, ts, prediction)
    states = [x] if return_trajectory else None
    for k in range(len(g)):
        d0 = den.data(x, g, k)
        eps = (x - g.alpha[k] * d0) / g.sigma[k]
        s_next = g.sigma[k + 1]
        if eta > 0.0:
            c = eta * s_next * torch.sqrt(-torch.expm1(2.0 * (g.ell[k] - g.ell[k + 1])))
            z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = g.alpha[k + 1] * d0 + torch.sqrt((s_next**2 - c**2).clamp_min(0.0)) * eps + c * z
        else:
            x = g.alpha[k + 1] * d0 + s_next * eps
        if states is not None:
            states.append(x)
    return finish(x, den.nfe, states, g)


# ---------------------------------------------------------------------------- DPM-Solver++
def _dpm_order(order: int, k: int, n: int, g: SamplingGrid, lower_order_final: bool) -> int:
    p = min(order, k + 1)
    # a final sigma of zero, or numerically zero (the cosine schedule's 6e-17 at t = 1), makes the
    # last step infinitely long in log-SNR: take it first order, as diffusers does for sigma = 0
    last_zero = not g.finite(n) or float(g.sigma[n]) <= 1e-4 * float(g.alpha[n])
    if lower_order_final and k == n - 1 and (n < 15 or last_zero):
        p = 1
    if lower_order_final and k == n - 2 and n < 15:
        p = min(p, 2)
    if not g.finite(k, k + 1):
        return 1
    while p > 1 and not g.finite(k - p + 1):
        p -= 1
    return p


@SAMPLERS.register("dpm_solver_pp", evals_per_step=1, needs_schedule=True)
def dpm_solver_pp(
    model: Model, x: Tensor, schedule: Schedule | None = None, ts: Tensor | None = None, *,
    prediction: str = "velocity",
    generator: torch.Generator | None = None, return_trajectory: bool = False, order: int = 2,
    lower_order_final: bool = True,
) -> SampleOutput:
    r"""Multistep DPM-Solver++ (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of
    Diffusion Probabilistic Models"), data prediction, ``order`` 1, 2 (2M) or 3 (3M).

    With :math:`h = \ell_{k+1} - \ell_k`, :math:`r_0 = h_{k-1}/h`, :math:`r_1 = h_{k-2}/h`,
    :math:`D^{(1)}_0 = (D_k - D_{k-1})/r_0`:

    .. math:: x_{k+1} = \tfrac{\sigma_{k+1}}{\sigma_k} x_k - \alpha_{k+1}(e^{-h}-1)\big(D_k + \tfrac12 D^{(1)}_0\big)
              \quad\text{(2M, midpoint form as in diffusers)};

    3M uses :math:`D_1 = D^{(1)}_0 + \tfrac{r_0}{r_0+r_1}(D^{(1)}_0 - D^{(1)}_1)`,
    :math:`D_2 = \tfrac{1}{r_0+r_1}(D^{(1)}_0 - D^{(1)}_1)` and
    :math:`x_{k+1} = \tfrac{\sigma_{k+1}}{\sigma_k}x_k - \alpha_{k+1}(e^{-h}-1)D_k
    + \alpha_{k+1}\big(\tfrac{e^{-h}-1}{h} + 1\big)D_1 - \alpha_{k+1}\big(\tfrac{e^{-h}-1+h}{h^2} - \tfrac12\big)D_2`.
    ``generator`` is unused (deterministic); it is accepted for a uniform signature.
    """
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order!r}")
    den, g = prepare_sampling(model, x, schedule, ts, prediction)
    n = len(g)
    states = [x] if return_trajectory else None
    ms: list[Tensor] = []
    for k in range(n):
        ms.append(den.data(x, g, k))
        p = _dpm_order(order, k, n, g, lower_order_final)
        a_next, ratio = g.alpha[k + 1], g.sigma[k + 1] / g.sigma[k]
        if p == 1:
            x = _first_order(x, ms[k], g, k)
        else:
            h = g.ell[k + 1] - g.ell[k]
            phi = torch.expm1(-h)
            r0 = (g.ell[k] - g.ell[k - 1]) / h
            d1_0 = (ms[k] - ms[k - 1]) / r0
            if p == 2:
                x = ratio * x - a_next * phi * ms[k] - 0.5 * a_next * phi * d1_0
            else:
                r1 = (g.ell[k - 1] - g.ell[k - 2]) / h
                d1_1 = (ms[k - 1] - ms[k - 2]) / r1
                d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                x = (ratio * x - a_next * phi * ms[k] + a_next * (phi / h + 1.0) * d1
                     - a_next * ((phi + h) / h**2 - 0.5) * d2)
        if len(ms) > 3:
            ms[k - 3] = None  # type: ignore[call-overload]  # keep only the history in use
        if states is not None:
            states.append(x)
    return finish(x, den.nfe, states, g)


SAMPLERS.register("dpm_solver_pp_2m", evals_per_step=1, needs_schedule=True)(functools.partial(dpm_solver_pp, order=2))
SAMPLERS.register("dpm_solver_pp_3m", evals_per_step=1, needs_schedule=True)(functools.partial(dpm_solver_pp, order=3))


# ---------------------------------------------------------------------------- UniPC
def _unipc_coeffs(g: SamplingGrid, ms: list[Tensor], base: int, target: int, order: int, variant: str,
                  with_last: bool):
    r"""Shared UniP / UniC quantities for a step ``base -> target`` using ``order - 1`` older outputs.

    Returns ``(h_phi_1, B_h, rhos, D1s)``; ``rhos`` solves :math:`R\rho = b` with
    :math:`R_{ij} = r_j^{i}` and :math:`b_i = i!\,\varphi_{i+1}(h)\,h / B(h)` (Zhao et al. 2023, Alg. 2/3).
    """
    h = g.ell[target] - g.ell[base]
    hh = -h
    h_phi_1 = torch.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1.0
    b_h = hh if variant == "bh1" else torch.expm1(hh)
    rks, d1s = [], []
    for i in range(1, order):
        rk = (g.ell[base - i] - g.ell[base]) / h
        rks.append(rk)
        d1s.append((ms[base - i] - ms[base]) / rk)
    rks.append(torch.ones((), dtype=h.dtype, device=h.device))
    rks_t = torch.stack(rks)
    rows, b = [], []
    factorial = 1
    for i in range(1, order + 1):
        rows.append(rks_t ** (i - 1))
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1.0 / factorial
    r_mat, b_vec = torch.stack(rows), torch.stack(b)
    if with_last:  # corrector: unknowns for every older difference and the new one
        rhos = torch.full((1,), 0.5, dtype=h.dtype, device=h.device) if order == 1 else torch.linalg.solve(r_mat, b_vec)
    elif order == 1:
        rhos = None
    elif order == 2:
        rhos = torch.full((1,), 0.5, dtype=h.dtype, device=h.device)
    else:
        rhos = torch.linalg.solve(r_mat[:-1, :-1], b_vec[:-1])
    return h_phi_1, b_h, rhos, d1s


def _combine(rhos: Tensor, ds: list[Tensor]) -> Tensor:
    return sum(r * d for r, d in zip(rhos, ds, strict=True))


@SAMPLERS.register("unipc", evals_per_step=1, needs_schedule=True)
def unipc(
    model: Model, x: Tensor, schedule: Schedule | None = None, ts: Tensor | None = None, *,
    prediction: str = "velocity",
    generator: torch.Generator | None = None, return_trajectory: bool = False, order: int = 2,
    variant: str = "bh2", lower_order_final: bool = True, corrector: bool = True,
) -> SampleOutput:
    r"""UniPC multistep predictor-corrector (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector
    Framework for Fast Sampling of Diffusion Models"), data prediction.

    UniP-p: :math:`x_{k+1} = \tfrac{\sigma_{k+1}}{\sigma_k}x_k - \alpha_{k+1}(e^{-h}-1)D_k
    - \alpha_{k+1}B(h)\sum_{m<p}\rho_m D^{(1)}_m`, :math:`D^{(1)}_m = (D_{k-m} - D_k)/r_m`;
    UniC then corrects :math:`x_{k+1}` with the evaluation :math:`D_{k+1}` made there (which the
    next predictor reuses, so NFE = number of steps), raising the order by one.
    ``variant``: ``"bh1"`` (:math:`B(h) = h`) or ``"bh2"`` (:math:`B(h) = e^{h} - 1`);
    ``order`` 1-3. ``generator`` is unused (deterministic).
    """
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order!r}")
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"variant must be 'bh1' or 'bh2', got {variant!r}")
    den, g = prepare_sampling(model, x, schedule, ts, prediction)
    n = len(g)
    states = [x] if return_trajectory else None
    ms: list[Tensor] = []
    x_last: Tensor | None = None
    last_order = 1
    for k in range(n):
        d_k = den.data(x, g, k)
        if corrector and k > 0 and x_last is not None and g.finite(k - 1, k):
            p = last_order
            while p > 1 and not g.finite(k - p):
                p -= 1
            h_phi_1, b_h, rhos, d1s = _unipc_coeffs(g, ms, k - 1, k, p, variant, with_last=True)
            base = (g.sigma[k] / g.sigma[k - 1]) * x_last - g.alpha[k] * h_phi_1 * ms[k - 1]
            corr = _combine(rhos[:-1], d1s) if d1s else 0.0
            x = base - g.alpha[k] * b_h * (corr + rhos[-1] * (d_k - ms[k - 1]))
            if states is not None:
                states[-1] = x
        ms.append(d_k)
        p = min(order, n - k) if lower_order_final else order
        p = min(p, k + 1)
        if not g.finite(k, k + 1):
            p = 1
        while p > 1 and not g.finite(k - p + 1):
            p -= 1
        last_order = p
        x_last = x
        h_phi_1, b_h, rhos, d1s = _unipc_coeffs(g, ms, k, k + 1, p, variant, with_last=False)
        x = (g.sigma[k + 1] / g.sigma[k]) * x - g.alpha[k + 1] * h_phi_1 * ms[k]
        if rhos is not None:
            x = x - g.alpha[k + 1] * b_h * _combine(rhos, d1s)
        if k >= 3:
            ms[k - 3] = None  # type: ignore[call-overload]  # keep only the history in use
        if states is not None:
            states.append(x)
    return finish(x, den.nfe, states, g)


SAMPLERS.register("unipc_bh1", evals_per_step=1, needs_schedule=True)(functools.partial(unipc, variant="bh1"))
SAMPLERS.register("unipc_bh2", evals_per_step=1, needs_schedule=True)(functools.partial(unipc, variant="bh2"))


# ---------------------------------------------------------------------------- EDM Heun
@SAMPLERS.register("heun_edm", evals_per_step=2, final_step_evals=1, needs_schedule=True)
def heun_edm(
    model: Model, x: Tensor, schedule: Schedule | None = None, ts: Tensor | None = None, *,
    prediction: str = "velocity",
    generator: torch.Generator | None = None, return_trajectory: bool = False,
) -> SampleOutput:
    r"""Deterministic EDM sampler (Karras et al. 2022, "Elucidating the Design Space of
    Diffusion-Based Generative Models", Algorithm 1 with :math:`S_{churn} = 0`).

    Heun's method on the probability-flow ODE :math:`d\tilde x/d\tilde\sigma = \hat\epsilon(x, t)`
    in :math:`\tilde x = x/\alpha_t,\ \tilde\sigma = \sigma_t/\alpha_t`:

    .. math:: \tilde x' = \tilde x_k + (\tilde\sigma_{k+1} - \tilde\sigma_k)\hat\epsilon_k,\qquad
              \tilde x_{k+1} = \tilde x_k
              + (\tilde\sigma_{k+1} - \tilde\sigma_k)\tfrac12(\hat\epsilon_k + \hat\epsilon'),

    which for :math:`\alpha = 1` (``ve``, ``edm``) is Karras' algorithm verbatim. Steps into
    :math:`\sigma = 0` or out of :math:`\alpha = 0` stay Euler (DDIM), as in EDM. NFE is 2 per
    Heun step and 1 per Euler step.
    """
    den, g = prepare_sampling(model, x, schedule, ts, prediction)
    states = [x] if return_trajectory else None
    for k in range(len(g)):
        a, s, a1, s1 = g.alpha[k], g.sigma[k], g.alpha[k + 1], g.sigma[k + 1]
        d0 = den.data(x, g, k)
        eps = (x - a * d0) / s
        x_euler = a1 * d0 + s1 * eps
        if float(s1) == 0.0 or float(a) == 0.0 or not g.finite(k, k + 1):
            x = x_euler
        else:
            d1 = den.data(x_euler, g, k + 1)
            eps1 = (x_euler - a1 * d1) / s1
            x = (a1 / a) * x + a1 * (s1 / a1 - s / a) * 0.5 * (eps + eps1)
        if states is not None:
            states.append(x)
    return finish(x, den.nfe, states, g)
