r"""Cheap per-batch diagnostics of a coupling: what the pairing did to costs, weights and noise."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Coupled, flat

__all__ = ["DIAGNOSTICS", "coupling_diagnostics", "plan_entropy"]

#: the keys of :func:`coupling_diagnostics`, in log order
DIAGNOSTICS = ("pair_cost_ratio", "weights_ess", "noise_mean_z", "noise_var_ratio", "plan_entropy")


def plan_entropy(plan: Tensor) -> float:
    r"""Normalised entropy of a ``(B0, B1)`` plan (rows: noise :math:`x_0`, columns: data :math:`x_1`).

    The conditional entropy of the noise given the data point, over its largest value:

    .. math:: e(P) = rac{H(P) - H(P^	op\mathbf 1)}{\log B_0}, \qquad
              H(P) = -\sum_{ij} P_{ij}\log P_{ij},

    with :math:`P` scaled to total mass 1 (``0 log 0 = 0``). :math:`e \in [0, 1]`: 0 when each
    data point has one noise (a permutation :math:`P = \Pi/B`, exact OT), 1 for the independent
    plan :math:`P = \mathbf 1\mathbf 1^	op/(B_0B_1)`; for a plan with uniform marginals on a
    :math:`B 	imes B` batch it is :math:`H(P)/\log B - 1`. ``nan`` for a one-row plan.
    """
    p = plan.detach().double()
    if p.dim() != 2 or p.numel() == 0:
        raise ValueError(f"plan_entropy needs a non-empty (B0, B1) plan, got shape {tuple(p.shape)}")
    if not bool(torch.isfinite(p).all()) or bool((p < 0).any()) or not float(p.sum()) > 0:
        raise ValueError("plan_entropy needs a finite, non-negative plan with positive mass")
    if p.shape[0] < 2:
        return math.nan
    p = p / p.sum()
    col = p.sum(0)
    h = -torch.special.xlogy(p, p).sum()
    h1 = -torch.special.xlogy(col, col).sum()
    return float(((h - h1) / math.log(p.shape[0])).clamp(0.0, 1.0))


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
      (standard deviation :math:`\sqrt{2/(Bd)}`); below 1: the noise shrank towards the data;
    - ``plan_entropy``: :func:`plan_entropy` of the plan the pairs came from, as the coupling
      reported it (``pairs.plan_entropy``): 0 for ``exact_ot``, ``immiscible``, ``conditional_ot``,
      ``semidiscrete_ot`` and ``reflow`` (the pairs are a function of the batch), 1 for
      ``independent``, in between for ``entropic``/``schrodinger_bridge`` and ``wcfm`` with its
      marginal correction (the Sinkhorn plan); ``nan`` when the coupling forms no plan on the
      batch (``knn_immiscible``, ``wcfm`` without correction).

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
        "plan_entropy": math.nan if pairs.plan_entropy is None else float(pairs.plan_entropy),
    }
