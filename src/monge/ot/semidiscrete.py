r"""Semi-discrete optimal transport: a continuous source onto N weighted points.

As in DPM-OT (Li et al. 2023) and AE-OT (An et al. 2020), with targets :math:`y_1..y_N`,
weights :math:`\nu_i` and a continuous source :math:`\mu` (standard Gaussian by default, or any
sampler), the Brenier potential is :math:`u_h(x) = \max_i \langle x, y_i \rangle + h_i`, whose
cells :math:`W_i = \{x : i = \arg\max_j \langle x, y_j \rangle + h_j\}` define the map
:math:`T(x) = y_{\arg\max}`. The heights minimise the convex energy

.. math:: E(h) = \mathbb{E}_\mu[u_h] - \sum_i \nu_i h_i, \qquad
          \partial E / \partial h_i = \mu(W_i) - \nu_i ,

estimated by Monte Carlo (``bincount`` of the cells of a source batch) and minimised by Adam
or by SGD with iterate averaging; :math:`\sum_i h_i` is fixed to zero after each step. The cell
search is a chunked max-inner-product (``addmm`` per target chunk with a running max / top-k),
so no score block exceeds ``max_block_elements``. The search takes a target shard and an index
offset, so the targets can be split across processes and the per-shard maxima reduced.

Convergence is reported as the relative cell-mass error :math:`|\hat\mu(W_i) - \nu_i| / \nu_i`
(its max and mean over cells).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from .._validation import check_batch, check_positive_int
from ._checks import check_positive_float, check_weights

__all__ = [
    "Source",
    "cell_search",
    "SemiDiscreteMap",
    "SemiDiscreteResult",
    "fit_semidiscrete",
    "fit_semidiscrete_sharded",
    "cell_mass_error",
]

#: A source: ``"gaussian"`` (standard normal in the targets' dimension) or ``(n, generator) -> (n, d)``.
Source = Union[str, Callable[[int, Union[torch.Generator, None]], Tensor]]

DEFAULT_BLOCK = 2**24
_FORMAT = "monge.semidiscrete"
_VERSION = "1"


# ----------------------------------------------------------------------------------- search
#: Preferred score block (rows x target columns) of the ``k == 1`` search, measured on one CPU
#: core at N = 50,000 (bench/ot_solvers.py): 256 x 2048 (2 MiB of float32) keeps the block in
#: cache between the ``addmm`` and the row maxima at d = 64 and d = 3072; at d <= 16 the matmul
#: is cheap and taller blocks (more rows per block) halve the Python overhead per element.
_PREF_COLS = 2048


def _preferred_block(d: int) -> int:
    return 2**20 if d <= 16 else 2**19


def _block_sizes(m: int, n: int, d: int, max_block_elements: int) -> tuple[int, int]:
    """Rows of ``x`` and target columns per block, with ``rows * cols <= max_block_elements``;
    the block is the d-dependent preferred size when the bound allows it."""
    e = max(1, min(max_block_elements, _preferred_block(d)))
    cols = min(n, _PREF_COLS, e)
    rows = min(m, max(1, e // cols))
    return rows, cols


def _search_max(x: Tensor, targets: Tensor, heights: Tensor, rows: int, cols: int) -> tuple[Tensor, Tensor]:
    """``k == 1``: per row block, the (vectorised, cheap) row maxima ``amax`` of every target
    chunk go into a ``(rows, chunks)`` table; each row's index is then found in its best chunk
    only, by one more ``addmm`` per chunk over the rows that chose it (``1 / chunks`` of the work).
    This avoids the index-tracking ``max(dim=1)``, about 15x slower per element than ``amax``."""
    m = x.shape[0]
    n = targets.shape[0]
    n_chunks = -(-n // cols)
    dev, dt = targets.device, targets.dtype
    out_s = torch.empty(m, dtype=dt, device=dev)
    out_i = torch.empty(m, dtype=torch.int64, device=dev)
    buf = torch.empty((rows, cols), dtype=dt, device=dev)
    table = torch.empty((rows, n_chunks), dtype=dt, device=dev)
    for r0 in range(0, m, rows):
        xb = x[r0 : r0 + rows]
        rb = xb.shape[0]
        if n_chunks == 1:
            sc = buf[:rb, :n]
            torch.addmm(heights, xb, targets.T, out=sc)
            torch.max(sc, dim=1, out=(out_s[r0 : r0 + rb], out_i[r0 : r0 + rb]))
            continue
        for j in range(n_chunks):
            c0 = j * cols
            yc = targets[c0 : c0 + cols]
            sc = buf[:rb, : yc.shape[0]]
            torch.addmm(heights[c0 : c0 + cols], xb, yc.T, out=sc)
            torch.amax(sc, dim=1, out=table[:rb, j])
        best = table[:rb].argmax(1)
        order = best.argsort()
        chunks, counts = torch.unique_consecutive(best[order], return_counts=True)
        start = 0
        for j, c in zip(chunks.tolist(), counts.tolist()):
            sel = order[start : start + c]
            start += c
            c0 = j * cols
            s, i = torch.addmm(heights[c0 : c0 + cols], xb[sel], targets[c0 : c0 + cols].T).max(1)
            out_s[r0 + sel] = s
            out_i[r0 + sel] = i + c0
    return out_s, out_i


def cell_search(
    x: Tensor,
    targets: Tensor,
    heights: Tensor,
    *,
    k: int = 1,
    index_offset: int = 0,
    max_block_elements: int = DEFAULT_BLOCK,
) -> tuple[Tensor, Tensor]:
    r"""Top-``k`` cells :math:`\arg\max_j \langle x, y_j \rangle + h_j`, searched in blocks.

    Parameters
    ----------
    x : Tensor
        ``(M, d)`` query points.
    targets : Tensor
        ``(N, d)`` targets (possibly one shard of a larger set).
    heights : Tensor
        ``(N,)`` heights of those targets.
    k : int
        Number of best cells per query (``k <= N``).
    index_offset : int
        Added to the returned indices (the shard's first global index).
    max_block_elements : int
        Upper bound on the size of any ``rows x targets`` score block held in memory (the
        block actually used is the smaller of this and a measured, d-dependent preferred size;
        ``k == 1`` also keeps a ``rows x ceil(N / cols)`` table of chunk maxima).

    Returns
    -------
    (scores, indices) : tuple of Tensor
        ``(M,)`` each for ``k == 1`` or ``(M, k)`` sorted by decreasing score; indices int64.
    """
    if x.dim() != 2 or targets.dim() != 2 or heights.dim() != 1:
        raise ValueError(
            f"x, targets, heights must be (M, d), (N, d), (N,), got {tuple(x.shape)}, "
            f"{tuple(targets.shape)}, {tuple(heights.shape)}"
        )
    m, d = x.shape
    n = targets.shape[0]
    if targets.shape[1] != d:
        raise ValueError(f"x has dimension {d} but targets have {targets.shape[1]}; flatten both alike")
    if heights.shape[0] != n:
        raise ValueError(f"heights must have one entry per target ({n}), got {heights.shape[0]}")
    k = check_positive_int(k, "k")
    if k > n:
        raise ValueError(f"k must be <= the number of targets ({n}), got {k}")
    max_block_elements = check_positive_int(max_block_elements, "max_block_elements")
    x = x.to(targets.dtype)
    heights = heights.to(targets.dtype)
    rows, cols = _block_sizes(m, n, d, max_block_elements)
    if k == 1:
        out_s, out_i = _search_max(x, targets, heights, rows, cols)
        if index_offset:
            out_i += index_offset
        return out_s, out_i
    out_s = torch.empty((m, k), dtype=targets.dtype, device=targets.device)
    out_i = torch.empty((m, k), dtype=torch.int64, device=targets.device)
    buf = torch.empty((rows, cols), dtype=targets.dtype, device=targets.device)
    for r0 in range(0, m, rows):
        xb = x[r0 : r0 + rows]
        best_s: Tensor | None = None
        best_i: Tensor | None = None
        for c0 in range(0, n, cols):
            yc = targets[c0 : c0 + cols]
            sc = buf[: xb.shape[0], : yc.shape[0]]
            torch.addmm(heights[c0 : c0 + cols], xb, yc.T, out=sc)
            s, i = sc.topk(min(k, yc.shape[0]), dim=1)
            i = i + c0
            if best_s is None:
                best_s, best_i = s, i
            else:
                s_all, i_all = torch.cat([best_s, s], 1), torch.cat([best_i, i], 1)
                best_s, pos = s_all.topk(min(k, s_all.shape[1]), dim=1)
                best_i = i_all.gather(1, pos)
        out_s[r0 : r0 + rows] = best_s
        out_i[r0 : r0 + rows] = best_i
    out_i += index_offset
    return out_s, out_i


# -------------------------------------------------------------------------------- sources
def _sampler(source: Source, d: int, dtype: torch.dtype, device: torch.device) -> Callable[[int, torch.Generator | None], Tensor]:
    if isinstance(source, str):
        if source != "gaussian":
            raise ValueError(f"source must be 'gaussian' or a callable (n, generator) -> Tensor, got {source!r}")

        def gauss(n: int, generator: torch.Generator | None) -> Tensor:
            gdev = generator.device if generator is not None else device
            return torch.randn(n, d, generator=generator, dtype=dtype, device=gdev).to(device)

        return gauss
    if not callable(source):
        raise ValueError(f"source must be 'gaussian' or a callable (n, generator) -> Tensor, got {type(source).__name__}")

    def call(n: int, generator: torch.Generator | None) -> Tensor:
        x = source(n, generator)
        if not torch.is_tensor(x) or x.shape[0] != n or x[0].numel() != d:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"source(n, generator) must return a ({n}, {d}) tensor, got {shape}")
        return x.reshape(n, d).to(device=device, dtype=dtype)

    return call


def _count_cells(
    sample: Callable[[int, torch.Generator | None], Tensor],
    n_samples: int,
    n: int,
    d: int,
    locate: Callable[[Tensor], Tensor],
    generator: torch.Generator | None,
    max_block_elements: int,
    device: torch.device,
) -> Tensor:
    """Cell counts ``(N,)`` of ``n_samples`` source points, drawn in memory-bounded batches;
    ``locate(x) -> (M,)`` gives the (global) cell index of each point."""
    rows = max(1, min(n_samples, max_block_elements // max(d, min(n, 4096))))
    counts = torch.zeros(n, dtype=torch.int64, device=device)
    done = 0
    while done < n_samples:
        b = min(rows, n_samples - done)
        counts += torch.bincount(locate(sample(b, generator)), minlength=n)
        done += b
    return counts


def cell_mass_error(masses: Tensor, weights: Tensor) -> tuple[float, float]:
    r"""``(max, mean)`` of :math:`|m_i - \nu_i| / \nu_i` over cells with :math:`\nu_i > 0`."""
    pos = weights > 0
    rel = (masses[pos] - weights[pos]).abs() / weights[pos]
    return float(rel.max()), float(rel.mean())


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
    """

    def __init__(
        self,
        targets: Tensor,
        heights: Tensor,
        weights: Tensor | None = None,
        max_block_elements: int = DEFAULT_BLOCK,
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
        """Cell index ``(M,)`` and target ``(M, *shape)`` of each ``x`` ``(M, *shape)``."""
        _, idx = cell_search(self._flatten(x), self.flat, self.heights, max_block_elements=self.max_block_elements)
        return idx, self.targets[idx]

    def topk(self, x: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
        """The ``k`` best cells of each ``x``: indices ``(M, k)``, targets ``(M, k, *shape)``
        and scores :math:`\\langle x, y_i \\rangle + h_i` ``(M, k)``, best first."""
        s, idx = cell_search(self._flatten(x), self.flat, self.heights, k=k, max_block_elements=self.max_block_elements)
        if k == 1:
            s, idx = s[:, None], idx[:, None]
        return idx, self.targets[idx], s

    def cell_masses(
        self, n_samples: int, generator: torch.Generator | None = None, source: Source = "gaussian"
    ) -> Tensor:
        """Monte Carlo estimate ``(N,)`` of the source mass of every cell."""
        n_samples = check_positive_int(n_samples, "n_samples")
        sample = _sampler(source, self.dim, self.flat.dtype, self.flat.device)
        counts = _count_cells(sample, n_samples, self.n_targets, self.dim, 
                              lambda x: cell_search(x, self.flat, self.heights, max_block_elements=self.max_block_elements)[1],
                              generator,
                              self.max_block_elements, self.flat.device)
        return counts.to(self.flat.dtype) / n_samples

    def mass_error(
        self, n_samples: int, generator: torch.Generator | None = None, source: Source = "gaussian"
    ) -> tuple[float, float]:
        """``(max, mean)`` relative cell-mass error measured on ``n_samples`` fresh source points."""
        return cell_mass_error(self.cell_masses(n_samples, generator, source), self.weights)

    def save(self, path: str | Path) -> None:
        """Write targets, heights and weights to a ``.safetensors`` file (atomically)."""
        from ..checkpoint import atomic_write_bytes

        tensors = {
            "targets": self.flat.detach().contiguous().cpu(),
            "heights": self.heights.detach().contiguous().cpu(),
            "weights": self.weights.detach().contiguous().cpu(),
        }
        meta = {"format": _FORMAT, "version": _VERSION, "shape": json.dumps(list(self.shape))}
        atomic_write_bytes(path, st_save(tensors, metadata=meta))

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str | None = None) -> "SemiDiscreteMap":
        """Read a map written by :meth:`save`; checks format and shapes, never executes code."""
        raw = Path(path).read_bytes()
        try:
            tensors = st_load(raw)
            header_len = int.from_bytes(raw[:8], "little")
            meta = json.loads(raw[8 : 8 + header_len]).get("__metadata__", {}) or {}
        except (SafetensorError, ValueError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path} is not a readable safetensors file: {exc}") from exc
        if meta.get("format") != _FORMAT or meta.get("version") != _VERSION:
            raise ValueError(f"{path} is not a semi-discrete map (format {meta.get('format')!r}, version {meta.get('version')!r})")
        missing = {"targets", "heights", "weights"} - set(tensors)
        if missing:
            raise ValueError(f"{path} lacks tensors {sorted(missing)}")
        try:
            shape = tuple(int(s) for s in json.loads(meta.get("shape", "null")))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path} has a malformed 'shape' entry: {meta.get('shape')!r}") from exc
        t, h, w = tensors["targets"], tensors["heights"], tensors["weights"]
        if t.dim() != 2 or math.prod(shape) != t.shape[1] or h.shape != (t.shape[0],) or w.shape != (t.shape[0],):
            raise ValueError(
                f"{path} has inconsistent shapes: targets {tuple(t.shape)}, heights {tuple(h.shape)}, "
                f"weights {tuple(w.shape)}, point shape {shape}"
            )
        t = t.reshape(t.shape[0], *shape)
        if device is not None:
            t, h, w = t.to(device), h.to(device), w.to(device)
        return cls(t, h, w)


@dataclass(frozen=True)
class SemiDiscreteResult:
    """Output of :func:`fit_semidiscrete`.

    Attributes
    ----------
    map : SemiDiscreteMap or None
        The fitted map (targets, heights, weights); ``None`` from a sharded fit with
        ``gather_map=False``.
    heights : Tensor
        ``(N,)`` fitted heights (zero mean).
    n_iter : int
        Optimisation steps done.
    batch_size : int
        Monte Carlo batch size at the end (it doubles when the gradient stalls).
    max_error, mean_error : float
        Max and mean relative cell-mass error measured on the last Monte Carlo batch. It holds
        the batch's sampling noise and, as the loop stops on it, is slightly optimistic: use
        :meth:`SemiDiscreteMap.mass_error` on fresh samples for a report.
    converged : bool
        Whether ``mean_error <= tol`` (and ``max_error <= max_tol``) before ``max_iter``.
    history : tuple of (int, int, float, float)
        ``(iteration, batch_size, max_error, mean_error)`` every iteration.
    """

    map: SemiDiscreteMap | None
    heights: Tensor
    n_iter: int
    batch_size: int
    max_error: float
    mean_error: float
    converged: bool
    history: tuple[tuple[int, int, float, float], ...]


def fit_semidiscrete(
    targets: Tensor,
    weights: Tensor | None = None,
    *,
    source: Source = "gaussian",
    optimizer: Literal["adam", "sgd"] = "adam",
    lr: float | None = None,
    batch_size: int | None = None,
    max_batch_size: int = 2**24,
    tol: float = 0.02,
    max_tol: float | None = None,
    max_iter: int = 2000,
    patience: int = 20,
    lr_decay: float = 0.8,
    heights: Tensor | None = None,
    generator: torch.Generator | None = None,
    max_block_elements: int = DEFAULT_BLOCK,
    search: Callable[..., tuple[Tensor, Tensor]] = cell_search,
) -> SemiDiscreteResult:
    r"""Fit the heights of the semi-discrete OT map from ``source`` onto weighted ``targets``.

    Each step draws ``batch_size`` source points, finds their cells, and follows the Monte Carlo
    gradient :math:`\hat\mu(W_i) - \nu_i` of the energy (module docstring): Adam on :math:`h`
    (DPM-OT) or SGD preconditioned by :math:`1/\nu_i` with Polyak averaging of the iterates
    (``"sgd"``); then :math:`h \leftarrow h - \bar h`. When the gradient norm has not improved
    for ``patience`` steps, the batch doubles (up to ``max_batch_size``) and ``lr`` shrinks by
    ``lr_decay``. Stops when the mean relative cell-mass error of the batch is ``<= tol`` (and
    its max ``<= max_tol`` when given) and no cell is empty.

    Parameters
    ----------
    targets : Tensor
        ``(N, *shape)`` finite target points.
    weights : Tensor, optional
        ``(N,)`` non-negative weights summing to one; uniform by default.
    source : "gaussian" or callable
        ``"gaussian"``: standard normal in dimension ``prod(shape)``; a callable
        ``(n, generator) -> (n, *shape)`` samples any other source.
    optimizer : {"adam", "sgd"}
    lr : float, optional
        Step size in height units; default ``0.1 * g`` with ``g`` the median distance of a
        target to its nearest other target (over at most 1024 evenly spaced targets), so that
        heights move in units of the gaps between neighbouring cells: on clustered targets the
        targets' overall spread is far coarser than the cells (falls back to ``0.01 * spread``).
    batch_size : int, optional
        Initial Monte Carlo batch; default ``10 N`` (DPM-OT), at most ``max_batch_size``.
    tol, max_tol : float
        Stopping thresholds on the mean (and max) relative cell-mass error.
    max_iter : int
        Cap on the number of steps.
    heights : Tensor, optional
        ``(N,)`` warm start; default
        :math:`h_i = -\langle \bar x, y_i \rangle - \|y_i - \bar y\|^2 / (2 s)` with
        :math:`s` the ratio of the targets' and the source's RMS spreads: the Voronoi cells of the
        targets under the affine guess :math:`x \mapsto \bar y + s (x - \bar x)`, so every cell
        starts with mass (not only the convex hull's vertices) and clusters start with roughly
        their share of the source. A callable source's moments are estimated on 4096 draws.
    generator : torch.Generator, optional
        Randomness of the Monte Carlo batches.
    max_block_elements : int
        Memory bound of the cell search.
    search : callable
        Cell search with :func:`cell_search`'s signature. To split the targets across
        processes use :func:`fit_semidiscrete_sharded`.
    """
    flat = _check_targets(targets)
    n, d = flat.shape
    nu = check_weights(weights, n, "weights", flat)
    max_block_elements = check_positive_int(max_block_elements, "max_block_elements")
    centre = flat.mean(0)
    spread = float((flat - centre).square().sum(1).mean().sqrt())

    def locate(x: Tensor, h: Tensor) -> Tensor:
        return search(x, flat, h, max_block_elements=max_block_elements)[1]

    queries = flat[_gap_queries(n, flat.device)]
    top2 = cell_search(queries, flat, -0.5 * flat.square().sum(1), k=min(2, n), max_block_elements=max_block_elements)[0]
    gap = _median_gap(queries, top2)
    if heights is None:
        x_mean, x_spread = _source_moments(source, d, flat.dtype, flat.device, generator)
        heights = _scaled_voronoi(flat, centre, spread, x_mean, x_spread)
    h, info = _fit_heights(
        locate, n, d, nu, gap if gap > 0 else 0.1 * spread, flat.dtype, flat.device,
        source=source, optimizer=optimizer, lr=lr, batch_size=batch_size, max_batch_size=max_batch_size,
        tol=tol, max_tol=max_tol, max_iter=max_iter, patience=patience, lr_decay=lr_decay,
        heights=heights, generator=generator, max_block_elements=max_block_elements,
    )
    return SemiDiscreteResult(map=SemiDiscreteMap(targets, h, nu, max_block_elements), heights=h, **info)


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
    shards of any sizes). Every rank draws the same Monte Carlo batch (rank 0's ``generator``
    state is broadcast first), searches only its shard, and the winning cell of each point is
    chosen by two all-reduces: :math:`s^* = \max_r s_r` (MAX), then the smallest global index
    among the ranks attaining :math:`s^*` (MIN). Each rank counts the points that landed in its
    own cells, and the counts are summed across ranks (all-reduce of a zero-padded ``(N,)``
    vector, i.e. a gather of the per-shard gradients :math:`\hat\mu(W_i) - 
u_i`), so every
    rank holds the same gradient and takes the same height step. Up to floating-point ties, the
    heights equal those of :func:`fit_semidiscrete` on the concatenated targets with the same
    generator. Memory and search time per rank scale with the shard, not with ``N``.

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
        ``N x d`` per rank). With ``False``, ``result.map`` is ``None``; use ``result.heights``
        (full ``(N,)``) with the shards.
    generator, max_block_elements, **options
        As in :func:`fit_semidiscrete` (``source``, ``optimizer``, ``lr``, ``batch_size``, ...).
        A callable ``source`` must return the same points on every rank for the same generator.
    """
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "fit_semidiscrete_sharded needs torch.distributed: call torch.distributed.init_process_group "
            "(e.g. monge.distributed.setup() under torchrun), or use fit_semidiscrete in one process"
        )
    if "search" in options:
        raise ValueError("fit_semidiscrete_sharded does its own sharded search; drop the 'search' argument")
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
    if min(sizes) < 1:
        raise ValueError(f"every rank needs at least one target; shard sizes per rank are {sizes}")
    n = int(sum(sizes))
    offset = int(sum(sizes[:rank]))
    nu = check_weights(weights, n, "weights", flat)
    max_block_elements = check_positive_int(max_block_elements, "max_block_elements")

    # Global RMS spread (default step size), with the same two-pass formula as one process.
    total = flat.sum(0)
    dist.all_reduce(total, group=group)
    mean = total / n
    sq = (flat - mean).square().sum()
    dist.all_reduce(sq, group=group)
    spread = float((sq / n).sqrt())

    if generator is not None:
        state = generator.get_state().to(dev)
        dist.broadcast(state, src=dist.get_global_rank(group, 0) if group is not None else 0, group=group)
        generator.set_state(state.cpu())

    lo, hi = offset, offset + n_local

    def locate(x: Tensor, h: Tensor) -> Tensor:
        score, idx = cell_search(x, flat, h[lo:hi], index_offset=offset, max_block_elements=max_block_elements)
        best = score.clone()
        dist.all_reduce(best, op=dist.ReduceOp.MAX, group=group)
        idx = torch.where(score == best, idx, torch.full_like(idx, n))
        dist.all_reduce(idx, op=dist.ReduceOp.MIN, group=group)
        return idx

    def reduce_counts(counts: Tensor) -> Tensor:
        own = torch.zeros_like(counts)
        own[lo:hi] = counts[lo:hi]
        dist.all_reduce(own, group=group)
        return own

    # Median nearest-neighbour gap (default step size): the same query subsample as one process,
    # assembled by a sum of zero-padded pieces; per-shard top-2 scores, then the global top 2.
    qidx = _gap_queries(n, dev)
    mine = (qidx >= lo) & (qidx < hi)
    queries = torch.zeros(qidx.shape[0], d, dtype=flat.dtype, device=dev)
    queries[mine] = flat[qidx[mine] - lo]
    dist.all_reduce(queries, group=group)
    local = cell_search(queries, flat, -0.5 * flat.square().sum(1), k=min(2, n_local),
                        max_block_elements=max_block_elements)[0]
    if local.dim() == 1:
        local = local[:, None]
    if local.shape[1] < 2:
        local = torch.cat([local, torch.full_like(local, -math.inf)], 1)
    every = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(every, local, group=group)
    top2 = torch.cat(every, 1).topk(min(2, n), dim=1).values
    gap = _median_gap(queries, top2)
    if options.get("heights") is None:
        x_mean, x_spread = _source_moments(options.get("source", "gaussian"), d, flat.dtype, dev, generator)
        init = torch.zeros(n, dtype=flat.dtype, device=dev)
        init[lo:hi] = _scaled_voronoi(flat, mean, spread, x_mean, x_spread)
        dist.all_reduce(init, group=group)
        options["heights"] = init
    h, info = _fit_heights(
        locate, n, d, nu, gap if gap > 0 else 0.1 * spread, flat.dtype, dev, generator=generator,
        max_block_elements=max_block_elements, reduce_counts=reduce_counts, **options,
    )
    fitted = None
    if gather_map:
        pieces = [torch.empty(int(k), d, dtype=flat.dtype, device=dev) for k in sizes]
        padded = max(sizes)
        buf = torch.zeros(padded, d, dtype=flat.dtype, device=dev)
        buf[:n_local] = flat
        bufs = [torch.empty_like(buf) for _ in range(world)]
        dist.all_gather(bufs, buf, group=group)
        for r, k in enumerate(sizes):
            pieces[r] = bufs[r][: int(k)]
        full = torch.cat(pieces).reshape(n, *shard.shape[1:])
        fitted = SemiDiscreteMap(full, h, nu, max_block_elements)
    return SemiDiscreteResult(map=fitted, heights=h, **info)


def _gap_queries(n: int, device: torch.device, most: int = 1024) -> Tensor:
    """Indices of the (at most ``most``, evenly spaced) targets whose nearest-neighbour gaps set
    the default step size."""
    return torch.linspace(0, n - 1, min(n, most), device=device).round().long().unique()


def _median_gap(queries: Tensor, top2: Tensor) -> float:
    r"""Median over ``queries`` (targets) of the distance to their nearest other target, from the
    top-2 scores :math:`s = \langle q, y \rangle - \tfrac12 \|y\|^2` (the best is the query
    itself): :math:`\|q - y\|^2 = \|q\|^2 - 2 s`. 0 when there is a single target."""
    if top2.dim() == 1 or top2.shape[1] < 2:
        return 0.0
    d2 = (queries.square().sum(1) - 2 * top2[:, 1]).clamp_min(0)
    return float(d2.sqrt().median())


def _source_moments(
    source: Source, d: int, dtype: torch.dtype, device: torch.device, generator: torch.Generator | None
) -> tuple[Tensor, float]:
    """Mean ``(d,)`` and RMS distance to the mean of the source: exact for ``"gaussian"``,
    else estimated on 4096 draws (taken from ``generator``)."""
    if isinstance(source, str):
        _sampler(source, d, dtype, device)  # validates the name
        return torch.zeros(d, dtype=dtype, device=device), math.sqrt(d)
    x = _sampler(source, d, dtype, device)(4096, generator)
    mean = x.mean(0)
    return mean, float((x - mean).square().sum(1).mean().sqrt())


def _scaled_voronoi(flat: Tensor, centre: Tensor, spread: float, x_mean: Tensor, x_spread: float) -> Tensor:
    r"""Initial heights :math:`h_i = -\langle \bar x, y_i \rangle - \|y_i - \bar y\|^2 / (2 s)`,
    :math:`s` = targets' spread / source's spread: the cells are the Voronoi cells of the targets
    seen through the affine guess :math:`x \mapsto \bar y + s (x - \bar x)` of the map, so each
    cell starts with roughly its share of the source when the two clouds differ in scale."""
    s = spread / x_spread if spread > 0 and x_spread > 0 else 1.0
    return -(flat @ x_mean) - 0.5 * (flat - centre).square().sum(1) / s


def _check_targets(targets: Tensor, name: str = "targets") -> Tensor:
    check_batch(targets, name)
    if not targets.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got {targets.dtype}; call .float()")
    return targets.reshape(targets.shape[0], -1)


def _fit_heights(
    locate: Callable[[Tensor, Tensor], Tensor],
    n: int,
    d: int,
    nu: Tensor,
    scale: float,
    dtype: torch.dtype,
    device: torch.device,
    *,
    source: Source = "gaussian",
    optimizer: Literal["adam", "sgd"] = "adam",
    lr: float | None = None,
    batch_size: int | None = None,
    max_batch_size: int = 2**24,
    tol: float = 0.02,
    max_tol: float | None = None,
    max_iter: int = 2000,
    patience: int = 20,
    lr_decay: float = 0.8,
    heights: Tensor | None = None,
    generator: torch.Generator | None = None,
    max_block_elements: int = DEFAULT_BLOCK,
    reduce_counts: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, dict]:
    """The optimisation loop of :func:`fit_semidiscrete`; ``locate(x, h)`` gives global cell indices."""
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    tol = check_positive_float(tol, "tol")
    if max_tol is not None:
        max_tol = check_positive_float(max_tol, "max_tol")
    max_iter = check_positive_int(max_iter, "max_iter")
    patience = check_positive_int(patience, "patience")
    max_batch_size = check_positive_int(max_batch_size, "max_batch_size")
    lr_decay = check_positive_float(lr_decay, "lr_decay")
    if lr_decay > 1:
        raise ValueError(f"lr_decay must be in (0, 1], got {lr_decay}")
    if lr is None:
        lr = 0.1 * (scale if scale > 0 else 1.0)
    lr = check_positive_float(lr, "lr")
    bs = check_positive_int(batch_size, "batch_size") if batch_size is not None else 10 * n
    bs = min(bs, max_batch_size)
    sample = _sampler(source, d, dtype, device)
    if heights is None:
        h = torch.zeros(n, dtype=dtype, device=device)
    else:
        if not torch.is_tensor(heights) or heights.shape != (n,) or not bool(torch.isfinite(heights).all()):
            raise ValueError(f"heights must be a finite ({n},) tensor (one per target) or None")
        h = heights.detach().to(device=device, dtype=dtype).clone()
    h -= h.mean()

    m1 = torch.zeros_like(h)
    m2 = torch.zeros_like(h)
    b1, b2, adam_eps = 0.9, 0.999, 1e-12
    avg = h.clone()
    n_avg = 0
    support = nu > 0
    best_norm, since_best = math.inf, 0
    history: list[tuple[int, int, float, float]] = []
    max_err = mean_err = math.inf
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        counts = _count_cells(sample, bs, n, d, lambda x: locate(x, h), generator, max_block_elements, device)
        if reduce_counts is not None:
            counts = reduce_counts(counts)
        grad = counts.to(dtype) / bs - nu
        max_err, mean_err = cell_mass_error(grad + nu, nu)
        history.append((it, bs, max_err, mean_err))
        empty = bool(((counts == 0) & support).any())
        if mean_err <= tol and (max_tol is None or max_err <= max_tol) and not empty:
            converged = True
            break
        gnorm = float(grad.norm())
        if gnorm < best_norm:
            best_norm, since_best = gnorm, 0
        else:
            since_best += 1
            if since_best >= patience and bs < max_batch_size:
                bs = min(2 * bs, max_batch_size)
                lr *= lr_decay
                best_norm, since_best = math.inf, 0
                if optimizer == "sgd":
                    h = avg.clone()
                    n_avg = 0
        if optimizer == "adam":
            m1.mul_(b1).add_(grad, alpha=1 - b1)
            m2.mul_(b2).addcmul_(grad, grad, value=1 - b2)
            step = (m1 / (1 - b1**it)) / ((m2 / (1 - b2**it)).sqrt() + adam_eps / n)
            h -= lr * step
        else:
            rel = torch.where(support, grad / nu.clamp_min(torch.finfo(nu.dtype).tiny), grad)
            h -= lr * rel
        h -= h.mean()
        if optimizer == "sgd":
            n_avg += 1
            avg += (h - avg) / n_avg
    final = avg if optimizer == "sgd" and not converged else h
    final = final - final.mean()
    info = dict(n_iter=it, batch_size=bs, max_error=max_err, mean_error=mean_err, converged=converged,
                history=tuple(history))
    return final, info
