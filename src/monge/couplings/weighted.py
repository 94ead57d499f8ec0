"""Weighted couplings: independent pairs with Gibbs-kernel loss weights (W-CFM)."""

from __future__ import annotations

import math
import warnings
from typing import Literal

import torch
from torch import Tensor

from .._validation import check_number, check_positive, check_positive_int
from .base import COUPLINGS, Coupled, Coupling, flat
from .diagnostics import plan_entropy

#: the correction scales the kernel itself (matrix-vector products) while :math:`e^{-C/\varepsilon}`
#: spans fewer e-folds than this, :math:`(\max C - \min C)/\varepsilon`; log-domain Sinkhorn beyond
KERNEL_DOMAIN_MAX_RANGE = 100.0


def effective_sample_size(weights: Tensor) -> float:
    r"""Kish's effective sample size as a share of the batch,
    :math:`\mathrm{ESS}/B = (\sum_i w_i)^2 / (B \sum_i w_i^2) \in (0, 1]` (1: uniform weights)."""
    w = weights.double()
    return float(w.sum().square() / (w.numel() * w.square().sum()).clamp_min(1e-300))


def sinkhorn_scaling(kernel: Tensor, tol: float, max_iter: int) -> tuple[Tensor, Tensor, float, int]:
    r"""Sinkhorn-Knopp scalings of a positive ``(n, m)`` kernel to uniform marginals.

    .. math:: v \leftarrow \frac{\mathbf 1/m}{K^\top u}, \qquad u \leftarrow \frac{\mathbf 1/n}{K v},
              \qquad P = \operatorname{diag}(u)\,K\,\operatorname{diag}(v),

    two matrix-vector products per iteration (Cuturi 2013), from :math:`u = \mathbf 1`. The rows
    are exact after each :math:`u` update; the stop is :math:`\|P^\top\mathbf 1 - \mathbf 1/m\|_1
    < \texttt{tol}`, tested on every iteration with the product the next update needs.
    Returns ``(u, v, marginal_error, iterations)``; the error is ``inf`` when a scaling
    under- or overflowed (a kernel too wide for its dtype: use log-domain :func:`monge.ot.sinkhorn`).
    """
    n, m = kernel.shape
    u = torch.ones(n, dtype=kernel.dtype, device=kernel.device)
    kt_u = kernel.T @ u
    err, it = math.inf, 0
    while it < max_iter:
        v = kt_u.reciprocal().div_(m)
        u = (kernel @ v).reciprocal_().div_(n)
        it += 1
        kt_u = kernel.T @ u
        err = float((v * kt_u).sub_(1.0 / m).abs_().sum())
        if err < tol:
            break
    if not math.isfinite(err) or not bool(torch.isfinite(u).all() and torch.isfinite(v).all()):
        err = math.inf
    return u, v, err, it


def scaled_plan_entropy(kernel: Tensor, log_kernel: Tensor, u: Tensor, v: Tensor) -> float:
    r""":func:`~monge.couplings.diagnostics.plan_entropy` of :math:`P = \operatorname{diag}(u) K
    \operatorname{diag}(v)` without forming :math:`P\log P`: with :math:`r, c` its marginals,

    .. math:: \sum_{ij} P_{ij}\log P_{ij} = \langle r, \log u\rangle + \langle c, \log v\rangle
              + u^\top (K \odot \log K)\, v .
    """
    r, c = u * (kernel @ v), v * (kernel.T @ u)
    mass = float(r.sum())
    if u.numel() < 2 or not mass > 0:
        return math.nan
    plogp = float(r @ u.log() + c @ v.log() + u @ ((kernel * log_kernel) @ v))
    h = math.log(mass) - plogp / mass  # entropy of P / mass
    col = c / mass
    h1 = float(-torch.special.xlogy(col, col).sum())
    return min(max((h - h1) / math.log(u.numel()), 0.0), 1.0)


@COUPLINGS.register("wcfm")
class WCFM(Coupling):
    r"""Weighted Conditional Flow Matching (W-CFM, Calvo-Ordoñez et al. 2025).

    Independent pairs, each weighted in the loss by the Gibbs kernel

    .. math:: w_i = \exp\!\big(-c(x_0^i, x_1^i)/\varepsilon\big), \qquad
              \tilde w_i = w_i \Big/ \tfrac1B \textstyle\sum_k w_k ,

    computed in log space and self-normalised to mean 1 in the batch. Training under these
    weights is training under :math:`\tilde\pi \propto e^{-c/\varepsilon}\,\mu\otimes\nu`: the
    entropic OT plan without its dual potentials, so its marginals are tilted towards each
    other (the samples come out too narrow when :math:`\varepsilon` is small against the spread
    of the cost). Without the marginal correction below it costs :math:`O(Bd)`: no plan is solved.

    **Default temperature (dimension-aware).** With :math:`c_i = \|x_0^i - x_1^i\|^2` in
    dimension :math:`d`,

    .. math:: \varepsilon = r \cdot \operatorname{median}_i(c_i)\,\sqrt{2/d},

    ``r = relative_eps``. For pairs of standardised data :math:`c` is close to a scaled
    :math:`\chi^2_d`, whose standard deviation is :math:`\approx \operatorname{median}\sqrt{2/d}`,
    so the log-weights spread by about :math:`1/r` and the effective sample size
    :math:`(\sum w)^2/(B\sum w^2) \approx e^{-1/r^2}` is the same in every dimension (a multiple of
    the mean cost alone gives almost uniform weights in high dimension and a strong tilt in 2D).
    The default ``r`` was chosen by ``bench/couplings_quality.py`` (``bench/results/``).

    **Marginal correction** (``marginal_correction=True``, the default). The weights become the entropic
    plan's density against :math:`\mu\otimes\nu` on the batch,

    .. math:: \tilde w_i \propto \exp\!\big((f_i + g_i - c_{ii})/\varepsilon\big),

    with :math:`f, g` the Sinkhorn potentials of the batch's :math:`B \times B` cost (uniform
    marginals), i.e. :math:`\tilde w_i \propto B^2 P_{ii}`: the Gibbs kernel rescaled row- and
    column-wise so that both marginals of the plan stay uniform (Cuturi 2013). It is solved in the
    kernel domain, :math:`P = \operatorname{diag}(u)\,K\,\operatorname{diag}(v)` with
    :math:`K = e^{-(C - \min C)/\varepsilon}` (:func:`sinkhorn_scaling`: two matrix-vector products
    per iteration, :math:`\tilde w_i \propto u_i K_{ii} v_i`), stopping as soon as the L1 marginal
    error is below ``tol``; at the default temperature the kernel spans a few e-folds and a few
    iterations suffice, so the step costs about the :math:`O(B^2 d)` cost matrix. When :math:`K`
    spans more than ``KERNEL_DOMAIN_MAX_RANGE`` e-folds (a small ``eps``), or the scalings do not
    converge, the log-domain :func:`monge.ot.sinkhorn` solves it instead; a solve that still did
    not converge or gave non-finite potentials warns and falls back to the plain weights.

    Parameters
    ----------
    eps : float, optional
        Absolute temperature in cost units (overrides ``relative_eps``).
    relative_eps : float
        ``r`` above; default 2 (uncorrected weights: effective sample size about 78% of the batch).
    cost : {"sqeuclidean", "euclidean"}
        :math:`c = \|x_0 - x_1\|^2` (default) or the unsquared distance used by some code.
    marginal_correction : bool
        Rescale the weights by the Sinkhorn potentials (above); default ``True``: without it the
        tilt made samples worse than ``independent`` at adaptive NFE on the higher-dimensional
        bench task at every ``relative_eps`` tried (``bench/results/couplings_quality.md``).
    min_ess : float
        Warn (once) when the weights' effective sample size falls below this share of the
        batch; default 0.1. ``last_ess`` holds the share of the latest batch.
    max_iter, tol : int, float
        Sinkhorn iteration cap and L1 marginal tolerance of the correction (``tol`` bounds
        :math:`\|P\mathbf 1 - \mathbf 1/B\|_1 + \|P^\top\mathbf 1 - \mathbf 1/B\|_1`).
        ``last_iterations`` and ``last_marginal_error`` hold the latest batch's.
    sinkhorn_domain : {"auto", "log"}
        ``"auto"`` (default): kernel-domain scaling when the kernel's range allows it (above);
        ``"log"``: always the log-domain solver (slower, same plan within ``tol``).

    References
    ----------
    Calvo-Ordoñez, Kotelevskii, Panov, ... (2025). Weighted conditional flow matching.
    """

    def __init__(
        self,
        eps: float | None = None,
        relative_eps: float = 2.0,
        cost: Literal["sqeuclidean", "euclidean"] = "sqeuclidean",
        marginal_correction: bool = True,
        min_ess: float = 0.1,
        max_iter: int = 500,
        tol: float = 1e-4,
        sinkhorn_domain: Literal["auto", "log"] = "auto",
    ) -> None:
        self.eps = check_positive(eps, "eps", allow_none=True)
        self.relative_eps = check_positive(relative_eps, "relative_eps")
        if cost not in ("sqeuclidean", "euclidean"):
            raise ValueError(f"cost must be 'sqeuclidean' or 'euclidean', got {cost!r}")
        if not isinstance(marginal_correction, bool):
            raise ValueError(f"marginal_correction must be true or false, got {marginal_correction!r}")
        self.cost = cost
        self.marginal_correction = marginal_correction
        self.min_ess = check_number(min_ess, "min_ess", 0.0, 1.0)
        self.max_iter = check_positive_int(max_iter, "max_iter")
        self.tol = check_positive(tol, "tol")
        if sinkhorn_domain not in ("auto", "log"):
            raise ValueError(f"sinkhorn_domain must be 'auto' or 'log', got {sinkhorn_domain!r}")
        self.sinkhorn_domain = sinkhorn_domain
        #: Sinkhorn iterations and L1 marginal error of the latest correction (``nan`` before the first)
        self.last_iterations: int | float = math.nan
        self.last_marginal_error = math.nan
        #: effective sample size share of the latest batch's weights (``nan`` before the first)
        self.last_ess = math.nan
        self._warned_ess = False

    def _costs(self, x0: Tensor, x1: Tensor) -> Tensor:
        c = (flat(x0) - flat(x1)).square().sum(-1)
        return c.sqrt() if self.cost == "euclidean" else c

    def _cost_matrix(self, a: Tensor, b: Tensor) -> Tensor:
        r""":math:`C_{ij} = c(a_i, b_j)` by one matrix product on centred points, in the points' dtype;
        the diagonal (the pairs' own costs) exact, as in :meth:`log_weights`."""
        centre = 0.5 * (a.mean(0) + b.mean(0))
        a, b = a - centre, b - centre
        full = torch.addmm(a.square().sum(1, keepdim=True), a, b.T, alpha=-2.0).add_(b.square().sum(1)).clamp_min_(0.0)
        full.diagonal().copy_((a - b).square().sum(1))
        return full.sqrt_() if self.cost == "euclidean" else full

    def temperature(self, pair_costs: Tensor, dim: int) -> float:
        r"""``eps``, or :math:`r\,\mathrm{median}(c)\sqrt{2/d}` of the pair costs ``(B,)``."""
        if self.eps is not None:
            return self.eps
        med = float(pair_costs.median().clamp_min(1e-12))
        return self.relative_eps * med * math.sqrt(2.0 / max(dim, 1))

    def log_weights(self, x0: Tensor, x1: Tensor) -> Tensor:
        r"""Unnormalised :math:`-c_i/\varepsilon` of the pairs ``(x0[i], x1[i])`` (no correction)."""
        c = self._costs(x0, x1)
        return -c / self.temperature(c, flat(x0).shape[1])

    def corrected_log_weights(self, x0: Tensor, x1: Tensor, step: str = "") -> Tensor:
        r""":math:`(f_i + g_i - c_{ii})/\varepsilon` from the batch's Sinkhorn potentials."""
        return self._corrected(x0, x1, step)[0]

    def _corrected(self, x0: Tensor, x1: Tensor, step: str = "") -> tuple[Tensor, float | None]:
        """The corrected log-weights and the plan's :func:`plan_entropy` (``None`` on fallback)."""
        full = self._cost_matrix(flat(x0), flat(x1)).double()  # (B0, B1), rows noise
        diag = full.diagonal()
        eps = self.temperature(diag, flat(x0).shape[1])
        c_min = float(full.min())
        if self.sinkhorn_domain == "auto" and (float(full.max()) - c_min) / eps < KERNEL_DOMAIN_MAX_RANGE:
            out = self._corrected_kernel(full, eps, c_min)
            if out is not None:
                return out
        return self._corrected_log(full, eps, step)

    def _corrected_kernel(self, full: Tensor, eps: float, c_min: float) -> tuple[Tensor, float] | None:
        r"""Kernel-domain correction: :math:`\log u_i + \log v_i + \log K_{ii} + \log(nm)`
        (:math:`= (f_i + g_i - c_{ii})/\varepsilon` with :math:`K = e^{-(C - \min C)/\varepsilon}`)."""
        log_k = full.sub(c_min).div_(-eps)
        kernel = log_k.exp()
        u, v, err, it = sinkhorn_scaling(kernel, self.tol, self.max_iter)
        self.last_iterations, self.last_marginal_error = it, err
        if not err < self.tol:
            return None  # not converged or out of range: the log-domain solve decides (and warns)
        n, m = kernel.shape
        lw = u.log() + v.log() + log_k.diagonal() + math.log(n * m)
        return lw, scaled_plan_entropy(kernel, log_k, u, v)

    def _corrected_log(self, full: Tensor, eps: float, step: str) -> tuple[Tensor, float | None]:
        """Log-domain correction by :func:`monge.ot.sinkhorn` (any temperature)."""
        from ..ot.sinkhorn import sinkhorn

        diag = full.diagonal()
        res = sinkhorn(full, eps=eps, max_iter=self.max_iter, tol=self.tol)
        self.last_iterations, self.last_marginal_error = res.n_iter, float(res.marginal_error)
        lw = (res.f + res.g - diag) / eps
        if not res.converged or not bool(torch.isfinite(lw).all()):
            warnings.warn(
                f"wcfm marginal correction{step}: Sinkhorn did not converge in {self.max_iter} iterations "
                f"(marginal error {float(res.marginal_error):.3g}, tol {self.tol:g}) or gave non-finite potentials; "
                "using the uncorrected Gibbs weights for this batch. Raise max_iter or relative_eps.",
                RuntimeWarning, stacklevel=4)
            if not bool(torch.isfinite(lw).all()):
                return -diag / eps, None
        return lw, plan_entropy(res.plan)

    def pair(self, x0: Tensor, x1: Tensor, generator: torch.Generator | None) -> Coupled:
        n = min(x0.shape[0], x1.shape[0])
        x0, x1 = x0[:n], x1[:n]
        lw, entropy = self._corrected(x0, x1) if self.marginal_correction else (self.log_weights(x0, x1), None)
        w = torch.softmax(lw.double(), 0).mul_(n)  # exp(lw - max) / mean, in one kernel
        self.last_ess = effective_sample_size(w)
        if self.last_ess < self.min_ess and not self._warned_ess:
            self._warned_ess = True
            warnings.warn(
                f"wcfm: the loss weights' effective sample size is {self.last_ess:.1%} of the batch "
                f"(below min_ess={self.min_ess:g}): few pairs carry the loss and the marginals tilt. "
                "Raise relative_eps (or eps), or use marginal_correction.", RuntimeWarning, stacklevel=3)
        return Coupled(x0, x1, w.to(x0.dtype if x0.is_floating_point() else torch.float32), plan_entropy=entropy)
