r"""Cheap per-batch diagnostics of a coupling: what the pairing did to costs, weights and noise."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Coupled, flat

__all__ = ["DIAGNOSTICS", "coupling_diagnostics"]

#: the keys of :func:`coupling_diagnostics`, in log order
DIAGNOSTICS = ("pair_cost_ratio", "weights_ess", "noise_mean_z", "noise_var_ratio")


def coupling_diagnostics(x0: Tensor, x1: Tensor, pairs: Coupled) -> dict[str, float]:
    r"""Diagnostics of one batch ``(x0, x1)`` (as drawn, i.e. independently paired) and its ``pairs``.

    With pair weights :math:`w` (mean 1; 1 without weights), :math:`z` the pairs' noise in
    dimension :math:`d` and :math:`B` pairs:

    - ``pair_cost_ratio``: :math:`\frac1B\sum_i w_i\|z_i - x_1^i\|^2` over the mean cost of the
      drawn (independent) pairs :math:`\frac1B\sum_i \|x_0^i - x_1^i\|^2`: 1 for ``independent``,
      below 1 for OT couplings;
    - ``weights_ess``: Kish's effective sample size share :math:`(\sum w)^2 / (B\sum w^2)`;
    - ``noise_mean_z``: :math:`(B\|\bar z\|^2 - d)/\sqrt{2d}` with :math:`\bar z` the weighted
      mean of the noise, a z-score that is about :math:`\mathcal N(0, 1)` when the paired noise is
      :math:`\mathcal N(0, I)` (the batch mean times :math:`\sqrt B` is then
      :math:`\mathcal N(0, I)` and its squared norm :math:`\chi^2_d`); large values: the noise
      drifted;
    - ``noise_var_ratio``: :math:`\frac{1}{Bd}\sum_i w_i\|z_i\|^2`, 1 for :math:`\mathcal N(0, I)`
      (standard deviation :math:`\sqrt{2/(Bd)}`); below 1: the noise shrank towards the data.

    The noise statistics assume a standard Gaussian source. All :math:`O(Bd)`.
    """
    z, y1 = flat(pairs.x0).double(), flat(pairs.x1).double()
    b, d = z.shape
    w = torch.ones(b, dtype=torch.float64, device=z.device) if pairs.weights is None else pairs.weights.double()
    w = w / w.mean()
    drawn = (flat(x0).double()[:b] - flat(x1).double()[:b]).square().sum(1).mean()
    paired = (w * (z - y1).square().sum(1)).mean()
    zbar = (w[:, None] * z).mean(0)
    return {
        "pair_cost_ratio": float(paired / drawn.clamp_min(1e-300)),
        "weights_ess": float(w.sum().square() / (b * w.square().sum())),
        "noise_mean_z": float((b * zbar.square().sum() - d) / math.sqrt(2 * d)),
        "noise_var_ratio": float((w * z.square().sum(1)).mean() / d),
    }
