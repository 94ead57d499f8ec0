r"""Time-conditioned MLP :math:`v_\theta(x, t)` for low-dimensional data."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .embeddings import time_embedding as _time_embedding

__all__ = ["MLP"]


def _prod(shape: tuple[int, ...]) -> int:
    out = 1
    for s in shape:
        out *= s
    return out

_ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU, "selu": nn.SELU, "tanh": nn.Tanh}


class MLP(nn.Module):
    """``depth`` hidden layers of width ``hidden`` on ``concat(x, embed(t))``.

    Accepts ``x`` of shape ``(batch, dim)`` and ``t`` of shape ``(batch,)`` or a scalar. With
    ``shape`` (e.g. ``(1, 8, 8)``, ``prod(shape) == dim``) it takes ``(batch, *shape)`` and
    flattens: a baseline for small images, where a U-Net does better.
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 256,
        depth: int = 3,
        time_embedding: str = "sinusoidal",
        time_dim: int = 32,
        activation: str = "silu",
        shape: tuple[int, ...] | list[int] | None = None,
    ) -> None:
        super().__init__()
        for name, value, top in (("dim", dim, 2**20), ("hidden", hidden, 2**16), ("depth", depth, 256),
                                 ("time_dim", time_dim, 2**12)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MLP {name} must be a positive integer, got {value!r}")
            if value > top:
                raise ValueError(f"MLP {name}={value} is unreasonably large (at most {top})")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; valid: {', '.join(sorted(_ACTIVATIONS))}")
        self.shape = (dim,) if shape is None else tuple(int(s) for s in shape)
        if len(self.shape) == 0 or any(s < 1 for s in self.shape) or _prod(self.shape) != dim:
            raise ValueError(f"MLP shape {shape!r} must be positive sizes whose product is dim={dim}")
        self.dim = dim
        self.embed = _time_embedding(time_embedding, time_dim)
        act = _ACTIVATIONS[activation]
        layers: list[nn.Module] = [nn.Linear(dim + time_dim, hidden), act()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), act()]
        layers.append(nn.Linear(hidden, dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        if tuple(x.shape[1:]) != self.shape:
            want = ", ".join(map(str, self.shape))
            raise ValueError(f"MLP expects x of shape (batch, {want}), got {tuple(x.shape)}")
        batch = x.shape[0]
        x = x.reshape(batch, self.dim)
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        return self.net(torch.cat([x, self.embed(t).to(x.dtype)], dim=-1)).reshape(batch, *self.shape)
