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


def effective_sample_size(weights: Tensor) -> float:
    r"""Kish's effective sample size as a share of the batch,
    :math:`\mathrm{ESS}/B = (\sum_i w_i)^2 / (B \sum_i w_i^2) \in (0, 1]` (1: uniform weights)."""
    w = weights.double()
    return float(w.sum().square() / (w.numel() * w.square().sum()).clamp_min(1e-300))


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
    of the cost). It costs :math:`O(Bd)`: no plan is solved.

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

    with :math:`f, g` the Sinkhorn potentials of the batch's :math:`B \times B` cost
    (:func:`monge.ot.sinkhorn`, uniform marginals), i.e. :math:`\tilde w_i \propto B^2 P_{ii}`:
    the Gibbs kernel rescaled row- and column-wise so that both marginals of the plan stay
    uniform (Cuturi 2013). It costs one Sinkhorn solve per step (:math:`O(B^2 d)`); a solve that
    did not converge or gave non-finite potentials warns and falls back to the plain weights.

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
        Sinkhorn iteration cap and L1 marginal tolerance of the correction.

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
        #: effective sample size share of the latest batch's weights (``nan`` before the first)
        self.last_ess = math.nan
        self._warned_ess = False

    def _costs(self, x0: Tensor, x1: Tensor) -> Tensor:
        c = (flat(x0) - flat(x1)).square().sum(-1)
        return c.sqrt() if self.cost == "euclidean" else c

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
        """The corrected log-weights and the Sinkhorn plan's :func:`plan_entropy` (``None`` on fallback)."""
        from ..ot.sinkhorn import sinkhorn

        a, b = flat(x0), flat(x1)
        full = torch.cdist(a.double(), b.double()).square()  # (B0, B1), rows noise
        if self.cost == "euclidean":
            full = full.sqrt()
        diag = full.diagonal()
        eps = self.temperature(diag, a.shape[1])
        res = sinkhorn(full, eps=eps, max_iter=self.max_iter, tol=self.tol)
        lw = (res.f + res.g - diag) / eps
        if not res.converged or not bool(torch.isfinite(lw).all()):
            warnings.warn(
                f"wcfm marginal correction{step}: Sinkhorn did not converge in {self.max_iter} iterations "
                f"(marginal error {float(res.marginal_error):.3g}, tol {self.tol:g}) or gave non-finite potentials; "
                "using the uncorrected Gibbs weights for this batch. Raise max_iter or relative_eps.",
                RuntimeWarning, stacklevel=3)
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
