r"""Maximum mean discrepancy with a mixture of Gaussian (RBF) kernels.

.. math:: \mathrm{MMD}^2(P, Q) = \mathbb E\,k(x, x') + \mathbb E\,k(y, y') - 2\,\mathbb E\,k(x, y),
          \qquad k(a, b) = \frac1{|S|}\sum_{\sigma \in S} \exp\!\Big(-\frac{\|a - b\|^2}{2\sigma^2}\Big)

(Gretton et al., "A kernel two-sample test", JMLR 2012). The unbiased estimator drops the
diagonal terms of the within-sample sums and can be slightly negative when ``P = Q``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .._validation import check_batch

__all__ = ["mmd_rbf", "median_bandwidth"]

_MEDIAN_MAX_POINTS = 2048


def _flat(x: Tensor) -> Tensor:
    return x.detach().reshape(x.shape[0], -1).to(torch.float64)


def median_bandwidth(x: Tensor, y: Tensor) -> float:
    r"""Median heuristic :math:`\sigma = \mathrm{median}_{i<j} \|z_i - z_j\|` on the pooled sample.

    At most the first 1024 points of each input are used; the lower median is taken.
    """
    check_batch(x, "x")
    check_batch(y, "y")
    half = _MEDIAN_MAX_POINTS // 2
    z = torch.cat([_flat(x[:half]), _flat(y[:half]).to(x.device)])
    if z.shape[0] < 2:
        raise ValueError("x and y together need at least 2 samples for the median heuristic")
    dist = torch.cdist(z, z, compute_mode="donot_use_mm_for_euclid_dist")
    iu = torch.triu_indices(z.shape[0], z.shape[0], offset=1, device=z.device)
    return float(dist[iu[0], iu[1]].median())


def mmd_rbf(
    x: Tensor,
    y: Tensor,
    bandwidths: Sequence[float] | None = None,
    unbiased: bool = True,
) -> float:
    r"""Squared MMD between samples ``x`` ``(n, *shape)`` and ``y`` ``(m, *shape)`` (flattened).

    Returns the MMD² as a float, computed in float64 on the inputs' device.

    Parameters
    ----------
    bandwidths : kernel widths :math:`\sigma`; default ``median_bandwidth(x, y) * (0.5, 1, 2)``.
    unbiased : U-statistic (needs ``n, m >= 2``) if True, else the biased V-statistic (>= 0).
    """
    check_batch(x, "x")
    check_batch(y, "y")
    xf, yf = _flat(x), _flat(y).to(x.device)
    if xf.shape[1] != yf.shape[1]:
        raise ValueError(
            f"x and y must have the same sample shape, got {tuple(x.shape[1:])} and {tuple(y.shape[1:])}"
        )
    n, m = xf.shape[0], yf.shape[0]
    if unbiased and min(n, m) < 2:
        raise ValueError(f"unbiased MMD needs at least 2 samples in x and y, got {n} and {m}; pass unbiased=False")
    if bandwidths is None:
        med = median_bandwidth(x, y)
        if med <= 0.0:
            raise ValueError("median pairwise distance is 0 (all points equal); pass bandwidths explicitly")
        sigmas = [0.5 * med, med, 2.0 * med]
    else:
        sigmas = [float(s) for s in bandwidths]
        if not sigmas or any(not (s > 0.0) or s == float("inf") for s in sigmas):
            raise ValueError(f"bandwidths must be a non-empty sequence of positive finite floats, got {bandwidths!r}")

    def kernel(a: Tensor, b: Tensor) -> Tensor:
        d2 = torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist").square()
        total = torch.zeros_like(d2)
        for s in sigmas:
            total = total + torch.exp(-d2 / (2.0 * s * s))
        return total / len(sigmas)

    kxx, kyy, kxy = kernel(xf, xf), kernel(yf, yf), kernel(xf, yf)
    if unbiased:
        sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    else:
        sxx, syy = kxx.mean(), kyy.mean()
    return float(sxx + syy - 2.0 * kxy.mean())
