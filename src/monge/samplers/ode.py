r"""Fixed-step and adaptive ODE samplers for :math:`\dot x = v(x, t)`.

Every sampler has the one signature of :mod:`monge.samplers.base`,
``sampler(model, x, schedule=None, ts, *, prediction="velocity", return_trajectory=False,
generator=None) -> SampleOutput``, where ``model(x, t)`` takes ``x`` ``(batch, *shape)`` and ``t``
``(batch,)`` and ``ts`` is the 1D time grid, both ends included (increasing from noise to data, or
decreasing to run the flow backwards). A velocity is integrated as it is (``schedule`` unused); a
model of another prediction type runs on the velocity converted through ``schedule`` (``None``: the
linear path's) on an increasing grid in ``[0, 1]``, as the diffusion samplers do.
With :math:`h = t_{k+1} - t_k`:

- ``euler`` (order 1): :math:`x_{k+1} = x_k + h v(x_k, t_k)`;
- ``midpoint`` (order 2): :math:`x_{k+1} = x_k + h v(x_k + \tfrac h2 v(x_k, t_k), t_k + \tfrac h2)`;
- ``heun`` (order 2, trapezoidal predictor-corrector):
  :math:`\tilde x = x_k + h v_k,\ x_{k+1} = x_k + \tfrac h2 (v_k + v(\tilde x, t_{k+1}))`;
- ``rk4`` (order 4): the classical Runge-Kutta scheme;
- ``dopri5``: adaptive Dormand-Prince 5(4) through ``torchdiffeq``, reporting the NFE it used.

:func:`~monge.samplers.sample` turns an NFE budget into a uniform grid.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .._validation import check_finite, check_positive_int
from ..paths import Schedule
from ..predictions import Model
from .base import SAMPLERS, SampleOutput, _Counted, prepare_sampling

__all__ = ["euler", "midpoint", "heun", "rk4", "dopri5"]


def _check_grid(ts: Tensor) -> Tensor:
    if not torch.is_tensor(ts) or ts.dim() != 1 or ts.numel() < 2:
        raise ValueError("ts must be a 1D tensor of at least 2 times (both ends included)")
    check_finite(ts, "ts")
    d = ts.diff()
    if not (bool((d > 0).all()) or bool((d < 0).all())):
        raise ValueError("ts must be strictly monotonic (all increasing or all decreasing)")
    return ts


def _run(step: Callable[[_Counted, Tensor, Tensor, Tensor], Tensor], model: Model, x: Tensor,
         schedule: Schedule | None, ts: Tensor | None, prediction: str, return_trajectory: bool) -> SampleOutput:
    if prediction == "velocity":  # integrated as it is, on any monotonic grid
        field = model
        if ts is None:
            raise ValueError("ts must be a 1D tensor of at least 2 times (both ends included)")
    else:  # converted through the schedule, as by the diffusion samplers
        den, g = prepare_sampling(model, x, schedule, ts, prediction)
        field, ts = den.velocity_field(), g.t
    ts = _check_grid(ts).to(device=x.device, dtype=x.dtype)
    f = _Counted(field)
    states = [x] if return_trajectory else None
    for k in range(ts.numel() - 1):
        x = step(f, x, ts[k], ts[k + 1])
        if states is not None:
            states.append(x)
    traj = torch.stack(states) if states is not None else None
    return SampleOutput(x=x, nfe=f.nfe, trajectory=traj, times=ts if return_trajectory else None)


def _euler_step(f: _Counted, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
    return x + (s - t) * f(x, t)


def _midpoint_step(f: _Counted, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
    h = s - t
    return x + h * f(x + 0.5 * h * f(x, t), t + 0.5 * h)


def _heun_step(f: _Counted, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
    h = s - t
    v = f(x, t)
    return x + 0.5 * h * (v + f(x + h * v, s))


def _rk4_step(f: _Counted, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
    h = s - t
    k1 = f(x, t)
    k2 = f(x + 0.5 * h * k1, t + 0.5 * h)
    k3 = f(x + 0.5 * h * k2, t + 0.5 * h)
    k4 = f(x + h * k3, s)
    return x + h / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


@SAMPLERS.register("euler", evals_per_step=1)
def euler(model: Model, x: Tensor, schedule: Schedule | None = None, ts: Tensor | None = None, *,
          prediction: str = "velocity", return_trajectory: bool = False,
          generator: torch.Generator | None = None) -> SampleOutput:
    r"""Explicit Euler: :math:`x_{k+1} = x_k + h_k v(x_k, t_k)` (order 1, 1 NFE per step)."""
    return _run(_euler_step, model, x, schedule, ts, prediction, return_trajectory)


@SAMPLERS.register("midpoint", evals_per_step=2)
def midpoint(model: Model, x: Tensor, schedule: Schedule | None = None, ts: Tensor | None = None, *,
             prediction: str = "velocity", return_trajectory: bool = False,
             generator: torch.Generator | None = None) -> SampleOutput:
    r"""Explicit midpoint: :math:`x_{k+1} = x_k + h v(x_k + \frac h2 v(x_k, t_k), t_k + \frac h2)` (order 2)."""
    return _run(_midpoint_step, model, x, schedule, ts, prediction, return_trajectory)


@SAMPLERS.register("heun", evals_per_step=2)
def heun(model: Model, x: Tensor, schedule: Schedule | None = None, ts: Tensor | None = None, *,
         prediction: str = "velocity", return_trajectory: bool = False,
         generator: torch.Generator | None = None) -> SampleOutput:
    r"""Heun: :math:`x_{k+1} = x_k + \frac h2 (v(x_k, t_k) + v(x_k + h v_k, t_{k+1}))` (order 2)."""
    return _run(_heun_step, model, x, schedule, ts, prediction, return_trajectory)


@SAMPLERS.register("rk4", evals_per_step=4)
def rk4(model: Model, x: Tensor, schedule: Schedule | None = None, ts: Tensor | None = None, *,
        prediction: str = "velocity", return_trajectory: bool = False,
        generator: torch.Generator | None = None) -> SampleOutput:
    r"""Classical Runge-Kutta: :math:`x_{k+1} = x_k + \frac h6 (k_1 + 2k_2 + 2k_3 + k_4)` (order 4)."""
    return _run(_rk4_step, model, x, schedule, ts, prediction, return_trajectory)


@SAMPLERS.register("dopri5", evals_per_step=None)
def dopri5(
    model: Model,
    x: Tensor,
    schedule: Schedule | None = None,
    ts: Tensor | None = None,
    *,
    prediction: str = "velocity",
    return_trajectory: bool = False,
    generator: torch.Generator | None = None,
    t0: float | None = None,
    t1: float | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    n_saved: int = 33,
) -> SampleOutput:
    r"""Adaptive Dormand-Prince 5(4) (``torchdiffeq.odeint``); ``nfe`` is the count of evaluations.

    It integrates from ``ts[0]`` to ``ts[-1]`` (only the ends of the grid are used), or from ``t0``
    to ``t1`` (default 0 to 1) without ``ts``. With ``return_trajectory`` the solution is also
    reported at ``n_saved`` uniform times (interpolated by the solver, which does not change its
    steps). ``schedule`` converts a ``prediction`` other than velocity (``None``: the linear path's).
    """
    from torchdiffeq import odeint

    if ts is not None:
        if t0 is not None or t1 is not None:
            raise ValueError("give the ends as ts or as t0/t1, not both")
        if not torch.is_tensor(ts) or ts.dim() != 1 or ts.numel() < 2:
            raise ValueError("ts must be a 1D tensor of at least 2 times (both ends included)")
        t0, t1 = float(ts[0]), float(ts[-1])
    t0 = 0.0 if t0 is None else t0
    t1 = 1.0 if t1 is None else t1
    n_saved = check_positive_int(n_saved, "n_saved")
    if n_saved < 2:
        raise ValueError(f"n_saved must be >= 2, got {n_saved}")
    field = model
    if prediction != "velocity":
        den, _ = prepare_sampling(model, x, schedule, torch.tensor([float(t0), float(t1)], dtype=torch.float64),
                                  prediction)
        field = den.velocity_field()
    f = _Counted(field)
    n_times = n_saved if return_trajectory else 2
    grid = torch.linspace(float(t0), float(t1), n_times, dtype=x.dtype, device=x.device)
    traj = odeint(lambda t, y: f(y, t), x, grid, method="dopri5", atol=atol, rtol=rtol)
    return SampleOutput(
        x=traj[-1],
        nfe=f.nfe,
        trajectory=traj if return_trajectory else None,
        times=grid if return_trajectory else None,
    )
