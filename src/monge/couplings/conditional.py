r"""Conditional OT couplings (C2OT, Cheng & Schwing 2025): batch OT that respects the condition."""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from torch import Tensor

from .._validation import check_number
from ..ot.exact import METHODS, squared_euclidean_cost
from .base import COUPLINGS, Coupled, Coupling, check_equal_batches, flat, gen_device


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
    conditions and ``weight < 0`` raise ``ValueError`` before any pairing. Label dropout for classifier-free guidance is applied by the
    trainer after the pairing (the pairing always uses the true class).

    Parameters
    ----------
    condition : {"discrete", "continuous"}
    weight : float
        :math:`w \ge 0`, the condition distance's weight (continuous conditions only).
    solver : {"auto", "scipy", "emd", "auction"}
        The assignment solver (:func:`monge.ot.exact.assignment`).

    References
    ----------
    Cheng, H. K. & Schwing, A. (2025). The curse of conditions: analyzing and improving optimal
    transport for conditional flow-based generation (C2OT).
    """

    uses_labels = True

    def __init__(
        self,
        condition: Literal["discrete", "continuous"] = "discrete",
        weight: float = 1.0,
        solver: str = "auto",
    ) -> None:
        if condition not in ("discrete", "continuous"):
            raise ValueError(f"condition must be 'discrete' or 'continuous', got {condition!r}")
        if solver not in METHODS:
            raise ValueError(f"solver must be one of {', '.join(map(repr, METHODS))}, got {solver!r}")
        self.condition, self.solver = condition, solver
        self.weight = check_number(weight, "weight", 0.0, float("inf"), high_open=True)
        #: classes met with a single point in a batch (each paired with a random noise of its share)
        self.singleton_classes = 0

    def pair(self, x0: Tensor, x1: Tensor, generator: torch.Generator | None) -> Coupled:
        raise ValueError(
            "conditional_ot needs the data's labels: call coupling(x0, x1, generator, labels=y); in training, "
            "use a labelled data.target (8gaussians, 25gaussians, digits, ...) with a class-conditional model")

    def check_labels(self, labels: Tensor | None, batch: int) -> Tensor:
        """The labels as a tensor, checked against the batch size and ``condition``."""
        if labels is None:
            self.pair(torch.empty(0), torch.empty(0), None)  # raises the missing-labels error
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

        return assignment(cost, method=self.solver)  # type: ignore[arg-type]

    def permutation(self, x0: Tensor, x1: Tensor, labels: Tensor, generator: torch.Generator | None) -> Tensor:
        """``perm``: data point ``j`` gets noise ``perm[j]`` (see the class docstring)."""
        b = x1.shape[0]
        y = self.check_labels(labels, b).to(x1.device)
        shuffled = _permutation(b, generator, x1.device)  # the noise's own (random) condition slots
        a0, a1 = flat(x0), flat(x1)
        if self.condition == "continuous":
            y0, y1 = y[shuffled].reshape(b, -1).float(), y.reshape(b, -1).float()
            cost = squared_euclidean_cost(a1, a0)
            if self.weight > 0:
                cost = cost + self.weight * squared_euclidean_cost(y1, y0)
            return self._assign(cost)
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

    def pair_labelled(
        self, x0: Tensor, x1: Tensor, labels: Tensor | None, generator: torch.Generator | None
    ) -> Coupled:
        check_equal_batches(x0, x1, "conditional_ot")
        return Coupled(x0[self.permutation(x0, x1, labels, generator)], x1, plan_entropy=0.0)
