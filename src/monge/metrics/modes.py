r"""Mode coverage and mode mixture of samples from a Gaussian mixture with known centres.

Each sample is assigned to its nearest centre. It *hits* that mode when it lies within
``radius`` (default 3 std, the "high-quality sample" rule of VEEGAN, Srivastava et al. 2017, and
PacGAN, Lin et al. 2018); otherwise it is a *mixture* sample, lying between modes (the mode-mixture
failure that DPM-OT, Li et al. 2023, measures). With :math:`c_k` hits on mode :math:`k` out of
:math:`n` samples and :math:`K` modes:

.. math:: \text{coverage} = \frac1K \#\{k : c_k \ge \rho\,n/K\}, \qquad
          \text{mixture} = 1 - \frac{\sum_k c_k}{n}, \qquad
          \text{kl} = \sum_k p_k \log(K p_k),\; p_k = \frac{c_k}{\sum_j c_j},

where :math:`\rho` is ``min_share`` (default 0.1: a mode counts as covered when it holds at
least 10% of its share under a uniform mixture).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .._validation import check_batches, check_positive

__all__ = ["ModeStats", "mode_stats"]


@dataclass(frozen=True)
class ModeStats:
    """Result of :func:`mode_stats`.

    coverage : fraction of modes holding at least ``threshold`` hits.
    mixture : fraction of samples farther than ``radius`` from every centre.
    counts : ``(K,)`` int64 hits per mode (on the CPU).
    kl : KL divergence of the hit histogram from uniform (``inf`` when no sample hits a mode).
    num_covered : number of covered modes.
    threshold : minimum hits for a mode to count as covered.
    radius : the hit radius used.
    """

    coverage: float
    mixture: float
    counts: Tensor
    kl: float
    num_covered: int
    threshold: float
    radius: float


def _positive(value: object, name: str) -> float:
    if torch.is_tensor(value):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a positive scalar, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    return check_positive(value, name)


def mode_stats(
    samples: Tensor,
    centres: Tensor,
    std: float,
    radius: float | None = None,
    min_share: float = 0.1,
) -> ModeStats:
    """Mode coverage, mode-mixture rate, per-mode counts and KL-to-uniform of ``samples``.

    Parameters
    ----------
    samples : ``(n, *shape)`` generated samples.
    centres : ``(K, *shape)`` mode centres, e.g. from :func:`monge.data.toy_modes`.
    std : common standard deviation of the modes.
    radius : hit radius; default ``3 * std``.
    min_share : covered-mode threshold as a fraction of the uniform share ``n / K``.
    """
    check_batches(samples, centres, "samples", "centres")
    std = _positive(std, "std")
    radius = 3.0 * std if radius is None else _positive(radius, "radius")
    min_share = _positive(min_share, "min_share")
    x = samples.detach().reshape(samples.shape[0], -1).to(torch.float64)
    c = centres.detach().reshape(centres.shape[0], -1).to(device=x.device, dtype=torch.float64)
    n, k = x.shape[0], c.shape[0]
    dist = torch.cdist(x, c, compute_mode="donot_use_mm_for_euclid_dist")
    nearest_dist, nearest = dist.min(dim=1)
    hit = nearest_dist <= radius
    counts = torch.bincount(nearest[hit], minlength=k).cpu()
    threshold = min_share * n / k
    num_covered = int((counts >= threshold).sum())
    total = int(counts.sum())
    if total == 0:
        kl = math.inf
    else:
        p = counts.to(torch.float64) / total
        nz = p > 0
        kl = float((p[nz] * torch.log(k * p[nz])).sum())
    return ModeStats(
        coverage=num_covered / k,
        mixture=1.0 - total / n,
        counts=counts,
        kl=kl,
        num_covered=num_covered,
        threshold=threshold,
        radius=radius,
    )
