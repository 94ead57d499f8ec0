r"""Step grids (timesteps): the flow-time grids ``t_0 < t_1 < ... < t_n`` a sampler steps through.

("Schedule" in monge means the alpha/sigma :class:`~monge.paths.Schedule` only.)

Every function returns a 1D float64 tensor of ``n + 1`` increasing flow times (``t = 0`` noise,
``t = 1`` data), both ends included:

- :func:`uniform_t`: :math:`t_i = t_0 + \tfrac in (t_1 - t_0)`;
- :func:`uniform_log_snr`: uniform in the log-SNR :math:`\lambda = \log(\alpha^2/\sigma^2)`
  (the DPM-Solver "logSNR" grid of Lu et al. 2022);
- :func:`karras`: uniform in :math:`\tilde\sigma^{1/\rho}`, :math:`\tilde\sigma = \sigma/\alpha = e^{-\lambda/2}`
  (Karras et al. 2022, :math:`\rho = 7`);
- :func:`optimized`: fitted to a model and a sampler for a
  given NFE, in the spirit of BOSS (Nguyen et al. 2024, "Bellman Optimal Stepsize Straightening")
  and Align Your Steps (Sabour et al. 2024) -- see its docstring;
- :func:`optimized_decoupled`: the optimized grid plus fitted network evaluation times
  :math:`s_i` (:func:`fit_eval_times`, :class:`EvalTimeWarp`; LD3's decoupled timesteps).

Where an end has an infinite log-SNR (``t = 0`` of a flow schedule, ``t = 1`` of most schedules),
or a huge one (``t = 1`` of ``cosine``, where :math:`\cos(\pi/2)` is ``6e-17``), that end is kept
as it is but the interior points are placed as if its log-SNR were ``+-log_snr_clip`` (default 15,
which leaves the finite ranges of the ``ve`` and ``edm`` defaults untouched).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from .._validation import check_batch, check_number, check_positive_int
from ..paths import LinearSchedule, Schedule
from ..predictions import Model, convert
from ..registry import Registry
from .base import SAMPLERS, sample, steps_for_nfe

__all__ = ["GRIDS", "uniform_t", "uniform_log_snr", "karras", "optimized", "make_timesteps", "EvalTimeWarp",
           "fit_eval_times", "optimized_decoupled"]

#: Fixed step grids by name; each is ``fn(n, schedule, t0=0.0, t1=1.0, **options)`` (``schedule``: alpha/sigma).
GRIDS: Registry = Registry("step grid")

F64 = torch.float64


def _check_ends(t0: float, t1: float) -> tuple[float, float]:
    for name, v in (("t0", t0), ("t1", t1)):
        check_number(v, name, 0.0, 1.0)
    if not t0 < t1:
        raise ValueError(f"t0 must be smaller than t1, got t0={t0}, t1={t1}")
    return float(t0), float(t1)


def _check_schedule(schedule: object) -> Schedule:
    if not isinstance(schedule, Schedule):
        raise ValueError(f"schedule must be a monge.paths.Schedule, got {type(schedule).__name__}")
    return schedule


@GRIDS.register("uniform")
def uniform_t(n: int, schedule: Schedule | None = None, t0: float = 0.0, t1: float = 1.0) -> Tensor:
    r"""``n`` equal steps in flow time: :math:`t_i = t_0 + \tfrac in (t_1 - t_0)` (``schedule`` unused)."""
    n = check_positive_int(n, "n")
    t0, t1 = _check_ends(t0, t1)
    return torch.linspace(t0, t1, n + 1, dtype=F64)


def _log_snr_ends(schedule: Schedule, t0: float, t1: float, clip: float) -> tuple[float, float]:
    check_number(clip, "log_snr_clip", 0.0, math.inf, low_open=True)
    lam = schedule.log_snr(torch.tensor([t0, t1], dtype=F64)).clamp(-clip, clip)
    lo, hi = float(lam[0]), float(lam[1])
    if not lo < hi:
        raise ValueError(f"the log-SNR of t0={t0} and t1={t1} is equal after clipping to +-{clip}; widen log_snr_clip")
    return lo, hi


def _from_log_snr(schedule: Schedule, lam: Tensor, t0: float, t1: float) -> Tensor:
    ts = schedule.t_from_log_snr(lam).to(F64)
    ts[0], ts[-1] = t0, t1
    if not bool((ts.diff() > 0).all()):
        raise ValueError("the grid is not strictly increasing in t; use fewer steps or a wider t0..t1")
    return ts


@GRIDS.register("uniform_log_snr")
def uniform_log_snr(n: int, schedule: Schedule, t0: float = 0.0, t1: float = 1.0, log_snr_clip: float = 15.0) -> Tensor:
    r"""``n`` steps uniform in log-SNR: :math:`\lambda_i = \lambda(t_0) + \tfrac in (\lambda(t_1) - \lambda(t_0))`,
    :math:`t_i = \lambda^{-1}(\lambda_i)` (Lu et al. 2022); ends beyond ``+-log_snr_clip`` count as there."""
    n = check_positive_int(n, "n")
    t0, t1 = _check_ends(t0, t1)
    lo, hi = _log_snr_ends(_check_schedule(schedule), t0, t1, log_snr_clip)
    return _from_log_snr(schedule, torch.linspace(lo, hi, n + 1, dtype=F64), t0, t1)


@GRIDS.register("karras")
def karras(n: int, schedule: Schedule, t0: float = 0.0, t1: float = 1.0, rho: float = 7.0,
           log_snr_clip: float = 15.0) -> Tensor:
    r"""Karras et al. (2022) grid in the EDM noise level :math:`\tilde\sigma = \sigma_t/\alpha_t`:

    .. math:: \tilde\sigma_i = \Big(\tilde\sigma_{\max}^{1/\rho} + \tfrac in\big(\tilde\sigma_{\min}^{1/\rho}
              - \tilde\sigma_{\max}^{1/\rho}\big)\Big)^{\rho},

    :math:`\tilde\sigma_{\max} = \tilde\sigma(t_0)`, :math:`\tilde\sigma_{\min} = \tilde\sigma(t_1)`
    (ends beyond ``+-log_snr_clip`` count as there). On the ``edm`` schedule with the same ``rho`` this is
    the uniform grid in ``t``.
    """
    n = check_positive_int(n, "n")
    t0, t1 = _check_ends(t0, t1)
    check_number(rho, "rho", 0.0, math.inf, low_open=True)
    lo, hi = _log_snr_ends(_check_schedule(schedule), t0, t1, log_snr_clip)
    smax, smin = math.exp(-0.5 * lo) ** (1.0 / rho), math.exp(-0.5 * hi) ** (1.0 / rho)
    sig = (smax + torch.linspace(0.0, 1.0, n + 1, dtype=F64) * (smin - smax)) ** rho
    return _from_log_snr(schedule, -2.0 * torch.log(sig), t0, t1)


def make_timesteps(name: str, n: int, schedule: Schedule, **options) -> Tensor:
    """The fixed grid ``name`` (one of :data:`GRIDS`) with ``n`` steps on the alpha/sigma ``schedule``."""
    return GRIDS.get(name)(n, schedule, **options)


# ---------------------------------------------------------------------------- optimized (BOSS / AYS style)
def _reference(model: Model, schedule: Schedule, noise: Tensor, prediction: str, t0: float, t1: float,
               steps: int, substeps: int) -> tuple[Tensor, Tensor]:
    """Candidate grid (``steps`` uniform in ``t`` merged with ``steps`` uniform in log-SNR) and the
    trajectories ``(len(grid), *noise.shape)`` at its points by DPM-Solver++(3M), ``substeps`` per interval."""
    cand = torch.cat([uniform_t(steps, schedule, t0, t1), uniform_log_snr(steps, schedule, t0, t1)]).sort().values
    keep = torch.cat([torch.tensor([True]), cand.diff() > 1e-6 * max(t1 - t0, 1e-12)])
    grid = cand[keep]
    grid[-1] = t1
    fine = [grid[0:1]]
    for a, b in zip(grid[:-1], grid[1:], strict=True):
        fine.append(torch.linspace(float(a), float(b), substeps + 1, dtype=F64)[1:])
    run = sample(model, noise, sampler="dpm_solver_pp", timesteps=torch.cat(fine).to(noise.dtype), schedule=schedule,
                 prediction=prediction, return_trajectory=True, order=3, lower_order_final=False)
    assert run.trajectory is not None  # return_trajectory=True
    return grid, run.trajectory[::substeps]


def _one_step_costs(model: Model, schedule: Schedule, sampler: str, prediction: str, grid: Tensor,
                    ref: Tensor, max_rows: int = 16384, on_row: Callable[[], Any] | None = None) -> Tensor:
    """``cost[i, j] = mean ||step(ref_i, t_i -> t_j) - ref_j||^2`` for ``i < j`` (inf elsewhere).

    One step from ``t_i`` to every later ``t_j`` is evaluated as one batch with per-row times.
    """
    m, b = grid.numel(), ref.shape[1]
    kind = sampler if sampler in ("euler", "heun", "midpoint", "rk4", "heun_edm") else "ddim"
    cost = torch.full((m, m), math.inf, dtype=F64)
    g = grid.to(ref.dtype)

    def call(x: Tensor, t: Tensor, out: str) -> Tensor:
        return convert(model(x, t), prediction, out, x, t, schedule)

    def rows(v: Tensor, reps: int) -> Tensor:
        return v.repeat_interleave(b)[:, None].reshape(-1, *([1] * (ref.dim() - 2)))

    for i in range(m - 1):
        xi, ti = ref[i], g[i].expand(b)
        first = call(xi, ti, "data" if kind in ("ddim", "heun_edm") else "velocity")
        chunk = max(1, max_rows // b)
        for j0 in range(i + 1, m, chunk):
            tj = g[j0:min(m, j0 + chunk)]
            c = tj.numel()
            x = xi.repeat(c, *([1] * (ref.dim() - 2)))
            f = first.repeat(c, *([1] * (ref.dim() - 2)))
            tt, h = tj.repeat_interleave(b), rows(tj - g[i], c)
            if kind in ("ddim", "heun_edm"):
                a0, s0 = schedule.alpha(g[i]), schedule.sigma(g[i])
                a1, s1 = rows(schedule.alpha(tj), c), rows(schedule.sigma(tj), c)
                eps = (x - a0 * f) / s0
                y = a1 * f + s1 * eps
                if kind == "heun_edm" and float(a0) > 0:
                    d1 = call(y, tt, "data")
                    pos = (s1 > 0).reshape(-1)
                    eps1 = torch.where(s1 > 0, (y - a1 * d1) / s1.clamp_min(1e-30), eps)
                    heun = (a1 / a0) * x + (s1 - a1 * s0 / a0) * 0.5 * (eps + eps1)
                    y = torch.where(pos.reshape(-1, *([1] * (ref.dim() - 2))), heun, y)
            elif kind == "euler":
                y = x + h * f
            elif kind == "midpoint":
                y = x + h * call(x + 0.5 * h * f, ti.repeat(c) + 0.5 * h.reshape(-1), "velocity")
            elif kind == "heun":
                y = x + 0.5 * h * (f + call(x + h * f, tt, "velocity"))
            else:  # rk4
                hm = ti.repeat(c) + 0.5 * h.reshape(-1)
                k2 = call(x + 0.5 * h * f, hm, "velocity")
                k3 = call(x + 0.5 * h * k2, hm, "velocity")
                k4 = call(x + h * k3, tt, "velocity")
                y = x + h / 6.0 * (f + 2.0 * k2 + 2.0 * k3 + k4)
            err = (y - ref[j0:j0 + c].reshape(c * b, *ref.shape[2:])).pow(2).reshape(c, b, -1).sum(-1).mean(1)
            cost[i, j0:j0 + c] = err.to(F64)
        if on_row is not None:
            on_row()
    return cost


def _dp_path(cost: Tensor, k: int) -> list[int]:
    """Cheapest ``k``-edge path ``0 -> m-1`` through the DAG with edge costs ``cost`` (Bellman)."""
    m = cost.shape[0]
    best = torch.full((k + 1, m), math.inf, dtype=F64)
    arg = torch.zeros((k + 1, m), dtype=torch.long)
    best[0, 0] = 0.0
    for s in range(1, k + 1):
        tot = best[s - 1][:, None] + cost  # (from, to)
        best[s], arg[s] = tot.min(0)
    path = [m - 1]
    for s in range(k, 0, -1):
        path.append(int(arg[s, path[-1]]))
    return path[::-1]


def _check_fit(schedule: Schedule | None, sampler: str, sampler_options: dict | None, noise: Tensor | None,
               refine_tol: float) -> tuple[Schedule, Tensor]:
    """Validate the arguments shared by the fitted grids; return the schedule (``None``: linear) and
    the noise."""
    schedule = LinearSchedule() if schedule is None else _check_schedule(schedule)
    if sampler not in SAMPLERS or SAMPLERS.info(sampler).adaptive:
        raise ValueError(f"unknown sampler {sampler!r}; valid choices: {', '.join(SAMPLERS.costs())}")
    if sampler == "euler_maruyama" or (sampler_options or {}).get("eta", 0.0):
        raise ValueError("sampler must be deterministic to fit a step grid; use eta=0 and not euler_maruyama")
    check_number(refine_tol, "refine_tol (0 skips the pattern search)", 0.0, math.inf, high_open=True)
    if noise is None:
        raise ValueError("noise must be a (batch, *shape) tensor of starting points x_{t0}, e.g. 256 draws")
    check_batch(noise, "noise", min_dim=1)
    return schedule, noise


def optimized(
    model: Model,
    schedule: Schedule | None,
    nfe: int,
    sampler: str = "euler",
    noise: Tensor | None = None,
    *,
    prediction: str = "velocity",
    t0: float = 0.0,
    t1: float = 1.0,
    reference_steps: int = 64,
    reference_substeps: int = 4,
    refine_sweeps: int = 3,
    refine_tol: float = 0.01,
    sampler_options: dict | None = None,
    progress: bool | None = None,
) -> Tensor:
    r"""Fit the flow-time grid that makes ``sampler`` with ``nfe`` evaluations follow the
    high-accuracy trajectories of ``model`` from ``noise`` most closely.

    1. **Reference.** A candidate grid :math:`G` (``reference_steps`` steps uniform in ``t``
       merged with as many uniform in log-SNR) and trajectories :math:`x^\star(g)` at its points,
       from ``noise`` (starting points at ``t0``, a few hundred suffice), by
       DPM-Solver++(3M) with ``reference_substeps`` sub-steps per interval.
    2. **Dynamic programming (BOSS).** ``cost[i][j]`` is the mean squared error of one step of the
       sampler from :math:`x^\star(g_i)` to :math:`g_j` against :math:`x^\star(g_j)`; Bellman's
       recursion :math:`J_s(j) = \min_i J_{s-1}(i) + c_{ij}` gives the cheapest ``n``-step path
       from :math:`g_0` to :math:`g_M`. Multistep samplers (DPM-Solver++, UniPC) are scored by
       their first-order (DDIM) step here.
    3. **Refinement (AYS-style).** Starting from the best of the DP grid and the fixed grids
       (uniform, uniform log-SNR, Karras) by end-point error, ``refine_sweeps`` sweeps of coordinate descent move each
       interior time within its neighbours' interval (six candidate fractions of it)
       to minimise the end-point error of the *full* sampler run.
    4. **Pattern search.** Each interior time then moves by :math:`\pm\delta` of its neighbours'
       gap, :math:`\delta = 1/8` halved after every sweep without improvement, down to
       ``refine_tol`` (``0`` skips this stage), on the same end-point error.
       The coarse sweeps stop at the six fixed fractions; this stage resolves the optimum to
       ``refine_tol`` of the gap (on the 8-Gaussians oracle at NFE 5 it lowers the end-point
       error of UniPC-bh2 by ~20 %, of DPM-Solver++(2M) by ~5 %).

    Returns a float64 grid of ``n + 1`` times, ``n = steps_for_nfe(sampler, nfe)``; store it
    with the checkpoint and pass it as ``timesteps``. Deterministic samplers only. ``progress``:
    a bar on stderr over the reference, the DP rows and the sweeps (default: when stderr is a
    terminal, :mod:`monge.progress`).
    """
    from ..progress import progress_bar

    schedule, noise = _check_fit(schedule, sampler, sampler_options, noise, refine_tol)
    n = steps_for_nfe(sampler, nfe)
    t0, t1 = _check_ends(t0, t1)
    reference_steps = check_positive_int(reference_steps, "reference_steps")
    reference_substeps = check_positive_int(reference_substeps, "reference_substeps")
    if reference_steps < n:
        raise ValueError(f"reference_steps={reference_steps} must be >= the {n} steps of nfe={nfe}")
    check_number(refine_sweeps, "refine_sweeps", 0, integer=True)
    opts = dict(sampler_options or {})
    dtype = noise.dtype

    with torch.no_grad(), progress_bar(1 + 2 * reference_steps + refine_sweeps * max(n - 1, 0) + 1,
                                       f"fitting the {sampler} grid, NFE {nfe}", progress=progress) as bar:
        # 1. candidate grid and reference trajectories
        grid, ref = _reference(model, schedule, noise, prediction, t0, t1, reference_steps, reference_substeps)
        target = ref[-1]
        bar.update(1)
        bar.total = 1 + (grid.numel() - 1) + refine_sweeps * max(n - 1, 0) + 1  # the merged grid's size

        # 2. BOSS dynamic programming over the candidate grid
        cost = _one_step_costs(model, schedule, sampler, prediction, grid, ref, on_row=lambda: bar.update(1))
        path = _dp_path(cost, n)
        ts = grid[path].clone()

        # 3. coordinate descent on the end-point error of the full sampler
        def loss(grid_ts: Tensor) -> float:
            out = sample(model, noise, sampler=sampler, timesteps=grid_ts.to(dtype), schedule=schedule,
                         prediction=prediction, **opts)
            return float((out.x - target).pow(2).flatten(1).sum(1).mean())

        best = loss(ts)
        for name in ("uniform", "uniform_log_snr", "karras"):
            try:
                cand_ts = make_timesteps(name, n, schedule, t0=t0, t1=t1)
            except ValueError:
                continue
            val = loss(cand_ts)
            if val < best:
                best, ts = val, cand_ts
        fracs = torch.tensor([0.1, 0.25, 0.4, 0.6, 0.75, 0.9], dtype=F64)
        for _ in range(refine_sweeps):
            for i in range(1, n):
                lo, hi = float(ts[i - 1]), float(ts[i + 1])
                for f in fracs:
                    trial = ts.clone()
                    trial[i] = lo + float(f) * (hi - lo)
                    val = loss(trial)
                    if val < best:
                        best, ts = val, trial
                bar.update(1)
        # 4. pattern search: each interior time moves by +-delta of its neighbours' gap
        def between(i: int, v: Tensor) -> tuple[float, float, float]:
            lo, hi = float(v[i - 1]), float(v[i + 1])
            return lo, hi, hi - lo

        ts, best = _pattern_search(ts, best, loss, range(1, n), between, refine_tol, closed=False)
        bar.update(1)
    return ts


def _pattern_search(values: Tensor, best: float, loss: Callable[[Tensor], float], indices: Iterable[int],
                    span: Callable[[int, Tensor], tuple[float, float, float]], tol: float, *, step: float = 0.125,
                    closed: bool) -> tuple[Tensor, float]:
    r"""Coordinate pattern search on ``loss``: ``values[i]`` moves by :math:`\pm\delta w` with
    ``lo, hi, w = span(i, values)`` (moves leaving ``[lo, hi]``, or ``(lo, hi)`` unless ``closed``, are
    skipped); :math:`\delta` starts at ``step`` and halves after a sweep without improvement, down to
    ``tol`` (``0``: no search). Returns the best values and loss."""
    indices = list(indices)
    while tol > 0 and step >= tol:
        improved = False
        for i in indices:
            lo, hi, w = span(i, values)
            for sign in (1.0, -1.0):
                new = float(values[i]) + sign * step * w
                if not (lo <= new <= hi if closed else lo < new < hi):
                    continue
                trial = values.clone()
                trial[i] = new
                val = loss(trial)
                if val < best:
                    best, values, improved = val, trial, True
                    break
        if not improved:
            step *= 0.5
    return values, best


# ------------------------------------------------------------------------- decoupled evaluation times (LD3)
def _interp(t: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """Piecewise-linear interpolation of ``(xp, fp)`` at ``t`` (constant beyond the ends)."""
    xp, fp = xp.to(t.device), fp.to(t.device)
    tt = t.to(xp.dtype).clamp(float(xp[0]), float(xp[-1]))
    i = torch.searchsorted(xp, tt.contiguous(), right=True).clamp(1, xp.numel() - 1)
    w = (tt - xp[i - 1]) / (xp[i] - xp[i - 1])
    return (fp[i - 1] + w * (fp[i] - fp[i - 1])).to(t.dtype)


class EvalTimeWarp:
    r"""``model`` evaluated at fitted times: :math:`\tilde m(x, t) = m(x, s(t))`, with :math:`s` the
    piecewise-linear map through :math:`(t_i, s_i)` on the step grid ``timesteps``.

    The sampler still steps through :math:`t_0 < \dots < t_n` and converts the model's output with
    :math:`\alpha_{t_i}, \sigma_{t_i}`; only the time fed to the network moves to :math:`s_i`
    (the decoupled timesteps of LD3, Tong et al. 2025). A fitted :math:`s` absorbs part of the
    sampler's truncation error, which no choice of the grid alone can. ``eval_times`` equal to
    ``timesteps`` give back ``model``. Fitted by :func:`fit_eval_times`.
    """

    def __init__(self, model: Model, timesteps: Tensor, eval_times: Tensor) -> None:
        ts = torch.as_tensor(timesteps, dtype=F64).detach().cpu()
        ev = torch.as_tensor(eval_times, dtype=F64).detach().cpu()
        if ts.ndim != 1 or ts.numel() < 2 or ev.shape != ts.shape:
            raise ValueError(f"timesteps and eval_times must be 1D of the same length >= 2, got shapes "
                             f"{tuple(ts.shape)} and {tuple(ev.shape)}")
        if not bool(torch.isfinite(ts).all() and torch.isfinite(ev).all()):
            raise ValueError("timesteps and eval_times must be finite")
        if not bool((ts.diff() > 0).all()):
            raise ValueError("timesteps must be strictly increasing")
        self.model, self.timesteps, self.eval_times = model, ts, ev

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        t = torch.as_tensor(t, device=x.device)
        return self.model(x, _interp(t if t.is_floating_point() else t.to(x.dtype), self.timesteps, self.eval_times))


def fit_eval_times(
    model: Model,
    schedule: Schedule | None,
    timesteps: Tensor,
    sampler: str,
    noise: Tensor | None,
    *,
    prediction: str = "velocity",
    reference_steps: int = 64,
    reference_substeps: int = 4,
    refine_tol: float = 0.005,
    sampler_options: dict | None = None,
) -> Tensor:
    r"""Network evaluation times :math:`s_0, \dots, s_n` for the grid ``timesteps`` (see
    :class:`EvalTimeWarp`) that minimise the end-point error of ``sampler`` against the
    high-accuracy trajectories of ``model`` from ``noise``,

    .. math:: \min_s\ \tfrac1B \textstyle\sum_b \|\Phi_{t, s}(x_b) - x^\star_b(t_n)\|^2,

    by a pattern search started at :math:`s = t`: each :math:`s_i` moves by :math:`\pm\delta` of
    its widest neighbouring step within :math:`[t_0, t_n]`, :math:`\delta = 1/4` halved after every
    sweep without improvement, down to ``refine_tol``. The reference is :func:`optimized`'s
    (DPM-Solver++(3M) on ``reference_steps`` uniform-``t`` and as many uniform-log-SNR intervals, with
    ``reference_substeps`` sub-steps each). Never worse than :math:`s = t` on ``noise``.

    ``bench/samplers.py`` measures the gain for every sampler (bench/results). The search moves one
    time by one step per sweep, so fits grow with NFE. :func:`optimized_decoupled` also moves the grid.
    Returns float64 times; sample with
    ``sample(EvalTimeWarp(model, timesteps, s), x, sampler=sampler, timesteps=timesteps, schedule=schedule)``.
    """
    schedule, noise = _check_fit(schedule, sampler, sampler_options, noise, refine_tol)
    ts = torch.as_tensor(timesteps, dtype=F64).detach().cpu()
    EvalTimeWarp(model, ts, ts)  # validates the grid
    t0, t1 = _check_ends(float(ts[0]), float(ts[-1]))
    reference_steps = check_positive_int(reference_steps, "reference_steps")
    reference_substeps = check_positive_int(reference_substeps, "reference_substeps")
    with torch.no_grad():
        target = _reference(model, schedule, noise, prediction, t0, t1, reference_steps, reference_substeps)[1][-1]
        fit = _DecoupledFit(model, schedule, sampler, noise, target, prediction, dict(sampler_options or {}))
        ev, _ = fit.eval_times(ts, ts.clone(), refine_tol)
    return ev


class _DecoupledFit:
    """End-point loss of ``sampler`` with a grid and evaluation times, and the two pattern searches."""

    def __init__(self, model: Model, schedule: Schedule, sampler: str, noise: Tensor, target: Tensor,
                 prediction: str, opts: dict) -> None:
        self.model, self.schedule, self.sampler, self.noise = model, schedule, sampler, noise
        self.target, self.prediction, self.opts = target, prediction, opts

    def loss(self, ts: Tensor, ev: Tensor) -> float:
        out = sample(EvalTimeWarp(self.model, ts, ev), self.noise, sampler=self.sampler,
                     timesteps=ts.to(self.noise.dtype), schedule=self.schedule, prediction=self.prediction, **self.opts)
        return float((out.x - self.target).pow(2).flatten(1).sum(1).mean())

    def eval_times(self, ts: Tensor, start: Tensor, tol: float) -> tuple[Tensor, float]:
        """Pattern search on the evaluation times, the grid fixed."""
        gaps = ts.diff()
        width = torch.maximum(torch.cat([gaps[:1], gaps]), torch.cat([gaps, gaps[-1:]]))
        t0, t1 = float(ts[0]), float(ts[-1])
        return _pattern_search(start, self.loss(ts, start), lambda v: self.loss(ts, v), range(ts.numel()),
                               lambda i, v: (t0, t1, float(width[i])), tol, step=0.25, closed=True)

    def grid(self, ts: Tensor, offsets: Tensor, tol: float) -> tuple[Tensor, float]:
        """Pattern search on the interior grid times, each evaluation time moving with its step time."""
        t0, t1 = float(ts[0]), float(ts[-1])

        def loss(v: Tensor) -> float:
            return self.loss(v, (v + offsets).clamp(t0, t1))

        def between(i: int, v: Tensor) -> tuple[float, float, float]:
            lo, hi = float(v[i - 1]), float(v[i + 1])
            return lo, hi, hi - lo

        return _pattern_search(ts, loss(ts), loss, range(1, ts.numel() - 1), between, tol, closed=False)


def optimized_decoupled(model: Model, schedule: Schedule | None, nfe: int, sampler: str = "euler",
                        noise: Tensor | None = None, *, prediction: str = "velocity",
                        eval_refine_tol: float = 0.005, joint_sweeps: int = 2,
                        **options) -> tuple[Tensor, Tensor]:
    r"""A step grid and evaluation times fitted together: ``(timesteps, eval_times)``.

    1. **Starts.** The :func:`optimized` grid and the fixed uniform grid, each with
       :func:`fit_eval_times`'s search from :math:`s = t`; the better by end-point error is kept
       (the grid fitted for :math:`s = t` is not always the best start once :math:`s` is free).
    2. **Joint sweeps** (``joint_sweeps``, stopping early without improvement): a pattern
       search on the interior grid times, each :math:`s_i` moving with its :math:`t_i`
       (offsets :math:`s_i - t_i` fixed), then again on the evaluation times.

    ``options`` go to :func:`optimized` (``reference_steps``/``reference_substeps``/``sampler_options``
    also to the reference of the second stage; ``bench/samplers.py`` measures the gain). Sample with
    ``sample(EvalTimeWarp(model, timesteps, eval_times), x, sampler=sampler, timesteps=timesteps,
    schedule=schedule)``.
    """
    check_number(joint_sweeps, "joint_sweeps", 0, integer=True)
    grid = optimized(model, schedule, nfe, sampler, noise, prediction=prediction, **options)
    schedule, noise = _check_fit(schedule, sampler, options.get("sampler_options"), noise, eval_refine_tol)
    t0, t1 = float(grid[0]), float(grid[-1])
    steps = check_positive_int(options.get("reference_steps", 64), "reference_steps")
    substeps = check_positive_int(options.get("reference_substeps", 4), "reference_substeps")
    with torch.no_grad():
        target = _reference(model, schedule, noise, prediction, t0, t1, steps, substeps)[1][-1]
        fit = _DecoupledFit(model, schedule, sampler, noise, target, prediction,
                            dict(options.get("sampler_options") or {}))
        starts = [grid, uniform_t(grid.numel() - 1, schedule, t0, t1)]
        fits = [(*fit.eval_times(ts, ts.clone(), eval_refine_tol), ts) for ts in starts]
        ev, best, ts = min(fits, key=lambda f: f[1])
        for _ in range(joint_sweeps):
            offsets = ev - ts
            ts, _ = fit.grid(ts, offsets, options.get("refine_tol", 0.01))
            ev, val = fit.eval_times(ts, (ts + offsets).clamp(t0, t1), eval_refine_tol)
            if not val < best:
                break
            best = val
    return ts, ev
