r"""Couplings: which source (noise) sample each data sample is trained against.

A coupling takes a source batch ``x0`` and a target batch ``x1`` and returns them re-paired,
optionally with per-pair loss weights. Pairing by optimal transport shortens and straightens
the conditional paths, so the learned flow needs fewer steps.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from ._validation import check_batch
from .ot.exact import assignment, squared_euclidean_cost
from .registry import Registry

__all__ = ["COUPLINGS", "Coupled", "Coupling", "Independent", "ExactOT"]

COUPLINGS: Registry["Coupling"] = Registry("coupling")


@dataclass(frozen=True)
class Coupled:
    """Paired batches; ``weights`` (shape ``(batch,)``, mean 1) scale each pair's loss."""

    x0: Tensor
    x1: Tensor
    weights: Tensor | None = None


class Coupling(ABC):
    """Base class: ``coupling(x0, x1, generator) -> Coupled``."""

    def __call__(self, x0: Tensor, x1: Tensor, generator: torch.Generator | None = None) -> Coupled:
        check_batch(x0, "x0")
        check_batch(x1, "x1")
        if x0.shape[1:] != x1.shape[1:]:
            raise ValueError(
                f"x0 and x1 must share their sample shape, got {tuple(x0.shape[1:])} and {tuple(x1.shape[1:])}"
            )
        return self.pair(x0, x1, generator)

    @abstractmethod
    def pair(self, x0: Tensor, x1: Tensor, generator: torch.Generator | None) -> Coupled: ...


@COUPLINGS.register("independent")
class Independent(Coupling):
    r"""Independent coupling :math:`\pi = \mu \otimes \nu` (I-CFM, Lipman et al. 2023)."""

    def pair(self, x0: Tensor, x1: Tensor, generator: torch.Generator | None) -> Coupled:
        n = min(x0.shape[0], x1.shape[0])
        return Coupled(x0[:n], x1[:n])


@COUPLINGS.register("exact_ot")
class ExactOT(Coupling):
    r"""Minibatch exact OT (OT-CFM, Tong et al. 2023; Pooladian et al. 2023).

    Pairs ``x0[perm[j]]`` with ``x1[j]`` where ``perm`` solves the assignment problem

    .. math:: \min_{\sigma} \sum_i \|x_0^{\sigma(i)} - x_1^{i}\|^2 .

    Every sample is used exactly once (a permutation, not pairs re-drawn from the plan with
    replacement). Equal batch sizes are required.
    """

    def pair(self, x0: Tensor, x1: Tensor, generator: torch.Generator | None) -> Coupled:
        if x0.shape[0] != x1.shape[0]:
            raise ValueError(
                f"exact_ot needs equal batch sizes, got x0: {x0.shape[0]} and x1: {x1.shape[0]}"
            )
        cost = squared_euclidean_cost(x1, x0)  # rows: data, cols: noise
        perm = assignment(cost)
        return Coupled(x0[perm], x1)
