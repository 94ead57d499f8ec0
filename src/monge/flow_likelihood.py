r"""Log-likelihoods of trained flows by the instantaneous change of variables.

A flow :math:`\dot x_t = v(x_t, t)` carries the source :math:`p_0` (t = 0) to the model density
:math:`p_1` (t = 1). Along a trajectory the log-density obeys (Chen et al. 2018, "Neural
Ordinary Differential Equations", theorem 1)

.. math:: \frac{d}{dt}\log p_t(x_t) = -\nabla\cdot v(x_t, t),
          \qquad\text{so}\qquad
          \log p_1(x) = \log p_0(z) - \int_0^1 \nabla\cdot v(x_t, t)\,dt,

where :math:`x_t` is the trajectory through :math:`x_1 = x` and :math:`z = x_0` its source point.
:func:`log_likelihood` solves the augmented ODE

.. math:: \frac{d}{dt}\begin{pmatrix} x_t \\ a_t \end{pmatrix}
          = \begin{pmatrix} v(x_t, t) \\ \nabla\cdot v(x_t, t) \end{pmatrix},
          \qquad x_{t_1} = x,\ a_{t_1} = 0,

*backwards*, from :math:`t_1` (data) to :math:`t_0` (source), with any of monge's ODE samplers.
Then :math:`a_{t_0} = -\int_{t_0}^{t_1}\nabla\cdot v\,dt` and
:math:`\log p_{t_1}(x) = \log p_{t_0}(z) + a_{t_0}`. The divergence is exact (autograd, small
:math:`D`) or Hutchinson's estimate with probes fixed along the trajectory (FFJORD, Grathwohl
et al. 2019); each probe carries its own accumulator, so the probes give independent unbiased
estimates of the whole integral and their spread gives a per-sample standard error.

A model of any prediction type on an affine path becomes the velocity of the path's
probability-flow ODE with :func:`probability_flow` (the conversions of
:mod:`monge.predictions`); :func:`prior_log_prob` is the Gaussian density of the path's start.
Bits per dimension and dequantisation: :mod:`monge.metrics.likelihood`.

Lives above :mod:`monge.samplers` (it integrates with :func:`monge.samplers.sample`), so
:mod:`monge.metrics`, a lower layer, exports only the sampler-free parts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ._validation import check_batch, check_number, check_positive, check_positive_int
from .metrics.likelihood import (
    PROBE_DISTRIBUTIONS,
    draw_probes,
    exact_divergence,
    gaussian_log_prob,
    hutchinson_divergence,
    standard_normal_log_prob,
)
from .paths import ProbPath, Schedule
from .predictions import PREDICTIONS, as_velocity
from .samplers import SAMPLERS, sample

__all__ = ["DIVERGENCES", "LikelihoodResult", "log_likelihood", "probability_flow", "prior_log_prob"]

Field = Callable[[Tensor, Tensor], Tensor]

#: Divergence methods of :func:`log_likelihood`.
DIVERGENCES: tuple[str, ...] = ("exact", "hutchinson")


@dataclass(frozen=True)
class LikelihoodResult:
    """Result of :func:`log_likelihood`.

    Attributes
    ----------
    log_prob : Tensor
        ``(batch,)`` :math:`\\log p_{t_1}(x)` in nats (the mean over probes with Hutchinson).
    nfe : int
        Evaluations of the field made by the solver (each also costs one backward pass per
        probe, or :math:`D` with the exact divergence).
    std_error : Tensor or None
        ``(batch,)`` standard error of ``log_prob`` over Hutchinson's probes (``std / sqrt(K)``,
        needs ``probes >= 2``); ``None`` for the exact divergence or a single probe.
    z : Tensor
        ``(batch, *shape)`` source points :math:`x_{t_0}` of the trajectories.
    source_log_prob : Tensor
        ``(batch,)`` :math:`\\log p_{t_0}(z)`.
    """

    log_prob: Tensor
    nfe: int
    std_error: Tensor | None
    z: Tensor
    source_log_prob: Tensor


def _check_inputs(x: Tensor, divergence: str, probe_dist: str, sampler: str, nfe: int | None,
                  rtol: float, atol: float, t0: float, t1: float, generator) -> tuple[Tensor, int | None]:
    if not torch.is_tensor(x):
        raise ValueError(f"x must be a torch.Tensor of shape (batch, *shape), got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"x must be floating point, got {x.dtype}; dequantise integer data first "
                         "(monge.metrics.dequantize)")
    check_batch(x, "x")
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {', '.join(DIVERGENCES)}, got {divergence!r}")
    if probe_dist not in PROBE_DISTRIBUTIONS:
        raise ValueError(f"probe_dist must be one of {', '.join(PROBE_DISTRIBUTIONS)}, got {probe_dist!r}")
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; valid choices: {', '.join(SAMPLERS.names())}")
    if sampler != "dopri5":
        if nfe is None:
            raise ValueError(f"the fixed-step sampler {sampler!r} needs nfe (its budget of field evaluations)")
        nfe = check_positive_int(nfe, "nfe")
    check_positive(rtol, "rtol")
    check_positive(atol, "atol")
    t0 = check_number(t0, "t0")
    t1 = check_number(t1, "t1")
    if not (math.isfinite(t0) and math.isfinite(t1) and t0 < t1):
        raise ValueError(f"need finite t0 < t1 (t0 the source, t1 the data), got t0={t0}, t1={t1}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    # integrate in float32 at least: half precision accumulates the divergence far too coarsely
    if x.dtype not in (torch.float32, torch.float64):
        x = x.to(torch.float32)
    return x, nfe


def log_likelihood(
    field: Field,
    x: Tensor,
    *,
    source_log_prob: Callable[[Tensor], Tensor] | None = None,
    divergence: str = "exact",
    probes: int = 1,
    probe_dist: str = "rademacher",
    sampler: str = "dopri5",
    nfe: int | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    generator: torch.Generator | None = None,
    t0: float = 0.0,
    t1: float = 1.0,
) -> LikelihoodResult:
    r"""Log-density :math:`\log p_{t_1}(x)` of the flow ``field`` at the points ``x``.

    Integrates the instantaneous change of variables backwards from :math:`t_1` (data) to
    :math:`t_0` (source), see the module docstring:

    .. math:: \log p_{t_1}(x) = \log p_{t_0}(z) - \int_{t_0}^{t_1} \nabla\cdot v(x_t, t)\,dt.

    Parameters
    ----------
    field : callable
        Velocity ``field(x, t)``, ``x`` ``(batch, *shape)``, ``t`` ``(batch,)``; differentiable in
        ``x``. Put a module in eval mode first. For another prediction type, wrap it with
        :func:`probability_flow`.
    x : Tensor
        ``(batch, *shape)`` finite points (data space of the flow, e.g. dequantised images).
        Half precision is upcast to float32; float64 stays float64 (the field must accept it).
    source_log_prob : callable, optional
        :math:`z \mapsto \log p_{t_0}(z)`, ``(batch, *shape) -> (batch,)``. Default: the standard
        normal (:func:`standard_normal_log_prob`); see :func:`prior_log_prob` for VE/EDM paths.
    divergence : {"exact", "hutchinson"}
        Exact trace of the Jacobian (:math:`D` backward passes per evaluation) or Hutchinson's
        estimator (``probes`` backward passes), for images.
    probes : int
        Hutchinson probes, fixed along each trajectory; ``>= 2`` gives ``std_error``.
    probe_dist : {"rademacher", "gaussian"}
        Law of the probes (Rademacher has the smaller variance).
    sampler : str
        An ODE sampler of :data:`monge.samplers.SAMPLERS`: adaptive ``dopri5`` (default, uses
        ``rtol``/``atol``) or fixed-step ``euler``, ``midpoint``, ``heun``, ``rk4`` (uses ``nfe``).
    nfe : int, optional
        Field-evaluation budget of a fixed-step sampler (required for those).
    rtol, atol : float
        Tolerances of ``dopri5``, on the augmented state (points and log-density accumulators).
    generator : torch.Generator, optional
        Source of the probes.
    t0, t1 : float
        Source and data times of the flow (``t0 < t1``).

    Returns
    -------
    LikelihoodResult
        ``log_prob``, ``nfe``, ``std_error`` and the source points ``z``.

    References
    ----------
    Chen, Rubanova, Bettencourt & Duvenaud (2018), Neural ordinary differential equations.
    Grathwohl, Chen, Bettencourt, Sutskever & Duvenaud (2019), FFJORD: free-form continuous
    dynamics for scalable reversible generative models.
    Hutchinson (1990), A stochastic estimator of the trace of the influence matrix.
    """
    if not callable(field):
        raise ValueError(f"field must be callable as field(x, t), got {type(field).__name__}")
    if source_log_prob is not None and not callable(source_log_prob):
        raise ValueError(f"source_log_prob must be callable z -> log p(z), got {type(source_log_prob).__name__}")
    x, nfe = _check_inputs(x, divergence, probe_dist, sampler, nfe, rtol, atol, t0, t1, generator)
    if divergence == "hutchinson":
        eps = draw_probes(x, check_positive_int(probes, "probes"), probe_dist, generator)
    else:
        check_positive_int(probes, "probes")
        eps = None
    batch, shape = x.shape[0], x.shape[1:]
    dim = x[0].numel()
    k = 1 if eps is None else eps.shape[0]

    def augmented(y: Tensor, t: Tensor) -> Tensor:
        xt = y[:, :dim].reshape(batch, *shape)
        if eps is None:
            v, div = exact_divergence(field, xt, t)
            div = div[:, None]
        else:
            v, div = hutchinson_divergence(field, xt, t, eps)
            div = div.T
        if not bool(torch.isfinite(v).all()) or not bool(torch.isfinite(div).all()):
            raise ValueError(
                f"the field or its divergence is NaN/Inf at t={float(t.reshape(-1)[0]):.6g}; a path whose "
                "velocity is singular at an end (vp_linear or a stochastic interpolant at t=1, where d sigma/dt "
                "is infinite) needs t1 < 1, "
                "e.g. t1=1-1e-5 (the log-density is then that of x_t1)")
        return torch.cat([v.reshape(batch, dim).to(y.dtype), div.to(y.dtype)], 1)

    y1 = torch.cat([x.reshape(batch, dim), torch.zeros(batch, k, dtype=x.dtype, device=x.device)], 1)
    if sampler == "dopri5":
        y0, used = _solve_adaptive(augmented, y1, t1, t0, rtol, atol, dim)
    else:
        out = sample(augmented, y1, sampler=sampler, nfe=nfe, t0=t1, t1=t0)
        y0, used = out.x, out.nfe
    z = y0[:, :dim].reshape(batch, *shape)
    acc = y0[:, dim:]  # (batch, k): -int div dt, one column per probe
    lp0 = _source_log_prob(source_log_prob, z)
    log_prob = lp0 + acc.mean(1)
    std_error = acc.std(1, unbiased=True) / math.sqrt(k) if k >= 2 else None
    return LikelihoodResult(log_prob=log_prob, nfe=used, std_error=std_error, z=z, source_log_prob=lp0)


def _per_sample_norm(dim: int) -> Callable[[Tensor], Tensor]:
    r"""Error norm of the adaptive solve: the worst sample's error, where a sample's error is the
    larger of the RMS over its point's coordinates and the largest of its log-density accumulators.

    torchdiffeq's default RMS over the whole batch lets the step size follow the average
    trajectory, so a few hard samples (near a mode's edge) get errors far above the tolerance;
    this norm holds every sample, and every log-density, to ``rtol``/``atol``.
    """

    def norm(e: Tensor) -> Tensor:
        point = e[:, :dim].pow(2).mean(1).sqrt()
        acc = e[:, dim:].abs().amax(1)
        return torch.maximum(point, acc).max()

    return norm


def _solve_adaptive(augmented: Field, y1: Tensor, t1: float, t0: float, rtol: float, atol: float,
                    dim: int) -> tuple[Tensor, int]:
    """Dormand-Prince 5(4) (``torchdiffeq``) from ``t1`` back to ``t0`` with the per-sample norm;
    returns the state at ``t0`` and the number of field evaluations."""
    from torchdiffeq import odeint

    calls = [0]

    def f(t: Tensor, y: Tensor) -> Tensor:
        calls[0] += 1
        return augmented(y, t.to(y.dtype).expand(y.shape[0]))

    ts = torch.tensor([t1, t0], dtype=y1.dtype, device=y1.device)
    with torch.no_grad():
        traj = odeint(f, y1, ts, method="dopri5", rtol=rtol, atol=atol, options={"norm": _per_sample_norm(dim)})
    return traj[-1], calls[0]


def _source_log_prob(fn: Callable[[Tensor], Tensor] | None, z: Tensor) -> Tensor:
    if fn is None:
        return standard_normal_log_prob(z)
    with torch.no_grad():
        lp = fn(z)
    if not torch.is_tensor(lp) or lp.shape != (z.shape[0],):
        got = tuple(lp.shape) if torch.is_tensor(lp) else type(lp).__name__
        raise ValueError(f"source_log_prob must return shape ({z.shape[0]},), got {got}")
    return lp.to(z.dtype)


def _schedule_of(path: ProbPath | Schedule) -> Schedule:
    """The :math:`(\\alpha_t, \\sigma_t)` schedule of a path (or the schedule itself)."""
    if isinstance(path, Schedule):
        return path
    if not isinstance(path, ProbPath):
        raise ValueError(f"path must be a monge.paths.ProbPath or Schedule, got {type(path).__name__}")
    schedule = getattr(path, "schedule", None)
    if not isinstance(schedule, Schedule):
        raise ValueError(
            f"path {type(path).__name__} has no probability-flow ODE monge can derive: it has no "
            "alpha/sigma schedule (x_t = sigma_t x_0 + alpha_t x_1 with Gaussian x_0). Likelihoods "
            "need an affine path (linear, vp, vp_linear, ve, edm) or a stochastic interpolant"
        )
    return schedule


def probability_flow(model: Field, path: ProbPath | Schedule, prediction: str = "velocity") -> Field:
    r"""The velocity field of the probability-flow ODE of ``model`` on ``path``.

    A network trained on an affine path :math:`x_t = \sigma_t x_0 + \alpha_t x_1` (``linear``,
    ``vp``, ``vp_linear``, ``ve``, ``edm``, or the Gaussian-equivalent schedule of a stochastic
    interpolant) to predict ``prediction`` (velocity, noise, data or score) defines the ODE
    :math:`\dot x = u_t(x)` that carries :math:`p_0` to :math:`p_1` (for a score model, the
    probability-flow ODE of Song et al. 2021); :func:`monge.predictions.as_velocity` converts it.
    A velocity model is returned unchanged.

    Raises ``ValueError`` for a path without a schedule (no probability-flow ODE known to monge)
    or an unknown prediction type.
    """
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {', '.join(PREDICTIONS)}; got {prediction!r}")
    if not callable(model):
        raise ValueError(f"model must be callable as model(x, t), got {type(model).__name__}")
    schedule = _schedule_of(path)
    return model if prediction == "velocity" else as_velocity(model, prediction, schedule)


def prior_log_prob(path: ProbPath | Schedule, t0: float = 0.0) -> Callable[[Tensor], Tensor]:
    r"""Gaussian log-density :math:`\mathcal N(0, \sigma_{t_0}^2 I)` of the path's start.

    Exact when :math:`\alpha_{t_0} = 0` (``linear``, ``vp``, stochastic interpolants: the standard
    normal at ``t0 = 0``). For ``vp_linear`` (tiny :math:`\alpha_0`) and VE/EDM
    (:math:`x_{t_0} = x_1 + \sigma_{\max} z`) it neglects :math:`\alpha_{t_0}^2\,\mathrm{Var}[x_1]`
    against :math:`\sigma_{t_0}^2`, the usual prior of score-based models (Song et al. 2021).
    """
    schedule = _schedule_of(path)
    sigma = float(schedule.sigma(torch.tensor(float(check_number(t0, "t0")), dtype=torch.float64)))
    if not (sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"the path has sigma(t0)={sigma} at t0={t0}: no Gaussian prior there")
    return standard_normal_log_prob if sigma == 1.0 else gaussian_log_prob(sigma)
