r"""Euler-Maruyama sampler for the family of SDEs sharing the marginals of an affine path.

For :math:`x_t = \sigma_t x_0 + \alpha_t x_1` (flow time, ``t = 0`` noise, ``t = 1`` data) with
marginal velocity :math:`u_t` and score :math:`s_t = \nabla\log p_t`, every

.. math:: dX_t = \big(u_t(X_t) + \varepsilon_t\, s_t(X_t)\big)\,dt + \sqrt{2\varepsilon_t}\,dW_t,
          \qquad \varepsilon_t \ge 0,

has the marginals :math:`p_t` (Albergo, Boffi & Vanden-Eijnden 2023, "Stochastic Interpolants";
Song et al. 2021, "Score-Based Generative Modeling through SDEs"). ``diffusion="reverse"`` takes
:math:`\varepsilon_t = \tfrac12 g_t^2 = \tfrac12\sigma_t^2\dot\lambda_t` (:math:`\lambda` the log-SNR),
which is the reverse-time SDE of the forward diffusion of the path; in diffusion time
:math:`s = 1 - t` it is Song et al.'s reverse SDE :math:`dx = [f - g^2\nabla\log p]\,ds + g\,d\bar W`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .._validation import check_number
from ..paths import Schedule
from ..predictions import Model
from .base import SAMPLERS, SampleOutput, finish, prepare_sampling

__all__ = ["euler_maruyama"]


@SAMPLERS.register("euler_maruyama", evals_per_step=1, needs_schedule=True)
def euler_maruyama(
    model: Model, x: Tensor, schedule: Schedule | None = None, ts: Tensor | None = None, *,
    prediction: str = "velocity",
    generator: torch.Generator | None = None, return_trajectory: bool = False,
    diffusion: str | Callable[[Tensor], Tensor] = "reverse", noise_scale: float = 1.0,
    last_step: str = "mean",
) -> SampleOutput:
    r"""Euler-Maruyama on :math:`dX = (u + \varepsilon s)\,dt + \sqrt{2\varepsilon}\,dW` (see the module).

    .. math:: x_{k+1} = x_k + h_k\big(u(x_k, t_k) + \varepsilon_k s(x_k, t_k)\big) + \sqrt{2\varepsilon_k h_k}\, z_k.

    Where :math:`\varepsilon_t` is infinite (``"reverse"`` at :math:`\alpha_t = 0`, the pure-noise
    start of flow schedules) that step is taken without noise (:math:`\varepsilon = 0`).
    One model evaluation per step; randomness from ``generator``.

    Parameters
    ----------
    diffusion : ``"reverse"`` or callable
        :math:`\varepsilon_t`: ``"reverse"`` is :math:`\tfrac12\sigma_t^2\dot\lambda_t`; a callable maps
        flow times ``(1,)`` to :math:`\varepsilon_t \ge 0`.
    noise_scale : float
        Multiplies :math:`\varepsilon_t`; ``0`` is the probability-flow ODE with Euler steps.
    last_step : ``"mean"`` or ``"euler_maruyama"``
        ``"mean"`` drops the noise of the final step (the usual choice: the last step lands on
        data, and its noise would stay in the samples).
    """
    check_number(noise_scale, "noise_scale", 0.0)
    if last_step not in ("mean", "euler_maruyama"):
        raise ValueError(f"last_step must be 'mean' or 'euler_maruyama', got {last_step!r}")
    if diffusion != "reverse" and not callable(diffusion):
        raise ValueError(f"diffusion must be 'reverse' or a callable t -> epsilon_t, got {diffusion!r}")
    den, g = prepare_sampling(model, x, schedule, ts, prediction)
    n = len(g)
    states = [x] if return_trajectory else None
    for k in range(n):
        t = g.t[k]
        h = g.t[k + 1] - t
        s = g.sigma[k]
        t1 = t.reshape(1)
        if isinstance(diffusion, str):  # "reverse", the only name (checked above)
            eps_t = 0.5 * s**2 * den.schedule.d_log_snr(t1)[0]
        else:
            eps_t = torch.as_tensor(diffusion(t1), dtype=x.dtype, device=x.device).reshape(-1)[0]
            if bool(eps_t < 0):
                raise ValueError(f"diffusion(t) must be >= 0, got {float(eps_t)} at t={float(t)}")
        eps_t = noise_scale * eps_t
        if not bool(torch.isfinite(eps_t)):
            eps_t = torch.zeros_like(eps_t)
        out = den.raw(x, t)
        u = out if prediction == "velocity" else den.to(out, "velocity", x, t)
        drift = u
        if float(eps_t) > 0.0:
            drift = u + eps_t * den.to(out, "score", x, t)
        x_new = x + h * drift
        if float(eps_t) > 0.0 and not (last_step == "mean" and k == n - 1):
            z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x_new = x_new + torch.sqrt(2.0 * eps_t * h) * z
        x = x_new
        if states is not None:
            states.append(x)
    return finish(x, den.nfe, states, g)
