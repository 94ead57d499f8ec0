r"""The one sampler registry, its signature, the one entry point :func:`sample`, and the public
helpers for writing a sampler (:func:`prepare_sampling`, :class:`Denoiser`, :class:`SamplingGrid`,
:func:`finish`).

Every sampler is one function with the signature

.. code-block:: python

    sampler(model, x, schedule=None, ts=None, *, prediction="velocity", return_trajectory=False,
            generator=None, **options) -> SampleOutput

- ``model(x, t)`` takes ``x`` ``(batch, *shape)`` and ``t`` ``(batch,)`` and returns a prediction of
  type ``prediction`` (``velocity``, ``noise``, ``data`` or ``score``; :mod:`monge.predictions`);
- ``schedule`` is the path's alpha/sigma :class:`~monge.paths.Schedule`,
  :math:`x_t = \sigma_t x_0 + \alpha_t x_1`; ``None`` is the linear path's
  (:math:`\alpha_t = t, \sigma_t = 1 - t`). An ODE solver on a velocity never reads it;
- ``ts`` is the 1D grid of flow times the sampler steps through, both ends included
  (``t = 0`` noise, ``t = 1`` data);
- ``options`` are the sampler's own keywords (``eta``, ``order``, ``atol``, ...).

It is registered with its cost, ``@SAMPLERS.register("heun", evals_per_step=2)``: model
evaluations per step (``None`` for an adaptive solver), optionally fewer for the last step
(``final_step_evals``), and ``needs_schedule=True`` for the samplers that work through
:math:`\alpha_t, \sigma_t` (the diffusion and SDE samplers). From the cost, :func:`steps_for_nfe`
turns an NFE budget into steps for every sampler alike; Python (:func:`sample`), recipes
(``sample.sampler``), ``monge sample`` and ``monge eval`` all look samplers up here.

Adding a sampler is one function with this signature, its ``@SAMPLERS.register(...)`` line, and
one test (CONTRIBUTING.md, "Adding a sampler"; the registry-wide tests of
``tests/samplers/test_registry.py`` then cover its NFE count).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .._validation import check_batch, check_finite, check_positive_int
from ..paths import LinearSchedule, Schedule
from ..predictions import PREDICTIONS, Model, convert, convert_with
from ..registry import Registry

__all__ = ["Field", "SampleOutput", "SamplerInfo", "SamplerRegistry", "SAMPLERS", "steps_for_nfe",
           "nfe_for_steps", "sample", "prepare_sampling", "Denoiser", "SamplingGrid", "finish"]

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

    def trajectory_and_times(self) -> tuple[Tensor, Tensor]:
        """``(trajectory, times)`` of a sample drawn with ``return_trajectory=True`` (else ``ValueError``)."""
        if self.trajectory is None or self.times is None:
            raise ValueError("this sample has no trajectory: draw it with return_trajectory=True")
        return self.trajectory, self.times


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

    # narrower than Registry.register(name, **meta) on purpose: a sampler must declare its cost per step
    def register(self, name: str, *, evals_per_step: int | None,  # type: ignore[override]
                 final_step_evals: int | None = None, needs_schedule: bool = False, flow_map: bool = False) -> Callable:
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

    def kinds(self) -> dict[str, list[str]]:
        """Names by kind: ``ode`` (integrate a field, a velocity as it is), ``diffusion`` (work through
        the schedule's alpha/sigma, ``needs_schedule``) and ``flow_map`` (jumps of a flow map)."""
        kinds: dict[str, list[str]] = {"ode": [], "diffusion": [], "flow_map": []}
        for name in self.names():
            info = self.info(name)
            kinds["flow_map" if info.flow_map else "diffusion" if info.needs_schedule else "ode"].append(name)
        return kinds

    def costs(self) -> dict[str, int]:
        """``{name: evals_per_step}`` of every fixed-step sampler of a field ``model(x, t)`` (the
        flow-map samplers, ``flow_map=True``, left out)."""
        costs = {}
        for name in self.names():
            info = self.info(name)
            if info.evals_per_step is not None and not info.flow_map:
                costs[name] = info.evals_per_step
        return costs


SAMPLERS: SamplerRegistry = SamplerRegistry("sampler")


def steps_for_nfe(sampler: str, nfe: int) -> int:
    """Steps a budget of ``nfe`` model evaluations buys with ``sampler``, from its registered cost
    (``heun_edm``: its last step, an Euler step, costs one)."""
    info = SAMPLERS.info(sampler)
    check_positive_int(nfe, "nfe")
    if info.evals_per_step is None:
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
    if info.evals_per_step is None:
        raise ValueError(f"{sampler!r} is adaptive: its NFE is only known after the run")
    return info.evals_per_step * (steps - 1) + (info.final_step_evals or info.evals_per_step)


# ---------------------------------------------------------------------------- helpers for writing a sampler
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


class Denoiser:
    r"""The model as a sampler sees it: calls ``model(x, t)``, counts the evaluations (``nfe``) and
    converts its ``prediction`` into any other type through ``schedule``
    (:func:`monge.predictions.convert`), e.g. the data prediction
    :math:`\hat x_1 = (x_t - \sigma_t \hat\epsilon)/\alpha_t` of a noise model."""

    def __init__(self, model: Model, prediction: str, schedule: Schedule) -> None:
        if not callable(model):
            raise ValueError(f"model must be callable as model(x, t), got {type(model).__name__}")
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {', '.join(PREDICTIONS)}; got {prediction!r}")
        if not isinstance(schedule, Schedule):
            raise ValueError(f"schedule must be a monge.paths.Schedule, got {type(schedule).__name__}")
        self.model, self.prediction, self.schedule, self.nfe = model, prediction, schedule, 0

    def raw(self, x: Tensor, t: Tensor) -> Tensor:
        """The model's own output at ``(x, t)`` (``t`` one time, broadcast to the batch); one NFE."""
        self.nfe += 1
        tt = t.expand(x.shape[0])
        out = self.model(x, tt)
        if not torch.is_tensor(out) or out.shape != x.shape:
            shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
            raise ValueError(f"model returned {shape} for input {tuple(x.shape)}; they must match")
        return out

    def to(self, out: Tensor, kind: str, x: Tensor, t: Tensor, grid: SamplingGrid | None = None,
           k: int = 0) -> Tensor:
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

    def data(self, x: Tensor, grid: SamplingGrid, k: int) -> Tensor:
        r"""The data prediction :math:`\hat x_1(x, t_k)` at the grid's ``k``-th time; one NFE."""
        t = grid.t[k]
        return self.to(self.raw(x, t), "data", x, t, grid, k)

    def velocity_field(self) -> Field:
        """``(y, t) -> velocity`` for the ODE solvers (``t`` one time broadcast to the batch)."""

        def field(y: Tensor, t: Tensor) -> Tensor:
            tt = t.reshape(-1)[0]
            out = self.raw(y, tt)
            return out if self.prediction == "velocity" else self.to(out, "velocity", y, tt)

        return field


class SamplingGrid:
    r"""A checked grid of flow times ``t`` (strictly increasing in ``[0, 1]``) with its coefficients
    ``alpha``, ``sigma`` and the half log-SNR ``ell`` :math:`= \log(\alpha_t/\sigma_t)`, one entry per
    time; ``len(grid)`` is its number of steps."""

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
        """Whether the log-SNR is finite at every grid index ``idx``."""
        return all(math.isfinite(float(self.ell[i])) for i in idx)


def prepare_sampling(model: Model, x: Tensor, schedule: Schedule | None, ts: Tensor | None,
                     prediction: str) -> tuple[Denoiser, SamplingGrid]:
    """The checks every sampler shares, and what it steps with: the :class:`Denoiser` of ``model``
    (``prediction`` through ``schedule``, ``None``: the linear path) and the :class:`SamplingGrid` of ``ts``."""
    if not torch.is_tensor(x):
        raise ValueError("x must be a torch tensor of shape (batch, *shape)")
    check_batch(x, "x", min_dim=1)
    if ts is None:
        raise ValueError("ts (the timesteps) must be a 1D tensor of at least 2 flow times (both ends included)")
    den = Denoiser(model, prediction, LinearSchedule() if schedule is None else schedule)
    return den, SamplingGrid(den.schedule, ts, x)


def finish(x: Tensor, nfe: int, states: list[Tensor] | None, grid: SamplingGrid) -> SampleOutput:
    """The :class:`SampleOutput` of a sampler: final ``x``, its ``nfe``, and with ``states`` (one per
    grid time, the start included) the trajectory at ``grid.t``."""
    if states is None:
        return SampleOutput(x=x, nfe=nfe)
    return SampleOutput(x=x, nfe=nfe, trajectory=torch.stack(states), times=grid.t)


# ---------------------------------------------------------------------------- the entry point
def sample(
    model: Model,
    x: Tensor,
    *,
    sampler: str = "euler",
    nfe: int | None = None,
    timesteps: Tensor | None = None,
    schedule: Schedule | None = None,
    prediction: str = "velocity",
    t0: float = 0.0,
    t1: float = 1.0,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    generator: torch.Generator | None = None,
    return_trajectory: bool = False,
    **options: Any,
) -> SampleOutput:
    r"""Run the sampler named ``sampler`` (any of :data:`SAMPLERS`) on ``model`` from ``x`` at ``t0``
    to ``t1``, under ``torch.no_grad()`` (module train/eval modes are left to the caller).

    A fixed-step sampler takes exactly one of ``nfe``, a budget of model evaluations spent on
    :func:`steps_for_nfe` uniform steps from ``t0`` to ``t1``, and ``timesteps``, a 1D grid of flow
    times whose ends replace ``t0``/``t1``. An adaptive sampler (``dopri5``) takes neither: it
    chooses its steps to meet ``atol``/``rtol``. ``schedule`` is the path's alpha/sigma (``None``:
    the linear path's), read by the samplers registered with ``needs_schedule`` and to convert a
    ``prediction`` other than velocity; an ODE solver on a velocity never needs it. ``generator``
    draws the noise of stochastic samplers; ``options`` go to the sampler (``eta``, ``order``, ...).
    """
    info = SAMPLERS.info(sampler)
    if not torch.is_tensor(x) or x.dim() < 1 or x.shape[0] == 0:
        raise ValueError("x must be a non-empty tensor of shape (batch, *shape)")
    check_finite(x, "x")
    fn = SAMPLERS.get(sampler)
    if info.adaptive:
        if nfe is not None or timesteps is not None:
            raise ValueError(f"{sampler!r} is adaptive: it chooses its own steps; drop nfe and timesteps "
                             "(its accuracy is atol/rtol)")
        with torch.no_grad():
            return fn(model, x, schedule, t0=t0, t1=t1, atol=atol, rtol=rtol, prediction=prediction,
                      return_trajectory=return_trajectory, generator=generator, **options)
    if (nfe is None) == (timesteps is None):
        raise ValueError(f"sampler {sampler!r} takes either nfe (a budget of model evaluations on uniform steps) "
                         "or timesteps (a grid of flow times), not both and not neither")
    if timesteps is None:
        steps = steps_for_nfe(sampler, check_positive_int(nfe, "nfe"))
        timesteps = torch.linspace(float(t0), float(t1), steps + 1, dtype=x.dtype, device=x.device)
    elif (t0, t1) != (0.0, 1.0):
        raise ValueError("timesteps carries its own ends: drop t0/t1 (they place the uniform steps of nfe)")
    with torch.no_grad():
        return fn(model, x, schedule, timesteps, prediction=prediction, return_trajectory=return_trajectory,
                  generator=generator, **options)
