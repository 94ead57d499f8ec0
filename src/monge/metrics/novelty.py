r"""Is a sample new? Nearest-neighbour memorisation tests against a training set and a held-out set.

For a training set :math:`T`, the distance of a point to it is

.. math:: L(x) = \min_{t \in T} \|x - t\|_2 ,

on flattened inputs or on features :math:`\phi(x)`. Held-out points :math:`H` are fresh draws from
the data distribution that the model never saw; their distances :math:`L(h)` are the reference a
model's samples :math:`S` are compared with:

* **ratio** :math:`\operatorname{med}_{s} L(s) / \operatorname{med}_{h} L(h)`: 1 for samples as
  new as fresh data, :math:`< 1` when samples sit closer to the training set than fresh data does;
* **near-copy share** :math:`\frac1{|S|}\sum_s \mathbf 1[L(s) \le \tau]` with
  :math:`\tau = Q_q(\{L(h)\})` the ``quantile`` :math:`q` (1st percentile) of the held-out
  distances, beside the held-out share :math:`\frac1{|H|}\sum_h \mathbf 1[L(h) \le \tau] \approx q`;
  a model that copies exceeds :math:`q`, a model that does not stays within binomial noise of it;
* **duplicate share**: samples with :math:`L(s) \le 10^{-5}\operatorname{med}_h L(h)` (exact copies);
* the **data-copying statistic** :math:`C_T` of Meehan et al. (2020): in each cell :math:`\pi` of a
  k-means partition of :math:`T`, the Mann-Whitney statistic of the in-cell distances
  :math:`L_\pi(s)` against :math:`L_\pi(h)`,

  .. math:: U_\pi = \sum_{s \in S_\pi}\sum_{h \in H_\pi} \big(\mathbf 1[L_\pi(s) > L_\pi(h)]
            + \tfrac12 \mathbf 1[L_\pi(s) = L_\pi(h)]\big), \qquad
            Z_\pi = \frac{U_\pi - m_\pi n_\pi / 2}{\sqrt{m_\pi n_\pi (m_\pi + n_\pi + 1) / 12}},

  averaged with the held-out shares as weights over the cells holding more than a share
  :math:`\tau_S` of the samples: :math:`C_T = \sum_\pi \hat P_H(\pi) Z_\pi / \sum_\pi \hat P_H(\pi)`.
  :math:`C_T \approx \mathcal N(0, 1)` for samples as new as fresh data, :math:`C_T \ll 0` for
  copying, :math:`C_T \gg 0` for underfitting. With one cell (the default) it is the global
  Mann-Whitney :math:`Z` and costs nothing beyond the distances.

Distances are exact (no approximate search), computed in float64 blocks of
``chunk_size x chunk_size`` with :math:`\|a\|^2 - 2\langle a, b\rangle + \|b\|^2` on centred data,
then recomputed as :math:`\|a - b\|` for the nearest point found (exactly 0 for duplicates).
:func:`frechet_train_heldout` puts the Fréchet distance of sample features to the training
features beside the one to the held-out features.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata
from torch import Tensor

from .._validation import check_batch, check_number, check_positive_int
from .frechet import frechet_distance_from_features

__all__ = [
    "NoveltyReport",
    "TrainHeldoutFrechet",
    "nearest_neighbours",
    "mann_whitney_z",
    "data_copying_statistic",
    "novelty",
    "novelty_reports",
    "frechet_train_heldout",
    "novelty_table",
]

#: Samples closer to the training set than this share of the held-out median distance are duplicates.
DUPLICATE_RTOL = 1e-5
#: Training points used to fit the k-means cells of :func:`data_copying_statistic`.
KMEANS_FIT_POINTS = 10_000


def _flat(x: Tensor, name: str) -> Tensor:
    check_batch(x, name)
    if x.is_complex() or x.dtype == torch.bool:
        raise ValueError(f"{name} must hold real numbers, got dtype {x.dtype}")
    return x.detach().reshape(x.shape[0], -1)


def _check_sets(**sets: Tensor) -> dict[str, Tensor]:
    flat = {name: _flat(x, name) for name, x in sets.items()}
    dims = {name: x.shape[1] for name, x in flat.items()}
    if len(set(dims.values())) > 1:
        shapes = ", ".join(f"{name} {tuple(sets[name].shape[1:])}" for name in sets)
        raise ValueError(
            f"sample shapes must agree after flattening, got {shapes}; pass the same kind of data"
        )
    return flat


def nearest_neighbours(
    queries: Tensor,
    reference: Tensor,
    *,
    chunk_size: int | None = 2048,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Distance and index of each query's nearest reference point, :math:`L(x) = \min_j \|x - r_j\|`.

    ``queries`` ``(n, *shape)`` and ``reference`` ``(N, *shape)`` are flattened; the result is
    float64 distances ``(n,)`` and int64 indices ``(n,)`` on ``device`` (default: the queries'
    device). Memory is bounded by blocks of ``chunk_size`` queries by ``chunk_size`` reference
    points; reference blocks move to ``device`` one at a time. ``chunk_size=None`` computes the
    whole ``(n, N)`` matrix at once. Among equidistant reference points any index may be returned.
    """
    flat = _check_sets(queries=queries, reference=reference)
    q0, ref = flat["queries"], flat["reference"]
    if chunk_size is not None:
        chunk_size = check_positive_int(chunk_size, "chunk_size", 2**20)
    dev = torch.device(device) if device is not None else q0.device
    n, m = q0.shape[0], ref.shape[0]
    q_step = n if chunk_size is None else chunk_size
    r_step = m if chunk_size is None else chunk_size

    centre = torch.zeros(ref.shape[1], dtype=torch.float64, device=dev)
    for s in range(0, m, r_step):  # centring keeps the expanded form accurate far from the origin
        centre += ref[s:s + r_step].to(dev, torch.float64).sum(0)
    centre /= m
    q = q0.to(dev, torch.float64) - centre
    qn = (q * q).sum(1)
    best = torch.full((n,), math.inf, dtype=torch.float64, device=dev)
    index = torch.zeros(n, dtype=torch.long, device=dev)
    for s in range(0, m, r_step):
        b = ref[s:s + r_step].to(dev, torch.float64) - centre
        bn = (b * b).sum(1)
        for i in range(0, n, q_step):
            qi = q[i:i + q_step]
            d2 = torch.addmm(bn[None, :], qi, b.T, alpha=-2.0).add_(qn[i:i + q_step, None])
            value, j = d2.min(dim=1)
            better = value < best[i:i + q_step]
            best[i:i + q_step] = torch.where(better, value, best[i:i + q_step])
            index[i:i + q_step] = torch.where(better, j + s, index[i:i + q_step])
    del q
    dist = torch.empty(n, dtype=torch.float64, device=dev)
    for i in range(0, n, q_step):
        rows = ref[index[i:i + q_step].to(ref.device)].to(dev, torch.float64)
        dist[i:i + q_step] = (q0[i:i + q_step].to(dev, torch.float64) - rows).norm(dim=1)
    return dist, index


def mann_whitney_z(x: Tensor | np.ndarray, y: Tensor | np.ndarray) -> float:
    r"""Normal score of the Mann-Whitney statistic of ``x`` against ``y``.

    :math:`U = \sum_{i,j} \mathbf 1[x_i > y_j] + \tfrac12 \mathbf 1[x_i = y_j]` (from mid-ranks),
    :math:`Z = (U - mn/2) / \sqrt{mn(m + n + 1)/12}`; no continuity or tie correction.
    Negative when ``x`` tends to be smaller than ``y``.
    """
    a = np.asarray(x.detach().cpu() if torch.is_tensor(x) else x, dtype=np.float64).reshape(-1)
    b = np.asarray(y.detach().cpu() if torch.is_tensor(y) else y, dtype=np.float64).reshape(-1)
    m, n = a.size, b.size
    if m == 0 or n == 0:
        raise ValueError(f"x and y must both be non-empty, got {m} and {n} values")
    ranks = rankdata(np.concatenate([a, b]))
    u = float(ranks[:m].sum()) - m * (m + 1) / 2
    return (u - m * n / 2) / math.sqrt(m * n * (m + n + 1) / 12)


def _kmeans_labels(
    train: Tensor, k: int, seed: int, chunk_size: int | None, device: torch.device, iters: int = 30
) -> Callable[[Tensor], Tensor]:
    """Lloyd's k-means on at most :data:`KMEANS_FIT_POINTS` training points; returns the cell map."""
    g = torch.Generator().manual_seed(seed)
    fit_rows = torch.randperm(train.shape[0], generator=g)[:KMEANS_FIT_POINTS]
    x = train[fit_rows.to(train.device)].to(device, torch.float64)
    centres = x[torch.randperm(x.shape[0], generator=g)[:k].to(device)].clone()
    for _ in range(iters):
        _, labels = nearest_neighbours(x, centres, chunk_size=chunk_size, device=device)
        counts = torch.bincount(labels, minlength=k).to(torch.float64)
        sums = torch.zeros_like(centres).index_add_(0, labels, x)
        new = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centres)
        if torch.equal(new, centres):
            break
        centres = new
    return lambda pts: nearest_neighbours(pts, centres, chunk_size=chunk_size, device=device)[1]


def data_copying_statistic(
    samples: Tensor,
    train: Tensor,
    held_out: Tensor,
    *,
    cells: int = 1,
    tau: float | None = None,
    seed: int = 0,
    chunk_size: int | None = 2048,
    device: torch.device | str | None = None,
) -> float:
    r"""Meehan et al. (2020) data-copying statistic :math:`C_T` (see the module docstring).

    ``cells`` k-means cells of the training set (fitted on at most 10,000 of its points, seeded by
    ``seed``); in each, distances go to that cell's training points. Cells holding a share of the
    samples of at most ``tau`` (default :math:`20/m`, i.e. 20 samples) or no held-out point are left
    out. With ``cells=1`` it is :func:`mann_whitney_z` of the global nearest-neighbour distances.
    """
    flat = _check_sets(samples=samples, train=train, held_out=held_out)
    s, t, h = flat["samples"], flat["train"], flat["held_out"]
    cells = check_positive_int(cells, "cells", t.shape[0])
    m, n = s.shape[0], h.shape[0]
    tau = 20.0 / m if tau is None else check_number(tau, "tau", 0.0, 1.0, high_open=True)
    dev = torch.device(device) if device is not None else s.device
    kw: dict[str, Any] = {"chunk_size": chunk_size, "device": dev}
    if cells == 1:
        return mann_whitney_z(nearest_neighbours(s, t, **kw)[0], nearest_neighbours(h, t, **kw)[0])
    cell_of = _kmeans_labels(t, cells, seed, chunk_size, dev)
    ct, ch, cs = cell_of(t).cpu(), cell_of(h).cpu(), cell_of(s).cpu()
    total_weight, total = 0.0, 0.0
    for c in range(cells):
        in_t, in_h = t[(ct == c).to(t.device)], h[(ch == c).to(h.device)]
        in_s = s[(cs == c).to(s.device)]
        if in_s.shape[0] / m <= tau or in_h.shape[0] == 0 or in_t.shape[0] == 0:
            continue
        weight = in_h.shape[0] / n
        z = mann_whitney_z(nearest_neighbours(in_s, in_t, **kw)[0], nearest_neighbours(in_h, in_t, **kw)[0])
        total += weight * z
        total_weight += weight
    if total_weight == 0.0:
        raise ValueError(
            f"no cell holds more than tau={tau:.3g} of the samples and a held-out point; lower cells ({cells}) "
            "or tau, or draw more samples"
        )
    return total / total_weight


@dataclass(frozen=True)
class NoveltyReport:
    r"""Result of :func:`novelty`: nearest-neighbour distances to the training set, samples beside held-out.

    ``ratio`` is :math:`\operatorname{med} L(S) / \operatorname{med} L(H)`; ``threshold`` is the
    ``quantile`` of :math:`L(H)`; ``near_copy_share`` and ``heldout_near_copy_share`` are the shares
    of samples and held-out points at or below it; ``c_t`` is Meehan's statistic over ``cells``.
    """

    space: str
    n_samples: int
    n_train: int
    n_heldout: int
    dim: int
    sample_median: float
    sample_mean: float
    heldout_median: float
    heldout_mean: float
    ratio: float
    quantile: float
    threshold: float
    near_copy_share: float
    heldout_near_copy_share: float
    duplicate_share: float
    c_t: float
    cells: int

    @property
    def excess(self) -> float:
        """Near-copy share of the samples minus that of the held-out points (a share, not percent)."""
        return self.near_copy_share - self.heldout_near_copy_share

    def copies(self, margin: float = 0.02) -> bool:
        """Whether the samples' near-copy share exceeds the held-out share by more than ``margin``."""
        return self.excess > check_number(margin, "margin", 0.0, 1.0)

    def verdict(self, margin: float = 0.02) -> str:
        """One sentence: copying (near-copies above the held-out share by more than ``margin``) or not."""
        share = f"{100 * self.near_copy_share:.1f}%"
        held = f"held-out: {100 * self.heldout_near_copy_share:.1f}%"
        dup = f"; {100 * self.duplicate_share:.1f}% are exact duplicates" if self.duplicate_share else ""
        if self.copies(margin):
            return (f"{share} of samples are near-copies of training points ({held}){dup}; "
                    f"nearest-neighbour distance ratio {self.ratio:.3g} ({self.space})")
        return (f"no sign of copying: {share} of samples are near-copies ({held}){dup}, "
                f"nearest-neighbour distance ratio {self.ratio:.3g} ({self.space})")

    def as_dict(self) -> dict[str, Any]:
        """Plain fields and ``excess``; NaN and infinite values become ``None`` (valid JSON)."""
        out: dict[str, Any] = asdict(self)
        out["excess"] = self.excess
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}


def _apply(features: Callable[[Tensor], Tensor], x: Tensor, name: str) -> Tensor:
    with torch.no_grad():
        f = features(x)
    if not torch.is_tensor(f) or f.dim() < 1 or f.shape[0] != x.shape[0]:
        got = tuple(f.shape) if torch.is_tensor(f) else type(f).__name__
        raise ValueError(
            f"features({name}) must return a tensor with one row per input ({x.shape[0]}), got {got}"
        )
    if f.dim() == 1:
        f = f[:, None]
    check_batch(f, f"features({name})")
    return f


def novelty(
    samples: Tensor,
    train: Tensor,
    held_out: Tensor,
    *,
    features: Callable[[Tensor], Tensor] | None = None,
    quantile: float = 0.01,
    cells: int = 1,
    space: str | None = None,
    chunk_size: int | None = 2048,
    device: torch.device | str | None = None,
    seed: int = 0,
) -> NoveltyReport:
    r"""How new ``samples`` are: their distances to ``train`` against those of ``held_out`` points.

    Parameters
    ----------
    samples, train, held_out : ``(m, *shape)``, ``(N, *shape)``, ``(n, *shape)``; flattened, so
        shapes need only agree in size. ``held_out`` (``n >= 2``) must come from the data
        distribution and not from ``train``.
    features : optional map applied to all three sets first (e.g.
        ``functools.partial(classifier_features, classifier)``); the tests then run in feature space.
    quantile : :math:`q` in (0, 0.5]: the near-copy threshold is the :math:`q`-quantile of the
        held-out distances (1st percentile by default); resolved only when :math:`nq \ge 1`.
    cells : k-means cells of :math:`C_T` (1: the global Mann-Whitney score, no extra cost).
    space : label kept in the report (default ``"features"`` with ``features``, else ``"data"``).
    chunk_size, device : blocks and device of :func:`nearest_neighbours`.
    seed : seeds the k-means cells when ``cells > 1``.
    """
    quantile = check_number(quantile, "quantile", 0.0, 0.5, low_open=True)
    cells = check_positive_int(cells, "cells", 10_000)
    flat = _check_sets(samples=samples, train=train, held_out=held_out)
    if flat["held_out"].shape[0] < 2:
        got = flat["held_out"].shape[0]
        raise ValueError(f"held_out needs at least 2 points, got {got}; hold out more data")
    if features is not None:
        if not callable(features):
            raise ValueError(
                f"features must be a callable mapping a batch to features, got {type(features).__name__}"
            )
        flat = _check_sets(**{name: _apply(features, x, name) for name, x in
                              (("samples", samples), ("train", train), ("held_out", held_out))})
    space = space if space is not None else ("features" if features is not None else "data")
    s, t, h = flat["samples"], flat["train"], flat["held_out"]
    n = h.shape[0]
    if n * quantile < 1:
        warnings.warn(
            f"quantile={quantile} of {n} held-out points is below their second-smallest distance; hold "
            f"out at least {math.ceil(1 / quantile)} points for the threshold to mean the {quantile:g} quantile",
            stacklevel=2,
        )
    kw: dict[str, Any] = {"chunk_size": chunk_size, "device": device}
    d_s = nearest_neighbours(s, t, **kw)[0].cpu().numpy()
    d_h = nearest_neighbours(h, t, **kw)[0].cpu().numpy()
    threshold = float(np.quantile(d_h, quantile))
    med_s, med_h = float(np.median(d_s)), float(np.median(d_h))
    if med_h > 0:
        ratio = med_s / med_h
    else:
        ratio = math.nan if med_s == 0 else math.inf
    if cells == 1:
        c_t = mann_whitney_z(d_s, d_h)
    else:
        c_t = data_copying_statistic(s, t, h, cells=cells, seed=seed, **kw)
    return NoveltyReport(
        space=space,
        n_samples=s.shape[0],
        n_train=t.shape[0],
        n_heldout=n,
        dim=s.shape[1],
        sample_median=med_s,
        sample_mean=float(d_s.mean()),
        heldout_median=med_h,
        heldout_mean=float(d_h.mean()),
        ratio=ratio,
        quantile=quantile,
        threshold=threshold,
        near_copy_share=float((d_s <= threshold).mean()),
        heldout_near_copy_share=float((d_h <= threshold).mean()),
        duplicate_share=float((d_s <= DUPLICATE_RTOL * med_h).mean()),
        c_t=c_t,
        cells=cells,
    )


def novelty_reports(
    samples: Tensor,
    train: Tensor,
    held_out: Tensor,
    features: Callable[[Tensor], Tensor],
    **kwargs: Any,
) -> dict[str, NoveltyReport]:
    """:func:`novelty` in the data space (pixels) and in ``features``: ``{"data": ..., "features": ...}``.

    ``kwargs`` go to both calls (``quantile``, ``cells``, ``chunk_size``, ``device``, ``seed``).
    """
    if "features" in kwargs or "space" in kwargs:
        raise ValueError("novelty_reports sets features and space itself; pass features positionally")
    return {
        "data": novelty(samples, train, held_out, space="data", **kwargs),
        "features": novelty(samples, train, held_out, features=features, space="features", **kwargs),
    }


@dataclass(frozen=True)
class TrainHeldoutFrechet:
    r"""Squared Fréchet distances of the samples' features to the train split and to the held-out split.

    ``reference`` is the held-out split's distance to the train split: what fresh data scores. A model
    that copies has ``train`` well below ``held_out``; one that generalises has them close. Fréchet
    estimates are biased upwards by :math:`O(1/n)`, so the train side is scored on subsets of the
    held-out split's size (``subset`` rows, averaged over ``repeats`` draws).
    """

    train: float
    held_out: float
    reference: float
    subset: int
    repeats: int

    @property
    def gap(self) -> float:
        """``held_out - train``: how much closer the samples are to the data they were trained on."""
        return self.held_out - self.train

    def as_dict(self) -> dict[str, float]:
        """The fields and ``gap``."""
        return {**asdict(self), "gap": self.gap}


def frechet_train_heldout(
    samples_feat: Tensor, train_feat: Tensor, held_feat: Tensor, *, repeats: int = 5, seed: int = 0
) -> TrainHeldoutFrechet:
    r"""Fréchet distance of sample features ``(m, d)`` to train ones ``(N, d)`` and held-out ones ``(n, d)``.

    With :math:`T_k` random subsets of :math:`\min(N, n)` training rows (``repeats`` of them,
    seeded by ``seed``) and :math:`F` :func:`~monge.metrics.frechet.frechet_distance_from_features`:
    ``train`` :math:`= \frac1K\sum_k F(S, T_k)`, ``held_out`` :math:`= F(S, H)`,
    ``reference`` :math:`= \frac1K\sum_k F(H, T_k)`. Equal set sizes give the three the same bias.
    """
    repeats = check_positive_int(repeats, "repeats", 1000)
    for name, x in (("samples_feat", samples_feat), ("train_feat", train_feat), ("held_feat", held_feat)):
        if not torch.is_tensor(x):
            raise ValueError(f"{name} must be a torch.Tensor of features (n, d), got {type(x).__name__}")
    size = min(train_feat.shape[0], held_feat.shape[0])
    g = torch.Generator().manual_seed(seed)
    subsets = [train_feat[torch.randperm(train_feat.shape[0], generator=g)[:size].to(train_feat.device)]
               for _ in range(repeats)]
    return TrainHeldoutFrechet(
        train=float(np.mean([frechet_distance_from_features(samples_feat, t) for t in subsets])),
        held_out=frechet_distance_from_features(samples_feat, held_feat),
        reference=float(np.mean([frechet_distance_from_features(held_feat, t) for t in subsets])),
        subset=size,
        repeats=repeats,
    )


def novelty_table(reports: Mapping[str, NoveltyReport], margin: float = 0.02) -> str:
    """Markdown table of named reports (a row each), with the copying flag at ``margin``."""
    if not reports:
        raise ValueError("reports is empty; pass a mapping of names to NoveltyReport")
    lines = [
        "| run | space | NN distance, median: samples / held-out | ratio | near-copies: samples / held-out "
        "| duplicates | C_T | copying? |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in reports.items():
        if not isinstance(r, NoveltyReport):
            raise ValueError(f"reports[{name!r}] must be a NoveltyReport, got {type(r).__name__}")
        flag = f"yes (+{100 * r.excess:.1f} pts)" if r.copies(margin) else "no"
        lines.append(
            f"| {name} | {r.space} | {r.sample_median:.4g} / {r.heldout_median:.4g} | {r.ratio:.3f} "
            f"| {100 * r.near_copy_share:.1f}% / {100 * r.heldout_near_copy_share:.1f}% "
            f"| {100 * r.duplicate_share:.1f}% | {r.c_t:.1f} | {flag} |"
        )
    return "\n".join(lines) + "\n"
