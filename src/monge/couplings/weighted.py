"""Weighted couplings: independent pairs with Gibbs-kernel loss weights (W-CFM)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from .._validation import check_positive
from .base import COUPLINGS, Coupled, Coupling, flat


@COUPLINGS.register("wcfm")
class WCFM(Coupling):
    r"""Weighted Conditional Flow Matching (W-CFM, Calvo-Ordoñez et al. 2025).

    Independent pairs, each weighted in the loss by the Gibbs kernel

    .. math:: w_i = \exp\!\big(-c(x_0^i, x_1^i)/\varepsilon\big), \qquad
              \tilde w_i = w_i \Big/ \tfrac1B \textstyle\sum_k w_k ,

    computed in log space (the largest log-weight is subtracted before the exponential) and
    self-normalised to mean 1 in the batch. Training under these weights is training under
    :math:`\tilde\pi \propto e^{-c/\varepsilon}\,\mu\otimes\nu`: the entropic OT plan without its
    dual potentials, so its marginals are tilted (slightly, when :math:`\varepsilon` is large
    against the spread of the cost); where the potentials are constant (e.g. on homogeneous
    spaces) it *is* the entropic plan. It costs :math:`O(Bd)`: no plan is solved.

    Parameters
    ----------
    eps : float, optional
        Absolute temperature in cost units. Default: ``relative_eps`` times the batch's mean
        pair cost :math:`\bar c = \frac1B\sum_i c_i` (about :math:`2d` for standardised data),
        so the default adapts to the data scale and dimension.
    relative_eps : float
        Used when ``eps`` is ``None``; default 0.5. Smaller values weigh near pairs more
        (closer to OT, fewer effective samples: the effective batch size
        :math:`(\sum w)^2 / \sum w^2` shrinks).
    cost : {"sqeuclidean", "euclidean"}
        :math:`c = \|x_0 - x_1\|^2` (default) or the unsquared distance used by some code.
    """

    def __init__(
        self,
        eps: float | None = None,
        relative_eps: float = 0.5,
        cost: Literal["sqeuclidean", "euclidean"] = "sqeuclidean",
    ) -> None:
        self.eps = check_positive(eps, "eps", allow_none=True)
        self.relative_eps = check_positive(relative_eps, "relative_eps")
        if cost not in ("sqeuclidean", "euclidean"):
            raise ValueError(f"cost must be 'sqeuclidean' or 'euclidean', got {cost!r}")
        self.cost = cost

    def log_weights(self, x0: Tensor, x1: Tensor) -> Tensor:
        r"""Unnormalised :math:`-c_i/\varepsilon` of the pairs ``(x0[i], x1[i])``."""
        c = (flat(x0) - flat(x1)).square().sum(1)
        if self.cost == "euclidean":
            c = c.sqrt()
        eps = self.eps if self.eps is not None else self.relative_eps * c.mean().clamp_min(1e-12)
        return -c / eps

    def pair(self, x0: Tensor, x1: Tensor, generator: torch.Generator | None) -> Coupled:
        n = min(x0.shape[0], x1.shape[0])
        x0, x1 = x0[:n], x1[:n]
        w = torch.softmax(self.log_weights(x0, x1), 0).mul_(n)  # exp(lw - max) / mean, in one kernel
        return Coupled(x0, x1, w.to(x0.dtype if x0.is_floating_point() else torch.float32))
