r"""Entropic optimal transport by log-domain Sinkhorn iterations, batched.

Solves (Cuturi 2013; log-domain updates as in Peyré & Cuturi 2019, §4.4; epsilon scaling
as in Schmitzer 2019)

.. math::
    \min_{P \ge 0} \langle P, C \rangle + \varepsilon\,\mathrm{KL}(P \,|\, a b^\top)
    + \tau\,\mathrm{KL}(P\mathbf 1 \,|\, a) + \tau\,\mathrm{KL}(P^\top\mathbf 1 \,|\, b),

with hard marginal constraints when ``tau`` is ``None`` (balanced) and KL-relaxed marginals
otherwise (unbalanced, Chizat et al. 2018). The dual potentials :math:`f, g` give the plan

.. math:: P_{ij} = a_i b_j \exp\big((f_i + g_j - C_{ij}) / \varepsilon\big)

and are updated by

.. math::
    f_i \leftarrow -\lambda \varepsilon \log \sum_j b_j e^{(g_j - C_{ij})/\varepsilon}, \quad
    g_j \leftarrow -\lambda \varepsilon \log \sum_i a_i e^{(f_i - C_{ij})/\varepsilon},
    \qquad \lambda = \frac{\tau}{\tau + \varepsilon}\ (\lambda = 1 \text{ if balanced}),

with ``torch.logsumexp``, so the iterations are stable for :math:`\varepsilon` far below the
cost scale (1e-3 of it and below). Everything runs on the input's device and dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .._validation import check_number, check_positive_int
from ._checks import check_cost, check_positive_float, check_weights

__all__ = ["SinkhornResult", "sinkhorn", "sinkhorn_unbalanced"]


@dataclass(frozen=True)
class SinkhornResult:
    """Entropic OT solution; batched fields carry the cost's leading batch dim.

    Attributes
    ----------
    plan : Tensor
        ``([B,] n, m)`` transport plan :math:`P`.
    f, g : Tensor
        ``([B,] n)``, ``([B,] m)`` dual potentials (same units as the cost), with
        :math:`P_{ij} = a_i b_j e^{(f_i + g_j - C_{ij})/\\varepsilon}`.
    cost : Tensor
        ``([B])`` transport cost :math:`\\langle P, C \\rangle` (without the entropy term).
    n_iter : int
        Sinkhorn iterations done (one iteration = one f and one g update), all stages included.
    marginal_error : Tensor
        ``([B])`` :math:`\\|P\\mathbf 1 - a\\|_1 + \\|P^\\top\\mathbf 1 - b\\|_1` of the returned
        plan. For unbalanced problems this is the mass deviation allowed by ``tau``, not an error.
    converged : bool
        Whether the stopping tolerance was met before ``max_iter``.
    """

    plan: Tensor
    f: Tensor
    g: Tensor
    cost: Tensor
    n_iter: int
    marginal_error: Tensor
    converged: bool


def _safe_log(w: Tensor) -> Tensor:
    return torch.where(w > 0, w.clamp_min(torch.finfo(w.dtype).tiny).log(), torch.full_like(w, -math.inf))


def sinkhorn(
    cost: Tensor,
    a: Tensor | None = None,
    b: Tensor | None = None,
    eps: float = 0.05,
    *,
    tau: float | None = None,
    tol: float = 1e-6,
    max_iter: int = 1000,
    check_every: int = 10,
    eps_scaling: float | None = None,
    eps_start: float | None = None,
) -> SinkhornResult:
    r"""Entropic OT plan, potentials and cost by log-domain Sinkhorn (see the module docstring).

    Parameters
    ----------
    cost : Tensor
        ``(n, m)`` or batched ``(B, n, m)`` finite cost.
    a, b : Tensor, optional
        Weights ``([B,] n)``, ``([B,] m)``, non-negative, summing to one; uniform by default.
    eps : float
        Entropic regularisation (absolute, in cost units).
    tau : float, optional
        KL marginal penalty for unbalanced OT; ``None`` (default) enforces the marginals.
    tol : float
        Balanced: stop when the L1 marginal error (max over the batch) is below ``tol``.
        Unbalanced: stop when the largest potential change over ``check_every`` iterations,
        divided by ``eps``, is below ``tol``.
    max_iter : int
        Cap on the total number of iterations.
    check_every : int
        Iterations between convergence checks (the check is nearly free: it reuses the
        row log-sum-exp of the next update).
    eps_scaling : float, optional
        Epsilon scaling (annealing) factor in (0, 1): run ``check_every`` iterations at each
        of ``eps_start, eps_start * eps_scaling, ...`` before iterating at ``eps``.
    eps_start : float, optional
        First epsilon of the annealing; default: the cost range ``max C - min C``.

    Returns
    -------
    SinkhornResult
    """
    check_cost(cost, batched=True)
    eps = check_positive_float(eps, "eps")
    tol = check_positive_float(tol, "tol")
    max_iter = check_positive_int(max_iter, "max_iter")
    check_every = check_positive_int(check_every, "check_every")
    if tau is not None:
        tau = check_positive_float(tau, "tau", allow_inf=True)
    if eps_scaling is not None:
        check_number(eps_scaling, "eps_scaling", 0.0, 1.0, low_open=True, high_open=True)
    if eps_start is not None:
        eps_start = check_positive_float(eps_start, "eps_start")

    batched = cost.dim() == 3
    C = cost if batched else cost[None]
    B, n, m = C.shape
    bdims = (B,) if batched else ()
    aw = check_weights(a, n, "a", C, bdims).expand(B, n)
    bw = check_weights(b, m, "b", C, bdims).expand(B, m)
    log_a, log_b = _safe_log(aw), _safe_log(bw)
    lam = 1.0 if tau is None or math.isinf(tau) else tau / (tau + eps)
    balanced = lam == 1.0
    CT = C.transpose(1, 2).contiguous()

    # epsilon schedule
    schedule: list[float] = []
    if eps_scaling is not None:
        e = eps_start if eps_start is not None else float((C.amax() - C.amin()).clamp_min(eps))
        while e > eps:
            schedule.append(e)
            e *= eps_scaling
    schedule.append(eps)

    F = torch.zeros(B, n, dtype=C.dtype, device=C.device)  # f / eps_current
    G = torch.zeros(B, m, dtype=C.dtype, device=C.device)  # g / eps_current
    n_iter, converged, err = 0, False, None
    cur = schedule[0]
    for stage, e in enumerate(schedule):
        F, G = F * (cur / e), G * (cur / e)
        cur = e
        lam_e = 1.0 if balanced or tau is None else tau / (tau + e)
        K = C / (-e)
        KT = CT / (-e)
        last = stage == len(schedule) - 1
        budget = max_iter - n_iter if last else min(check_every, max_iter - n_iter)
        k = 0
        while k < budget:
            r = torch.logsumexp(K + (G + log_b)[:, None, :], dim=2)  # (B, n)
            check = last and ((k + 1) % check_every == 0 or k + 1 == budget)
            if check and balanced:
                # columns are exact after the previous g-update: the row error is the error
                row_mass = torch.exp(F + r + log_a)
                err = (row_mass - aw).abs().sum(-1)
                if bool((err < tol).all()):
                    converged = True
                    break
            F_old = F if (check and not balanced) else None
            F = -lam_e * r
            G_new = -lam_e * torch.logsumexp(KT + (F + log_a)[:, None, :], dim=2)
            if F_old is not None:
                delta = torch.maximum((F - F_old).abs().amax(-1), (G_new - G).abs().amax(-1))
                G = G_new
                k += 1
                n_iter += 1
                # change over one iteration, scaled like the check interval
                if bool((delta * e / eps < tol).all()):
                    converged = True
                    break
                continue
            G = G_new
            k += 1
            n_iter += 1
        if n_iter >= max_iter:
            break

    e = cur
    logP = (F[:, :, None] + G[:, None, :] + log_a[:, :, None] + log_b[:, None, :]) - C / e
    plan = torch.exp(logP)
    total = (plan * C).sum((1, 2))
    err = (plan.sum(2) - aw).abs().sum(-1) + (plan.sum(1) - bw).abs().sum(-1)
    f, g = F * e, G * e
    if not batched:
        plan, f, g, total, err = plan[0], f[0], g[0], total[0], err[0]
    return SinkhornResult(plan=plan, f=f, g=g, cost=total, n_iter=n_iter, marginal_error=err, converged=converged)


def sinkhorn_unbalanced(
    cost: Tensor,
    a: Tensor | None = None,
    b: Tensor | None = None,
    eps: float = 0.05,
    tau: float = 1.0,
    **kwargs: Any,
) -> SinkhornResult:
    r"""Unbalanced entropic OT with KL-relaxed marginals of strength ``tau`` (Chizat et al. 2018).

    Shorthand for ``sinkhorn(cost, a, b, eps, tau=tau, **kwargs)``; the potential updates are
    scaled by :math:`\tau / (\tau + \varepsilon)`.
    """
    return sinkhorn(cost, a, b, eps, tau=tau, **kwargs)
