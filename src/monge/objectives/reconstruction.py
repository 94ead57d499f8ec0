r"""The autoencoder's objective: reconstruct the data, nothing to sample.

A run of model ``autoencoder`` (:class:`~monge.models.autoencoder.AutoEncoder`) trains with the same
trainer as a flow (resume, atomic checkpoints, EMA, progress) on the loss of
:func:`~monge.models.autoencoder.reconstruction_loss`,

.. math:: \mathcal L = \mathrm{MSE}(D(z), x_1) + \beta\,\mathrm{KL}(q(z \mid x_1)\,\|\,\mathcal N(0, I)),

of the data batch :math:`x_1` alone: the pairs' noise :math:`x_0`, the times and the path are
ignored (such a run pairs with ``independent``). Its decoder is the latent space of a flow
recipe's ``data.latent``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from .base import OBJECTIVES, Net, Objective

__all__ = ["ReconstructionObjective"]


@OBJECTIVES.register("reconstruction")
class ReconstructionObjective(Objective):
    """Autoencoder training: ``net(x1, generator=..., return_loss=True)``; logs the MSE and KL parts."""

    prediction: ClassVar[str] = "reconstruction"
    #: an autoencoder run has nothing to sample
    sampler_kind: ClassVar[str | None] = None

    def loss(self, net: Net, pairs: Any, t: Tensor, path: Any, *, labels: Tensor | None = None,
             generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        loss, parts = net(pairs.x1, generator=generator, return_loss=True)
        return loss, {k: float(v) for k, v in parts.items()}
