r"""Semi-discrete optimal transport: a continuous source onto N weighted points.

As in DPM-OT (Li et al. 2023) and AE-OT (An et al. 2020), with targets :math:`y_1..y_N`,
weights :math:`\nu_i` and a continuous source :math:`\mu` (standard Gaussian by default, or any
sampler), the Brenier potential is :math:`u_h(x) = \max_i s_i(x)`,
:math:`s_i(x) = \langle x, y_i \rangle + h_i`, whose cells
:math:`W_i = \{x : i = \arg\max_j s_j(x)\}` define the map :math:`T(x) = y_{\arg\max}`.

**Entropic semi-dual** (Genevay et al. 2016; Mousavi-Hosseini et al. 2025, SD-FM). For
:math:`\varepsilon > 0` the cells are soft, :math:`p_i(x) = \mathrm{softmax}_i(s_i(x)/\varepsilon)`,
and the heights minimise the convex, :math:`1/\varepsilon`-smooth energy

.. math:: E_\varepsilon(h) = \mathbb{E}_\mu\Big[\varepsilon \log \sum_i e^{s_i(x)/\varepsilon}\Big]
          - \sum_i \nu_i h_i, \qquad
          \frac{\partial E_\varepsilon}{\partial h_i} = \mathbb{E}_\mu[p_i(x)] - \nu_i ,

which tends to the hard energy :math:`\mathbb{E}_\mu[u_h] - \langle \nu, h \rangle` (gradient
:math:`\mu(W_i) - \nu_i`) as :math:`\varepsilon \to 0`. This is monge's inner-product
convention; with OTT-JAX's cost :math:`\|x - y\|^2` and dual :math:`g`,
:math:`h_i = (g_i - \|y_i\|^2)/2 + (\varepsilon_{ott}/2) \log \nu_i` and
:math:`\varepsilon = \varepsilon_{ott} / 2`.

**Solver** (:func:`fit_semidiscrete`): stochastic gradient steps on :math:`E_{\varepsilon_t}`
with Monte Carlo batches; the scale of the steps is

.. math:: \eta_t = \varepsilon_t \,/\, \widehat{\mathbb{E}}_\mu\big[1 - \textstyle\sum_i p_i(x)^2\big],

where :math:`\varepsilon_t / \mathbb{E}[1 - \sum_i p_i^2]` is the inverse of the
:math:`\nu`-averaged diagonal curvature :math:`\mathbb{E}[p_i (1 - p_i)] / (\varepsilon \nu_i)`
of the :math:`1/\nu`-preconditioned energy: a diagonal Newton step, :math:`\varepsilon`
when the cells are blurred and the score gap between neighbouring cells when they are sharp,
so no step size is tuned by hand. ``"adam"`` (default) moves by :math:`0.15\,\eta_t` times
Adam's normalised direction; ``"sgd"`` does :math:`h \leftarrow h - \lambda \eta_t
(\hat m - \nu)/\nu` with damping :math:`\lambda` = ``lr_scale``. :math:`\varepsilon_t` decreases geometrically from the score
spread (coarse cells first: clusters get their mass before their points do) to the target; a
hard target (:math:`\varepsilon = 0`) switches to hard cells once a fraction ``hard_blur`` of
the source or less sits on blurred boundaries, keeping the last step. At the target, the map
uses an exponential moving average of the iterates (Polyak-Ruppert / SD-FM's EMA), which
removes most of the Monte Carlo noise of the last iterate, and Adam's rate is annealed as
:math:`(1 + k/1000)^{-1/2}` after :math:`k` steps there (Robbins-Monro). Adam (DPM-OT) is kept
as an option.

**Starved cells.** In the hard phase an empty cell's gradient is the constant :math:`-\nu_i`,
which Adam turns into a small fixed step, so cells left empty by the entropic phase (clustered,
high-dimensional targets) can stay empty for thousands of steps. Windows of training draws
count every cell's hits; a cell with none in a window where it expected
:data:`~monge.ot._sd_solver.STARVED_EXPECTED` gets a coordinate line search of its height:
:math:`h_i \mathrel{+}= \delta_i^{(k)}`, the :math:`k`-th smallest margin
:math:`\max_j s_j(x) - s_i(x)` over fresh draws, with :math:`k` half the cell's expected count
(``refill``).

**Convergence** is judged only by :func:`marginal_error` on fresh draws (never the training
batches): the unbiased :math:`\chi^2 = \sum_i (m_i - \nu_i)^2/\nu_i` and the
:math:`\nu`-weighted RMS relative cell-mass error :math:`\sqrt{\chi^2}` (see
:class:`MarginalError`), with the estimator's noise next to it. The fit stops when
:math:`\hat\chi^2 + 2\sigma_{\chi^2} \le \mathrm{tol}^2`: the first of repeated checks to
pass would otherwise be a downward noise excursion.

The cell search is a chunked max-inner-product (``addmm`` per target chunk with a running max /
top-k) and the entropic kernels a chunked log-sum-exp, so no score block exceeds
``max_block_elements``; the targets can be split across processes
(:func:`fit_semidiscrete_sharded`).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from .._validation import check_batch, check_number, check_positive_int
from ._checks import check_positive_float, check_weights
from ._sd_kernels import DEFAULT_BLOCK, Layout, _block_sizes, cell_search, soft_sample
from ._sd_solver import (
    adam_factor,
    Config,
    MarginalError,
    SemiDiscreteState,
    Source,
    default_eval_samples,
    estimate,
    fingerprint,
    new_state,
    run,
    sampler,
    screen_samples,
    source_moments,
    validate_schedule,
)

__all__ = [
    "Source",
    "cell_search",
    "SemiDiscreteMap",
    "SemiDiscreteResult",
    "SemiDiscreteState",
    "MarginalError",
    "fit_semidiscrete",
    "fit_semidiscrete_sharded",
    "marginal_error",
    "cell_mass_error",
]

_FORMAT = "monge.semidiscrete"
_VERSIONS = ("1", "2")  # 2 adds the map's epsilon
_VERSION = "2"
_block_sizes = _block_sizes  # re-exported for the tests


def cell_mass_error(masses: Tensor, weights: Tensor) -> tuple[float, float]:
    r"""``(max, mean)`` of :math:`|m_i - \nu_i| / \nu_i` over cells with :math:`\nu_i > 0`."""
    pos = weights > 0
    rel = (masses[pos] - weights[pos]).abs() / weights[pos]
    return float(rel.max()), float(rel.mean())


def _check_epsilon(eps: object, name: str = "epsilon") -> float:
    return check_number(eps, name, 0.0, math.inf, high_open=True)  # 0: hard cells


# ------------------------------------------------------------------------------------ map
class SemiDiscreteMap:
    r"""The fitted map :math:`T(x) = y_{\arg\max_i \langle x, y_i \rangle + h_i}`.

    Parameters
    ----------
    targets : Tensor
        ``(N, *shape)`` target points.
    heights : Tensor
        ``(N,)`` dual heights.
    weights : Tensor, optional
        ``(N,)`` target weights (uniform by default); used by :meth:`mass_error`.
    max_block_elements : int
        Memory bound of the cell search (see :func:`cell_search`).
    epsilon : float
        The :math:`\varepsilon` the heights were fitted for (0: hard cells); the default of
        :meth:`sample_cells` and :meth:`mass_error`. :meth:`__call__` is always the hard map.
    """

    def __init__(
        self,
        targets: Tensor,
        heights: Tensor,
        weights: Tensor | None = None,
        max_block_elements: int = DEFAULT_BLOCK,
        epsilon: float = 0.0,
    ) -> None:
        check_batch(targets, "targets")
        if not targets.is_floating_point():
            raise ValueError(f"targets must be a floating tensor, got {targets.dtype}")
        n = targets.shape[0]
        if not torch.is_tensor(heights) or heights.shape != (n,):
            got = tuple(heights.shape) if torch.is_tensor(heights) else type(heights).__name__
            raise ValueError(f"heights must have shape ({n},) (one per target), got {got}")
        if not bool(torch.isfinite(heights).all()):
            raise ValueError("heights contains NaN/Inf; refit the map")
        self.targets = targets
        self.shape = tuple(targets.shape[1:])
        self.flat = targets.reshape(n, -1)
        self.heights = heights.to(device=targets.device, dtype=targets.dtype)
        self.weights = check_weights(weights, n, "weights", self.flat)
        self.max_block_elements = check_positive_int(max_block_elements, "max_block_elements")
        self.epsilon = _check_epsilon(epsilon)

    @property
    def n_targets(self) -> int:
        return self.flat.shape[0]

    @property
    def dim(self) -> int:
        return self.flat.shape[1]

    def _flatten(self, x: Tensor) -> Tensor:
        check_batch(x, "x")
        xf = x.reshape(x.shape[0], -1)
        if xf.shape[1] != self.dim:
            raise ValueError(f"x must have {self.dim} features per point (targets' shape {self.shape}), got {xf.shape[1]}")
        return xf.to(device=self.flat.device, dtype=self.flat.dtype)

    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Hard cell index ``(M,)`` and target ``(M, *shape)`` of each ``x`` ``(M, *shape)``."""
        _, idx = cell_search(self._flatten(x), self.flat, self.heights, max_block_elements=self.max_block_elements)
        return idx, self.targets[idx]

    def sample_cells(
        self, x: Tensor, eps: float | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        r"""Draw a cell per ``x`` from the entropic probabilities
        :math:`p_i(x) = \mathrm{softmax}_i((\langle x, y_i \rangle + h_i)/\varepsilon)`.

        Chunked (online log-sum-exp over target chunks, then inversion of the cumulative
        probabilities with one uniform number per row drawn from ``generator``), so the draw is
        deterministic given the generator and independent of ``max_block_elements``.
        ``eps = 0`` is the hard map (no randomness used).

        Parameters
        ----------
        x : Tensor
            ``(M, *shape)`` source points.
        eps : float, optional
            Default: the map's :attr:`epsilon`.
        generator : torch.Generator, optional

        Returns
        -------
        (indices, targets) : ``(M,)`` int64 and ``(M, *shape)``.
        """
        eps = self.epsilon if eps is None else _check_epsilon(eps, "eps")
        xf = self._flatten(x)
        if eps == 0:
            return self(x)
        gdev = generator.device if generator is not None else self.flat.device
        u = torch.rand(xf.shape[0], generator=generator, dtype=torch.float64, device=gdev).to(self.flat.device)
        idx = soft_sample(xf, self.flat, self.heights, eps, u, self.max_block_elements)
        return idx, self.targets[idx]

    def topk(self, x: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
        """The ``k`` best cells of each ``x``: indices ``(M, k)``, targets ``(M, k, *shape)``
        and scores :math:`\\langle x, y_i \\rangle + h_i` ``(M, k)``, best first."""
        s, idx = cell_search(self._flatten(x), self.flat, self.heights, k=k, max_block_elements=self.max_block_elements)
        if k == 1:
            s, idx = s[:, None], idx[:, None]
        return idx, self.targets[idx], s

    def cell_masses(
        self, n_samples: int, generator: torch.Generator | None = None, source: Source = "gaussian",
        eps: float = 0.0,
    ) -> Tensor:
        """Monte Carlo estimate ``(N,)`` of the source mass of every (hard, or entropic with
        ``eps > 0``) cell."""
        n_samples = check_positive_int(n_samples, "n_samples")
        sample = sampler(source, self.dim, self.flat.dtype, self.flat.device)
        lay = Layout(self.flat, self.n_targets, max_block_elements=self.max_block_elements)
        total = torch.zeros(self.n_targets, dtype=torch.float64, device=self.flat.device)
        done = 0
        while done < n_samples:
            b = min(_draw_rows(self.n_targets, self.max_block_elements), n_samples - done)
            x = sample(b, generator)
            total += (lay.soft_sums(x, self.heights, eps, need_s2=False)[0] if eps > 0 else lay.hard_sums(x, self.heights)).double()
            done += b
        return (total / n_samples).to(self.flat.dtype)

    def mass_error(
        self, n_samples: int, generator: torch.Generator | None = None, source: Source = "gaussian"
    ) -> tuple[float, float]:
        """``(max, mean)`` relative hard cell-mass error measured on ``n_samples`` fresh source points."""
        return cell_mass_error(self.cell_masses(n_samples, generator, source), self.weights)

    def save(self, path: str | Path) -> None:
        """Write targets, heights, weights and epsilon to a ``.safetensors`` file (atomically)."""
        from ..outputs import atomic_write_bytes

        tensors = {
            "targets": self.flat.detach().contiguous().cpu(),
            "heights": self.heights.detach().contiguous().cpu(),
            "weights": self.weights.detach().contiguous().cpu(),
        }
        meta = {"format": _FORMAT, "version": _VERSION, "shape": json.dumps(list(self.shape)),
                "epsilon": repr(self.epsilon)}
        atomic_write_bytes(path, st_save(tensors, metadata=meta))

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str | None = None) -> "SemiDiscreteMap":
        """Read a map written by :meth:`save` (version 1 files have ``epsilon = 0``); checks
        format and shapes, never executes code."""
        raw = Path(path).read_bytes()
        try:
            tensors = st_load(raw)
            header_len = int.from_bytes(raw[:8], "little")
            meta = json.loads(raw[8 : 8 + header_len]).get("__metadata__", {}) or {}
        except (SafetensorError, ValueError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path} is not a readable safetensors file: {exc}") from exc
        if meta.get("format") != _FORMAT or meta.get("version") not in _VERSIONS:
            raise ValueError(f"{path} is not a semi-discrete map (format {meta.get('format')!r}, version {meta.get('version')!r})")
        missing = {"targets", "heights", "weights"} - set(tensors)
        if missing:
            raise ValueError(f"{path} lacks tensors {sorted(missing)}")
        try:
            shape = tuple(int(s) for s in json.loads(meta.get("shape", "null")))
            eps = float(meta.get("epsilon", "0.0"))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path} has a malformed 'shape' or 'epsilon' entry: {meta.get('shape')!r}") from exc
        t, h, w = tensors["targets"], tensors["heights"], tensors["weights"]
        if t.dim() != 2 or math.prod(shape) != t.shape[1] or h.shape != (t.shape[0],) or w.shape != (t.shape[0],):
            raise ValueError(
                f"{path} has inconsistent shapes: targets {tuple(t.shape)}, heights {tuple(h.shape)}, "
                f"weights {tuple(w.shape)}, point shape {shape}"
            )
        t = t.reshape(t.shape[0], *shape)
        if device is not None:
            t, h, w = t.to(device), h.to(device), w.to(device)
        return cls(t, h, w, epsilon=eps)


def _draw_rows(n: int, max_block_elements: int) -> int:
    """Source points drawn at once by the estimator (the kernels block them further)."""
    return int(max(256, min(65536, max_block_elements // max(1, min(n, 4096)))))


# -------------------------------------------------------------------------------- result
@dataclass(frozen=True)
class SemiDiscreteResult:
    """Output of :func:`fit_semidiscrete`.

    Attributes
    ----------
    map : SemiDiscreteMap or None
        The fitted map (targets, averaged heights, weights, epsilon); ``None`` from a sharded
        fit with ``gather_map=False``.
    heights : Tensor
        ``(N,)`` fitted (averaged) heights, zero mean.
    n_iter : int
        Total optimisation steps (including those of a resumed state).
    batch_size : int
        Monte Carlo batch per step.
    error : MarginalError
        The independent estimate on fresh draws at the end of the fit.
    max_error, mean_error : float
        ``error.max_rel`` and ``error.mean_rel`` (plug-in, noise floor in
        ``error.mean_rel_noise``).
    rms_error : float
        ``error.rms``, the :math:`\\nu`-weighted RMS relative cell-mass error (debiased).
    converged : bool
        ``rms_error <= tol`` at the target epsilon.
    reason : str
        ``"converged"``, ``"max_iter"`` or ``"max_time"``.
    epsilon : float
        Target epsilon of the fit.
    state : SemiDiscreteState
        Final state: pass it back as ``state=`` (or save it) to continue the fit exactly.
    history : tuple of (int, float, float, float)
        ``(step, epsilon, rms, mean_rel)`` of each independent evaluation of this call.
    duplicates : int
        Targets merged into an earlier identical target (see :func:`fit_semidiscrete`).
    """

    map: SemiDiscreteMap | None
    heights: Tensor
    n_iter: int
    batch_size: int
    error: MarginalError
    max_error: float
    mean_error: float
    rms_error: float
    converged: bool
    reason: str
    epsilon: float
    state: SemiDiscreteState
    history: tuple[tuple[int, float, float, float], ...]
    duplicates: int = 0


# --------------------------------------------------------------------------- estimator
def marginal_error(
    map_or_heights: SemiDiscreteMap | Tensor,
    targets: Tensor | None = None,
    weights: Tensor | None = None,
    n_samples: int | None = None,
    generator: torch.Generator | None = None,
    *,
    eps: float | None = None,
    source: Source = "gaussian",
    tol: float = 0.05,
    max_block_elements: int = DEFAULT_BLOCK,
) -> MarginalError:
    r"""Independent estimate of a map's cell-mass (marginal) error on fresh source draws.

    Draws ``n_samples`` points of ``source`` with ``generator`` (never the fit's batches) and
    accumulates :math:`S^1_i = \sum_x p_i(x)` and :math:`S^2_i = \sum_x p_i(x)^2` (hard cells:
    counts). The unbiased U-statistic

    .. math:: \widehat{\chi^2} = \sum_i \frac{(S^1_i)^2 - S^2_i}{M (M-1)\, \nu_i} - 1,
              \qquad \mathbb{E}\,\widehat{\chi^2} = \sum_i \frac{(m_i - \nu_i)^2}{\nu_i}

    removes the Monte Carlo noise :math:`\approx (N-1)/M` that the plug-in
    :math:`\sum_i (\hat m_i - \nu_i)^2/\nu_i` carries; its own standard deviation is about
    :math:`\sqrt{2(N-1)}/M`. So a few samples per cell suffice to measure
    :math:`\chi^2` far below the plug-in noise floor, whereas the plug-in mean relative error of
    a cell of mass :math:`1/N` has noise :math:`\approx \sqrt{N/M}` (400 samples per cell for
    5%). :math:`\sqrt{\chi^2}` is the :math:`\nu`-weighted RMS relative error, an upper bound on
    the (:math:`\nu`-weighted) mean relative error. See :class:`MarginalError` for the fields.

    Parameters
    ----------
    map_or_heights : SemiDiscreteMap or Tensor
        A map, or ``(N,)`` heights together with ``targets``.
    targets : Tensor, optional
        ``(N, *shape)``; required with heights, ignored with a map.
    weights : Tensor, optional
        ``(N,)``; default: the map's weights, or uniform.
    n_samples : int, optional
        Fresh draws :math:`M`; default :math:`\max(65536, 10N, 10\sqrt{2N}/\mathrm{tol}^2)`
        (the estimator's noise on :math:`\chi^2` a tenth of :math:`\mathrm{tol}^2`).
    generator : torch.Generator, optional
    eps : float, optional
        Cell probabilities' :math:`\varepsilon`; default the map's epsilon (0 for heights).
    source : "gaussian" or callable
    tol : float
        Only sets the default ``n_samples``.
    max_block_elements : int
    """
    if isinstance(map_or_heights, SemiDiscreteMap):
        mp = map_or_heights
        flat, h = mp.flat, mp.heights
        nu = mp.weights if weights is None else check_weights(weights, mp.n_targets, "weights", flat)
        eps = mp.epsilon if eps is None else _check_epsilon(eps, "eps")
        max_block_elements = mp.max_block_elements
    else:
        if targets is None:
            raise ValueError("marginal_error(heights, targets, ...): pass the targets with the heights, or a SemiDiscreteMap")
        mp = SemiDiscreteMap(targets, map_or_heights, weights, max_block_elements)
        flat, h, nu = mp.flat, mp.heights, mp.weights
        eps = 0.0 if eps is None else _check_epsilon(eps, "eps")
    n = flat.shape[0]
    tol = check_positive_float(tol, "tol")
    m = default_eval_samples(n, tol) if n_samples is None else check_positive_int(n_samples, "n_samples")
    if m < 2:
        raise ValueError("n_samples must be >= 2 for the unbiased chi-squared")
    lay = Layout(flat, n, max_block_elements=max_block_elements)
    sample = sampler(source, flat.shape[1], flat.dtype, flat.device)
    return estimate(lay, sample, h, nu, eps, m, generator, _draw_rows(n, max_block_elements))


# ----------------------------------------------------------------------------------- fit
def _check_targets(targets: Tensor, name: str = "targets") -> Tensor:
    check_batch(targets, name)
    if not targets.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got {targets.dtype}; call .float()")
    return targets.reshape(targets.shape[0], -1)


def _check_positive_weights(nu: Tensor, name: str = "weights") -> None:
    zero = int((nu <= 0).sum())
    if zero:
        raise ValueError(
            f"{name} has {zero} zero entries: a zero-weight target has an empty cell, which no finite "
            "height gives; drop those targets (and their weights) before fitting"
        )


def _scaled_voronoi(flat: Tensor, centre: Tensor, spread: float, x_mean: Tensor, x_spread: float) -> Tensor:
    r"""Initial heights :math:`h_i = -\langle \bar x, y_i \rangle - \|y_i - \bar y\|^2 / (2 s)`,
    :math:`s` = targets' spread / source's spread: the Voronoi cells of the targets seen through
    the affine guess :math:`x \mapsto \bar y + s (x - \bar x)` of the map."""
    s = spread / x_spread if spread > 0 and x_spread > 0 else 1.0
    return -(flat @ x_mean) - 0.5 * (flat - centre).square().sum(1) / s


def _default_batch(n: int) -> int:
    """Monte Carlo batch per step: about 2^22 scores per step (so the per-step overhead is
    small), between 256 and 8 N."""
    return int(max(256, min(8 * n, 2**22 // n)))


def _find_duplicates(flat: Tensor) -> tuple[Tensor, Tensor, int]:
    """``(first, inverse, n_dup)``: index of the first occurrence of every distinct target,
    each target's group, and the number of repeated targets."""
    uniq, inverse = torch.unique(flat, dim=0, return_inverse=True)
    n_u = uniq.shape[0]
    if n_u == flat.shape[0]:
        return torch.arange(n_u, device=flat.device), torch.arange(n_u, device=flat.device), 0
    pos = torch.arange(flat.shape[0], device=flat.device)
    first = torch.full((n_u,), flat.shape[0], dtype=torch.int64, device=flat.device).scatter_reduce(
        0, inverse, pos, reduce="amin")
    order = first.argsort()  # groups in order of first occurrence
    rank = torch.empty_like(order)
    rank[order] = torch.arange(n_u, device=flat.device)
    return first[order], rank[inverse], flat.shape[0] - n_u


def _config(n: int, d: int, *, optimizer: str, epsilon: object, eps_init: object, eps_decay: object, hard_blur: object,
            refill: object, ema: object, lr: object, lr_scale: object, batch_size: object, tol: object,
            max_iter: object, max_time: object, eval_every: object, eval_samples: object, checkpoint: object,
            checkpoint_every: object, progress: object, callback: object, max_block_elements: int,
            score_spread: float) -> Config:
    """Validate every option before any long work."""
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be 'sgd' (averaged, preconditioned) or 'adam', got {optimizer!r}")
    eps, eps_init, eps_decay, hard_blur, ema, lr_scale = validate_schedule(
        epsilon, eps_init, eps_decay, hard_blur, ema, lr_scale)
    if eps_init is None:
        eps_init = max(score_spread, eps) if score_spread > 0 else max(1.0, eps)
    tol = check_positive_float(tol, "tol")
    max_time = check_positive_float(max_time, "max_time", allow_inf=True)
    lr = None if lr is None else check_positive_float(lr, "lr")
    bs = _default_batch(n) if batch_size is None else check_positive_int(batch_size, "batch_size")
    m = default_eval_samples(n, tol) if eval_samples is None else check_positive_int(eval_samples, "eval_samples")
    if m < 2:
        raise ValueError("eval_samples must be >= 2")
    screen = min(m, screen_samples(n, tol))
    if eval_every is None:
        # the screening check costs about a quarter of the steps between checks
        eval_every = int(max(20, math.ceil(4 * screen / bs)))
    if callback is not None and not callable(callback):
        raise ValueError(f"callback must be callable (state, error_or_None) -> None, got {type(callback).__name__}")
    if not isinstance(refill, bool):
        raise ValueError(f"refill must be True or False, got {refill!r}")
    return Config(
        optimizer=optimizer, epsilon=eps, eps_init=float(eps_init), eps_decay=eps_decay, hard_blur=hard_blur,
        refill=refill, lr=lr, lr_scale=lr_scale, batch_size=bs, ema=ema, tol=tol,
        max_iter=check_positive_int(max_iter, "max_iter"), max_time=max_time,
        eval_every=check_positive_int(eval_every, "eval_every"), eval_samples=m, screen_samples=screen,
        draw=_draw_rows(n, max_block_elements), checkpoint=checkpoint,
        checkpoint_every=check_positive_int(checkpoint_every, "checkpoint_every"),
        progress=None if progress is None else bool(progress), callback=callback,
        adam_factor=1.0 if lr is not None else adam_factor(d),
    )


def _resume_state(state: SemiDiscreteState | str | Path, n: int, d: int, fp: float, device: torch.device,
                  dtype: torch.dtype) -> SemiDiscreteState:
    if not isinstance(state, SemiDiscreteState):
        state = SemiDiscreteState.load(state)
    if state.n_targets != n or state.dim != d:
        raise ValueError(
            f"the fit state is for {state.n_targets} targets of dimension {state.dim}, not {n} x {d}: "
            "resume with the same targets, or start a new fit (state=None)")
    if not math.isclose(state.fingerprint, fp, rel_tol=1e-6, abs_tol=1e-9):
        raise ValueError("the fit state was made for other targets or weights (checksum differs); "
                         "resume with the same data, or start a new fit (state=None)")
    for k in ("heights", "average", "moment1", "moment2", "window_counts"):
        setattr(state, k, getattr(state, k).to(device=device, dtype=dtype).clone())
    state.rng_state = state.rng_state.clone()
    return state


def fit_semidiscrete(
    targets: Tensor,
    weights: Tensor | None = None,
    *,
    source: Source = "gaussian",
    epsilon: float = 0.0,
    optimizer: Literal["sgd", "adam"] = "adam",
    lr: float | None = None,
    batch_size: int | None = None,
    tol: float = 0.05,
    max_iter: int = 3000,
    max_time: float = math.inf,
    eps_init: float | None = None,
    eps_decay: float = 0.9,
    hard_blur: float = 0.01,
    refill: bool = True,
    ema: float = 0.999,
    lr_scale: float = 0.1,
    eval_every: int | None = None,
    eval_samples: int | None = None,
    heights: Tensor | None = None,
    state: SemiDiscreteState | str | Path | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 100,
    progress: bool | None = None,
    callback: Callable[[SemiDiscreteState, MarginalError | None], None] | None = None,
    generator: torch.Generator | None = None,
    max_block_elements: int = DEFAULT_BLOCK,
) -> SemiDiscreteResult:
    r"""Fit the heights of the (entropic) semi-discrete OT map from ``source`` onto ``targets``.

    Stochastic optimisation of the entropic semi-dual with an epsilon schedule and averaging
    (module docstring): Genevay et al. (2016), stochastic semi-dual; Mousavi-Hosseini et al.
    (2025), SD-FM; DPM-OT (Li et al. 2023) for the hard map. Every ``eval_every`` steps at the
    target epsilon, the averaged heights are screened on a few fresh draws per cell
    (:math:`\lceil\sqrt{2N}/\mathrm{tol}^2\rceil`, at least 4096: the unbiased
    :math:`\chi^2` estimate then has noise :math:`\approx \mathrm{tol}^2`); when the screen
    gives :math:`\hat\chi^2 \le 2\,\mathrm{tol}^2`, they are checked on ``eval_samples``
    fresh draws by :func:`marginal_error`; the fit stops when that debiased RMS relative
    cell-mass error is ``<= tol`` with two standard deviations of the estimate to spare, or
    after ``max_iter`` steps / ``max_time`` seconds, and reports which (``result.converged``,
    ``result.reason``). No batch grows: every step costs the same.

    Default optimiser: ``"adam"`` (Adam, DPM-OT's choice, on the same schedule, with rate
    :math:`0.15 \min(1, (2/d)^{1/4})\,\eta_t` and EMA averaging), chosen by measurement against ``"sgd"``
    (:math:`1/\nu`-preconditioned SGD with the damped curvature step
    :math:`\eta_t = \mathrm{lr\_scale}\cdot\varepsilon_t / \mathbb{E}[1 - \sum_i p_i^2]`) on
    clustered and unclustered targets (bench/semidiscrete.py, figures in
    bench/results/semidiscrete.md): the curvature step is the inverse of the *average*
    curvature, so cells whose curvature is far above average (neighbours close together, as
    in clusters) oscillate unless ``lr_scale`` is small, and it is slow along cluster-wide
    directions of low curvature; Adam's per-cell normalised steps move every cell at the same
    pace and reached the tolerance in fewer steps in our measurements. At the target epsilon,
    Adam's second moment is floored at :math:`\nu_i (1 - \nu_i) / B`, the variance of a cell's
    gradient under an exact hard map: a cell that a batch of :math:`B` draws rarely hits
    (:math:`\nu_i B \ll 1`, e.g. :math:`N = 10^5` targets) otherwise has a second moment near
    :math:`\nu_i^2`, takes full-size normalised steps up on every miss and a kick of several
    steps down on each hit, and the heights drift away from the solution
    (bench/results/semidiscrete.md).

    Parameters
    ----------
    targets : Tensor
        ``(N, *shape)`` finite target points, ``N >= 2``. Identical targets are merged (one
        cell with their summed weight, a ``UserWarning`` says how many): at ``epsilon = 0`` two
        equal targets would otherwise tie and one cell stay empty for ever. The map keeps all
        ``N`` targets; a merged group's hard cell maps to its first member, and its entropic
        mass is split in proportion to the weights.
    weights : Tensor, optional
        ``(N,)`` positive weights summing to one; uniform by default.
    source : "gaussian" or callable
        ``"gaussian"``: standard normal in dimension ``prod(shape)``; a callable
        ``(n, generator) -> (n, *shape)`` samples any other source.
    epsilon : float
        Target :math:`\varepsilon \ge 0` (0: hard cells, the DPM-OT map).
    optimizer : {"sgd", "adam"}
    lr : float, optional
        Fixed step in height units (overrides the curvature step; for ``"adam"`` its rate).
    batch_size : int, optional
        Source draws per step; default about :math:`2^{22}/N`, clipped to ``[256, 8N]``.
    tol : float
        Target debiased RMS relative cell-mass error (``error.rms``). It bounds the mean
        relative error for uniform weights.
    max_iter, max_time : int, float
        Step and wall-clock caps (the fit always returns).
    eps_init : float, optional
        First :math:`\varepsilon_t`; default the score spread
        :math:`\sigma_y \sigma_x / \sqrt d` (RMS spreads of targets and source), where all cells blur.
    eps_decay : float
        Per-step factor of the schedule, in (0, 1).
    hard_blur : float
        For ``epsilon = 0``: switch to hard cells when
        :math:`\mathbb{E}[1 - \sum_i p_i^2] \le` ``hard_blur``.
    refill : bool
        For ``epsilon = 0``: a cell that no hard-phase training draw hit in a window (a window
        ends once every cell expected 24 hits) gets a coordinate line search of its height that
        gives it about half its mass (see :func:`monge.ot._sd_solver.refill`); ``False`` leaves
        such cells to the optimiser.
    ema : float
        Decay of the moving average of the heights at the target epsilon (warm-up
        :math:`\min(\mathrm{ema}, k/(k+10))` after :math:`k` steps: an average over the last
        tenth of the steps, up to ``1 / (1 - ema)`` steps); 0 disables averaging.
    lr_scale : float
        Damping of the curvature step (1 = full diagonal Newton step); Adam's rate is
        :func:`monge.ot._sd_solver.adam_factor` of the dimension times the undamped step.
    eval_every, eval_samples : int, optional
        Period (steps) of the independent screening check and size of the confirming check;
        defaults: ``eval_samples`` as in :func:`marginal_error`, ``eval_every`` such that the
        screens cost about a quarter of the steps. With ``eval_samples`` at or below the screen
        size, every check is a full one.
    heights : Tensor, optional
        ``(N,)`` warm start; default the scaled Voronoi heights
        :math:`-\langle \bar x, y_i\rangle - \|y_i - \bar y\|^2/(2s)`, :math:`s = \sigma_y/\sigma_x`.
    state : SemiDiscreteState or path, optional
        Continue a fit from its state (``result.state`` or a file written by
        :meth:`SemiDiscreteState.save` / ``checkpoint``): the continuation equals the
        uninterrupted fit bit for bit (same options, same device). ``heights`` and
        ``generator`` are then ignored.
    checkpoint : path, optional
        Save the state there (atomically) every ``checkpoint_every`` steps and at the end.
    progress : bool, optional
        tqdm bar with epsilon, step and the last independent error; default: on when stderr
        is a terminal.
    callback : callable, optional
        ``callback(state, error_or_None)`` after every step.
    generator : torch.Generator, optional
        Seeds the fit (one draw); the fit then uses its own generator, saved in the state.
    max_block_elements : int
        Memory bound (elements) of any score block of the search and the entropic kernels.
    """
    flat = _check_targets(targets)
    n, d = flat.shape
    if n < 2:
        raise ValueError(f"targets needs at least 2 points for a transport map, got {n}")
    nu = check_weights(weights, n, "weights", flat)
    _check_positive_weights(nu)
    max_block_elements = check_positive_int(max_block_elements, "max_block_elements")
    sample = sampler(source, d, flat.dtype, flat.device)
    first, group, n_dup = _find_duplicates(flat)
    if n_dup:
        warnings.warn(
            f"targets has {n_dup} repeated points (identical rows); each group of equal targets is fitted "
            "as one cell with the summed weight (deduplicate the data to silence this)", UserWarning, stacklevel=2)
    uflat = flat[first] if n_dup else flat
    unu = torch.zeros(uflat.shape[0], dtype=nu.dtype, device=nu.device).index_add_(0, group, nu) if n_dup else nu
    seed, eval_seed = (int(v) for v in torch.randint(0, 2**62, (2,), generator=generator))
    x_mean, x_spread = source_moments(source, d, flat.dtype, flat.device, torch.Generator().manual_seed(seed ^ 0x5D))
    centre = uflat.mean(0)
    spread = float((uflat - centre).square().sum(1).mean().sqrt())
    cfg = _config(uflat.shape[0], d, optimizer=optimizer, epsilon=epsilon, eps_init=eps_init, eps_decay=eps_decay,
                  hard_blur=hard_blur, refill=refill, ema=ema, lr=lr, lr_scale=lr_scale, batch_size=batch_size,
                  tol=tol, max_iter=max_iter, max_time=max_time, eval_every=eval_every, eval_samples=eval_samples,
                  checkpoint=checkpoint, checkpoint_every=checkpoint_every, progress=progress,
                  callback=callback, max_block_elements=max_block_elements,
                  score_spread=spread * x_spread / math.sqrt(d))
    fp = fingerprint(uflat, unu)
    if state is not None:
        st = _resume_state(state, uflat.shape[0], d, fp, flat.device, flat.dtype)
    else:
        h0 = _initial_heights(heights, n, first if n_dup else None, uflat, centre, spread, x_mean, x_spread)
        st = new_state(h0, cfg, seed, eval_seed, uflat.shape[0], d, fp)
    layout = Layout(uflat, uflat.shape[0], max_block_elements=max_block_elements)
    st, err, hist, converged, reason = run(st, layout, sample, unu, cfg)
    h = _expand(st.average, group, nu, unu, cfg.epsilon) if n_dup else st.average.clone()
    mp = SemiDiscreteMap(targets, h, nu, max_block_elements, epsilon=cfg.epsilon)
    return _result(mp, h, st, cfg, err, hist, converged, reason, n_dup)


def _initial_heights(heights: Tensor | None, n: int, first: Tensor | None, uflat: Tensor, centre: Tensor,
                     spread: float, x_mean: Tensor, x_spread: float) -> Tensor:
    if heights is None:
        return _scaled_voronoi(uflat, centre, spread, x_mean, x_spread)
    if not torch.is_tensor(heights) or heights.shape != (n,) or not bool(torch.isfinite(heights).all()):
        raise ValueError(f"heights must be a finite ({n},) tensor (one per target) or None")
    h = heights.detach().to(device=uflat.device, dtype=uflat.dtype)
    return (h[first] if first is not None else h).clone()


def _expand(hu: Tensor, group: Tensor, nu: Tensor, unu: Tensor, eps: float) -> Tensor:
    """Heights of all targets from those of the merged groups: equal within a group at
    ``eps = 0`` (ties go to the first member); at ``eps > 0`` shifted by
    :math:`\\varepsilon \\log(\\nu_j / \\nu_{group})` so that the group's mass splits by weight."""
    h = hu[group].clone()
    if eps > 0:
        h += eps * torch.log(nu / unu[group])
    return h - h.mean()


def _result(mp: SemiDiscreteMap | None, h: Tensor, st: SemiDiscreteState, cfg: Config, err: MarginalError,
            hist: list, converged: bool, reason: str, n_dup: int) -> SemiDiscreteResult:
    return SemiDiscreteResult(
        map=mp, heights=h, n_iter=st.step, batch_size=cfg.batch_size, error=err, max_error=err.max_rel,
        mean_error=err.mean_rel, rms_error=err.rms, converged=converged, reason=reason, epsilon=cfg.epsilon,
        state=st, history=tuple(hist), duplicates=n_dup,
    )


def fit_semidiscrete_sharded(
    shard: Tensor,
    weights: Tensor | None = None,
    *,
    group: "torch.distributed.ProcessGroup | None" = None,
    gather_map: bool = True,
    generator: torch.Generator | None = None,
    max_block_elements: int = DEFAULT_BLOCK,
    **options,
) -> SemiDiscreteResult:
    r""":func:`fit_semidiscrete` with the targets split across the ranks of a process group.

    Rank :math:`r` holds the consecutive shard :math:`Y_r` of the targets (ranks in order,
    shards of any sizes). Every rank draws the same Monte Carlo batches (the fit's seed is drawn
    from rank 0's ``generator`` and broadcast) and works on its shard only: the hard cell of a
    point is chosen by two all-reduces (MAX of the scores, then MIN of the global index among
    the ranks attaining it); the entropic probabilities by an all-reduced log-sum-exp
    (MAX of the row maxima, SUM of the rescaled partial sums). The per-cell sums are gathered
    into the full ``(N,)`` gradient (all-reduce of a zero-padded vector), so every rank holds
    the same heights. Up to floating-point ties and summation order, the result equals
    :func:`fit_semidiscrete` on the concatenated targets with the same generator. Memory and
    search time per rank scale with the shard, not with ``N``.

    Duplicates are not merged across ranks (each rank checks its own shard and refuses
    repeated rows): deduplicate the data set first.

    Parameters
    ----------
    shard : Tensor
        ``(N_r, *shape)`` this rank's targets (``N_r >= 1``).
    weights : Tensor, optional
        ``(N,)`` weights of *all* targets, identical on every rank; uniform by default.
    group : ProcessGroup, optional
        Default: the world group (``torch.distributed`` must be initialised).
    gather_map : bool
        All-gather the targets so that ``result.map`` is the full map on every rank (memory
        ``N x d`` per rank). With ``False``, ``result.map`` is ``None``; use ``result.heights``.
    generator, max_block_elements, **options
        As in :func:`fit_semidiscrete`. A callable ``source`` must return the same points on
        every rank for the same generator. A ``checkpoint`` path is written by rank 0 only.
    """
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "fit_semidiscrete_sharded needs torch.distributed: call torch.distributed.init_process_group "
            "(e.g. monge.distributed.setup() under torchrun), or use fit_semidiscrete in one process"
        )
    flat = _check_targets(shard, "shard")
    n_local, d = flat.shape
    world = dist.get_world_size(group)
    rank = dist.get_rank(group)
    dev = flat.device
    sizes_t = torch.zeros(world, 2, dtype=torch.int64, device=dev)
    sizes_t[rank] = torch.tensor([n_local, d])
    dist.all_reduce(sizes_t, group=group)
    sizes = sizes_t[:, 0].tolist()
    if any(int(x) != d for x in sizes_t[:, 1].tolist()):
        raise ValueError(f"every shard must have the same point dimension; got {sizes_t[:, 1].tolist()} per rank")
    n = int(sum(sizes))
    if n < 2:
        raise ValueError(f"targets needs at least 2 points for a transport map, got {n}")
    offset = int(sum(sizes[:rank]))
    nu = check_weights(weights, n, "weights", flat)
    _check_positive_weights(nu)
    if _find_duplicates(flat)[2]:
        raise ValueError(f"shard on rank {rank} has repeated target rows; deduplicate the data set before a sharded fit")
    max_block_elements = check_positive_int(max_block_elements, "max_block_elements")
    lay = Layout(flat, n, offset, group, True, max_block_elements)

    mean = lay.all_sum(flat.sum(0)) / n
    spread = float((lay.all_sum((flat - mean).square().sum()) / n).sqrt())
    source = options.pop("source", "gaussian")
    sample = sampler(source, d, flat.dtype, dev)
    heights = options.pop("heights", None)
    state = options.pop("state", None)
    checkpoint = options.pop("checkpoint", None)
    # rank 0 draws the seeds (and a callable source's moments); the others receive them
    seeds = torch.zeros(2, dtype=torch.int64, device=dev)
    if rank == 0:
        seeds = torch.randint(0, 2**62, (2,), generator=generator).to(dev)
    lay.all_sum(seeds)
    gen0 = torch.Generator().manual_seed(int(seeds[0]) ^ 0x5D)
    x_mean, x_spread = source_moments(source, d, flat.dtype, dev, gen0)
    fp = float(lay.all_sum(torch.tensor([fingerprint(flat, nu[offset:offset + n_local])], dtype=torch.float64, device=dev)))
    cfg = _config(n, d, epsilon=options.pop("epsilon", 0.0), optimizer=options.pop("optimizer", "adam"),
                  eps_init=options.pop("eps_init", None), eps_decay=options.pop("eps_decay", 0.9),
                  hard_blur=options.pop("hard_blur", 0.01), refill=options.pop("refill", True),
                  ema=options.pop("ema", 0.999), lr=options.pop("lr", None),
                  lr_scale=options.pop("lr_scale", 0.1), batch_size=options.pop("batch_size", None),
                  tol=options.pop("tol", 0.05), max_iter=options.pop("max_iter", 3000),
                  max_time=options.pop("max_time", math.inf), eval_every=options.pop("eval_every", None),
                  eval_samples=options.pop("eval_samples", None),
                  checkpoint=checkpoint if rank == 0 else None,
                  checkpoint_every=options.pop("checkpoint_every", 100), progress=options.pop("progress", None) and rank == 0,
                  callback=options.pop("callback", None), max_block_elements=max_block_elements,
                  score_spread=spread * x_spread / math.sqrt(d))
    if options:
        raise ValueError(f"unknown options for fit_semidiscrete_sharded: {sorted(options)}")
    if cfg.max_time != math.inf:
        raise ValueError("max_time is not supported by the sharded fit (ranks could stop at different steps); use max_iter")
    if state is not None:
        st = _resume_state(state, n, d, fp, dev, flat.dtype)
    else:
        if heights is None:
            h0 = lay.gather_vec(_scaled_voronoi(flat, mean, spread, x_mean, x_spread))
        else:
            h0 = _initial_heights(heights, n, None, flat, mean, spread, x_mean, x_spread)
        st = new_state(h0, cfg, int(seeds[0]), int(seeds[1]), n, d, fp)
    st, err, hist, converged, reason = run(st, lay, sample, nu, cfg)
    fitted = None
    if gather_map:
        padded = max(sizes)
        buf = torch.zeros(padded, d, dtype=flat.dtype, device=dev)
        buf[:n_local] = flat
        bufs = [torch.empty_like(buf) for _ in range(world)]
        dist.all_gather(bufs, buf, group=group)
        full = torch.cat([b[: int(k)] for b, k in zip(bufs, sizes)]).reshape(n, *shard.shape[1:])
        fitted = SemiDiscreteMap(full, st.average.clone(), nu, max_block_elements, epsilon=cfg.epsilon)
    return _result(fitted, st.average.clone(), st, cfg, err, hist, converged, reason, 0)
