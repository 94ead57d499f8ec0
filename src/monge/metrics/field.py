r"""How well a trained velocity field fits the exact field of its coupling on a finite data set.

Flow matching on ``N`` training points :math:`y_i` with standard normal noise :math:`x_0` and the
linear path :math:`x_t = (1 - t)\,x_0 + t\,y` regresses onto the marginal velocity

.. math:: v^*(x, t) = \mathbb E[y - x_0 \mid x_t = x] = \frac{\mathbb E[y \mid x_t = x] - x}{1 - t},

whose posterior over the points is, with :math:`x_{0,i} = (x - t\,y_i)/(1 - t)`,

.. math:: \log p_i(x) = \log \pi(i \mid x_{0,i}) - \tfrac12\|x_{0,i}\|^2 + \mathrm{const},

:math:`\pi(i \mid x_0)` being the coupling's law of the data point given the noise:
:math:`w_i` for ``independent``, and for a semi-discrete map with scores
:math:`s_j(z) = \langle z, y_j\rangle + h_j` the softmax :math:`\mathrm{softmax}_j(s_j/\varepsilon)`
(entropic cells) or the indicator of :math:`i = \arg\max_j s_j` (hard cells, :math:`\varepsilon = 0`).
This exact field memorises (it carries every sample onto a training point), so a network's distance
to it is not an error to drive to zero; compared *across couplings at the same t* it shows where in
time a network fails to follow its coupling's field (``bench/results/images_pixel.md``).
Cost :math:`O(M N d + M N^2)` per call (``M`` points): meant for data sets of a few thousand points.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor

from .._validation import check_batch

if TYPE_CHECKING:  # pragma: no cover
    from ..ot.semidiscrete import SemiDiscreteMap

__all__ = ["FieldError", "exact_velocity", "field_error"]


def _check_time(t: float) -> float:
    t = float(t)
    if not 0.0 <= t < 1.0:
        raise ValueError(f"t must be in [0, 1) (the field of the linear path is singular at t = 1), got {t}")
    return t


def _log_coupling(xy: Tensor, t: float, gram: Tensor, sd_map: SemiDiscreteMap) -> Tensor:
    r""":math:`\log \pi(i \mid x_{0,i})` ``(m, N)`` of a semi-discrete map; ``xy``: :math:`\langle x, y_j\rangle`."""
    every = (xy[:, None, :] - t * gram[None]) / (1 - t) + sd_map.heights.to(xy)  # (m, i, j): s_j(x0_i)
    own = every.diagonal(dim1=1, dim2=2)                                          # s_i(x0_i)
    if sd_map.epsilon == 0:
        return torch.where(own >= every.amax(-1), 0.0, -torch.inf)
    return own / sd_map.epsilon - torch.logsumexp(every / sd_map.epsilon, -1)


def exact_velocity(x: Tensor, t: float, targets: Tensor, sd_map: SemiDiscreteMap | None = None,
                   weights: Tensor | None = None, chunk: int = 16) -> Tensor:
    r"""The exact marginal velocity :math:`v^*(x, t)` (module docstring) of the linear path from
    :math:`\mathcal N(0, I)` onto ``targets`` ``(N, *shape)``, under ``independent`` pairing
    (``sd_map=None``, point weights ``weights``, uniform by default) or the semi-discrete map
    ``sd_map`` fitted on these targets (its heights and :math:`\varepsilon`; 0: hard cells).

    ``x`` ``(M, *shape)``, ``t`` in [0, 1); computed in float64, ``chunk`` rows at a time (memory
    :math:`O(\text{chunk}\cdot N^2)` with a map). Returns ``(M, *shape)`` in ``x``'s dtype; NaN rows
    where no hard cell reaches ``x`` at time ``t`` (hard cells leave gaps between their paths).
    """
    check_batch(x, "x")
    check_batch(targets, "targets")
    t = _check_time(t)
    y = targets.reshape(len(targets), -1).to(device=x.device, dtype=torch.float64)
    xf = x.reshape(len(x), -1).to(torch.float64)
    if xf.shape[1] != y.shape[1]:
        raise ValueError(f"x has {xf.shape[1]} features per point, targets {y.shape[1]}; "
                         "pass points of the targets' shape")
    if sd_map is not None and sd_map.n_targets != len(y):
        raise ValueError(f"sd_map has {sd_map.n_targets} cells for {len(y)} targets; pass the targets it was fitted on")
    if sd_map is None:
        log_w = 0.0 if weights is None else weights.to(y).log()

        def log_pi(xy: Tensor) -> Tensor | float:
            return log_w
    else:
        gram = y @ y.T

        def log_pi(xy: Tensor) -> Tensor | float:
            return _log_coupling(xy, t, gram, sd_map)
    y2 = y.square().sum(1)
    out = []
    for xc in xf.split(chunk):
        xy = xc @ y.T
        log_p = -(xc.square().sum(1, keepdim=True) - 2 * t * xy + t * t * y2) / (2 * (1 - t) ** 2)
        out.append(((log_p + log_pi(xy)).softmax(-1) @ y - xc) / (1 - t))
    return torch.cat(out).reshape(x.shape).to(x.dtype)


class FieldError(NamedTuple):
    """:func:`field_error`'s figures: the error, the exact field's size, and the share of the points the
    coupling's paths reach (the two figures are over those points; NaN when none is reached)."""

    error: float
    scale: float
    reached: float


def field_error(net: Callable[[Tensor, Tensor], Tensor], x: Tensor, t: float, targets: Tensor,
                sd_map: SemiDiscreteMap | None = None) -> FieldError:
    r"""How far a velocity network ``net(x, t)`` is from the exact field at the points ``x`` and time
    ``t``, in the units of the clean point each implies (:math:`\hat y = x + (1 - t)\,v`), RMS per coordinate:

    .. math:: \text{error} = (1 - t)\,\sqrt{\overline{(v_\theta - v^*)^2}}, \qquad
              \text{scale} = (1 - t)\,\sqrt{\overline{(v^*)^2}},

    with :math:`v^*` from :func:`exact_velocity` (same ``targets`` and ``sd_map``), over the points
    the coupling's paths reach (all but those in the gaps of hard cells; their share is ``reached``)."""
    t = _check_time(t)
    with torch.no_grad():
        v = net(x, torch.full((len(x),), t, dtype=x.dtype, device=x.device)).double()
    exact = exact_velocity(x, t, targets, sd_map).double()
    keep = exact.reshape(len(x), -1).isfinite().all(1)
    reached = float(keep.double().mean())
    if not reached:
        return FieldError(math.nan, math.nan, 0.0)
    err = (1 - t) * float((v - exact)[keep].square().mean().sqrt())
    return FieldError(err, (1 - t) * float(exact[keep].square().mean().sqrt()), reached)
