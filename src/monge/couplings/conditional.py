r"""Conditional OT couplings (C2OT, Cheng & Schwing 2025): batch OT that respects the condition."""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from torch import Tensor

from .._validation import check_number
from ..ot.exact import METHODS, squared_euclidean_cost
from .base import COUPLINGS, Coupled, Coupling, Traits, check_equal_batches, flat, gen_device


def _permutation(n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    return torch.randperm(n, generator=generator, device=gen_device(generator, device)).to(device)


@COUPLINGS.register("conditional_ot")
class ConditionalOT(Coupling):
    r"""Minibatch exact OT that never pairs noise across conditions (C2OT, Cheng & Schwing 2025).

    Plain batch OT pairs each data point with the noise nearest to it, so the noise seen with a
    condition :math:`y` is no longer :math:`\mathcal N(0, I)`: a conditional model then meets, at
    sampling time, noise it was never trained on for that :math:`y`, and its few-step samples
    collapse (the "curse of conditions"). C2OT lets the noise carry a condition :math:`y_0`
    drawn from the data's own conditions (a random permutation of the batch's
    :math:`y_1`) and solves

    .. math:: \min_\sigma \sum_j \|x_0^{\sigma(j)} - x_1^j\|^2 + w\,\|y_0^{\sigma(j)} - y_1^j\|^2 .

    ``condition="discrete"`` (class labels, ``(B,)`` integers) is the limit :math:`w \to \infty`:
    the noise batch is split at random into one share per class, of the class's size in the
    data batch, and each class is paired with its own share by exact OT (one assignment per
    class). ``condition="continuous"`` (``(B,)`` or ``(B, k)`` real conditions) uses the cost
    above with ``weight`` :math:`w` (``w = 0`` is plain ``exact_ot``).

    The result is a permutation of the noise batch, so the noise stays :math:`\mathcal N(0, I)`
    overall, and, given a class, the noise of that class is a uniformly random share of the
    noise batch: its law is :math:`\mathcal N(0, I)` too. Labels stay aligned with the data
    (``index1`` is ``None``). A class with one point in the batch gets one random noise (the
    independent coupling for that point; a ``RuntimeWarning`` at the first such batch,
    ``singleton_classes`` counts them); small classes are paired by OT on few points, which
    straightens their paths less. Missing labels, labels of the wrong size or kind, NaN/Inf
    conditions and ``weight < 0`` raise ``ValueError`` before any pairing. Label dropout for
    classifier-free guidance is applied by the
    trainer after the pairing (the pairing always uses the true class).

    Parameters
    ----------
    condition : {"discrete", "continuous"}
    weight : float
        :math:`w \ge 0`, the condition distance's weight (continuous conditions only).
    solver : {"auto", "scipy", "emd", "auction"}
        The assignment solver (:func:`monge.ot.exact.assignment`).
    target_r : float, optional
        Continuous conditions: choose :math:`w` on every batch instead of ``weight``, as C2OT
        does (:func:`adaptive_weight`): the share of (data, noise) entries whose cost is at most
        the data point's drawn pair's is brought to ``target_r`` (C2OT: 0.05). ``last_weight``
        holds the batch's :math:`w`.

    References
    ----------
    Cheng, H. K. & Schwing, A. (2025). The curse of conditions: analyzing and improving optimal
    transport for conditional flow-based generation (C2OT).
    """

    traits = Traits(uses_labels=True)

    def __init__(
        self,
        condition: Literal["discrete", "continuous"] = "discrete",
        weight: float = 1.0,
        solver: str = "auto",
        target_r: float | None = None,
    ) -> None:
        if condition not in ("discrete", "continuous"):
            raise ValueError(f"condition must be 'discrete' or 'continuous', got {condition!r}")
        if solver not in METHODS:
            raise ValueError(f"solver must be one of {', '.join(map(repr, METHODS))}, got {solver!r}")
        self.condition, self.solver = condition, solver
        self.weight = check_number(weight, "weight", 0.0, float("inf"), high_open=True)
        self.target_r = None if target_r is None else check_number(target_r, "target_r", 0.0, 1.0, low_open=True,
                                                                    high_open=True)
        if self.target_r is not None and condition != "continuous":
            raise ValueError("target_r sets the condition weight of condition: continuous; drop it for classes")
        #: the condition weight of the latest batch (``weight``, or the one ``target_r`` chose)
        self.last_weight = self.weight
        #: classes met with a single point in a batch (each paired with a random noise of its share)
        self.singleton_classes = 0

    def pair(self, x0: Tensor, x1: Tensor, generator: torch.Generator | None, labels: Tensor | None = None) -> Coupled:
        check_equal_batches(x0, x1, "conditional_ot")
        return Coupled(x0[self.permutation(x0, x1, labels, generator)], x1, plan_entropy=0.0)

    def check_labels(self, labels: Tensor | None, batch: int) -> Tensor:
        """The labels as a tensor, checked against the batch size and ``condition``."""
        if labels is None:
            raise ValueError(
                "conditional_ot needs the data's labels: call coupling(x0, x1, generator, labels=y); in training, "
                "use a labelled data.target (8gaussians, 25gaussians, digits, ...) with a class-conditional model")
        y = torch.as_tensor(labels)
        if y.dim() == 0 or y.shape[0] != batch:
            raise ValueError(f"conditional_ot: {tuple(y.shape)} labels for a data batch of {batch}; give one per point")
        if self.condition == "discrete":
            if y.is_floating_point() or y.is_complex() or y.dim() != 1:
                raise ValueError(f"conditional_ot with condition: discrete needs (B,) integer class labels, got "
                                 f"{y.dtype} {tuple(y.shape)}; use condition: continuous for real-valued conditions")
            return y
        if y.dim() > 2 or not y.is_floating_point():
            raise ValueError(f"conditional_ot with condition: continuous needs (B,) or (B, k) real conditions, got "
                             f"{y.dtype} {tuple(y.shape)}")
        if not bool(torch.isfinite(y).all()):
            raise ValueError("conditional_ot: the conditions hold NaN or Inf; clean or impute them before training")
        return y

    def _assign(self, cost: Tensor) -> Tensor:
        from ..ot.exact import assignment

        return assignment(cost, method=self.solver)  # type: ignore[call-overload]  # solver: checked in __init__

    def permutation(self, x0: Tensor, x1: Tensor, labels: Tensor | None, generator: torch.Generator | None) -> Tensor:
        """``perm``: data point ``j`` gets noise ``perm[j]`` (see the class docstring)."""
        b = x1.shape[0]
        y = self.check_labels(labels, b).to(x1.device)
        shuffled = _permutation(b, generator, x1.device)  # the noise's own (random) condition slots
        a0, a1 = flat(x0), flat(x1)
        if self.condition == "continuous":
            y0, y1 = y[shuffled].reshape(b, -1).float(), y.reshape(b, -1).float()
            cost, dist = squared_euclidean_cost(a1, a0), squared_euclidean_cost(y1, y0)
            w = self.weight if self.target_r is None else adaptive_weight(cost, dist, self.target_r)
            self.last_weight = w
            return self._assign(cost + w * dist if w > 0 else cost)
        order = torch.argsort(y, stable=True)  # data sorted by class
        counts = torch.unique_consecutive(y[order], return_counts=True)[1].tolist()
        perm = torch.empty(b, dtype=torch.int64, device=x1.device)
        self._warn_singletons(counts, b)
        start = 0
        for n in counts:
            rows, noise = order[start:start + n], shuffled[start:start + n]  # a random share of size n
            local = self._assign(squared_euclidean_cost(a1[rows], a0[noise])) if n > 1 else torch.zeros(
                1, dtype=torch.int64, device=x1.device)
            perm[rows] = noise[local.to(x1.device)]
            start += n
        return perm

    def _warn_singletons(self, counts: list[int], batch: int) -> None:
        """Count the classes with one point in the batch; warn at the first such batch."""
        ones = sum(1 for n in counts if n == 1)
        if ones:
            self.singleton_classes += ones
            if self.singleton_classes == ones:
                warnings.warn(
                    f"conditional_ot: {ones} class(es) have a single point in this batch of {batch}; each is paired "
                    "with one random noise of its share (the independent coupling for that point: the noise stays "
                    "N(0, I), the path is not straightened). Raise batch_size so that every class has several points "
                    "per batch (singleton_classes counts them; warned once).", RuntimeWarning, stacklevel=4)


def adaptive_weight(cost: Tensor, dist: Tensor, r: float, max_iter: int = 30, max_weight: float = 1e8) -> float:
    r"""The condition weight :math:`w \ge 0` at which a share ``r`` of the batch's entries is cheap (C2OT):

    .. math:: \rho(w) = \frac1{B^2}\sum_{j,i} \mathbf 1\big[C_{ji} + w D_{ji} \le C_{jj}\big] = r,

    with :math:`C_{ji}` the squared distance of data :math:`j` to noise :math:`i` (``cost``),
    :math:`D_{ji}` that of their conditions (``dist``) and :math:`C_{jj}` the cost of data
    :math:`j`'s drawn (independent) pair. :math:`\rho` decreases in :math:`w`; 0 when
    :math:`\rho(0) \le r` already. Exponential search from 1, then ``max_iter`` bisection steps
    (at most ``max_weight``).
    """
    diag = cost.diagonal()[:, None]

    def share(w: float) -> float:
        return float(((cost + w * dist) <= diag).double().mean())

    if share(0.0) <= r:
        return 0.0
    low, high = 0.0, 1.0
    while share(high) > r:
        low, high = high, high * 2
        if high > max_weight:
            return max_weight
    for _ in range(max_iter):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if share(mid) > r else (low, mid)
    return high
