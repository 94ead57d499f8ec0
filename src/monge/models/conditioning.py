r"""Class-conditional sampling: a labelled model seen as an ``(x, t)`` field, with guidance.

Classifier-free guidance (Ho & Salimans 2022) mixes the conditional and the unconditional
(null-label) predictions of one network trained with label dropout:

.. math:: v_w(x, t \mid y) = v(x, t \mid \varnothing) + w\,\big(v(x, t \mid y) - v(x, t \mid \varnothing)\big),

so ``w = 1`` is the plain conditional field, ``w = 0`` the unconditional one and ``w > 1``
sharpens the class. Any prediction type (velocity, noise, data) mixes the same way.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .._validation import check_number

__all__ = ["ClassConditional", "ContinuousConditional"]


class ClassConditional(nn.Module):
    """``model(x, t, y)`` with fixed labels ``y``, as the ``model(x, t)`` every sampler calls.

    Parameters
    ----------
    model : a network with ``forward(x, t, y)`` and an integer ``num_classes``; label
        ``num_classes`` is the unconditional null class (e.g. :class:`monge.models.UNet`).
    labels : an int (one class for every sample) or ``(n,)`` integer labels of the batch.
    guidance : the guidance weight ``w`` (``>= 0``); default 1, no guidance. ``w != 1`` costs
        one batched forward pass over twice the batch.
    """

    def __init__(self, model: nn.Module, labels: int | Tensor, guidance: float = 1.0) -> None:
        super().__init__()
        k = getattr(model, "num_classes", None)
        if k is None:
            raise ValueError("the model is not class-conditional: build it with num_classes=K (e.g. UNet)")
        check_number(guidance, "guidance", 0.0)
        y = torch.as_tensor(labels)
        if y.is_floating_point() or y.is_complex() or y.dim() > 1:
            raise ValueError(f"labels must be an int or a 1-D integer tensor, got {y.dtype} {tuple(y.shape)}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= k):
            raise ValueError(
                f"labels must be classes in [0, {k}), got {y.tolist() if y.numel() < 10 else 'values outside'}"
            )
        self.model, self.labels, self.guidance, self.num_classes = model, y.long(), float(guidance), k
        self.second_time = bool(getattr(model, "second_time", False))

    def _labels(self, x: Tensor) -> Tensor:
        y = self.labels.to(x.device)
        if y.dim() == 0:
            return y.expand(x.shape[0])
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"{y.shape[0]} labels for a batch of {x.shape[0]}; give one label per sample or an int")
        return y

    def forward(self, x: Tensor, t: Tensor | float, r: Tensor | float | None = None) -> Tensor:
        """The guided prediction at ``(x, t)``; ``r``: the end time of a flow map (``second_time``)."""
        y = self._labels(x)
        kw = {} if r is None else {"r": r}
        if self.guidance == 1.0:
            return self.model(x, t, y, **kw)
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(x.shape[0]) if t.dim() == 0 else t
        null = torch.full_like(y, self.num_classes)
        if r is not None:
            r = torch.as_tensor(r, device=x.device)
            r = r.expand(x.shape[0]) if r.dim() == 0 else r
            kw = {"r": torch.cat([r, r])}
        out = self.model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]), **kw)
        cond, uncond = out.chunk(2)
        return uncond + self.guidance * (cond - uncond)


class ContinuousConditional(nn.Module):
    """``model(x, t, c)`` with fixed continuous conditions ``c``, as the ``model(x, t)`` every sampler calls.

    Parameters
    ----------
    model : a network with ``forward(x, t, c)`` and an integer ``cond_dim`` (e.g.
        :class:`monge.models.MLP` built with ``cond_dim``).
    conditions : ``(n, cond_dim)`` real conditions, one per sample, or ``(cond_dim,)`` for one
        condition shared by every sample; finite.
    """

    def __init__(self, model: Callable[..., Tensor], conditions: Tensor) -> None:
        super().__init__()
        k = getattr(model, "cond_dim", None)
        if k is None:
            raise ValueError("the model takes no continuous condition: build it with cond_dim=k (mlp)")
        c = torch.as_tensor(conditions)
        if c.dim() == 0:
            c = c.reshape(1)
        if not c.is_floating_point():
            c = c.double() if not c.is_complex() else c
        if c.is_complex() or c.dim() > 2 or c.shape[-1:] != (k,) and not (k == 1 and c.dim() == 1):
            raise ValueError(f"conditions must be ({k},) or (n, {k}) real values, got {c.dtype} {tuple(c.shape)}")
        if not bool(torch.isfinite(c).all()):
            raise ValueError("conditions hold NaN or Inf; give finite condition values")
        if k == 1 and c.dim() == 1 and c.shape[0] != 1:
            c = c[:, None]  # (n,) values of a 1-D condition
        self.model, self.conditions, self.cond_dim = model, c.float(), k

    def _conditions(self, x: Tensor) -> Tensor:
        c = self.conditions.to(device=x.device, dtype=x.dtype)
        if c.dim() == 1:
            return c.expand(x.shape[0], self.cond_dim)
        if c.shape[0] != x.shape[0]:
            raise ValueError(f"{c.shape[0]} conditions for a batch of {x.shape[0]}; give one per sample or one for all")
        return c

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        return self.model(x, t, self._conditions(x))
