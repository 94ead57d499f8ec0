r"""Fixed-step and adaptive ODE samplers for :math:`\dot x = v(x, t)`.

Every sampler has the one signature of :mod:`monge.samplers.base`,
``sampler(field, x, schedule=None, ts, *, prediction="velocity", return_trajectory=False,
generator=None) -> SampleOutput``, where ``field(x, t)`` takes ``x`` ``(batch, *shape)`` and ``t``
``(batch,)`` and ``ts`` is the 1D time grid, both ends included (increasing from noise to data, or
decreasing to run the flow backwards). A velocity field is integrated as it is (``schedule``
unused); a model of another prediction type, or any model given a ``schedule``, runs on the
velocity converted through ``schedule`` (default linear) on an increasing grid in ``[0, 1]``, as the
diffusion samplers do. With :math:`h = t_{k+1} - t_k`:

- ``euler`` (order 1): :math:`x_{k+1} = x_k + h v(x_k, t_k)`;
- ``midpoint`` (order 2): :math:`x_{k+1} = x_k + h v(x_k + \tfrac h2 v(x_k, t_k), t_k + \tfrac h2)`;
- ``heun`` (order 2, trapezoidal predictor-corrector):
  :math:`\tilde x = x_k + h v_k,\ x_{k+1} = x_k + \tfrac h2 (v_k + v(\tilde x, t_{k+1}))`;
- ``rk4`` (order 4): the classical Runge-Kutta scheme;
- ``dopri5``: adaptive Dormand-Prince 5(4) through ``torchdiffeq``, reporting the NFE it used.

The old call ``euler(field, x, ts)`` (grid third) still works for one release, with a
``DeprecationWarning``; :func:`~monge.samplers.sample` turns an NFE budget into a uniform grid.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import torch
from torch import Tensor

from .._validation import check_finite, check_positive_int
from ..paths import Schedule
from ..predictions import Model
from .base import SAMPLERS, Field, SampleOutput, _Counted, _prepare, sample

__all__ = [
    "Field",
    "SampleOutput",
    "SAMPLERS",
    "euler",
    "midpoint",
    "heun",
    "rk4",
    "dopri5",
    "sample",
]


def __getattr__(name: str) -> Any:
    if name == "EVALS_PER_STEP":
        warnings.warn("EVALS_PER_STEP is deprecated; use SAMPLERS.info(name).evals_per_step "
                      "(or monge.samplers.steps_for_nfe)", DeprecationWarning, stacklevel=2)
        return {n: SAMPLERS.info(n).evals_per_step for n in ("euler", "midpoint", "heun", "rk4")}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _check_grid(ts: Tensor) -> Tensor:
    if not torch.is_tensor(ts) or ts.dim() != 1 or ts.numel() < 2:
        raise ValueError("ts must be a 1D tensor of at least 2 times (both ends included)")
    check_finite(ts, "ts")
    d = ts.diff()
    if not (bool((d > 0).all()) or bool((d < 0).all())):
        raise ValueError("ts must be strictly monotonic (all increasing or all decreasing)")
    return ts


def _legacy_grid(name: str, schedule: Any, ts: Any, return_trajectory: bool) -> tuple[Any, Any, bool]:
    """Map the old ``name(field, x, ts[, return_trajectory])`` call (grid third) to the new arguments."""
    if torch.is_tensor(schedule):
        warnings.warn(f"{name}(field, x, ts) is deprecated; call {name}(field, x, None, ts) "
                      "(the grid is the fourth argument, after the schedule)", DeprecationWarning, stacklevel=4)
        return None, schedule, ts if isinstance(ts, bool) else return_trajectory
    return schedule, ts, return_trajectory


def _run(step: Callable[[_Counted, Tensor, Tensor, Tensor], Tensor], name: str, model: Model, x: Tensor,
         schedule: Schedule | None, ts: Tensor | None, prediction: str, return_trajectory: bool) -> SampleOutput:
    schedule, ts, return_trajectory = _legacy_grid(name, schedule, ts, return_trajectory)
    if schedule is None and prediction == "velocity":
        field = model
        if ts is None:
            raise ValueError("ts must be a 1D tensor of at least 2 times (both ends included)")
    else:  # through the schedule: checked and converted as by the diffusion samplers
        den, g = _prepare(model, x, schedule, ts, prediction)
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
def euler(field: Model, x: Tensor, schedule: Schedule | None = None, ts: Tensor | None = None, *,
          prediction: str = "velocity", return_trajectory: bool = False,
          generator: torch.Generator | None = None) -> SampleOutput:
    r"""Explicit Euler: :math:`x_{k+1} = x_k + h_k v(x_k, t_k)` (order 1, 1 NFE per step)."""
    return _run(_euler_step, "euler", field, x, schedule, ts, prediction, return_trajectory)


@SAMPLERS.register("midpoint", evals_per_step=2)
def midpoint(field: Model, x: Tensor, schedule: Schedule | None = None, ts: Tensor | None = None, *,
             prediction: str = "velocity", return_trajectory: bool = False,
             generator: torch.Generator | None = None) -> SampleOutput:
    r"""Explicit midpoint: :math:`x_{k+1} = x_k + h v(x_k + \frac h2 v(x_k, t_k), t_k + \frac h2)` (order 2)."""
    return _run(_midpoint_step, "midpoint", field, x, schedule, ts, prediction, return_trajectory)


@SAMPLERS.register("heun", evals_per_step=2)
def heun(field: Model, x: Tensor, schedule: Schedule | None = None, ts: Tensor | None = None, *,
         prediction: str = "velocity", return_trajectory: bool = False,
         generator: torch.Generator | None = None) -> SampleOutput:
    r"""Heun: :math:`x_{k+1} = x_k + \frac h2 (v(x_k, t_k) + v(x_k + h v_k, t_{k+1}))` (order 2)."""
    return _run(_heun_step, "heun", field, x, schedule, ts, prediction, return_trajectory)


@SAMPLERS.register("rk4", evals_per_step=4)
def rk4(field: Model, x: Tensor, schedule: Schedule | None = None, ts: Tensor | None = None, *,
        prediction: str = "velocity", return_trajectory: bool = False,
        generator: torch.Generator | None = None) -> SampleOutput:
    r"""Classical Runge-Kutta: :math:`x_{k+1} = x_k + \frac h6 (k_1 + 2k_2 + 2k_3 + k_4)` (order 4)."""
    return _run(_rk4_step, "rk4", field, x, schedule, ts, prediction, return_trajectory)


@SAMPLERS.register("dopri5", evals_per_step=None)
def dopri5(
    field: Model,
    x: Tensor,
    schedule: Schedule | float | None = None,
    ts: Tensor | float | None = None,
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
    steps). The old call ``dopri5(field, x, t0, t1)`` still works, with a ``DeprecationWarning``.
    """
    from torchdiffeq import odeint

    if isinstance(schedule, (int, float)) and not isinstance(schedule, bool):  # old dopri5(field, x, t0, t1)
        warnings.warn("dopri5(field, x, t0, t1) is deprecated; call dopri5(field, x, t0=t0, t1=t1)",
                      DeprecationWarning, stacklevel=2)
        schedule, t0, t1, ts = None, schedule, 1.0 if ts is None else ts, None
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
    if schedule is not None or prediction != "velocity":
        den, _ = _prepare(field, x, schedule, torch.tensor([float(t0), float(t1)], dtype=torch.float64), prediction)
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
