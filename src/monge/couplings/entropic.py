"""Entropic couplings: minibatch Sinkhorn plans (entropic OT, SB-CFM)."""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from torch import Tensor

from .._validation import check_positive, check_positive_int
from ..ot.exact import squared_euclidean_cost
from ..ot.sinkhorn import sinkhorn
from .base import COUPLINGS, Coupled, SolverCoupling, Traits, categorical, flat, uniform
from .diagnostics import plan_entropy


@COUPLINGS.register("entropic")
class Entropic(SolverCoupling):
    r"""Pairs drawn from the minibatch entropic OT plan (Tong et al. 2024, SB-CFM; Cuturi 2013).

    With :math:`C_{ij} = \|x_0^i - x_1^j\|^2` and uniform marginals, log-domain Sinkhorn
    (:func:`monge.ot.sinkhorn`) gives

    .. math:: P^\varepsilon = \arg\min_{P \in \Pi(\frac1B, \frac1B)} \langle P, C \rangle
              + \varepsilon\,\mathrm{KL}(P \,|\, \tfrac{1}{B^2}\mathbf 1\mathbf 1^\top).

    ``sampling="data"`` (default) keeps every data point once and draws its noise from the
    plan's conditional column :math:`P_{\cdot j} / P_{\cdot j}\mathbf 1`: the pairs follow the plan
    exactly, no data point is dropped, and only noises may repeat (the opposite of the
    ``"noise"`` option, which keeps every noise once). ``"plan"`` draws ``B`` pairs from the
    whole plan with replacement as TorchCFM does, which duplicates and drops samples on both
    sides. As :math:`\varepsilon \to 0` the plan tends to exact OT, as
    :math:`\varepsilon \to \infty` to the independent coupling.

    Parameters
    ----------
    eps : float, optional
        Absolute regularisation in squared-distance units. Default:
        ``relative_eps * mean(C)``, i.e. relative to the batch's mean pair cost (about
        :math:`2d` for standardised data), so one setting works across data scales.
    relative_eps : float
        Used when ``eps`` is ``None``; default 0.05.
    sampling : {"data", "noise", "plan"}
    max_iter, tol : int, float
        Sinkhorn iteration cap and L1 marginal tolerance. A solve that stops at ``max_iter``
        warns (``RuntimeWarning`` at the 1st, 2nd, 4th, 8th, ... such solve, with the marginal error
        and the count; the trainer adds the step) and its plan
        is used as it is; a plan with NaN/Inf raises ``FloatingPointError`` (never a silent
        uniform plan). ``unconverged`` counts the solves that stopped early.
    """

    traits = Traits(unthreaded_reason="its Sinkhorn iterations compete with training for the cores when run in threads")

    def __init__(
        self,
        eps: float | None = None,
        relative_eps: float = 0.05,
        sampling: Literal["data", "noise", "plan"] = "data",
        max_iter: int = 500,
        tol: float = 1e-3,
    ) -> None:
        self.eps = check_positive(eps, "eps", allow_none=True)
        self.relative_eps = check_positive(relative_eps, "relative_eps")
        if sampling not in ("data", "noise", "plan"):
            raise ValueError(f"sampling must be 'data', 'noise' or 'plan', got {sampling!r}")
        self.sampling = sampling
        self.max_iter = check_positive_int(max_iter, "max_iter")
        self.tol = check_positive(tol, "tol")
        #: solves that stopped at ``max_iter`` before reaching ``tol``
        self.unconverged = 0

    def plan(self, x0: Tensor, x1: Tensor) -> Tensor:
        """The ``(B0, B1)`` entropic plan between the flattened batches (rows: noise)."""
        cost = squared_euclidean_cost(flat(x0), flat(x1))
        eps = self.eps if self.eps is not None else self.relative_eps * float(cost.mean().clamp_min(1e-12))
        res = sinkhorn(cost, eps=eps, max_iter=self.max_iter, tol=self.tol)
        if not bool(torch.isfinite(res.plan).all()) or not float(res.plan.sum()) > 0:
            raise FloatingPointError(
                f"{type(self).__name__}: the Sinkhorn plan has NaN/Inf or no mass (eps={eps:.3g}); raise eps "
                "(or relative_eps), or check the batch for extreme values")
        if not res.converged:
            self.unconverged += 1
            if self.unconverged & (self.unconverged - 1):  # warn at the 1st, 2nd, 4th, 8th, ... such solve
                return res.plan
            warnings.warn(
                f"{type(self).__name__}: Sinkhorn did not converge in {self.max_iter} iterations (L1 marginal "
                f"error {float(res.marginal_error):.3g} > tol {self.tol:g}, eps={eps:.3g}); the pairs follow a "
                f"plan whose marginals are off by that much ({self.unconverged} such solve(s) so far). Raise "
                "max_iter or eps.", RuntimeWarning, stacklevel=2)
        return res.plan

    def solve(self, x0: Tensor, x1: Tensor) -> Tensor:
        """The plan (see :meth:`plan`)."""
        return self.plan(x0, x1)

    def pair_solved(self, x0: Tensor, x1: Tensor, solution: Tensor, generator: torch.Generator | None) -> Coupled:
        p = solution
        e = plan_entropy(p)
        if self.sampling == "data":
            i = categorical(p.T, generator)
            return Coupled(x0[i], x1, plan_entropy=e)
        if self.sampling == "noise":
            j = categorical(p, generator)
            return Coupled(x0, x1[j], index1=j, plan_entropy=e)
        n0, n1 = p.shape
        cdf = p.reshape(-1).to(torch.float64).cumsum(0)
        u = uniform(min(n0, n1), generator, cdf) * cdf[-1]
        k = torch.searchsorted(cdf, u, right=True).clamp_(max=n0 * n1 - 1)
        return Coupled(x0[k // n1], x1[k % n1], index1=k % n1, plan_entropy=e)


@COUPLINGS.register("schrodinger_bridge")
class SchrodingerBridge(Entropic):
    r"""Schrödinger-bridge CFM coupling (SB-CFM, Tong et al. 2024): entropic plan with

    .. math:: \varepsilon = 2\sigma^2

    on the squared cost (absolute, not relative), the static Schrödinger bridge of a Brownian
    motion with diffusion :math:`\sigma` restricted to the batch. Pair it with the
    ``brownian_bridge`` path of the same ``sigma``:
    :math:`x_t = (1-t)x_0 + t x_1 + \sigma\sqrt{t(1-t)}\,z`. Sampling as in :class:`Entropic`.
    """

    def __init__(
        self,
        sigma: float = 1.0,
        sampling: Literal["data", "noise", "plan"] = "data",
        max_iter: int = 500,
        tol: float = 1e-3,
    ) -> None:
        self.sigma = check_positive(sigma, "sigma")
        super().__init__(eps=2.0 * self.sigma**2, sampling=sampling, max_iter=max_iter, tol=tol)
