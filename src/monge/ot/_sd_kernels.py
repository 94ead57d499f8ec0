r"""Chunked kernels of the semi-discrete solver (private): the hard cell search, the entropic
cell sums and the entropic cell draw, each over target chunks so that no ``rows x targets``
block exceeds ``max_block_elements``, and a :class:`Layout` that runs them on one process or on
a shard of the targets under ``torch.distributed``.

Scores are :math:`s_i(x) = \langle x, y_i \rangle + h_i`; the entropic cell probabilities are
:math:`p_i(x) = \exp(s_i(x)/\varepsilon) / \sum_j \exp(s_j(x)/\varepsilon)` (a row softmax),
and :math:`\varepsilon = 0` means the hard cell :math:`\arg\max_i s_i(x)`.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, overload

import torch
from torch import Tensor

from .._validation import check_positive_int

__all__ = ["DEFAULT_BLOCK", "cell_search", "Layout", "soft_sample"]

DEFAULT_BLOCK = 2**24


# ----------------------------------------------------------------------------------- search
#: Preferred score block (rows x target columns) of the ``k == 1`` search, chosen by timing on
#: one CPU core (bench/results/semidiscrete.md, "Cell-search blocks"): the block stays in cache
#: between the ``addmm`` and the row maxima; cheap low-d matmuls favour tall blocks (less Python
#: overhead per element), moderate d narrower column chunks, large d smaller blocks.
def _preferred_cols(d: int) -> int:
    return 1024 if 16 < d <= 256 else 2048


def _preferred_block(d: int) -> int:
    return 2**20 if d <= 256 else 2**19


def _block_sizes(m: int, n: int, d: int, max_block_elements: int) -> tuple[int, int]:
    """Rows of ``x`` and target columns per block, with ``rows * cols <= max_block_elements``;
    the block is the d-dependent preferred size when the bound allows it."""
    e = max(1, min(max_block_elements, _preferred_block(d)))
    cols = min(n, _preferred_cols(d), e)
    rows = min(m, max(1, e // cols))
    return rows, cols


def _search_max(x: Tensor, targets: Tensor, heights: Tensor, rows: int, cols: int) -> tuple[Tensor, Tensor]:
    """``k == 1``: per row block, the (vectorised, cheap) row maxima ``amax`` of every target
    chunk go into a ``(rows, chunks)`` table; each row's index is then found in its best chunk
    only, by one more ``addmm`` per chunk over the rows that chose it (``1 / chunks`` of the work).
    This avoids the index-tracking ``max(dim=1)``, much slower per element than ``amax``
    (bench/results/semidiscrete.md, "Cell-search blocks")."""
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
        for j, c in zip(chunks.tolist(), counts.tolist(), strict=True):
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
            if best_s is None or best_i is None:
                best_s, best_i = s, i
            else:
                s_all, i_all = torch.cat([best_s, s], 1), torch.cat([best_i, i], 1)
                best_s, pos = s_all.topk(min(k, s_all.shape[1]), dim=1)
                best_i = i_all.gather(1, pos)
        assert best_s is not None and best_i is not None  # at least one target chunk
        out_s[r0 : r0 + rows] = best_s
        out_i[r0 : r0 + rows] = best_i
    out_i += index_offset
    return out_s, out_i




# --------------------------------------------------------------------------- entropic sums
#: Flush subnormal floats to zero (CPU) inside the entropic kernels. At small epsilon most
#: softmax entries underflow into the subnormal range, where x86 arithmetic is many times slower
#: (XLA flushes them by default). Values below ~1e-38 (float32) change nothing measurable in the
#: cell sums. Set to False, or the environment variable ``MONGE_SD_FLUSH_DENORMAL=0``, to keep
#: the process's own setting.
FLUSH_DENORMAL = os.environ.get("MONGE_SD_FLUSH_DENORMAL", "1") != "0"


@contextmanager
def _flushed(device: torch.device):
    """Enable flush-to-zero / denormals-are-zero for the block (CPU only) and restore the
    previous mode, probed by whether a subnormal input reads as zero."""
    if not FLUSH_DENORMAL or device.type != "cpu":
        yield
        return
    already = bool((torch.tensor([1e-39]) * 2.0 == 0).item())
    if already or not torch.set_flush_denormal(True):
        yield
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


#: Preferred size (elements) of an entropic score block: small enough to stay in cache between
#: the ``addmm``, the fused softmax and the reductions that follow it.
_SOFT_BLOCK = 2**20


def _soft_rows_cols(n: int, max_block_elements: int) -> tuple[int, int]:
    """Rows per block and target columns per chunk of the entropic kernels: whole target rows
    when they fit (one pass; about :data:`_SOFT_BLOCK` elements per block), else chunks of
    ``max_block_elements`` columns, one row at a time."""
    cols = min(n, max_block_elements)
    return max(1, min(max_block_elements, max(_SOFT_BLOCK, cols)) // cols), cols


@dataclass
class Layout:
    r"""Where the targets live: the whole set (``group is None``) or the consecutive shard
    ``[lo, lo + N_r)`` of a process group. Every reduction over targets goes through
    :meth:`all_max` / :meth:`all_sum` (identities on one process), so one code path serves both.

    Attributes
    ----------
    flat : Tensor
        ``(N_r, d)`` local targets.
    n : int
        Total number of targets ``N``.
    lo : int
        Global index of the first local target.
    group : ProcessGroup or None
    max_block_elements : int
    """

    flat: Tensor
    n: int
    lo: int = 0
    group: object = None
    sharded: bool = False
    max_block_elements: int = DEFAULT_BLOCK

    @property
    def hi(self) -> int:
        return self.lo + self.flat.shape[0]

    def all_max(self, t: Tensor) -> Tensor:
        if self.sharded:
            import torch.distributed as dist

            dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group)
        return t

    def all_min(self, t: Tensor) -> Tensor:
        if self.sharded:
            import torch.distributed as dist

            dist.all_reduce(t, op=dist.ReduceOp.MIN, group=self.group)
        return t

    def all_sum(self, t: Tensor) -> Tensor:
        if self.sharded:
            import torch.distributed as dist

            dist.all_reduce(t, group=self.group)
        return t

    def gather_vec(self, local: Tensor) -> Tensor:
        """The global ``(N,)`` vector from each rank's ``(N_r,)`` piece (zero-padded all-reduce)."""
        if not self.sharded:
            return local
        full = torch.zeros(self.n, dtype=local.dtype, device=local.device)
        full[self.lo : self.hi] = local
        return self.all_sum(full)

    def hard_cells(self, x: Tensor, heights: Tensor) -> Tensor:
        """Global hard cell index ``(M,)`` of each row of ``x``; ties go to the smallest index."""
        score, idx = cell_search(x, self.flat, heights[self.lo : self.hi], index_offset=self.lo,
                                 max_block_elements=self.max_block_elements)
        if not self.sharded:
            return idx
        best = self.all_max(score.clone())
        idx = torch.where(score == best, idx, torch.full_like(idx, self.n))
        return self.all_min(idx)

    def low_margins(self, x: Tensor, heights: Tensor, cells: Tensor, k: int) -> Tensor:
        r"""``(k, S)``: for each of the ``S`` global target indices ``cells``, the ``k`` smallest
        score margins :math:`\max_j s_j(x) - s_i(x) \ge 0` over the rows of ``x``, ascending.
        Raising :math:`h_i` by the :math:`k`-th of them puts :math:`k` of the rows into cell
        :math:`i`, all other heights fixed (rows already in the cell have margin 0)."""
        m = x.shape[0]
        if not 1 <= k <= m:
            raise ValueError(f"k must be in [1, {m}] (rows of x), got {k}")
        score, _ = cell_search(x, self.flat, heights[self.lo : self.hi], max_block_elements=self.max_block_elements)
        best = self.all_max(score.clone())
        out = torch.zeros((k, cells.shape[0]), dtype=x.dtype, device=x.device)
        local = ((cells >= self.lo) & (cells < self.hi)).nonzero().squeeze(1)
        if local.numel():
            y = self.flat[cells[local] - self.lo]
            hc = heights[cells[local]]
            rows = max(1, self.max_block_elements // y.shape[0])
            low = torch.full((0, y.shape[0]), torch.inf, dtype=x.dtype, device=x.device)
            for r0 in range(0, m, rows):
                marg = best[r0 : r0 + rows, None] - torch.addmm(hc, x[r0 : r0 + rows], y.T)
                both = torch.cat([low, marg.clamp_min_(0.0)])
                low = torch.topk(both, min(k, both.shape[0]), dim=0, largest=False).values
            out[:, local] = low
        return self.all_sum(out) if self.sharded else out

    def hard_sums(self, x: Tensor, heights: Tensor) -> Tensor:
        """Global counts ``(N,)`` of the hard cells of the rows of ``x``."""
        return torch.bincount(self.hard_cells(x, heights), minlength=self.n).to(x.dtype)

    @overload
    def soft_sums(self, x: Tensor, heights: Tensor, eps: float,
                  need_s2: Literal[True] = True) -> tuple[Tensor, Tensor, float]: ...

    @overload
    def soft_sums(self, x: Tensor, heights: Tensor, eps: float,
                  need_s2: bool) -> tuple[Tensor, Tensor | None, float]: ...

    def soft_sums(self, x: Tensor, heights: Tensor, eps: float,
                  need_s2: bool = True) -> tuple[Tensor, Tensor | None, float]:
        r"""Entropic cell sums over the rows of ``x``: :math:`S^1_i = \sum_x p_i(x)`,
        :math:`S^2_i = \sum_x p_i(x)^2` (global ``(N,)`` each; ``None`` unless ``need_s2``) and
        the blur :math:`\sum_x (1 - \sum_i p_i(x)^2)` (0 when every point sits deep in one cell).

        When a whole row of local scores fits in a block and the targets are not sharded, each
        block is one ``addmm`` and one in-place row ``softmax`` (a single fused max/exp/sum/scale
        pass), followed by a column sum and a row dot product; blocks are kept at a cache-sized
        :data:`_SOFT_BLOCK` elements. Otherwise the scores are normalised by an all-reduced or
        online (chunked) log-sum-exp."""
        with _flushed(self.flat.device):
            return self._soft_sums(x, heights, eps, need_s2)

    def _soft_sums(self, x: Tensor, heights: Tensor, eps: float,
                   need_s2: bool = True) -> tuple[Tensor, Tensor | None, float]:
        """The body of :meth:`soft_sums` (subnormals flushed by the caller)."""
        y, h = self.flat, heights[self.lo : self.hi]
        n_loc = y.shape[0]
        rows, cols = _soft_rows_cols(n_loc, self.max_block_elements)
        s1 = torch.zeros(n_loc, dtype=y.dtype, device=y.device)
        s2 = torch.zeros_like(s1) if need_s2 else None
        blur = torch.zeros((), dtype=torch.float64, device=y.device)
        hs = h / eps
        one = cols == n_loc  # whole rows in one block: a single pass
        yt = y.T
        buf = torch.empty((min(rows, x.shape[0]), n_loc) if one else (0,), dtype=y.dtype, device=y.device)
        for r0 in range(0, x.shape[0], rows):
            xb = x[r0 : r0 + rows]
            if one:
                p = buf[: xb.shape[0]]
                torch.addmm(hs, xb, yt, alpha=1.0 / eps, out=p)
                if self.sharded:
                    m = self.all_max(p.amax(1))
                    z = self.all_sum(p.sub_(m[:, None]).exp_().sum(1))
                    p.div_(z[:, None])
                else:
                    torch.softmax(p, 1, out=p)
                s1 += p.sum(0)
                rowsq = torch.linalg.vector_norm(p, 2, dim=1).square_()
                if s2 is not None:
                    s2 += p.square_().sum(0)
            else:
                m, z = self._row_lse_parts(xb, y, hs, eps, cols)
                rowsq = torch.zeros(xb.shape[0], dtype=y.dtype, device=y.device)
                for c0 in range(0, n_loc, cols):
                    p = torch.addmm(hs[c0 : c0 + cols], xb, y[c0 : c0 + cols].T, alpha=1.0 / eps)
                    p.sub_(m[:, None]).exp_().div_(z[:, None])
                    s1[c0 : c0 + cols] += p.sum(0)
                    p.square_()
                    if s2 is not None:
                        s2[c0 : c0 + cols] += p.sum(0)
                    rowsq += p.sum(1)
            blur += (1.0 - self.all_sum(rowsq)).clamp_min(0).sum(dtype=torch.float64)
        return self.gather_vec(s1), (self.gather_vec(s2) if s2 is not None else None), float(blur)

    def _row_lse_parts(self, xb: Tensor, y: Tensor, hs: Tensor, eps: float, cols: int) -> tuple[Tensor, Tensor]:
        """Row maximum ``m`` and :math:`z = \\sum_j e^{s_j/\\varepsilon - m}` over all targets
        (all ranks), by an online log-sum-exp over target chunks."""
        n_loc = y.shape[0]
        m = torch.full((xb.shape[0],), -torch.inf, dtype=y.dtype, device=y.device)
        z = torch.zeros_like(m)
        for c0 in range(0, n_loc, cols):
            s = torch.addmm(hs[c0 : c0 + cols], xb, y[c0 : c0 + cols].T, alpha=1.0 / eps)
            mc = s.amax(1)
            new = torch.maximum(m, mc)
            z = z * torch.exp(m - new) + s.sub_(new[:, None]).exp_().sum(1)
            m = new
        if self.sharded:
            g = self.all_max(m.clone())
            z = self.all_sum(z * torch.exp(m - g))
            m = g
        return m, z


def soft_sample(x: Tensor, targets: Tensor, heights: Tensor, eps: float, u: Tensor,
                max_block_elements: int = DEFAULT_BLOCK) -> Tensor:
    with _flushed(targets.device):
        return _soft_sample(x, targets, heights, eps, u, max_block_elements)


def _soft_sample(x: Tensor, targets: Tensor, heights: Tensor, eps: float, u: Tensor,
                 max_block_elements: int = DEFAULT_BLOCK) -> Tensor:
    r"""Draw one cell per row of ``x`` from :math:`p(x)` by inversion: the cell of row ``b`` is
    the first :math:`i` with :math:`\sum_{j \le i} p_j(x_b) > u_b`, ``u`` ``(M,)`` uniform in
    [0, 1). The draw depends only on ``u`` (one number per row, whatever ``N`` and the block
    size), so it is reproducible from a generator. Rows whose total falls short of ``u`` by
    rounding (probability ~1e-7) take their most probable cell."""
    n = targets.shape[0]
    rows, cols = _soft_rows_cols(n, max_block_elements)
    hs = heights / eps
    out = torch.empty(x.shape[0], dtype=torch.int64, device=targets.device)
    lay = Layout(targets, n, max_block_elements=max_block_elements)
    for r0 in range(0, x.shape[0], rows):
        xb = x[r0 : r0 + rows]
        ub = u[r0 : r0 + rows].to(targets.dtype)
        m, z = lay._row_lse_parts(xb, targets, hs, eps, cols)
        done = torch.zeros(xb.shape[0], dtype=torch.bool, device=targets.device)
        run = torch.zeros(xb.shape[0], dtype=targets.dtype, device=targets.device)
        res = torch.full((xb.shape[0],), -1, dtype=torch.int64, device=targets.device)
        best_p = torch.full_like(run, -1.0)
        best_i = torch.zeros_like(res)
        for c0 in range(0, n, cols):
            p = torch.addmm(hs[c0 : c0 + cols], xb, targets[c0 : c0 + cols].T, alpha=1.0 / eps)
            p.sub_(m[:, None]).exp_().div_(z[:, None])
            pm, pi = p.max(1)
            better = pm > best_p
            best_p = torch.where(better, pm, best_p)
            best_i = torch.where(better, pi + c0, best_i)
            cum = p.cumsum_(1).add_(run[:, None])
            hit = (~done) & (cum[:, -1] > ub)
            if bool(hit.any()):
                rows_hit = hit.nonzero()[:, 0]
                pos = torch.searchsorted(cum[rows_hit], ub[rows_hit, None], right=True)[:, 0]
                res[rows_hit] = pos.clamp_max(cum.shape[1] - 1) + c0
                done |= hit
            run = cum[:, -1]
        out[r0 : r0 + rows] = torch.where(done, res, best_i)
    return out
