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
    r"""Improved Immiscible Diffusion (Li et al. 2025): nearest of ``k`` noises per data point, rescaled.

    For each data point :math:`x_1^i` the candidates are :math:`x_0^i` and ``k - 1`` fresh
    draws :math:`z^{i,2..k} \sim \mathcal N(0, I)` from ``generator``; the coupling keeps

    .. math:: \hat z^{\,i} = \arg\min_{z \in \{x_0^i, z^{i,2}, \dots, z^{i,k}\}} \|x_1^i - z\|^2 ,
              \qquad x_0'^{\,i} = s\,\hat z^{\,i}, \quad
              s^2 = \frac{\sum_i \|x_0^i\|^2}{\sum_i \|\hat z^{\,i}\|^2}
              \ (s = 1 \text{ if } \texttt{rescale=False}),

    in :math:`O(kBd)` with no assignment problem. The extra candidates are standard normal
    unless :meth:`prepare` was given the run's source (then they are drawn from it, and ``rescale``
    does nothing): **without preparation it assumes a standard Gaussian source**, whatever ``x0`` is.

    **Why the rescale.** Choosing by distance leans each kept noise towards its data point and
    shortens it. For data of per-coordinate scale :math:`\sigma` in dimension :math:`d` the
    squared distances of the candidates are about :math:`\mathcal N\big(d(1+\sigma^2),\,
    2d + 4d\sigma^2\big)`, so the nearest one lowers the pair cost by the share

    .. math:: \frac{|m_k|\sqrt{2 + 4\sigma^2}}{(1 + \sigma^2)\sqrt d}
              \qquad\text{and shrinks } \mathbb E\|\hat z\|^2 \text{ by }
              \frac{2\sqrt d\,|m_k|}{\sqrt{2 + 4\sigma^2}}

    (:math:`m_k` the mean of the minimum of ``k`` standard normals, :math:`m_2 \approx -0.56`,
    :math:`m_4 \approx -1.03`; tens of dimensions or more). The gain fades like :math:`1/\sqrt d`, but
    the kept noise's law stays at a W2 distance of about :math:`|m_k|/\sqrt{2 + 4\sigma^2}` from
    :math:`\mathcal N(0, I)` however large :math:`d` (its variance per coordinate is
    :math:`1 - O(1/\sqrt d)`, over :math:`d` coordinates; as far in low dimension).
    A flow trained from that noise is sampled from :math:`\mathcal N(0, I)`, a law it was not
    trained from: unscaled, the coupling was worse than ``independent`` at adaptive NFE on 30- to
    64-dimensional data, more so for larger ``k``. The factor :math:`s` restores the batch's mean
    squared norm to that of the drawn noise, which at the default ``k`` brings the Gaussian fit of
    the kept noise back to that of a fresh :math:`\mathcal N(0, I)` sample and keeps most of the pair-cost gain
    (``bench/results/coupling_cost.md``, with the sample quality against the NFE).

    **Where not to use it.** The rescale fixes the scale, not the direction: for data whose mean
    is far from 0 the kept noise's mean still leans towards the data mean (by a share of order
    :math:`1/\sqrt d`), so standardise the data first (tables are standardised by default). With a
    prepared non-Gaussian source nothing is rescaled, and the lean and shrink above apply.

    Parameters
    ----------
    k : int
        Candidates per data point; default 4 (as the paper's CIFAR-10 setting; 64 for SD latents).
        ``k=1`` is the independent coupling.
    rescale : bool
        Multiply the kept noise by :math:`s` (above); default ``True``. ``False`` is the paper's
        coupling (each pair never farther than its own candidate).
    """

    def __init__(self, k: int = 4, rescale: bool = True) -> None:
        self.k = check_positive_int(k, "k", 4096)
        if not isinstance(rescale, bool):
            raise ValueError(f"rescale must be true or false, got {rescale!r}")
        self.rescale = rescale
        self.source: DataSource | None = None

    def prepare(
        self, source: DataSource, target: DataSource, generator: torch.Generator | None = None
    ) -> None:
        """Draw the extra candidates from ``source`` (a non-Gaussian source keeps its law)."""
        from ..data.sources import GaussianSource

        self.source = None if isinstance(source, GaussianSource) else source

    def _candidates(self, n: int, like: Tensor, generator: torch.Generator | None) -> Tensor:
        if self.source is not None:
            z = self.source.sample(n, generator=generator, device=like.device)
            if tuple(z.shape[1:]) != tuple(like.shape[1:]):
                raise ValueError(
                    f"the prepared source draws shape {tuple(z.shape[1:])}, x0 has {tuple(like.shape[1:])}"
                )
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
        if self.rescale and self.source is None:
            kept = kept * (cand[0].square().sum() / kept.square().sum().clamp_min(1e-30)).sqrt()
        return Coupled(kept.reshape(x0.shape), x1)
