r"""The one sampler registry, its signature, and the two entry points :func:`sample` and :func:`solve`.

Every sampler is one function with the signature

.. code-block:: python

    sampler(model, x, schedule=None, ts=None, *, prediction="velocity", return_trajectory=False,
            generator=None, **options) -> SampleOutput

- ``model(x, t)`` takes ``x`` ``(batch, *shape)`` and ``t`` ``(batch,)`` and returns a prediction of
  type ``prediction`` (``velocity``, ``noise``, ``data`` or ``score``; :mod:`monge.predictions`);
- ``schedule`` is the path's alpha/sigma :class:`~monge.paths.Schedule`,
  :math:`x_t = \sigma_t x_0 + \alpha_t x_1` (``None``: the linear path
  :math:`\alpha_t = t, \sigma_t = 1 - t`); a velocity model needs none for the ODE solvers;
- ``ts`` is the 1D grid of flow times the sampler steps through, both ends included
  (``t = 0`` noise, ``t = 1`` data);
- ``options`` are the sampler's own keywords (``eta``, ``order``, ``atol``, ...).

It is registered with its cost, ``@SAMPLERS.register("heun", evals_per_step=2)``: model
evaluations per step (``None`` for an adaptive solver), optionally fewer for the last step
(``final_step_evals``), and ``needs_schedule=True`` for the samplers that work through
:math:`\alpha_t, \sigma_t` (the diffusion and SDE samplers). From the cost, :func:`steps_for_nfe`
turns an NFE budget into steps for every sampler alike; Python, recipes (``sample.sampler``),
``monge sample`` and ``monge eval`` all look samplers up here.

Adding a sampler is one function with this signature, its ``@SAMPLERS.register(...)`` line, and
one test (the registry-wide tests of ``tests/samplers/test_registry.py`` then cover its NFE count).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from .._validation import check_batch, check_finite, check_positive_int
from ..paths import LinearSchedule, Schedule
from ..predictions import PREDICTIONS, Model, convert, convert_with
from ..registry import Registry

__all__ = ["Field", "SampleOutput", "SamplerInfo", "SamplerRegistry", "SAMPLERS", "steps_for_nfe",
           "nfe_for_steps", "sample", "solve"]

Field = Callable[[Tensor, Tensor], Tensor]


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


@dataclass(frozen=True)
class SamplerInfo:
    """What a sampler was registered with.

    ``evals_per_step``: model evaluations per step (``None``: adaptive, no fixed cost);
    ``final_step_evals``: evaluations of the last step when fewer (``heun_edm``'s final Euler step);
    ``needs_schedule``: works through the schedule's alpha/sigma (a velocity model on an ODE solver
    needs no schedule); ``flow_map``: jumps with a flow map ``model(x, t, r=r)`` of two times
    (:mod:`monge.objectives`) instead of integrating a field ``model(x, t)``.
    """

    evals_per_step: int | None
    final_step_evals: int | None = None
    needs_schedule: bool = False
    flow_map: bool = False

    @property
    def adaptive(self) -> bool:
        return self.evals_per_step is None


class SamplerRegistry(Registry):
    """A :class:`~monge.registry.Registry` whose entries carry their cost per step (:class:`SamplerInfo`)."""

    def register(self, name: str, *, evals_per_step: int | None, final_step_evals: int | None = None,
                 needs_schedule: bool = False, flow_map: bool = False) -> Callable:
        """``@SAMPLERS.register("heun", evals_per_step=2)``; ``evals_per_step=None`` for an adaptive solver."""
        if evals_per_step is not None:
            check_positive_int(evals_per_step, "evals_per_step")
        if final_step_evals is not None and (evals_per_step is None or not 1 <= final_step_evals <= evals_per_step):
            raise ValueError(f"final_step_evals must be in [1, evals_per_step], got {final_step_evals!r}")
        info = SamplerInfo(evals_per_step, final_step_evals, bool(needs_schedule), bool(flow_map))
        return super().register(name, info=info)

    def info(self, name: str) -> SamplerInfo:
        """The registered :class:`SamplerInfo` of ``name`` (``ValueError`` naming the choices if unknown)."""
        return self.meta(name)["info"]

    def costs(self) -> dict[str, int]:
        """``{name: evals_per_step}`` of every fixed-step sampler of a field ``model(x, t)`` (the
        flow-map samplers, ``flow_map=True``, left out)."""
        return {n: self.info(n).evals_per_step for n in self.names()
                if not self.info(n).adaptive and not self.info(n).flow_map}


SAMPLERS: SamplerRegistry = SamplerRegistry("sampler")


def steps_for_nfe(sampler: str, nfe: int) -> int:
    """Steps a budget of ``nfe`` model evaluations buys with ``sampler``, from its registered cost
    (``heun_edm``: its last step, an Euler step, costs one)."""
    info = SAMPLERS.info(sampler)
    check_positive_int(nfe, "nfe")
    if info.adaptive:
        raise ValueError(f"{sampler!r} is adaptive: it chooses its own steps (no NFE budget or step grid)")
    per, last = info.evals_per_step, info.final_step_evals or info.evals_per_step
    if nfe < last:
        raise ValueError(
            f"nfe={nfe} is below one step of {sampler!r} ({last} evaluations); use nfe >= {last} or the 'euler' sampler"
        )
    return (nfe - last) // per + 1


def nfe_for_steps(sampler: str, steps: int) -> int:
    """Model evaluations of ``steps`` steps of ``sampler`` (the inverse of :func:`steps_for_nfe`).

    Exact for every step of a fixed-step sampler except steps out of or into an infinite log-SNR
    that ``heun_edm`` takes as Euler steps: those save one evaluation each.
    """
    info = SAMPLERS.info(sampler)
    steps = check_positive_int(steps, "steps")
    if info.adaptive:
        raise ValueError(f"{sampler!r} is adaptive: its NFE is only known after the run")
    return info.evals_per_step * (steps - 1) + (info.final_step_evals or info.evals_per_step)


# ---------------------------------------------------------------------------- shared machinery
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


class _Denoiser:
    """Calls ``model(x, t)``, counts NFE and converts its output to ``data`` / ``noise``."""

    def __init__(self, model: Model, prediction: str, schedule: Schedule) -> None:
        if not callable(model):
            raise ValueError(f"model must be callable as model(x, t), got {type(model).__name__}")
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {', '.join(PREDICTIONS)}; got {prediction!r}")
        if not isinstance(schedule, Schedule):
            raise ValueError(f"schedule must be a monge.paths.Schedule, got {type(schedule).__name__}")
        self.model, self.prediction, self.schedule, self.nfe = model, prediction, schedule, 0

    def raw(self, x: Tensor, t: Tensor) -> Tensor:
        self.nfe += 1
        tt = t.expand(x.shape[0])
        out = self.model(x, tt)
        if not torch.is_tensor(out) or out.shape != x.shape:
            shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
            raise ValueError(f"model returned {shape} for input {tuple(x.shape)}; they must match")
        return out

    def to(self, out: Tensor, kind: str, x: Tensor, t: Tensor, grid: "_Grid | None" = None, k: int = 0) -> Tensor:
        """``out`` (made at ``(x, t)``) as a ``kind`` prediction; with ``grid``, ``t = grid.t[k]`` and the
        grid's precomputed coefficients are used."""
        if grid is None:
            y = convert(out, self.prediction, kind, x, t, self.schedule)
        else:
            y = convert_with(out, self.prediction, kind, x, *grid.coeffs(k, self.prediction, kind))
        if not bool(torch.isfinite(y).all()):
            raise ValueError(
                f"the {self.prediction!r} prediction at t={float(t):.6g} has no finite {kind!r} equivalent "
                f"(alpha_t={float(self.schedule.alpha(t)):.3g}, sigma_t={float(self.schedule.sigma(t)):.3g}); "
                "start the timesteps where alpha_t > 0 and sigma_t > 0, e.g. timesteps[0] = 1e-3"
            )
        return y

    def data(self, x: Tensor, grid: "_Grid", k: int) -> Tensor:
        """The data prediction at the grid's ``k``-th time."""
        t = grid.t[k]
        return self.to(self.raw(x, t), "data", x, t, grid, k)

    def velocity_field(self) -> Field:
        """``(y, t) -> velocity`` for the ODE solvers (``t`` one time broadcast to the batch)."""

        def field(y: Tensor, t: Tensor) -> Tensor:
            tt = t.reshape(-1)[0]
            out = self.raw(y, tt)
            return out if self.prediction == "velocity" else self.to(out, "velocity", y, tt)

        return field


class _Grid:
    """Coefficients of a flow-time grid: alpha, sigma and the half log-SNR ``ell``."""

    def __init__(self, schedule: Schedule, timesteps: Tensor, x: Tensor) -> None:
        if not torch.is_tensor(timesteps) or timesteps.dim() != 1 or timesteps.numel() < 2:
            raise ValueError("timesteps must be a 1D tensor of at least 2 flow times (both ends included)")
        check_finite(timesteps, "timesteps")
        ts = timesteps.to(device=x.device, dtype=x.dtype)
        if not bool((ts.diff() > 0).all()):
            raise ValueError("timesteps must be strictly increasing flow times (t=0 noise, t=1 data)")
        if float(ts[0]) < 0.0 or float(ts[-1]) > 1.0:
            raise ValueError(f"timesteps must lie in [0, 1], got [{float(ts[0])}, {float(ts[-1])}]")
        self.t = ts
        # Coefficients in float64, then cast: in float32, cos(pi/2) of the cosine schedule at
        # t = 1 is -4e-8, a negative sigma whose log-SNR is NaN.
        t64 = timesteps.detach().to(device=x.device, dtype=torch.float64)
        with torch.no_grad():
            alpha = schedule.alpha(t64).clamp_min(0.0)
            sigma = schedule.sigma(t64).clamp_min(0.0)
            ell = 0.5 * schedule.log_snr(t64)
        self.alpha, self.sigma, self.ell = alpha.to(x.dtype), sigma.to(x.dtype), ell.to(x.dtype)
        self._schedule, self._t64 = schedule, t64
        self._derivatives: tuple[Tensor, Tensor] | None = None
        if bool((self.sigma[:-1] <= 0).any()):
            raise ValueError("timesteps: only the last time may have sigma_t = 0; drop the earlier noise-free times")

    def __len__(self) -> int:
        return self.t.numel() - 1

    def coeffs(self, k: int, from_type: str, to_type: str) -> tuple:
        """``(alpha, sigma, d_alpha, d_sigma)`` at the ``k``-th time, for a conversion between the two
        prediction types (the derivatives, computed once per grid on first need, only with a velocity)."""
        da = ds = None
        if "velocity" in (from_type, to_type):
            if self._derivatives is None:
                with torch.no_grad():
                    self._derivatives = (self._schedule.d_alpha(self._t64).to(self.alpha.dtype),
                                         self._schedule.d_sigma(self._t64).to(self.alpha.dtype))
            da, ds = self._derivatives[0][k], self._derivatives[1][k]
        return self.alpha[k], self.sigma[k], da, ds

    def finite(self, *idx: int) -> bool:
        return all(math.isfinite(float(self.ell[i])) for i in idx)


def _prepare(model: Model, x: Tensor, schedule: Schedule | None, ts: Tensor | None,
             prediction: str) -> tuple[_Denoiser, _Grid]:
    """Checks shared by the samplers; ``schedule=None`` is the linear path."""
    if not torch.is_tensor(x):
        raise ValueError("x must be a torch tensor of shape (batch, *shape)")
    check_batch(x, "x", min_dim=1)
    if ts is None:
        raise ValueError("ts (the timesteps) must be a 1D tensor of at least 2 flow times (both ends included)")
    den = _Denoiser(model, prediction, LinearSchedule() if schedule is None else schedule)
    return den, _Grid(den.schedule, ts, x)


def _output(x: Tensor, nfe: int, states: list[Tensor] | None, grid: _Grid) -> SampleOutput:
    if states is None:
        return SampleOutput(x=x, nfe=nfe)
    return SampleOutput(x=x, nfe=nfe, trajectory=torch.stack(states), times=grid.t)


# ---------------------------------------------------------------------------- entry points
def sample(
    field: Model,
    x0: Tensor,
    sampler: str = "euler",
    nfe: int = 8,
    t0: float = 0.0,
    t1: float = 1.0,
    timesteps: Tensor | None = None,
    return_trajectory: bool = False,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    *,
    schedule: Schedule | None = None,
    prediction: str = "velocity",
    generator: torch.Generator | None = None,
    **options: Any,
) -> SampleOutput:
    r"""Integrate ``field`` from ``x0`` at ``t0`` to ``t1`` with a budget of ``nfe`` evaluations.

    Any sampler of :data:`SAMPLERS` takes :func:`steps_for_nfe` uniform steps (or the grid
    ``timesteps`` when given, whose length then sets the cost); ``dopri5`` ignores ``nfe`` and
    ``timesteps`` and adapts its steps to ``atol``/``rtol``. ``schedule`` (default: linear) is used by the samplers
    registered with ``needs_schedule`` and to convert a ``prediction`` other than velocity; an ODE
    solver on a velocity ``field`` integrates it directly. ``options`` go to the sampler. Runs
    under ``torch.no_grad()``; module train/eval modes are left to the caller.
    """
    info = SAMPLERS.info(sampler)
    if not torch.is_tensor(x0) or x0.dim() < 1 or x0.shape[0] == 0:
        raise ValueError("x0 must be a non-empty tensor of shape (batch, *shape)")
    check_finite(x0, "x0")
    if not info.needs_schedule and prediction == "velocity":
        schedule = None
    fn = SAMPLERS.get(sampler)
    with torch.no_grad():
        if info.adaptive:  # its own steps between t0 and t1
            return fn(field, x0, schedule, t0=t0, t1=t1, atol=atol, rtol=rtol, prediction=prediction,
                      return_trajectory=return_trajectory, generator=generator, **options)
        if timesteps is None:
            nfe = check_positive_int(nfe, "nfe")
            timesteps = torch.linspace(float(t0), float(t1), steps_for_nfe(sampler, nfe) + 1, dtype=x0.dtype,
                                       device=x0.device)
        return fn(field, x0, schedule, timesteps, prediction=prediction, return_trajectory=return_trajectory,
                  generator=generator, **options)


def solve(
    model: Model, x: Tensor, schedule: Schedule | None, timesteps: Tensor, sampler: str = "dpm_solver_pp",
    *, prediction: str = "velocity", generator: torch.Generator | None = None,
    return_trajectory: bool = False, **options: Any,
) -> SampleOutput:
    """Run the sampler named ``sampler`` (any of :data:`SAMPLERS`) on the grid ``timesteps`` under
    ``torch.no_grad()``.

    ``options`` go to the sampler (``eta``, ``order``, ``variant``, ...).
    """
    fn = SAMPLERS.get(sampler)
    with torch.no_grad():
        return fn(model, x, schedule, timesteps, prediction=prediction, generator=generator,
                  return_trajectory=return_trajectory, **options)
