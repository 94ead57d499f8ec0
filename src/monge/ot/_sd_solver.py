r"""The semi-discrete solver (private): sources, the independent marginal estimator, the
resumable fit state and the stochastic semi-dual loop. Public names are re-exported by
:mod:`monge.ot.semidiscrete`, which documents the method and holds the settings
(:class:`~monge.ot.semidiscrete.SemiDiscreteSolver`) that the loop reads.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from ..progress import progress_bar, progress_enabled
from ._sd_kernels import Layout

if TYPE_CHECKING:  # pragma: no cover
    from .semidiscrete import SemiDiscreteSolver

#: A source: ``"gaussian"`` (standard normal in the targets' dimension) or ``(n, generator) -> (n, d)``.
Source = str | Callable[[int, torch.Generator | None], Tensor]

_STATE_FORMAT = "monge.semidiscrete.state"
_STATE_VERSION = "2"  # 2 adds the starved-cell window (window_counts, window_draws)
_STATE_VERSIONS = ("1", "2")

#: Windows of the starved-cell check: a hard cell is *starved* when no training draw of the
#: last window hit it; a window ends once every cell expected at least this many hits (a false
#: alarm for an exact cell has probability ``exp(-24) = 4e-11``).
STARVED_EXPECTED = 24.0

#: Adam's rate as a fraction of the curvature step :math:`\eta_t` in two dimensions (chosen by
#: measurement with the epsilon decay, bench/results/semidiscrete.md; scaled with the dimension
#: by :func:`adam_factor`).
ADAM_FACTOR = 0.15


def adam_factor(d: int) -> float:
    r"""Adam's rate over the curvature step in dimension ``d``:
    :data:`ADAM_FACTOR` :math:`\cdot \min(1, (2/d)^{1/4})`.

    A fit to measurements of the best factor against the dimension, not a derivation
    (bench/results/semidiscrete.md, "Adam's rate and the dimension")."""
    return ADAM_FACTOR * min(1.0, (2.0 / max(int(d), 1)) ** 0.25)


# -------------------------------------------------------------------------------- sources
def source_points(source: Source, d: int, dtype: torch.dtype,
                  device: torch.device) -> Callable[[int, torch.Generator | None], Tensor]:
    """The function ``(n, generator) -> (n, d)`` that draws ``n`` points of ``source`` on
    ``device`` in ``dtype``."""
    if isinstance(source, str):
        if source != "gaussian":
            raise ValueError(f"source must be 'gaussian' or a callable (n, generator) -> Tensor, got {source!r}")

        def gauss(n: int, generator: torch.Generator | None) -> Tensor:
            gdev = generator.device if generator is not None else device
            return torch.randn(n, d, generator=generator, dtype=dtype, device=gdev).to(device)

        return gauss
    if not callable(source):
        raise ValueError("source must be 'gaussian' or a callable (n, generator) -> Tensor, got "
                         f"{type(source).__name__}")

    def call(n: int, generator: torch.Generator | None) -> Tensor:
        x = source(n, generator)
        if not torch.is_tensor(x) or x.shape[0] != n or x[0].numel() != d:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"source(n, generator) must return a ({n}, {d}) tensor, got {shape}")
        return x.reshape(n, d).to(device=device, dtype=dtype)

    return call


def source_moments(
    source: Source, d: int, dtype: torch.dtype, device: torch.device, generator: torch.Generator | None
) -> tuple[Tensor, float]:
    """Mean ``(d,)`` and RMS distance to the mean of the source: exact for ``"gaussian"``,
    else estimated on 4096 draws (taken from ``generator``)."""
    if isinstance(source, str):
        source_points(source, d, dtype, device)  # validates the name
        return torch.zeros(d, dtype=dtype, device=device), math.sqrt(d)
    x = source_points(source, d, dtype, device)(4096, generator)
    mean = x.mean(0)
    return mean, float((x - mean).square().sum(1).mean().sqrt())


# ------------------------------------------------------------------------------ estimator
@dataclass(frozen=True)
class MarginalReport:
    r"""Cell-mass error of a map measured on a fresh Monte Carlo sample (:func:`marginal_error`).

    With :math:`M` fresh source points, :math:`S^1_i = \sum_x p_i(x)` and
    :math:`S^2_i = \sum_x p_i(x)^2` (:math:`p_i \in \{0, 1\}` for hard cells), the estimated
    masses are :math:`\hat m_i = S^1_i / M`.

    Attributes
    ----------
    chi2 : float
        Unbiased estimate of :math:`\chi^2 = \sum_i (m_i - \nu_i)^2 / \nu_i`, the U-statistic
        :math:`\sum_i (S^{1\,2}_i - S^2_i) / (M (M-1) \nu_i) - 1` (Mousavi-Hosseini et al. 2025,
        eq. 3.5). It may be slightly negative for a nearly exact map.
    chi2_raw : float
        Plug-in :math:`\sum_i (\hat m_i - \nu_i)^2 / \nu_i`; ``chi2_raw = chi2 + chi2_noise``.
    chi2_noise : float
        Estimated sampling part of ``chi2_raw``, :math:`\sum_i \widehat{\mathrm{Var}}(p_i) /
        ((M-1)\,\nu_i)`; :math:`(N-1)/M` for an exact hard map.
    chi2_std : float
        Standard deviation of ``chi2`` for an exact hard map, :math:`\sqrt{2 (N-1)} / M`:
        differences of ``chi2`` below a few of these are noise.
    rms : float
        :math:`\sqrt{\max(\chi^2, 0)}`: the :math:`\nu`-weighted RMS relative cell-mass error
        :math:`(\sum_i \nu_i r_i^2)^{1/2}`, :math:`r_i = (m_i - \nu_i)/\nu_i`. It bounds the
        :math:`\nu`-weighted mean :math:`\sum_i \nu_i |r_i|` (Cauchy-Schwarz), i.e. the plain
        mean relative error for uniform weights. The fit stops on ``rms <= tol``.
    mean_rel, max_rel : float
        Plug-in mean and max of :math:`|\hat m_i - \nu_i| / \nu_i` (biased upwards by noise).
    mean_rel_noise : float
        ``mean_rel`` expected of an exact hard map,
        :math:`\mathrm{mean}_i \sqrt{2 (1 - \nu_i) / (\pi M \nu_i)}` (normal approximation):
        ``mean_rel`` cannot be read below this floor.
    empty : int
        Cells with :math:`S^1_i = 0` (hard cells that no fresh point hit).
    n_samples : int
        :math:`M`.
    epsilon : float
        The :math:`\varepsilon` of the cell probabilities (0: hard cells).
    """

    chi2: float
    chi2_raw: float
    chi2_noise: float
    chi2_std: float
    rms: float
    mean_rel: float
    max_rel: float
    mean_rel_noise: float
    empty: int
    n_samples: int
    epsilon: float

    def __str__(self) -> str:
        return (f"rms {self.rms:.4f} (chi2 {self.chi2:.3g} +- {self.chi2_std:.2g}), mean {self.mean_rel:.4f} "
                f"(noise floor {self.mean_rel_noise:.4f}), max {self.max_rel:.3f}, M={self.n_samples}")


def estimate(
    layout: Layout,
    sample: Callable[[int, torch.Generator | None], Tensor],
    heights: Tensor,
    nu: Tensor,
    eps: float,
    n_samples: int,
    generator: torch.Generator | None,
    draw: int,
) -> MarginalReport:
    """:class:`MarginalReport` of ``heights`` on ``n_samples`` draws taken ``draw`` at a time."""
    n = layout.n
    s1 = torch.zeros(n, dtype=torch.float64, device=nu.device)
    s2 = torch.zeros_like(s1)
    done = 0
    while done < n_samples:
        b = min(draw, n_samples - done)
        x = sample(b, generator)
        if eps > 0:
            a1, a2, _ = layout.soft_sums(x, heights, eps)
            s1 += a1.double()
            s2 += a2.double()
        else:
            c = layout.hard_sums(x, heights).double()
            s1 += c
            s2 += c
        done += b
    return summarise(s1, s2, nu.double(), n_samples, eps)


def summarise(s1: Tensor, s2: Tensor, nu: Tensor, m: int, eps: float) -> MarginalReport:
    """The :class:`MarginalReport` fields from the float64 sums ``S1``, ``S2`` of ``m`` draws."""
    n = nu.shape[0]
    mass = s1 / m
    raw = float(((mass - nu).square() / nu).sum())
    noise = float(((s2 / m - mass.square()) / ((m - 1) * nu)).sum()) if m > 1 else math.inf
    rel = (mass - nu).abs() / nu
    floor = float(torch.sqrt(2 * (1 - nu) / (math.pi * m * nu)).mean())
    chi2 = raw - noise
    return MarginalReport(
        chi2=chi2, chi2_raw=raw, chi2_noise=noise, chi2_std=math.sqrt(2 * (n - 1)) / m,
        rms=math.sqrt(max(chi2, 0.0)), mean_rel=float(rel.mean()), max_rel=float(rel.max()),
        mean_rel_noise=floor, empty=int((s1 == 0).sum()), n_samples=m, epsilon=eps,
    )


def default_eval_samples(n: int, tol: float) -> int:
    r"""Fresh draws per evaluation: enough that the estimator's noise on :math:`\chi^2`,
    :math:`\sqrt{2N}/M`, is a tenth of the target :math:`\mathrm{tol}^2`, and at least
    :math:`10 N` and 65,536; at most :math:`\max(2^{20}, 20 N)` (cost bound)."""
    return int(min(max(65536, 10 * n, math.ceil(10 * math.sqrt(2 * n) / tol**2)), max(2**20, 20 * n)))


def screen_samples(n: int, tol: float) -> int:
    r"""Fresh draws of the fit's screening check: :math:`\lceil\sqrt{2N}/\mathrm{tol}^2\rceil`
    (at least 4096), so that the noise of the unbiased :math:`\chi^2`, :math:`\sqrt{2N}/M`, is
    about :math:`\mathrm{tol}^2`: enough to tell a fit far from the tolerance, at a tenth of the
    cost of the confirming check."""
    return int(max(4096, math.ceil(math.sqrt(2 * n) / tol**2)))


# ---------------------------------------------------------------------------------- state
@dataclass
class SemiDiscreteState:
    r"""Everything the fit needs to continue exactly where it stopped.

    Attributes
    ----------
    heights : Tensor
        ``(N,)`` current iterate :math:`h_t` (zero mean).
    average : Tensor
        ``(N,)`` averaged heights :math:`\bar h_t` (what the map uses).
    moment1, moment2 : Tensor
        ``(N,)`` Adam moments (zeros for ``"sgd"``).
    step : int
        Steps done.
    epsilon : float
        Current :math:`\varepsilon_t` of the schedule (0 once in the hard phase).
    step_size : float
        Current step :math:`\eta_t` (height units).
    n_final : int
        Steps done at the target :math:`\varepsilon` (the averaging restarts there).
    n_evals : int
        Periodic evaluations done (each uses a fresh generator seeded ``eval_seed + n_evals``).
    eval_seed : int
        Seed of the evaluation generators, independent of the training draws.
    rng_state : Tensor
        State of the training generator (``torch.Generator.get_state()``).
    n_targets, dim : int
        Problem size, checked on resume.
    eps_init : float
        First epsilon of the schedule (kept so that a resumed fit follows the same schedule).
    fingerprint : float
        :math:`\sum_i \nu_i (1 + \|y_i\|^2)`-type checksum of targets and weights, checked on resume.
    window_counts : Tensor
        ``(N,)`` hard-cell counts of the training draws since the last starved-cell check.
    window_draws : int
        Training draws counted in ``window_counts``.
    refilled : int
        Starved cells moved by the line search so far.
    """

    heights: Tensor
    average: Tensor
    moment1: Tensor
    moment2: Tensor
    step: int
    epsilon: float
    step_size: float
    n_final: int
    n_evals: int
    eval_seed: int
    rng_state: Tensor
    n_targets: int
    dim: int
    fingerprint: float
    eps_init: float
    window_counts: Tensor | None = None
    window_draws: int = 0
    refilled: int = 0

    _TENSORS = ("heights", "average", "moment1", "moment2", "rng_state", "window_counts")

    def __post_init__(self) -> None:
        if self.window_counts is None:
            self.window_counts = torch.zeros_like(self.heights)

    def to_bytes(self) -> bytes:
        """The state as ``.safetensors`` bytes (tensors, and the scalars as JSON metadata)."""
        tensors = {k: getattr(self, k).detach().contiguous().cpu() for k in self._TENSORS}
        scalars = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self._TENSORS}
        meta = {"format": _STATE_FORMAT, "version": _STATE_VERSION, "scalars": json.dumps(scalars)}
        return st_save(tensors, metadata=meta)

    @classmethod
    def from_bytes(cls, raw: bytes, device: torch.device | str | None = None,
                   origin: str = "the data") -> SemiDiscreteState:
        """Read bytes made by :meth:`to_bytes` (format checked, no code executed); ``origin``
        names them in errors (e.g. the file they were read from)."""
        try:
            tensors = st_load(raw)
            header_len = int.from_bytes(raw[:8], "little")
            meta = json.loads(raw[8 : 8 + header_len]).get("__metadata__", {}) or {}
            scalars = json.loads(meta.get("scalars", "null"))
        except (SafetensorError, ValueError, json.JSONDecodeError) as exc:
            raise ValueError(f"{origin} is not a readable safetensors file: {exc}") from exc
        version = meta.get("version")
        if meta.get("format") != _STATE_FORMAT or version not in _STATE_VERSIONS:
            raise ValueError(f"{origin} is not a semi-discrete fit state (format {meta.get('format')!r}, "
                             f"version {version!r}; this monge reads versions {', '.join(_STATE_VERSIONS)})")
        names = {f.name for f in fields(cls)}
        wanted = set(cls._TENSORS)
        if version == "1":  # no starved-cell window yet: it starts empty
            names -= {"window_counts", "window_draws", "refilled"}
            wanted.discard("window_counts")
        if not isinstance(scalars, dict) or set(scalars) | wanted != names or set(tensors) != wanted:
            raise ValueError(f"{origin} has missing or unknown entries; it was not written by "
                             "SemiDiscreteState.to_bytes")
        for k in wanted:
            if k != "rng_state" and device is not None:
                tensors[k] = tensors[k].to(device)
        values: dict[str, Any] = {**tensors, **scalars}  # names checked above
        return cls(**values)


def fingerprint(flat: Tensor, nu: Tensor) -> float:
    """A cheap checksum of targets and weights (float64), to refuse resuming on other data."""
    w = torch.arange(1, flat.shape[1] + 1, dtype=torch.float64, device=flat.device)
    return float((nu.double() * (1 + flat.double() @ w)).sum())


# ----------------------------------------------------------------------------------- loop
@dataclass(frozen=True)
class Derived:
    """Numbers of the loop that follow from the settings and the problem size (not options)."""

    #: fresh draws of the cheap screening check before a full one
    screen_samples: int
    #: source points drawn at once by the estimator
    draw: int
    #: Adam's rate over the curvature step (:func:`adam_factor`; 1 with a fixed ``lr``)
    adam_factor: float
    #: the settings' ``eps_init``, ``batch_size``, ``eval_samples`` and ``eval_every`` (given or derived)
    eps_init: float
    batch_size: int
    eval_samples: int
    eval_every: int


#: ``checkpoint(state)``: receives the state to keep (it may be written anywhere; ot/ writes no file)
Checkpoint = Callable[[SemiDiscreteState], None]
#: ``callback(state, report_or_None)`` after every step
Callback = Callable[[SemiDiscreteState, "MarginalReport | None"], None]


def new_state(
    h0: Tensor, cfg: SemiDiscreteSolver, derived: Derived, seed: int, eval_seed: int, n: int, d: int, fp: float
) -> SemiDiscreteState:
    gen = torch.Generator(device=h0.device).manual_seed(seed)
    h = h0 - h0.mean()
    return SemiDiscreteState(
        heights=h.clone(), average=h.clone(), moment1=torch.zeros_like(h), moment2=torch.zeros_like(h),
        step=0, epsilon=derived.eps_init, step_size=cfg.lr if cfg.lr is not None else derived.eps_init,
        n_final=0, n_evals=0, eval_seed=eval_seed, rng_state=gen.get_state(), n_targets=n, dim=d, fingerprint=fp,
        eps_init=derived.eps_init,
    )


def _final_phase(state: SemiDiscreteState, cfg: SemiDiscreteSolver) -> bool:
    return state.epsilon == cfg.epsilon


def _step(state: SemiDiscreteState, layout: Layout, sample: Callable, nu: Tensor, cfg: SemiDiscreteSolver,
          derived: Derived, gen: torch.Generator) -> None:
    """One stochastic step of the semi-dual (in place), then the schedule's update."""
    eps = state.epsilon
    x = sample(derived.batch_size, gen)
    h = state.heights
    if eps > 0:
        s1, _, blur = layout.soft_sums(x, h, eps, need_s2=False)
        blur_frac = blur / derived.batch_size
    else:
        s1, blur_frac = layout.hard_sums(x, h), 0.0
        if cfg.refill and _final_phase(state, cfg):
            assert state.window_counts is not None  # __post_init__ fills it
            state.window_counts += s1
            state.window_draws += derived.batch_size
    grad = s1 / derived.batch_size - nu
    if eps > 0 and cfg.lr is None:
        # inverse mean curvature of the 1/nu-preconditioned semi-dual: eps / E[1 - sum_i p_i^2]
        curv = max(blur_frac, 1e-3)
        target = (cfg.lr_scale if cfg.optimizer == "sgd" else 1.0) * eps / curv
        state.step_size = target if state.step == 0 else 0.9 * state.step_size + 0.1 * target
    t = state.step + 1
    if cfg.optimizer == "adam":
        b1, b2 = 0.9, 0.999
        state.moment1.mul_(b1).add_(grad, alpha=1 - b1)
        state.moment2.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        v = state.moment2 / (1 - b2**t)
        if cfg.variance_floor and _final_phase(state, cfg):
            v = v.maximum(nu * (1 - nu) / derived.batch_size)
        direction = (state.moment1 / (1 - b1**t)) / (v.sqrt() + 1e-12 / layout.n)
        rate = derived.adam_factor * state.step_size
        if cfg.anneal > 0 and _final_phase(state, cfg):
            rate /= math.sqrt(1.0 + state.n_final / cfg.anneal)
        h -= rate * direction
    else:
        h -= state.step_size * grad / nu
    h -= h.mean()
    state.step = t
    if _final_phase(state, cfg):
        state.n_final += 1
        w = 1.0 - min(cfg.ema, state.n_final / (state.n_final + 10.0)) if cfg.ema > 0 else 1.0
        state.average.mul_(1 - w).add_(h, alpha=w)
    else:
        state.average.copy_(h)
        state.epsilon = _next_epsilon(eps, blur_frac, cfg, state.eps_init)


def refill(state: SemiDiscreteState, layout: Layout, sample: Callable, nu: Tensor, cfg: SemiDiscreteSolver,
           gen: torch.Generator) -> int:
    r"""Move the *starved* hard cells (no hit in the last window of training draws, in which
    each cell expected at least :data:`STARVED_EXPECTED`) by a coordinate line search of the
    semi-dual, and restart the window; returns the number of cells moved.

    Adam moves an empty cell by a fixed small step per iteration (its gradient is the constant
    :math:`-\nu_i`), so cells left empty by the entropic phase can stay empty for thousands of
    steps. On :math:`M` fresh training draws (a quarter of the window's: the search costs at
    most a quarter of the window's steps, and only when a cell starves), the margins
    :math:`\delta_i(x) = \max_j s_j(x) - s_i(x)` give the height at which cell :math:`i` takes
    :math:`k` of them, all other heights
    fixed: :math:`h_i \leftarrow h_i + \delta_i^{(k)}` (the :math:`k`-th smallest margin). With
    :math:`k = \lfloor M \nu_i / 2 \rfloor` the cell gets about half its mass (damped: the
    starved cells move together and compete for the same draws); Adam's first moment of the
    moved cells is reset so that it does not push them further. The same shift goes to the
    averaged heights, which the map uses."""
    assert state.window_counts is not None  # __post_init__ fills it
    starved = (state.window_counts == 0).nonzero().squeeze(1)
    m = max(1, state.window_draws // 4)
    state.window_counts = torch.zeros_like(state.window_counts)
    state.window_draws = 0
    want = torch.floor(nu[starved] * m / 2).long()
    starved, want = starved[want >= 1], want[want >= 1]
    if starved.numel() == 0:
        return 0
    x = sample(m, gen)
    low = layout.low_margins(x, state.heights, starved, int(want.max()))
    shift = low.gather(0, (want - 1)[None]).squeeze(0)
    for h in (state.heights, state.average):
        h[starved] += shift
        h -= h.mean()
    state.moment1[starved] = 0.0
    state.refilled += int(starved.numel())
    return int(starved.numel())


def passes(err: MarginalReport, tol: float) -> bool:
    r"""The stopping rule: :math:`\hat\chi^2 + 2\sigma_{\chi^2} \le \mathrm{tol}^2`. The fit
    stops at the first of its repeated checks that passes, so a rule on :math:`\hat\chi^2`
    alone stops on a downward noise excursion, which independent draws then show
    (bench/results/semidiscrete.md). Two standard deviations of the estimate
    (:math:`\sigma_{\chi^2} \approx \mathrm{tol}^2/10` at the default ``eval_samples``,
    :func:`default_eval_samples`) remove that bias at the price of a few more steps."""
    return err.chi2 + 2 * err.chi2_std <= tol**2


def _next_epsilon(eps: float, blur_frac: float, cfg: SemiDiscreteSolver, eps_init: float) -> float:
    """Geometric decay to the target; for a hard target, switch to ``0`` once the cells are
    sharp (blur fraction ``<= hard_blur``) or ``eps`` is negligible."""
    nxt = eps * cfg.eps_decay
    if cfg.epsilon > 0:
        return max(nxt, cfg.epsilon)
    if blur_frac <= cfg.hard_blur or nxt <= 1e-6 * eps_init:
        return 0.0
    return nxt


def run(
    state: SemiDiscreteState,
    layout: Layout,
    sample: Callable[[int, torch.Generator | None], Tensor],
    nu: Tensor,
    cfg: SemiDiscreteSolver,
    derived: Derived,
    *,
    progress: bool | None = None,
    callback: Callback | None = None,
    checkpoint: Checkpoint | None = None,
) -> tuple[SemiDiscreteState, MarginalReport, list, bool, str]:
    """Run the loop from ``state`` until converged, ``max_iter`` or ``max_time``, with the
    resolved settings ``cfg`` (no ``None`` left: :meth:`SemiDiscreteSolver.resolved`).

    ``checkpoint(state)`` gets the state every ``checkpoint_every`` steps and at the end.
    Returns ``(state, final_error, history, converged, reason)``; ``history`` holds
    ``(step, epsilon, rms, mean_rel)`` of every periodic evaluation."""
    dev = state.heights.device
    gen = torch.Generator(device=dev)
    gen.set_state(state.rng_state)
    history: list[tuple[int, float, float, float]] = []
    last: MarginalReport | None = None
    last_step = -1
    shown: MarginalReport | None = None
    converged = False
    reason = "max_iter"
    t0 = time.perf_counter()
    bar = _progress(progress, cfg.max_iter, state.step)
    nu_min = float(nu.min())

    def evaluate(st: SemiDiscreteState, m: int) -> MarginalReport:
        g = torch.Generator(device=dev).manual_seed(st.eval_seed + st.n_evals)
        st.n_evals += 1
        return estimate(
            layout, sample, st.average, nu, cfg.epsilon if _final_phase(st, cfg) else st.epsilon, m, g, derived.draw
        )

    try:
        while state.step < cfg.max_iter:
            _step(state, layout, sample, nu, cfg, derived, gen)
            if state.window_draws * nu_min >= STARVED_EXPECTED:
                refill(state, layout, sample, nu, cfg, gen)
            state.rng_state = gen.get_state()
            if state.step % derived.eval_every == 0 and _final_phase(state, cfg):
                # a cheap screen first; the full check only when the screen is within 2 tol^2
                screen = derived.screen_samples < derived.eval_samples
                err = evaluate(state, derived.screen_samples) if screen else None
                if err is None or err.chi2 <= 2 * cfg.tol**2:
                    err = evaluate(state, derived.eval_samples)
                    last, last_step = err, state.step
                    if passes(err, cfg.tol):
                        converged, reason = True, "converged"
                shown = err
                history.append((state.step, state.epsilon, err.rms, err.mean_rel))
            if checkpoint is not None and (state.step % cfg.checkpoint_every == 0 or converged):
                checkpoint(state)
            if callback is not None:
                callback(state, last if last_step == state.step else None)
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(_postfix(state, shown), refresh=False)
            if converged:
                break
            if cfg.max_time is not None and time.perf_counter() - t0 > cfg.max_time:
                reason = "max_time"
                break
    finally:
        if bar is not None:
            bar.close()
    if last is None or last_step != state.step:
        # a final report that does not touch the state (so a resumed fit stays exact)
        g = torch.Generator(device=dev).manual_seed(state.eval_seed - 1 - state.step)
        eps = cfg.epsilon if _final_phase(state, cfg) else state.epsilon
        last = estimate(layout, sample, state.average, nu, eps, derived.eval_samples, g, derived.draw)
        history.append((state.step, eps, last.rms, last.mean_rel))
        converged = _final_phase(state, cfg) and passes(last, cfg.tol)
        if converged:
            reason = "converged"
    if checkpoint is not None:
        checkpoint(state)
    return state, last, history, converged, reason


def _progress(progress: bool | None, total: int, initial: int):
    """The fit's bar (:func:`monge.progress.progress_bar`), or ``None`` when it is not shown."""
    if not progress_enabled(progress):
        return None
    return progress_bar(total, "semi-discrete fit", initial=initial, progress=True)


def _postfix(state: SemiDiscreteState, last: MarginalReport | None) -> str:
    err = f"rms {last.rms:.3f} mean {last.mean_rel:.3f}" if last is not None else "rms -"
    return f"eps {state.epsilon:.3g} step {state.step_size:.3g} {err}"
