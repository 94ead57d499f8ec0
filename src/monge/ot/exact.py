r"""Exact optimal transport between weighted point clouds.

Solves the Kantorovich problem

.. math:: \min_{P \ge 0,\; P\mathbf 1 = a,\; P^\top \mathbf 1 = b} \langle P, C \rangle

with POT's network simplex (``ot.emd``, Bonneel et al. 2011) on the CPU in float64, and the
uniform square case (the assignment problem :math:`\min_{\sigma \in S_n} \sum_i C_{i\sigma(i)}`)
with SciPy's ``linear_sum_assignment`` (Crouse 2016) or the network simplex, whichever is faster
at that size (measured in ``bench/ot_solvers.py``), or on any device and in batches with the
certified torch auction (:mod:`monge.ot.auction`). Results come back on the input's device
and dtype. Used by minibatch OT-CFM (Tong et al. 2023; Pooladian et al. 2023).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal, overload

import numpy as np
import torch
from torch import Tensor

from .._validation import check_batch
from ._checks import check_cost, check_positive_float, check_weights
from .auction import AssignmentResult, auction

__all__ = [
    "ExactResult", "AssignmentResult", "squared_euclidean_cost", "assignment", "pick_method", "emd", "exact_ot",
]

#: From this size on, ``auto`` uses POT's network simplex. SciPy's solver is faster on small or
#: easy problems, but its time depends on the data (several times slower than the simplex on
#: clouds of different scales), while the simplex's does not: the robust choice (measured in
#: ``bench/ot_solvers.py``, figures in ``bench/results/ot_solvers.md``).
AUTO_EMD_MIN_N = 512


@dataclass(frozen=True)
class ExactResult:
    """Exact OT solution.

    Attributes
    ----------
    plan : Tensor
        ``(n, m)`` optimal plan with marginals ``a`` and ``b``.
    cost : Tensor
        Scalar :math:`\\langle P, C \\rangle`.
    perm : Tensor or None
        For ``n == m`` with uniform weights, the permutation with ``plan = I[perm] / n``
        (row ``i`` is sent to column ``perm[i]``); otherwise ``None``.
    """

    plan: Tensor
    cost: Tensor
    perm: Tensor | None


def squared_euclidean_cost(x: Tensor, y: Tensor) -> Tensor:
    r"""Cost matrix :math:`C_{ij} = \|x_i - y_j\|^2` of flattened ``(n, *shape)``, ``(m, *shape)``."""
    check_batch(x, "x")
    check_batch(y, "y")
    xf, yf = x.reshape(x.shape[0], -1), y.reshape(y.shape[0], -1)
    if xf.shape[1] != yf.shape[1]:
        raise ValueError(f"x and y must have the same feature size, got {xf.shape[1]} and {yf.shape[1]}")
    cost = (xf * xf).sum(1, keepdim=True) + (yf * yf).sum(1)[None, :] - 2.0 * xf @ yf.T
    return cost.clamp_min_(0.0)


def _num_iter_max(n: int, m: int) -> int:
    # POT's default (1e5) stops short of optimality around n = 4096; pivots grow ~ n*m.
    return max(100_000, 50 * n * m)


def _emd_numpy(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, float]:
    import ot  # POT on first use: it loads scikit-learn (slow to import), which a CLI error or --help never needs

    plan, log = ot.emd(a, b, c, numItermax=_num_iter_max(*c.shape), log=True)
    if log.get("warning"):
        raise RuntimeError(f"ot.emd did not reach optimality: {log['warning']}")
    return plan, float(log["cost"])


def _perm_from_plan(plan: np.ndarray) -> np.ndarray | None:
    """Row-wise argmax of a (scaled) permutation plan; ``None`` if the plan is not one."""
    n = plan.shape[0]
    perm = plan.argmax(1)
    if np.unique(perm).size != n:
        return None
    if not np.allclose(plan[np.arange(n), perm], 1.0 / n, rtol=1e-6, atol=0.0):
        return None
    return perm


Method = Literal["auto", "scipy", "emd", "auction"]
METHODS = ("auto", "scipy", "emd", "auction")


def _as_cost_batch(cost: object) -> Tensor:
    """A floating ``(n, n)`` or ``(P, n, n)`` cost from a tensor (integer dtypes become
    float64) or a list of equal-shape ``(n, n)`` tensors; ``ValueError`` naming the fix."""
    if isinstance(cost, (list, tuple)):
        if not cost or not all(torch.is_tensor(c) for c in cost):
            raise ValueError("a batch of costs must be a (P, n, n) tensor or a non-empty list of (n, n) tensors")
        shapes = sorted({tuple(c.shape) for c in cost})
        if len(shapes) > 1:
            raise ValueError(
                f"a batch of assignment problems must share one size, got shapes {shapes[:4]}; "
                "solve each size separately (one call per size) or group the problems by size"
            )
        cost = torch.stack(list(cost))
    if torch.is_tensor(cost) and cost.dtype == torch.bool:
        raise ValueError("cost must be numeric, got a bool tensor; call .double()")
    if torch.is_tensor(cost) and not cost.is_floating_point() and not cost.is_complex():
        if cost.numel() and int(cost.abs().max()) >= 2**53:
            raise ValueError("integer cost entries beyond 2**53 lose precision in float64; rescale them")
        cost = cost.to(torch.float64)  # exact for |c| < 2**53; the auction then certifies exactness
    checked = check_cost(cost, batched=True)
    if checked.shape[-1] != checked.shape[-2]:
        raise ValueError(
            f"an assignment needs a square cost (n, n) or batch (P, n, n), got {tuple(checked.shape)}; for "
            "n != m use monge.ot.emd (plan with weights, POT network simplex) or "
            "scipy.optimize.linear_sum_assignment (rectangular matching); the auction is square only"
        )
    return checked


def _exact_certificate(cost: Tensor, perm: Tensor, method: str) -> AssignmentResult:
    c3 = cost.reshape(-1, *cost.shape[-2:]).to(torch.float64)
    p2 = perm.reshape(c3.shape[0], -1)
    total = c3.gather(2, p2.to(c3.device).unsqueeze(2)).squeeze(2).sum(1)
    zero = torch.zeros_like(total)
    shape = cost.shape[:-2]
    return AssignmentResult(
        perm=perm, cost=total.reshape(shape), lower_bound=total.reshape(shape), gap=zero.reshape(shape),
        rel_gap=zero.reshape(shape), exact=torch.ones(shape, dtype=torch.bool, device=total.device),
        eps=zero.reshape(shape), method=method,
    )


def _cpu_assignment(c: np.ndarray, method: str) -> np.ndarray:
    """One ``(n, n)`` float64 problem by SciPy or the network simplex."""
    n = c.shape[0]
    perm = None
    if method == "emd" and n > 1:
        u = np.full(n, 1.0 / n)
        plan, _ = _emd_numpy(u, u, np.ascontiguousarray(c))
        perm = _perm_from_plan(plan)
        if perm is None:  # pragma: no cover - degenerate plans are not observed in practice
            warnings.warn("ot.emd returned a non-permutation plan; falling back to SciPy", RuntimeWarning, stacklevel=2)
    if perm is None:
        from scipy.optimize import linear_sum_assignment  # on first use, like POT

        _, perm = linear_sum_assignment(c)
    return np.ascontiguousarray(perm, dtype=np.int64)


def pick_method(cost: Tensor, method: str) -> str:
    """The solver ``method="auto"`` uses for ``cost``: the auction on CUDA; on the CPU SciPy
    below :data:`AUTO_EMD_MIN_N` and the network simplex from there (each measured faster than
    the CPU auction, ``bench/results/auction.md``)."""
    if method != "auto":
        return method
    if cost.device.type == "cuda":
        return "auction"
    return "emd" if cost.shape[-1] >= AUTO_EMD_MIN_N else "scipy"


@overload
def assignment(
    cost: Tensor, method: Method = "auto", *, return_certificate: Literal[False] = False, tol: float = 1e-6
) -> Tensor: ...


@overload
def assignment(
    cost: Tensor, method: Method = "auto", *, return_certificate: Literal[True], tol: float = 1e-6
) -> AssignmentResult: ...


@overload
def assignment(
    cost: Tensor, method: Method = "auto", *, return_certificate: bool, tol: float = 1e-6
) -> Tensor | AssignmentResult: ...


def assignment(
    cost: Tensor,
    method: Method = "auto",
    *,
    return_certificate: bool = False,
    tol: float = 1e-6,
) -> Tensor | AssignmentResult:
    r"""Optimal permutation ``perm`` with :math:`\sum_i C_{i, perm[i]}` minimal, for square costs.

    Parameters
    ----------
    cost : Tensor
        ``(n, n)`` finite cost, or a batch ``(P, n, n)`` of problems of one size (a list of
        equal-shape ``(n, n)`` tensors is stacked). Integer dtypes are solved in float64.
    method : {"auto", "scipy", "emd", "auction"}
        ``"scipy"``: ``linear_sum_assignment``; ``"emd"``: POT's network simplex with uniform
        marginals, whose optimal vertex is a permutation matrix / n (the permutation is read off
        per row and checked; a degenerate plan falls back to SciPy). Both run on the CPU in
        float64, one problem at a time. ``"auction"``: :func:`monge.ot.auction.auction`, torch on
        ``cost.device``, batched, certified to relative gap ``tol`` (exact for integer costs).
        ``"auto"``: the auction on CUDA; on the CPU SciPy for ``n < 512`` and the network
        simplex above (:func:`pick_method`).
    return_certificate : bool
        Return an :class:`~monge.ot.auction.AssignmentResult` (permutation, primal cost, dual
        lower bound, gap, exactness) instead of the permutation alone. The CPU solvers are exact:
        their bound is their cost.
    tol : float
        The auction's target relative gap :math:`(U - L)/|U|` (ignored by the exact solvers).

    Returns
    -------
    Tensor or AssignmentResult
        ``(n,)`` (or ``(P, n)``) int64 permutation on ``cost.device``: row ``i`` goes to column
        ``perm[i]``.
    """
    cost = _as_cost_batch(cost)
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
    tol = check_positive_float(tol, "tol")
    solver = pick_method(cost, method)
    if solver == "auction":
        result = auction(cost, tol=tol)
        return result if return_certificate else result.perm
    c = cost.detach().to("cpu", torch.float64).numpy()
    perms = [_cpu_assignment(ci, solver) for ci in c.reshape(-1, *c.shape[-2:])]
    perm = torch.from_numpy(np.stack(perms).reshape(c.shape[:-1])).to(cost.device)
    return _exact_certificate(cost, perm, solver) if return_certificate else perm


def emd(cost: Tensor, a: Tensor | None = None, b: Tensor | None = None) -> ExactResult:
    r"""Exact OT plan for a cost matrix and weights (uniform by default).

    .. math:: P^\star = \arg\min_{P \in \Pi(a, b)} \langle P, C \rangle

    Solved by the network simplex (POT ``ot.emd``) with an iteration cap large enough to reach
    optimality; raises ``RuntimeError`` if it still does not. For ``n == m`` and uniform weights
    (``None`` or exactly ``1/n``) the assignment solver is used instead and ``perm`` is set.

    Parameters
    ----------
    cost : Tensor
        ``(n, m)`` finite cost.
    a, b : Tensor, optional
        ``(n,)`` and ``(m,)`` non-negative weights summing to one.
    """
    check_cost(cost)
    n, m = cost.shape
    aw = check_weights(a, n, "a", cost)
    bw = check_weights(b, m, "b", cost)
    uniform = n == m and bool((aw == 1.0 / n).all()) and bool((bw == 1.0 / m).all())
    if uniform:
        perm = assignment(cost)
        plan = torch.zeros_like(cost)
        plan[torch.arange(n, device=cost.device), perm] = 1.0 / n
        total = cost.gather(1, perm[:, None]).sum() / n
        return ExactResult(plan=plan, cost=total.detach(), perm=perm)
    c64 = np.ascontiguousarray(cost.detach().to("cpu", torch.float64).numpy())
    a64 = aw.detach().to("cpu", torch.float64).numpy()
    b64 = bw.detach().to("cpu", torch.float64).numpy()
    plan_np, total_np = _emd_numpy(a64 / a64.sum(), b64 / b64.sum(), c64)
    plan = torch.from_numpy(plan_np).to(device=cost.device, dtype=cost.dtype)
    return ExactResult(plan=plan, cost=torch.tensor(total_np, dtype=cost.dtype, device=cost.device), perm=None)


def exact_ot(x: Tensor, y: Tensor, a: Tensor | None = None, b: Tensor | None = None) -> ExactResult:
    r"""Exact OT between point clouds ``x`` ``(n, *shape)`` and ``y`` ``(m, *shape)``.

    Cost :math:`C_{ij} = \|x_i - y_j\|^2` (so ``cost`` is :math:`W_2^2`); see :func:`emd`.
    """
    return emd(squared_euclidean_cost(x, y), a, b)
