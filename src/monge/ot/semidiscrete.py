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

**Solver** (:class:`SemiDiscreteSolver`, the settings in one frozen record): stochastic
gradient steps on :math:`E_{\varepsilon_t}` with Monte Carlo batches; the scale of the steps is

.. math:: \eta_t = \varepsilon_t \,/\, \widehat{\mathbb{E}}_\mu\big[1 - \textstyle\sum_i p_i(x)^2\big],

where :math:`\varepsilon_t / \mathbb{E}[1 - \sum_i p_i^2]` is the inverse of the
:math:`\nu`-averaged diagonal curvature :math:`\mathbb{E}[p_i (1 - p_i)] / (\varepsilon \nu_i)`
of the :math:`1/\nu`-preconditioned energy: a diagonal Newton step, :math:`\varepsilon`
when the cells are blurred and the score gap between neighbouring cells when they are sharp,
so no step size is tuned by hand. ``"adam"`` (default) moves by
:func:`~monge.ot._sd_solver.adam_factor` :math:`\cdot\,\eta_t` times Adam's normalised direction;
``"sgd"`` does :math:`h \leftarrow h - \lambda \eta_t (\hat m - \nu)/\nu` with damping
:math:`\lambda` = ``lr_scale``. :math:`\varepsilon_t` decreases geometrically from the score
spread (coarse cells first: clusters get their mass before their points do) to the target; a
hard target (:math:`\varepsilon = 0`) switches to hard cells once a fraction ``hard_blur`` of
the source or less sits on blurred boundaries, keeping the last step. At the target, the map
uses an exponential moving average of the iterates (Polyak-Ruppert / SD-FM's EMA), which
removes most of the Monte Carlo noise of the last iterate, and Adam's rate is annealed as
:math:`(1 + k/\tau)^{-1/2}` after :math:`k` steps there (Robbins-Monro, :math:`\tau` =
``anneal``).

**Adam or SGD.** The curvature step is the inverse of the *average* curvature, so with SGD the
cells whose curvature is far above average (close neighbours, as in clusters) oscillate unless
``lr_scale`` is small, and the steps are slow along cluster-wide directions of low curvature;
Adam's per-cell normalised steps move every cell at the same pace, which is why it is the
default (the comparison is in bench/results/semidiscrete.md). At the target epsilon Adam's
second moment is floored at :math:`\nu_i (1 - \nu_i) / B`, the variance of a cell's gradient
under an exact hard map: a cell that a batch of :math:`B` draws rarely hits
(:math:`\nu_i B \ll 1`) otherwise has a second moment near :math:`\nu_i^2`, takes full-size
steps up on every miss and a kick down on each hit, and drifts.

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
:class:`MarginalReport`), with the estimator's noise next to it. The fit stops when
:math:`\hat\chi^2 + 2\sigma_{\chi^2} \le \mathrm{tol}^2`: the first of repeated checks to
pass would otherwise be a downward noise excursion.

The cell search is a chunked max-inner-product (``addmm`` per target chunk with a running max /
top-k) and the entropic kernels a chunked log-sum-exp, so no score block exceeds
``max_block_elements``; the targets can be split across processes
(:meth:`SemiDiscreteSolver.sharded`). Nothing here reads or writes files: maps and fit states
go to and from bytes (:meth:`SemiDiscreteMap.to_bytes`, :meth:`SemiDiscreteState.to_bytes`);
:mod:`monge.couplings.maps` keeps them in a run directory.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from .._validation import check_batch, check_number, check_positive_int
from ._checks import check_positive_float, check_weights
from ._sd_kernels import DEFAULT_BLOCK, Layout, _block_sizes, cell_search, soft_sample
from ._sd_solver import (
    Callback,
    Checkpoint,
    Derived,
    MarginalReport,
    SemiDiscreteState,
    Source,
    adam_factor,
    default_eval_samples,
    estimate,
    fingerprint,
    new_state,
    run,
    screen_samples,
    source_moments,
    source_points,
)

__all__ = [
    "Source",
    "cell_search",
    "SemiDiscreteMap",
    "SemiDiscreteResult",
    "SemiDiscreteState",
    "SemiDiscreteSolver",
    "MarginalReport",
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
        #: what the map was fitted from (set by its owner, e.g. a coupling; kept by to_bytes), or ""
        self.fingerprint = ""

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
            raise ValueError(f"x must have {self.dim} features per point (targets' shape {self.shape}), got "
                             f"{xf.shape[1]}")
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
        sample = source_points(source, self.dim, self.flat.dtype, self.flat.device)
        lay = Layout(self.flat, self.n_targets, max_block_elements=self.max_block_elements)
        total = torch.zeros(self.n_targets, dtype=torch.float64, device=self.flat.device)
        done = 0
        while done < n_samples:
            b = min(_draw_rows(self.n_targets, self.max_block_elements), n_samples - done)
            x = sample(b, generator)
            total += (
                lay.soft_sums(x, self.heights, eps, need_s2=False)[0] if eps > 0 else lay.hard_sums(x, self.heights)
            ).double()
            done += b
        return (total / n_samples).to(self.flat.dtype)

    def mass_error(
        self, n_samples: int, generator: torch.Generator | None = None, source: Source = "gaussian"
    ) -> tuple[float, float]:
        """``(max, mean)`` relative hard cell-mass error measured on ``n_samples`` fresh source points."""
        return cell_mass_error(self.cell_masses(n_samples, generator, source), self.weights)

    def to_bytes(self) -> bytes:
        """Targets, heights, weights and epsilon as ``.safetensors`` bytes."""
        tensors = {
            "targets": self.flat.detach().contiguous().cpu(),
            "heights": self.heights.detach().contiguous().cpu(),
            "weights": self.weights.detach().contiguous().cpu(),
        }
        meta = {"format": _FORMAT, "version": _VERSION, "shape": json.dumps(list(self.shape)),
                "epsilon": repr(self.epsilon)}
        if self.fingerprint:
            meta["fingerprint"] = self.fingerprint
        return st_save(tensors, metadata=meta)

    @classmethod
    def from_bytes(cls, raw: bytes, device: torch.device | str | None = None,
                   origin: str = "the data") -> SemiDiscreteMap:
        """Read bytes made by :meth:`to_bytes` (version 1 has ``epsilon = 0``); checks format
        and shapes, never executes code. ``origin`` names the bytes in errors (e.g. a file)."""
        try:
            tensors = st_load(raw)
            header_len = int.from_bytes(raw[:8], "little")
            meta = json.loads(raw[8 : 8 + header_len]).get("__metadata__", {}) or {}
        except (SafetensorError, ValueError, json.JSONDecodeError) as exc:
            raise ValueError(f"{origin} is not a readable safetensors file: {exc}") from exc
        if meta.get("format") != _FORMAT or meta.get("version") not in _VERSIONS:
            raise ValueError(f"{origin} is not a semi-discrete map (format {meta.get('format')!r}, version "
                             f"{meta.get('version')!r})")
        missing = {"targets", "heights", "weights"} - set(tensors)
        if missing:
            raise ValueError(f"{origin} lacks tensors {sorted(missing)}")
        try:
            shape = tuple(int(s) for s in json.loads(meta.get("shape", "null")))
            eps = float(meta.get("epsilon", "0.0"))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{origin} has a malformed 'shape' or 'epsilon' entry: {meta.get('shape')!r}") from exc
        t, h, w = tensors["targets"], tensors["heights"], tensors["weights"]
        if t.dim() != 2 or math.prod(shape) != t.shape[1] or h.shape != (t.shape[0],) or w.shape != (t.shape[0],):
            raise ValueError(
                f"{origin} has inconsistent shapes: targets {tuple(t.shape)}, heights {tuple(h.shape)}, "
                f"weights {tuple(w.shape)}, point shape {shape}"
            )
        t = t.reshape(t.shape[0], *shape)
        if device is not None:
            t, h, w = t.to(device), h.to(device), w.to(device)
        mp = cls(t, h, w, epsilon=eps)
        mp.fingerprint = str(meta.get("fingerprint", ""))
        return mp

    def on(self, device: torch.device | str) -> SemiDiscreteMap:
        """This map with its tensors on ``device`` (``self`` when already there)."""
        device = torch.device(device)
        if self.flat.device == device:
            return self
        mp = SemiDiscreteMap(self.targets.to(device), self.heights.to(device), self.weights.to(device),
                             self.max_block_elements, self.epsilon)
        mp.fingerprint = self.fingerprint
        return mp


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
    error : MarginalReport
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
        Final state: pass it back as ``init=`` to continue the fit exactly.
    history : tuple of (int, float, float, float)
        ``(step, epsilon, rms, mean_rel)`` of each independent evaluation of this call.
    duplicates : int
        Targets merged into an earlier identical target (see :func:`fit_semidiscrete`).
    """

    map: SemiDiscreteMap | None
    heights: Tensor
    n_iter: int
    batch_size: int
    error: MarginalReport
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
) -> MarginalReport:
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
    the (:math:`\nu`-weighted) mean relative error. See :class:`MarginalReport` for the fields.

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
            raise ValueError("marginal_error(heights, targets, ...): pass the targets with the heights, or a "
                             "SemiDiscreteMap")
        mp = SemiDiscreteMap(targets, map_or_heights, weights, max_block_elements)
        flat, h, nu = mp.flat, mp.heights, mp.weights
        eps = 0.0 if eps is None else _check_epsilon(eps, "eps")
    n = flat.shape[0]
    tol = check_positive_float(tol, "tol")
    m = default_eval_samples(n, tol) if n_samples is None else check_positive_int(n_samples, "n_samples")
    if m < 2:
        raise ValueError("n_samples must be >= 2 for the unbiased chi-squared")
    lay = Layout(flat, n, max_block_elements=max_block_elements)
    sample = source_points(source, flat.shape[1], flat.dtype, flat.device)
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


def _resume_state(state: SemiDiscreteState, n: int, d: int, fp: float, device: torch.device,
                  dtype: torch.dtype) -> SemiDiscreteState:
    if state.n_targets != n or state.dim != d:
        raise ValueError(
            f"the fit state is for {state.n_targets} targets of dimension {state.dim}, not {n} x {d}: "
            "resume with the same targets, or start a new fit (init=None)")
    if not math.isclose(state.fingerprint, fp, rel_tol=1e-6, abs_tol=1e-9):
        raise ValueError("the fit state was made for other targets or weights (checksum differs); "
                         "resume with the same data, or start a new fit (init=None)")
    for k in ("heights", "average", "moment1", "moment2", "window_counts"):
        setattr(state, k, getattr(state, k).to(device=device, dtype=dtype).clone())
    state.rng_state = state.rng_state.clone()
    return state


def _check_hooks(callback: object, checkpoint: object) -> None:
    if callback is not None and not callable(callback):
        raise ValueError(f"callback must be callable (state, report_or_None) -> None, got {type(callback).__name__}")
    if checkpoint is not None and not callable(checkpoint):
        raise ValueError(f"checkpoint must be callable (state) -> None (ot/ writes no file; "
                         f"monge.couplings.maps.fit_state_saver writes one), got {type(checkpoint).__name__}")



@dataclass(frozen=True)
class SemiDiscreteSolver:
    r"""The settings of a semi-discrete fit, validated once; call it on the targets.

    ``SemiDiscreteSolver(**settings)(targets, generator, *, weights=None, source="gaussian",
    init=None, progress=None, callback=None, checkpoint=None) -> SemiDiscreteResult`` fits the
    heights of the (entropic) semi-discrete OT map from ``source`` onto ``targets``
    (:meth:`__call__`; the method is in the module docstring); :meth:`sharded` does the same with
    the targets split across a process group. A ``None`` option is derived from the problem
    when the fit starts.

    Attributes
    ----------
    epsilon : float, default 0.0
        Target :math:`\varepsilon \ge 0` (0: hard cells, the DPM-OT map).
    optimizer : {"adam", "sgd"}, default "adam"
        ``"adam"``: rate :func:`~monge.ot._sd_solver.adam_factor` :math:`\cdot\,\eta_t`;
        ``"sgd"``: :math:`1/\nu`-preconditioned steps :math:`\mathrm{lr\_scale}\cdot\eta_t`.
    lr : float, optional
        Fixed step in height units (overrides the curvature step :math:`\eta_t`; for
        ``"adam"`` its rate).
    lr_scale : float, default 0.1
        Damping of the curvature step for ``"sgd"`` (1 = full diagonal Newton step).
    batch_size : int, optional
        Source draws per step; default about :math:`2^{22}/N`, clipped to ``[256, 8N]``.
    tol : float, default 0.05
        Target debiased RMS relative cell-mass error (``error.rms``); it bounds the mean
        relative error for uniform weights.
    max_iter : int, default 3000
        Step cap (the fit always returns).
    max_time : float, default inf
        Wall-clock cap in seconds (``None``: none); not with :meth:`sharded`.
    eps_init : float, optional
        First :math:`\varepsilon_t`; default the score spread :math:`\sigma_y \sigma_x / \sqrt d`
        (RMS spreads of targets and source), where all cells blur.
    eps_decay : float, default 0.9
        Per-step factor of the schedule, in (0, 1).
    hard_blur : float, default 0.01
        For ``epsilon = 0``: switch to hard cells once :math:`\mathbb{E}[1 - \sum_i p_i^2] \le`
        ``hard_blur``.
    refill : bool, default True
        For ``epsilon = 0``: a cell that no hard-phase training draw hit in a window (a window
        ends once every cell expected :data:`~monge.ot._sd_solver.STARVED_EXPECTED` hits) gets
        a coordinate line search of its height that gives it about half its mass
        (:func:`monge.ot._sd_solver.refill`); ``False`` leaves such cells to the optimiser.
    ema : float, default 0.999
        Decay of the moving average of the heights at the target epsilon (warm-up
        :math:`\min(\mathrm{ema}, k/(k+10))` after :math:`k` steps); 0 disables averaging.
    anneal : float, default 1000.0
        Adam's rate at the target epsilon is :math:`(1 + k/\mathrm{anneal})^{-1/2}` times the
        step after :math:`k` steps there (0: constant rate, which stalls at a noise floor).
    variance_floor : bool, default True
        At the target epsilon, floor Adam's second moment at :math:`\nu_i (1 - \nu_i) / B`,
        the gradient variance of an exact hard map (rarely hit cells otherwise take full-size
        normalised steps up on every miss and drift).
    eval_every : int, optional
        Period (steps) of the independent screening check; default such that the screens cost
        about a quarter of the steps.
    eval_samples : int, optional
        Fresh draws of the confirming check; default :func:`~monge.ot._sd_solver.default_eval_samples`
        (as :func:`marginal_error`). At or below the screen size every check is a full one.
    checkpoint_every : int, default 100
        Steps between two calls of the ``checkpoint`` hook (also called at the end).
    max_block_elements : int, default 2**24
        Memory bound (elements) of any score block of the cell search and the entropic kernels.
    """

    epsilon: float = 0.0
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float | None = None
    lr_scale: float = 0.1
    batch_size: int | None = None
    tol: float = 0.05
    max_iter: int = 3000
    max_time: float | None = math.inf
    eps_init: float | None = None
    eps_decay: float = 0.9
    hard_blur: float = 0.01
    refill: bool = True
    ema: float = 0.999
    anneal: float = 1000.0
    variance_floor: bool = True
    eval_every: int | None = None
    eval_samples: int | None = None
    checkpoint_every: int = 100
    max_block_elements: int = DEFAULT_BLOCK

    def __post_init__(self) -> None:
        def put(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' (averaged, preconditioned) or 'adam', got {self.optimizer!r}")
        eps = _check_epsilon(self.epsilon)
        put("epsilon", eps)
        if self.eps_init is not None:
            eps_init = check_positive_float(self.eps_init, "eps_init")
            if eps_init < eps:
                raise ValueError(f"eps_init ({eps_init}) must be >= epsilon ({eps}): the schedule decreases")
            put("eps_init", eps_init)
        put("eps_decay", check_positive_float(self.eps_decay, "eps_decay"))
        if not self.eps_decay < 1:
            raise ValueError(f"eps_decay must be in (0, 1) (per-step factor of the schedule), got {self.eps_decay}")
        put("hard_blur", check_positive_float(self.hard_blur, "hard_blur"))
        if not self.hard_blur < 1:
            raise ValueError(f"hard_blur must be in (0, 1), got {self.hard_blur}")
        ema = self.ema
        ema = float(ema) if isinstance(ema, (int, float)) and not isinstance(ema, bool) else ema
        if not isinstance(ema, float) or not 0 <= ema < 1:
            raise ValueError(f"ema must be in [0, 1) (0: no averaging), got {ema!r}")
        put("ema", ema)
        put("lr_scale", check_positive_float(self.lr_scale, "lr_scale"))
        put("tol", check_positive_float(self.tol, "tol"))
        put("max_time", math.inf if self.max_time is None
            else check_positive_float(self.max_time, "max_time", allow_inf=True))
        put("lr", None if self.lr is None else check_positive_float(self.lr, "lr"))
        for name in ("batch_size", "eval_every", "eval_samples"):
            if getattr(self, name) is not None:
                put(name, check_positive_int(getattr(self, name), name))
        if self.eval_samples is not None and self.eval_samples < 2:
            raise ValueError("eval_samples must be >= 2")
        for name in ("max_iter", "checkpoint_every", "max_block_elements"):
            put(name, check_positive_int(getattr(self, name), name))
        for name in ("refill", "variance_floor"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        put("anneal", check_number(self.anneal, "anneal", 0.0, math.inf, high_open=True))

    @classmethod
    def from_options(cls, **options: Any) -> SemiDiscreteSolver:
        """The solver with ``options``; an unknown name raises ``ValueError`` listing the valid ones."""
        from dataclasses import fields

        names = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise ValueError(f"unknown semi-discrete option(s) {unknown}; valid: {', '.join(names)}")
        return cls(**options)

    def _resolved(self, n: int, d: int, score_spread: float) -> tuple[SemiDiscreteSolver, Derived]:
        """These settings with every ``None`` derived for ``n`` targets in dimension ``d``, and
        the loop's derived numbers."""
        eps = self.epsilon
        eps_init = self.eps_init
        if eps_init is None:
            eps_init = max(score_spread, eps) if score_spread > 0 else max(1.0, eps)
        bs = _default_batch(n) if self.batch_size is None else self.batch_size
        m = default_eval_samples(n, self.tol) if self.eval_samples is None else self.eval_samples
        screen = min(m, screen_samples(n, self.tol))
        # the screening check costs about a quarter of the steps between checks
        every = int(max(20, math.ceil(4 * screen / bs))) if self.eval_every is None else self.eval_every
        resolved = replace(self, eps_init=float(eps_init), batch_size=bs, eval_samples=m, eval_every=every)
        derived = Derived(screen_samples=screen, draw=_draw_rows(n, self.max_block_elements),
                          adam_factor=1.0 if self.lr is not None else adam_factor(d), eps_init=float(eps_init),
                          batch_size=bs, eval_samples=m, eval_every=every)
        return resolved, derived

    def __call__(
        self,
        targets: Tensor,
        generator: torch.Generator | None = None,
        *,
        weights: Tensor | None = None,
        source: Source = "gaussian",
        init: Tensor | SemiDiscreteState | None = None,
        progress: bool | None = None,
        callback: Callback | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> SemiDiscreteResult:
        r"""Fit the heights of the semi-discrete OT map from ``source`` onto ``targets``.

        Every ``eval_every`` steps at the target epsilon the averaged heights are screened on
        :math:`\lceil\sqrt{2N}/\mathrm{tol}^2\rceil` (at least 4096) fresh draws, and, when the
        screen gives :math:`\hat\chi^2 \le 2\,\mathrm{tol}^2`, checked on ``eval_samples``
        fresh draws (:func:`marginal_error`); the fit stops when
        :math:`\hat\chi^2 + 2\sigma_{\chi^2} \le \mathrm{tol}^2`, or after ``max_iter`` steps /
        ``max_time`` seconds, and says which (``result.converged``, ``result.reason``).

        Parameters
        ----------
        targets : Tensor
            ``(N, *shape)`` finite target points, ``N >= 2``. Identical targets are merged (one
            cell with their summed weight, a ``UserWarning`` says how many): at ``epsilon = 0``
            two equal targets would tie and one cell stay empty for ever. The map keeps all
            ``N`` targets; a merged group's hard cell maps to its first member, and its
            entropic mass is split in proportion to the weights.
        generator : torch.Generator, optional
            Seeds the fit (one draw); the fit then uses its own generator, kept in the state.
        weights : Tensor, optional
            ``(N,)`` positive weights summing to one; uniform by default.
        source : "gaussian" or callable
            ``"gaussian"``: standard normal in dimension ``prod(shape)``; a callable
            ``(n, generator) -> (n, *shape)`` draws any other source.
        init : Tensor or SemiDiscreteState, optional
            ``(N,)`` heights to start from (default: the scaled Voronoi heights
            :math:`-\langle \bar x, y_i\rangle - \|y_i - \bar y\|^2/(2s)`,
            :math:`s = \sigma_y/\sigma_x`), or the state of an earlier fit (``result.state``, or
            one passed to ``checkpoint``) to continue it: the continuation equals the
            uninterrupted fit bit for bit (same settings, same device; ``generator`` ignored).
        progress : bool, optional
            tqdm bar with epsilon, step and the last independent error; default: on when
            stderr is a terminal.
        callback : callable, optional
            ``callback(state, report_or_None)`` after every step.
        checkpoint : callable, optional
            ``checkpoint(state)`` every ``checkpoint_every`` steps and at the end, to keep the
            state (e.g. :func:`monge.couplings.maps.fit_state_saver` writes it to a file).
        """
        _check_hooks(callback, checkpoint)
        flat = _check_targets(targets)
        n, d = flat.shape
        if n < 2:
            raise ValueError(f"targets needs at least 2 points for a transport map, got {n}")
        nu = check_weights(weights, n, "weights", flat)
        _check_positive_weights(nu)
        sample = source_points(source, d, flat.dtype, flat.device)
        first, group, n_dup = _find_duplicates(flat)
        if n_dup:
            warnings.warn(
                f"targets has {n_dup} repeated points (identical rows); each group of equal targets is fitted "
                "as one cell with the summed weight (deduplicate the data to silence this)", UserWarning, stacklevel=2)
        uflat = flat[first] if n_dup else flat
        unu = torch.zeros(uflat.shape[0], dtype=nu.dtype, device=nu.device).index_add_(0, group, nu) if n_dup else nu
        seed, eval_seed = (int(v) for v in torch.randint(0, 2**62, (2,), generator=generator))
        x_mean, x_spread = source_moments(
            source, d, flat.dtype, flat.device, torch.Generator().manual_seed(seed ^ 0x5D)
        )
        centre = uflat.mean(0)
        spread = float((uflat - centre).square().sum(1).mean().sqrt())
        cfg, derived = self._resolved(uflat.shape[0], d, spread * x_spread / math.sqrt(d))
        fp = fingerprint(uflat, unu)
        if isinstance(init, SemiDiscreteState):
            st = _resume_state(init, uflat.shape[0], d, fp, flat.device, flat.dtype)
        else:
            h0 = _initial_heights(init, n, first if n_dup else None, uflat, centre, spread, x_mean, x_spread)
            st = new_state(h0, cfg, derived, seed, eval_seed, uflat.shape[0], d, fp)
        layout = Layout(uflat, uflat.shape[0], max_block_elements=cfg.max_block_elements)
        st, err, hist, converged, reason = run(st, layout, sample, unu, cfg, derived, progress=progress,
                                               callback=callback, checkpoint=checkpoint)
        h = _expand(st.average, group, nu, unu, cfg.epsilon) if n_dup else st.average.clone()
        mp = SemiDiscreteMap(targets, h, nu, cfg.max_block_elements, epsilon=cfg.epsilon)
        return _result(mp, h, st, cfg, err, hist, converged, reason, n_dup)

    def sharded(
        self,
        shard: Tensor,
        generator: torch.Generator | None = None,
        *,
        weights: Tensor | None = None,
        group: torch.distributed.ProcessGroup | None = None,
        gather_map: bool = True,
        source: Source = "gaussian",
        init: Tensor | SemiDiscreteState | None = None,
        progress: bool | None = None,
        callback: Callback | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> SemiDiscreteResult:
        r"""The fit of :meth:`__call__` with the targets split across the ranks of a process group.

        Rank :math:`r` holds the consecutive shard :math:`Y_r` of the targets (ranks in order,
        shards of any sizes). Every rank draws the same Monte Carlo batches (the fit's seed is
        drawn from rank 0's ``generator`` and broadcast) and works on its shard only: the hard
        cell of a point is chosen by two all-reduces (MAX of the scores, then MIN of the global
        index among the ranks attaining it); the entropic probabilities by an all-reduced
        log-sum-exp (MAX of the row maxima, SUM of the rescaled partial sums). The per-cell sums
        are gathered into the full ``(N,)`` gradient (all-reduce of a zero-padded vector), so
        every rank holds the same heights. Up to floating-point ties and summation order, the
        result equals :meth:`__call__` on the concatenated targets with the same generator.
        Memory and search time per rank scale with the shard, not with ``N``.

        Duplicates are not merged across ranks (each rank checks its own shard and refuses
        repeated rows): deduplicate the data set first. ``max_time`` is refused (ranks could
        stop at different steps).

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
        generator, source, init, progress, callback, checkpoint
            As in :meth:`__call__`. A callable ``source`` must return the same points on every
            rank for the same generator. ``checkpoint`` is called on rank 0 only.
        """
        import torch.distributed as dist

        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError(
                "SemiDiscreteSolver.sharded needs torch.distributed: call torch.distributed.init_process_group "
                "(e.g. monge.run.distributed.setup() under torchrun), or call the solver in one process"
            )
        if self.max_time != math.inf:
            raise ValueError("max_time is not supported by the sharded fit (ranks could stop at different steps); "
                             "use max_iter")
        _check_hooks(callback, checkpoint)
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
            raise ValueError(f"shard on rank {rank} has repeated target rows; deduplicate the data set before a "
                             "sharded fit")
        lay = Layout(flat, n, offset, group, True, self.max_block_elements)

        mean = lay.all_sum(flat.sum(0)) / n
        spread = float((lay.all_sum((flat - mean).square().sum()) / n).sqrt())
        sample = source_points(source, d, flat.dtype, dev)
        # rank 0 draws the seeds (and a callable source's moments); the others receive them
        seeds = torch.zeros(2, dtype=torch.int64, device=dev)
        if rank == 0:
            seeds = torch.randint(0, 2**62, (2,), generator=generator).to(dev)
        lay.all_sum(seeds)
        gen0 = torch.Generator().manual_seed(int(seeds[0]) ^ 0x5D)
        x_mean, x_spread = source_moments(source, d, flat.dtype, dev, gen0)
        fp = float(lay.all_sum(torch.tensor([fingerprint(flat, nu[offset:offset + n_local])], dtype=torch.float64,
                                            device=dev)))
        cfg, derived = self._resolved(n, d, spread * x_spread / math.sqrt(d))
        if isinstance(init, SemiDiscreteState):
            st = _resume_state(init, n, d, fp, dev, flat.dtype)
        else:
            if init is None:
                h0 = lay.gather_vec(_scaled_voronoi(flat, mean, spread, x_mean, x_spread))
            else:
                h0 = _initial_heights(init, n, None, flat, mean, spread, x_mean, x_spread)
            st = new_state(h0, cfg, derived, int(seeds[0]), int(seeds[1]), n, d, fp)
        st, err, hist, converged, reason = run(
            st, lay, sample, nu, cfg, derived, progress=progress and rank == 0, callback=callback,
            checkpoint=checkpoint if rank == 0 else None)
        fitted = None
        if gather_map:
            padded = max(sizes)
            buf = torch.zeros(padded, d, dtype=flat.dtype, device=dev)
            buf[:n_local] = flat
            bufs = [torch.empty_like(buf) for _ in range(world)]
            dist.all_gather(bufs, buf, group=group)
            full = torch.cat([b[: int(k)] for b, k in zip(bufs, sizes, strict=True)]).reshape(n, *shard.shape[1:])
            fitted = SemiDiscreteMap(full, st.average.clone(), nu, cfg.max_block_elements, epsilon=cfg.epsilon)
        return _result(fitted, st.average.clone(), st, cfg, err, hist, converged, reason, 0)


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


def _result(mp: SemiDiscreteMap | None, h: Tensor, st: SemiDiscreteState, cfg: SemiDiscreteSolver,
            err: MarginalReport, hist: list, converged: bool, reason: str, n_dup: int) -> SemiDiscreteResult:
    return SemiDiscreteResult(
        map=mp, heights=h, n_iter=st.step, batch_size=int(cfg.batch_size or 0), error=err, max_error=err.max_rel,
        mean_error=err.mean_rel, rms_error=err.rms, converged=converged, reason=reason, epsilon=cfg.epsilon,
        state=st, history=tuple(hist), duplicates=n_dup,
    )


def fit_semidiscrete(
    targets: Tensor,
    weights: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
    source: Source = "gaussian",
    init: Tensor | SemiDiscreteState | None = None,
    progress: bool | None = None,
    callback: Callback | None = None,
    checkpoint: Checkpoint | None = None,
    **settings: object,
) -> SemiDiscreteResult:
    """``SemiDiscreteSolver(**settings)(targets, generator, weights=weights, ...)``: the fit in
    one call (settings and call arguments: :class:`SemiDiscreteSolver`)."""
    return SemiDiscreteSolver.from_options(**settings)(
        targets, generator, weights=weights, source=source, init=init, progress=progress, callback=callback,
        checkpoint=checkpoint)


def fit_semidiscrete_sharded(
    shard: Tensor,
    weights: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
    group: torch.distributed.ProcessGroup | None = None,
    gather_map: bool = True,
    source: Source = "gaussian",
    init: Tensor | SemiDiscreteState | None = None,
    progress: bool | None = None,
    callback: Callback | None = None,
    checkpoint: Checkpoint | None = None,
    **settings: object,
) -> SemiDiscreteResult:
    """``SemiDiscreteSolver(**settings).sharded(shard, generator, weights=weights, ...)``
    (:meth:`SemiDiscreteSolver.sharded`)."""
    return SemiDiscreteSolver.from_options(**settings).sharded(
        shard, generator, weights=weights, group=group, gather_map=gather_map, source=source, init=init,
        progress=progress, callback=callback, checkpoint=checkpoint)
