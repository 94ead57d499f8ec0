"""The independent coupling (I-CFM)."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import COUPLINGS, Coupled, Coupling


@COUPLINGS.register("independent")
class Independent(Coupling):
    r"""Independent coupling :math:`\pi = \mu \otimes \nu` (I-CFM, Lipman et al. 2023)."""

    def pair(self, x0: Tensor, x1: Tensor, generator: torch.Generator | None) -> Coupled:
        n = min(x0.shape[0], x1.shape[0])
        return Coupled(x0[:n], x1[:n], plan_entropy=1.0)
