r"""Fixed-step and adaptive ODE samplers for :math:`\dot x = v(x, t)`.

Every fixed-step sampler is one short function with the signature
``sampler(field, x, ts, return_trajectory=False) -> SampleOutput``, where ``field(x, t)`` takes
``x`` ``(batch, *shape)`` and ``t`` ``(batch,)`` and ``ts`` is the 1D time grid, both ends
included (increasing from noise to data, or decreasing to run the flow backwards). With
:math:`h = t_{k+1} - t_k`:

- ``euler`` (order 1): :math:`x_{k+1} = x_k + h v(x_k, t_k)`;
- ``midpoint`` (order 2): :math:`x_{k+1} = x_k + h v(x_k + \tfrac h2 v(x_k, t_k), t_k + \tfrac h2)`;
- ``heun`` (order 2, trapezoidal predictor-corrector):
  :math:`\tilde x = x_k + h v_k,\ x_{k+1} = x_k + \tfrac h2 (v_k + v(\tilde x, t_{k+1}))`;
- ``rk4`` (order 4): the classical Runge-Kutta scheme;
- ``dopri5``: adaptive Dormand-Prince 5(4) through ``torchdiffeq``, reporting the NFE it used.

:func:`sample` turns an NFE budget into a uniform grid and counts the evaluations it makes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .._validation import check_finite, check_positive_int
from ..registry import Registry

__all__ = [
    "Field",
    "SampleOutput",
    "SAMPLERS",
    "EVALS_PER_STEP",
    "euler",
    "midpoint",
    "heun",
    "rk4",
    "dopri5",
    "sample",
]

Field = Callable[[Tensor, Tensor], Tensor]

SAMPLERS: Registry = Registry("sampler")

#: Field evaluations per step of each fixed-step sampler.
EVALS_PER_STEP: dict[str, int] = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}


@dataclass(frozen=True)
class SampleOutput:
    """Result of a sampler.

    Attributes
    ----------
    x : Tensor
        Final state ``(batch, *shape)``.
    nfe : int
        Number of field evaluations made.
    trajectory : Tensor or None
        ``(n_times, batch, *shape)`` states at ``times`` when asked for.
    times : Tensor or None
        ``(n_times,)`` times of the trajectory states.
    """

    x: Tensor
    nfe: int
    trajectory: Tensor | None = None
    times: Tensor | None = None


class _Counted:
    """Wraps a field, broadcasts scalar time to the batch and counts evaluations."""

    def __init__(self, field: Field) -> None:
        self.field = field
        self.nfe = 0

    def __call__(self, x: Tensor, t: Tensor | float) -> Tensor:
        self.nfe += 1
        tt = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        v = self.field(x, tt.expand(x.shape[0]) if tt.dim() == 0 else tt)
        if v.shape != x.shape:
            raise ValueError(f"field returned shape {tuple(v.shape)} for input {tuple(x.shape)}; they must match")
        return v


def _check_grid(ts: Tensor) -> Tensor:
    if not torch.is_tensor(ts) or ts.dim() != 1 or ts.numel() < 2:
        raise ValueError("ts must be a 1D tensor of at least 2 times (both ends included)")
    check_finite(ts, "ts")
    d = ts.diff()
    if not (bool((d > 0).all()) or bool((d < 0).all())):
        raise ValueError("ts must be strictly monotonic (all increasing or all decreasing)")
    return ts


def _run(step: Callable[[_Counted, Tensor, Tensor, Tensor], Tensor], field: Field, x: Tensor,
         ts: Tensor, return_trajectory: bool) -> SampleOutput:
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


@SAMPLERS.register("euler")
def euler(field: Field, x: Tensor, ts: Tensor, return_trajectory: bool = False) -> SampleOutput:
    r"""Explicit Euler: :math:`x_{k+1} = x_k + h_k v(x_k, t_k)` (order 1, 1 NFE per step)."""
    return _run(_euler_step, field, x, ts, return_trajectory)


@SAMPLERS.register("midpoint")
def midpoint(field: Field, x: Tensor, ts: Tensor, return_trajectory: bool = False) -> SampleOutput:
    r"""Explicit midpoint: :math:`x_{k+1} = x_k + h v(x_k + \frac h2 v(x_k, t_k), t_k + \frac h2)` (order 2)."""
    return _run(_midpoint_step, field, x, ts, return_trajectory)


@SAMPLERS.register("heun")
def heun(field: Field, x: Tensor, ts: Tensor, return_trajectory: bool = False) -> SampleOutput:
    r"""Heun: :math:`x_{k+1} = x_k + \frac h2 (v(x_k, t_k) + v(x_k + h v_k, t_{k+1}))` (order 2)."""
    return _run(_heun_step, field, x, ts, return_trajectory)


@SAMPLERS.register("rk4")
def rk4(field: Field, x: Tensor, ts: Tensor, return_trajectory: bool = False) -> SampleOutput:
    r"""Classical Runge-Kutta: :math:`x_{k+1} = x_k + \frac h6 (k_1 + 2k_2 + 2k_3 + k_4)` (order 4)."""
    return _run(_rk4_step, field, x, ts, return_trajectory)


@SAMPLERS.register("dopri5")
def dopri5(
    field: Field,
    x: Tensor,
    t0: float = 0.0,
    t1: float = 1.0,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    return_trajectory: bool = False,
    n_saved: int = 33,
) -> SampleOutput:
    r"""Adaptive Dormand-Prince 5(4) (``torchdiffeq.odeint``); ``nfe`` is the count of evaluations.

    With ``return_trajectory`` the solution is also reported at ``n_saved`` uniform times
    (interpolated by the solver, which does not change its steps).
    """
    from torchdiffeq import odeint

    n_saved = check_positive_int(n_saved, "n_saved")
    if n_saved < 2:
        raise ValueError(f"n_saved must be >= 2, got {n_saved}")
    f = _Counted(field)
    n_times = n_saved if return_trajectory else 2
    ts = torch.linspace(float(t0), float(t1), n_times, dtype=x.dtype, device=x.device)
    traj = odeint(lambda t, y: f(y, t), x, ts, method="dopri5", atol=atol, rtol=rtol)
    return SampleOutput(
        x=traj[-1],
        nfe=f.nfe,
        trajectory=traj if return_trajectory else None,
        times=ts if return_trajectory else None,
    )


def sample(
    field: Field,
    x0: Tensor,
    sampler: str = "euler",
    nfe: int = 8,
    t0: float = 0.0,
    t1: float = 1.0,
    timesteps: Tensor | None = None,
    return_trajectory: bool = False,
    atol: float = 1e-5,
    rtol: float = 1e-5,
) -> SampleOutput:
    r"""Integrate ``field`` from ``x0`` at ``t0`` to ``t1`` with a budget of ``nfe`` evaluations.

    A fixed-step sampler takes ``nfe // EVALS_PER_STEP[sampler]`` uniform steps (or the grid
    ``timesteps`` when given, whose length then sets the cost); ``dopri5`` ignores ``nfe`` and
    adapts its steps to ``atol``/``rtol``. Runs under ``torch.no_grad()``; module train/eval
    modes are left to the caller.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; valid choices: {', '.join(SAMPLERS.names())}")
    if not torch.is_tensor(x0) or x0.dim() < 1 or x0.shape[0] == 0:
        raise ValueError("x0 must be a non-empty tensor of shape (batch, *shape)")
    check_finite(x0, "x0")
    with torch.no_grad():
        if sampler == "dopri5":
            return dopri5(field, x0, t0, t1, atol=atol, rtol=rtol, return_trajectory=return_trajectory)
        if timesteps is None:
            nfe = check_positive_int(nfe, "nfe")
            per = EVALS_PER_STEP[sampler]
            if nfe < per:
                raise ValueError(
                    f"nfe={nfe} is below one step of {sampler!r} ({per} evaluations); "
                    f"use nfe >= {per} or the 'euler' sampler"
                )
            timesteps = torch.linspace(float(t0), float(t1), nfe // per + 1, dtype=x0.dtype, device=x0.device)
        return SAMPLERS.get(sampler)(field, x0, timesteps, return_trajectory=return_trajectory)
