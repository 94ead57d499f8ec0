"""Immiscible couplings: noise assigned to data (linear assignment, k-NN)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .._validation import check_positive_int
from ..ot.exact import squared_euclidean_cost
from .base import (
    COUPLINGS,
    AssignmentCoupling,
    Coupled,
    Coupling,
    check_equal_batches,
    flat,
    gen_device,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..data.sources import DataSource

@COUPLINGS.register("immiscible")
class Immiscible(AssignmentCoupling):
    r"""Immiscible Diffusion (Li et al. 2024): noise assigned to data by linear assignment.

    .. math:: \min_{\sigma} \sum_j \|x_1^j - x_0^{\sigma(j)}\|

    on the *unsquared* distance (as in the paper; computed in float32 or wider, which avoids
    the fp16 overflow the paper rescales for), solved by :func:`monge.ot.exact.assignment`.
    The noise batch is only permuted, so its empirical distribution (and marginal law) is
    unchanged; training and sampling are otherwise unchanged. ``solver``, ``scope`` and ``tol``:
    see :class:`AssignmentCoupling`.
    """

    label = "immiscible"

    def cost(self, x0: Tensor, x1: Tensor) -> Tensor:
        """Unsquared distances, rows: data, columns: noise."""
        return squared_euclidean_cost(flat(x1), flat(x0)).sqrt_()


@COUPLINGS.register("knn_immiscible")
class KNNImmiscible(Coupling):
    r"""Improved Immiscible Diffusion (Li et al. 2025): nearest of ``k`` noises per data point.

    For each data point :math:`x_1^i` the candidates are :math:`x_0^i` and ``k - 1`` fresh
    draws :math:`z^{i,2..k} \sim \mathcal N(0, I)` from ``generator``; the coupling keeps

    .. math:: x_0'^{\,i} = \arg\min_{z \in \{x_0^i, z^{i,2}, \dots, z^{i,k}\}} \|x_1^i - z\|^2 ,

    in :math:`O(kBd)` with no assignment problem. The extra candidates are standard normal
    unless :meth:`prepare` was given the run's source (then they are drawn from it): **without
    preparation it assumes a standard Gaussian source**, whatever ``x0`` is. The kept noise is slightly
    non-Gaussian: it leans towards its data point, so its squared norm shrinks by about
    :math:`\frac{2d}{\sqrt{2d + 4\|x_1\|^2}}\,|m_k|` (:math:`m_k` the mean of the minimum of
    ``k`` standard normals, :math:`m_4 \approx -1.03`): a relative change of order
    :math:`1/\sqrt d`, small in image dimensions.

    **Marginal of the kept noise.** For centred data of unit scale its mean stays 0, but its
    second moment shrinks (``E||z||^2 / d`` about 0.82 in 2D and 0.90 in 32-D at ``k = 4``) and,
    for data with mean :math:`m`, its mean leans towards :math:`m` by a share of order
    :math:`1/\sqrt d` (``tests/couplings/test_immiscible.py`` states the tolerances). Standardise
    the data (mean 0) before using it in low dimension.

    Parameters
    ----------
    k : int
        Candidates per data point; default 4 (as the paper's CIFAR-10 setting; 64 for SD latents).
        Measured by ``bench/couplings_quality.py`` against ``k = 2`` (``bench/results/``):
        within the sampling noise of ``independent`` at adaptive NFE on every task, with the
        larger few-step gain. ``k=1`` is the independent coupling.
    """

    def __init__(self, k: int = 4, rescale: bool = False) -> None:
        self.k = check_positive_int(k, "k", 4096)
        if not isinstance(rescale, bool):
            raise ValueError(f"rescale must be true or false, got {rescale!r}")
        self.rescale = rescale
        self.source: "DataSource | None" = None

    def prepare(
        self, source: "DataSource", target: "DataSource", generator: torch.Generator | None = None
    ) -> None:
        """Draw the extra candidates from ``source`` (a non-Gaussian source keeps its law)."""
        from ..data.sources import GaussianSource

        self.source = None if isinstance(source, GaussianSource) else source

    def _candidates(self, n: int, like: Tensor, generator: torch.Generator | None) -> Tensor:
        if self.source is not None:
            z = self.source.sample(n, generator=generator, device=like.device)
            if tuple(z.shape[1:]) != tuple(like.shape[1:]):
                raise ValueError(f"the prepared source draws shape {tuple(z.shape[1:])}, x0 has {tuple(like.shape[1:])}")
            return z.to(like.dtype)
        dev = gen_device(generator, like.device)
        return torch.randn((n, *like.shape[1:]), generator=generator, device=dev, dtype=like.dtype)

    def pair(self, x0: Tensor, x1: Tensor, generator: torch.Generator | None) -> Coupled:
        check_equal_batches(x0, x1, "knn_immiscible")
        if self.k == 1:
            return Coupled(x0, x1, plan_entropy=1.0)
        b = x0.shape[0]
        extra = self._candidates((self.k - 1) * b, x0, generator)
        cand = torch.cat([x0, extra.to(x0.device)]).reshape(self.k, b, -1)  # cand[j, i]: j-th of point i
        # min(0).indices, not argmin(0): the same first-minimum index, and argmin over a short
        # leading dim is much slower on CPU (bench/couplings.py)
        best = (cand - x1.reshape(1, b, -1)).square_().sum(-1).min(0).indices  # (b,)
        kept = cand.gather(0, best.view(1, b, 1).expand(1, b, cand.shape[-1]))[0]
        if self.rescale:
            kept = kept * (cand[0].square().sum() / kept.square().sum().clamp_min(1e-30)).sqrt()
        return Coupled(kept.reshape(x0.shape), x1)
