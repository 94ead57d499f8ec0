r"""Certified auction solver for the assignment problem, in torch (any device, batched).

The assignment problem :math:`\min_{\sigma \in S_n} \sum_i C_{i\sigma(i)}` has the dual

.. math:: \max_{u, p} \; \sum_i u_i - \sum_j p_j
          \quad \text{s.t.} \quad u_i \le C_{ij} + p_j ,

so for *any* prices :math:`p` the value :math:`L(p) = \sum_i \min_j (C_{ij} + p_j) - \sum_j p_j`
is a lower bound on the optimum (weak duality), and for any permutation :math:`\sigma` the
primal cost :math:`U(\sigma) = \sum_i C_{i\sigma(i)}` is an upper bound.

**Auction** (Bertsekas 1988). Persons (rows) bid for objects (columns). An unassigned person
:math:`i` finds its best and second-best values
:math:`w_1 = \min_j (C_{ij} + p_j)` at :math:`j_1` and :math:`w_2 = \min_{j \ne j_1}(C_{ij} + p_j)`
and bids the price :math:`p_{j_1} + (w_2 - w_1) + \varepsilon`; each object goes to its highest
bidder at that price and its previous owner becomes unassigned. All unassigned persons bid at
once (Jacobi bidding), which vectorises over persons and over a batch of problems. Every assigned
pair keeps :math:`\varepsilon`-complementary slackness,
:math:`C_{i\sigma(i)} + p_{\sigma(i)} \le \min_j (C_{ij} + p_j) + \varepsilon`, so when all are
assigned

.. math:: U(\sigma) - L(p) \le n \varepsilon ,

the **certificate**: the gap between the returned cost and the optimum is at most the computed
:math:`U - L`, itself at most :math:`n\varepsilon`. When the costs are integers (more generally
multiples of a quantum :math:`q`), :math:`n\varepsilon < q` makes :math:`\sigma` exactly optimal,
and the bound can be rounded up to :math:`\lceil L/q \rceil q`.

**Epsilon scaling** (Bertsekas & Eckstein 1988). The number of bids grows like
:math:`\max|C| / \varepsilon`, so the auction runs in phases with
:math:`\varepsilon_k = \varepsilon_0 / \theta^k`, each phase restarting the assignment from the
previous phase's prices; phases stop as soon as the certified relative gap
:math:`(U - L) / |U|` is at most ``tol`` (checked after each phase, so a gap far below
:math:`n\varepsilon` ends early).

**Precision.** A bid raises a price by at least :math:`\varepsilon`, which must exceed the
resolution of the prices (about :math:`2^{-p} \max|C|` for a ``p``-bit mantissa). The solver
works in float64 unless float32 resolves the final :math:`\varepsilon` with margin
(see :func:`auction_dtype`).

References
----------
D. P. Bertsekas, "The auction algorithm: a distributed relaxation method for the assignment
problem", Annals of Operations Research 14 (1988).
D. P. Bertsekas and J. Eckstein, "Dual coordinate step methods for linear network flow
problems", Mathematical Programming 42 (1988).
"""

from __future__ import annotations

import math
import warnings
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["AssignmentResult", "auction", "auction_dtype", "integer_valued"]

#: A final epsilon must be at least this many units in the last place of the largest price.
ULP_MARGIN = 16.0
#: Ratio between the epsilons of successive phases.
THETA = 6.0
#: On the CPU a phase finishes with sequential bids once this few persons are unassigned.
SEQUENTIAL_BELOW = 32


@dataclass(frozen=True)
class AssignmentResult:
    r"""A permutation with its optimality certificate.

    Attributes
    ----------
    perm : Tensor
        ``(n,)`` or ``(P, n)`` int64: row ``i`` is assigned to column ``perm[i]``.
    cost : Tensor
        float64 primal cost :math:`U = \sum_i C_{i, perm[i]}` per problem.
    lower_bound : Tensor
        float64 dual bound :math:`L \le \min_\sigma \sum_i C_{i\sigma(i)}` per problem.
    gap : Tensor
        ``cost - lower_bound`` (>= 0): the returned cost is within ``gap`` of the optimum.
    rel_gap : Tensor
        ``gap / max(|cost|, tiny)``.
    exact : Tensor
        bool per problem: optimality is certified (``gap == 0``, or integer costs with
        ``gap < 1``, where the bound is rounded up).
    eps : Tensor
        Final epsilon per problem (``gap <= n * eps``); 0 for the exact CPU solvers.
    method : str
        The solver that produced it.
    rounds : int
        Bidding rounds (all phases; 0 for the other solvers).
    """

    perm: Tensor
    cost: Tensor
    lower_bound: Tensor
    gap: Tensor
    rel_gap: Tensor
    exact: Tensor
    eps: Tensor
    method: str
    rounds: int = 0


def integer_valued(cost: Tensor) -> bool:
    """True when every entry of ``cost`` is an integer (representable exactly)."""
    return bool((cost == cost.round()).all()) and float(cost.abs().max()) < 2.0**52


def _mantissa_bits(dtype: torch.dtype) -> int:
    return {torch.float32: 24, torch.float64: 53}[dtype]


def _price_scale(cost: Tensor) -> Tensor:
    """Per-problem bound on the magnitude of values ``C + p`` the auction compares."""
    flat = cost.flatten(1)
    lo, hi = flat.amin(1), flat.amax(1)
    return 2.0 * (hi - lo) + hi.abs().maximum(lo.abs())


def auction_dtype(cost: Tensor, eps_needed: Tensor) -> torch.dtype:
    """float32 when the costs are float32 and float32 prices resolve ``eps_needed`` (> 0) with
    margin for every problem; float64 otherwise."""
    if cost.dtype != torch.float32 or not bool((eps_needed > 0).all()):
        return torch.float64
    ulp = _price_scale(cost) * 2.0 ** (1 - _mantissa_bits(torch.float32))
    return torch.float32 if bool((eps_needed >= ULP_MARGIN * ulp).all()) else torch.float64


def _eps_floor(cost: Tensor, dtype: torch.dtype) -> Tensor:
    """Smallest epsilon the prices resolve in ``dtype``, per problem."""
    return ULP_MARGIN * _price_scale(cost).to(torch.float64) * 2.0 ** (1 - _mantissa_bits(dtype))


def _bid_round(c: Tensor, price: Tensor, eps: Tensor, person_obj: Tensor, owner: Tensor,
               unassigned: Tensor, n: int) -> None:
    """One Jacobi round: every unassigned person bids; each object goes to its best bidder.

    Flat layout over the batch: person ``b*n + i`` (row of ``c``), object ``b*n + j``
    (entry of ``price``). ``person_obj`` / ``owner`` hold flat object / person ids, -1 if none.
    """
    base = unassigned - unassigned % n  # b * n
    if unassigned.numel() == c.shape[0]:  # everyone bids (a phase's first round): no gather
        vals = (c.view(-1, n, n) + price.view(-1, 1, n)).view(-1, n)
    else:
        vals = c.index_select(0, unassigned).view(-1, n).add_(price.view(-1, n).index_select(0, unassigned // n))
    w, j = vals.topk(2, dim=1, largest=False, sorted=True)
    obj = base + j[:, 0]
    bid = price[obj] + (w[:, 1] - w[:, 0]) + eps.index_select(0, unassigned // n)
    best = torch.full_like(price, -math.inf).scatter_reduce_(0, obj, bid, "amax")
    top = bid == best[obj]
    obj, who, bid = obj[top], unassigned[top], bid[top]
    # ties between equal bids: the lowest person id wins (deterministic on every device)
    pick = torch.full_like(owner, torch.iinfo(torch.int64).max).scatter_reduce_(0, obj, who, "amin")
    keep = pick[obj] == who
    obj, who, bid = obj[keep], who[keep], bid[keep]
    old = owner[obj]
    old = old[old >= 0]
    person_obj[old] = -1
    owner[obj] = who
    person_obj[who] = obj
    price[obj] = bid


def _sequential_bids(c: Tensor, price: Tensor, eps: Tensor, person_obj: Tensor, owner: Tensor,
                     unassigned: Tensor, n: int, max_bids: int) -> int:
    """Gauss-Seidel bidding on the CPU: one person bids at a time (same bid as
    :func:`_bid_round`), the evicted owner joins the queue. Works in place on the tensors'
    memory through numpy; used for the tail of a phase, where a Jacobi round would carry a
    whole round's overhead for one or two bids. Returns the number of bids."""
    cn, pn, en = c.numpy(), price.numpy(), eps.numpy()
    _min = np.minimum.reduce
    po, ow = person_obj.numpy(), owner.numpy()
    queue = deque(unassigned.tolist())
    bids = 0
    while queue:
        if bids >= max_bids:
            raise RuntimeError(
                f"auction did not finish a phase within {max_bids} bids; pass a larger max_rounds or a larger tol"
            )
        i = queue.popleft()
        base = i - i % n
        row = cn[i] + pn[base: base + n]
        j = int(row.argmin())
        w1 = row[j]
        row[j] = math.inf
        obj = base + j
        old = int(ow[obj])
        if old >= 0:
            po[old] = -1
            queue.append(old)
        ow[obj] = i
        po[i] = obj
        pn[obj] += (_min(row) - w1) + en[i // n]
        bids += 1
    return bids


def _phase(c: Tensor, price: Tensor, eps: Tensor, n: int, max_rounds: int,
           frozen: Tensor | None = None, sequential_below: int = 0) -> tuple[Tensor, int]:
    """Auction from scratch at fixed ``eps`` (prices warm-started); returns (person_obj, rounds).

    ``frozen``: ``(P*n,)`` flat object ids of problems that keep their assignment (-1 elsewhere).
    On the CPU, once at most ``sequential_below`` persons are unassigned the phase finishes with
    :func:`_sequential_bids` (counted as one round per bid).
    """
    total = c.shape[0]
    person_obj = torch.full((total,), -1, dtype=torch.int64, device=c.device)
    owner = torch.full((total,), -1, dtype=torch.int64, device=c.device)
    if frozen is not None:
        keep = (frozen >= 0).nonzero().squeeze(1)
        person_obj[keep] = frozen[keep]
        owner[frozen[keep]] = keep
    rounds = 0
    sequential = sequential_below if c.device.type == "cpu" else 0
    while True:
        unassigned = (person_obj < 0).nonzero().squeeze(1)
        if unassigned.numel() == 0:
            return person_obj, rounds
        if unassigned.numel() <= sequential:
            return person_obj, rounds + _sequential_bids(c, price, eps, person_obj, owner, unassigned, n, max_rounds)
        if rounds >= max_rounds:
            raise RuntimeError(
                f"auction did not finish a phase within {max_rounds} rounds; "
                "pass a larger max_rounds or a larger tol"
            )
        _bid_round(c, price, eps, person_obj, owner, unassigned, n)
        rounds += 1


def _certificate(c3: Tensor, perm: Tensor, price: Tensor) -> tuple[Tensor, Tensor]:
    """(primal cost U, dual bound L) per problem, in float64."""
    c64 = c3.to(torch.float64)
    p64 = price.view(perm.shape).to(torch.float64)
    upper = c64.gather(2, perm.unsqueeze(2)).squeeze(2).sum(1)
    lower = (c64 + p64.unsqueeze(1)).amin(2).sum(1) - p64.sum(1)
    return upper, lower


def auction(
    cost: Tensor,
    tol: float = 1e-6,
    *,
    theta: float = THETA,
    max_rounds: int = 10_000_000,
    integer: bool | None = None,
    sequential_below: int | None = None,
) -> AssignmentResult:
    r"""Solve one ``(n, n)`` or a batch ``(P, n, n)`` of assignment problems by auction.

    Forward auction with Jacobi bidding and epsilon scaling on ``cost.device``; phases stop
    once every problem's certified relative gap :math:`(U - L)/|U|` is at most ``tol`` or,
    for integer costs, once :math:`U - \lceil L \rceil = 0` (exact).

    Parameters
    ----------
    cost : Tensor
        Finite float cost, square; validated by :func:`monge.ot.exact.assignment`.
    tol : float
        Target relative gap; the final epsilon is at least :math:`\mathrm{tol}\,|U|/n`.
    theta : float
        Epsilon ratio between phases (> 1).
    max_rounds : int
        Cap on bidding rounds per phase (a safety net; raises ``RuntimeError`` when hit).
    integer : bool, optional
        Whether the costs are integers (detected when ``None``): then the target is exactness.
    sequential_below : int, optional
        CPU only: finish each phase with sequential (Gauss-Seidel) bids once at most this many
        persons are unassigned (default :data:`SEQUENTIAL_BELOW`; 0: Jacobi throughout).
    """
    if sequential_below is None:
        sequential_below = SEQUENTIAL_BELOW
    squeeze = cost.dim() == 2
    c3 = cost.unsqueeze(0) if squeeze else cost
    n_prob, n, _ = c3.shape
    if integer is None:
        integer = integer_valued(c3)
    c64 = c3.to(torch.float64)
    spread = (c64.flatten(1).amax(1) - c64.flatten(1).amin(1)).clamp_min(0.0)
    # max(sum of row minima, sum of column minima) is a lower bound on the optimum
    bound0 = torch.maximum(c64.amin(2).sum(1), c64.amin(1).sum(1))
    if integer:
        needed = torch.full_like(spread, 1.0 / (n + 1))
    else:
        needed = torch.where(bound0 > 0, tol * bound0 / n, torch.zeros_like(bound0))
    dtype = auction_dtype(c3, needed)
    eps_final = torch.maximum(needed, _eps_floor(c3, dtype))
    c = c3.to(dtype).reshape(n_prob * n, n).contiguous()
    price = torch.zeros(n_prob * n, dtype=dtype, device=c.device)
    eps = (spread / 4.0).maximum(eps_final)
    eps_floor = _eps_floor(c3, dtype)
    rounds = 0
    frozen: Tensor | None = None
    while True:
        if n == 1:
            person_obj = torch.arange(n_prob, device=c.device)
        else:
            person_obj, r = _phase(c, price, eps.to(dtype), n, max_rounds, frozen, sequential_below)
            rounds += r
        perm = (person_obj % n).view(n_prob, n)
        upper, lower = _certificate(c3, perm, price)
        if integer:
            lower = torch.ceil(lower - 1e-9 * lower.abs().clamp_min(1.0))
        lower = torch.minimum(lower, upper)  # rounding can put L a hair above U
        gap = upper - lower
        done = gap <= (0.5 if integer else tol) * (1.0 if integer else upper.abs().clamp_min(1e-300))
        # below the needed epsilon the gap is already <= n * eps <= tol * L; go on (down to the
        # precision floor) only where the measured gap says otherwise (costs of mixed signs)
        done |= eps <= eps_floor
        if bool(done.all()):
            break
        nxt = torch.where(eps > eps_final, (eps / theta).maximum(eps_final), (eps / theta).maximum(eps_floor))
        eps = torch.where(done, eps, nxt)
        frozen = torch.where(done.repeat_interleave(n), person_obj, torch.full_like(person_obj, -1))
    if integer:
        exact = gap < 0.5
    else:
        exact = gap <= 0
    rel = gap / upper.abs().clamp_min(torch.finfo(torch.float64).tiny)
    if not integer and bool((rel > tol).any()):
        warnings.warn(
            f"auction: relative gap {float(rel.max()):.2e} > tol={tol:g} at the precision floor of "
            f"{dtype} (costs of mixed signs or a tiny optimum); the certificate is still valid",
            RuntimeWarning, stacklevel=3,
        )
    out = AssignmentResult(perm, upper, lower, gap, rel, exact, eps, "auction", rounds)
    if squeeze:
        out = AssignmentResult(perm[0], upper[0], lower[0], gap[0], rel[0], exact[0], eps[0], "auction", rounds)
    return out
