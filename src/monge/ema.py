r"""Exponential moving average of model weights.

.. math:: \bar\theta \leftarrow \beta_k \bar\theta + (1 - \beta_k)\theta,\qquad
          \beta_k = \min\big(\beta, \tfrac{1 + k}{10 + k}\big)

(the warm-up keeps early averages from being dominated by the random initialisation).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """Holds a frozen copy of ``model`` updated by :meth:`update` after each optimiser step."""

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        beta = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for avg, cur in zip(self.model.parameters(), model.parameters(), strict=True):
            avg.lerp_(cur.detach(), 1.0 - beta)
        for avg_buf, cur_buf in zip(self.model.buffers(), model.buffers(), strict=True):
            avg_buf.copy_(cur_buf)
        self.updates += 1
