r"""Improved precision and recall with k-nearest-neighbour manifolds (Kynkäänniemi et al. 2019).

Each set of feature vectors estimates its support by the union of balls centred on its points
with radius the distance to the ``k``-th nearest neighbour in the same set,
:math:`\mathrm{NND}_k`. With real features :math:`\Phi_r` and generated features :math:`\Phi_g`:

.. math:: f(\phi, \Phi) = \mathbf 1\big[\exists \phi' \in \Phi : \|\phi - \phi'\|_2 \le \mathrm{NND}_k(\phi')\big],

.. math:: \text{precision} = \frac1{|\Phi_g|} \sum_{\phi_g \in \Phi_g} f(\phi_g, \Phi_r), \qquad
          \text{recall} = \frac1{|\Phi_r|} \sum_{\phi_r \in \Phi_r} f(\phi_r, \Phi_g).

Precision measures how many samples look real (fidelity), recall how much of the data the
samples cover (diversity). Default ``k = 3`` as in the paper. Distances are computed in float64 in
chunks, so memory is ``O(chunk_size * n)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .._validation import check_batch, check_batches, check_positive_int

__all__ = ["PrecisionRecall", "knn_radii", "manifold_membership", "precision_recall"]


@dataclass(frozen=True)
class PrecisionRecall:
    """Result of :func:`precision_recall`: the two shares and the ``k`` used."""

    precision: float
    recall: float
    k: int


def _flat(x: Tensor, name: str) -> Tensor:
    check_batch(x, name)
    return x.detach().reshape(x.shape[0], -1).to(torch.float64)


def knn_radii(features: Tensor, k: int = 3, chunk_size: int = 1024) -> Tensor:
    r"""Distance of each point of ``features`` ``(n, *shape)`` to its ``k``-th nearest other point.

    The point itself is not counted (duplicates are, at distance 0). Needs ``k < n``.
    """
    x = _flat(features, "features")
    n = x.shape[0]
    k = check_positive_int(k, "k", 10_000)
    chunk_size = check_positive_int(chunk_size, "chunk_size", 2**20)
    if k >= n:
        raise ValueError(f"k={k} needs more than k points in features, got {n}; lower k or add samples")
    out = torch.empty(n, dtype=torch.float64, device=x.device)
    for s in range(0, n, chunk_size):
        d = torch.cdist(x[s:s + chunk_size], x, compute_mode="donot_use_mm_for_euclid_dist")
        rows = torch.arange(d.shape[0], device=x.device)
        d[rows, rows + s] = float("inf")  # exclude the point itself
        out[s:s + chunk_size] = d.topk(k, dim=1, largest=False).values[:, -1]
    return out


def manifold_membership(
    queries: Tensor, support: Tensor, radii: Tensor, chunk_size: int = 1024
) -> Tensor:
    r"""Boolean ``(m,)``: whether each query lies in some ball :math:`B(s_j, r_j)` of the support."""
    q = _flat(queries, "queries")
    s = _flat(support, "support")
    if q.shape[1] != s.shape[1]:
        raise ValueError(
            f"queries and support must have the same sample shape, got {tuple(queries.shape[1:])} and "
            f"{tuple(support.shape[1:])}"
        )
    r = radii.detach().to(device=s.device, dtype=torch.float64).reshape(-1)
    if r.shape[0] != s.shape[0]:
        raise ValueError(f"radii must have one entry per support point ({s.shape[0]}), got {tuple(radii.shape)}")
    chunk_size = check_positive_int(chunk_size, "chunk_size", 2**20)
    out = torch.empty(q.shape[0], dtype=torch.bool, device=q.device)
    s = s.to(q.device)
    r = r.to(q.device)
    for i in range(0, q.shape[0], chunk_size):
        d = torch.cdist(q[i:i + chunk_size], s, compute_mode="donot_use_mm_for_euclid_dist")
        out[i:i + chunk_size] = (d <= r[None, :]).any(dim=1)
    return out


def precision_recall(real: Tensor, fake: Tensor, k: int = 3, chunk_size: int = 1024) -> PrecisionRecall:
    """k-NN precision and recall of ``fake`` samples against ``real`` ones (features or raw data).

    Parameters
    ----------
    real : ``(n, *shape)`` reference features (e.g. :func:`~monge.metrics.classifier.classifier_features`
        of the data); needs ``n > k``.
    fake : ``(m, *shape)`` features of generated samples; needs ``m > k``.
    k : neighbourhood size of the manifold estimate (3 in the paper).
    chunk_size : rows of the distance matrix computed at once.
    """
    check_batches(real, fake, "real", "fake")
    k = check_positive_int(k, "k", 10_000)
    for name, x in (("real", real), ("fake", fake)):
        if x.shape[0] <= k:
            raise ValueError(f"{name} has {x.shape[0]} samples but k={k} needs more than k; lower k or add samples")
    fake = fake.to(real.device)
    r_real = knn_radii(real, k, chunk_size)
    r_fake = knn_radii(fake, k, chunk_size)
    precision = float(manifold_membership(fake, real, r_real, chunk_size).double().mean())
    recall = float(manifold_membership(real, fake, r_fake, chunk_size).double().mean())
    return PrecisionRecall(precision, recall, k)
