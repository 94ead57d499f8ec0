r"""Time embeddings for ``t`` in [0, 1]."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["SinusoidalEmbedding", "FourierEmbedding", "time_embedding", "step_of", "FLOW_MAP_HINT"]


class SinusoidalEmbedding(nn.Module):
    r"""Transformer-style embedding :math:`[\sin(s t\,\omega_k), \cos(s t\,\omega_k)]`,
    :math:`\omega_k = 10000^{-k/(K-1)}`, with ``s = scale`` (1000 maps t in [0,1] to the usual range)."""

    freqs: Tensor  # a buffer (register_buffer), declared for the type checker

    def __init__(self, dim: int, scale: float = 1000.0) -> None:
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"time embedding dim must be an even integer >= 2, got {dim}")
        half = dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half) / max(half - 1, 1))
        self.register_buffer("freqs", freqs * scale, persistent=False)
        self.dim = dim

    def forward(self, t: Tensor) -> Tensor:
        arg = t.reshape(-1, 1).to(self.freqs.dtype) * self.freqs
        return torch.cat([arg.sin(), arg.cos()], dim=-1)


class FourierEmbedding(nn.Module):
    r"""Random Fourier features :math:`[\sin(2\pi B t), \cos(2\pi B t)]`, :math:`B \sim N(0, s^2)` (fixed)."""

    B: Tensor  # a buffer (register_buffer), declared for the type checker

    def __init__(self, dim: int, scale: float = 16.0, seed: int = 0) -> None:
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"time embedding dim must be an even integer >= 2, got {dim}")
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("B", torch.randn(dim // 2, generator=g) * scale)
        self.dim = dim

    def forward(self, t: Tensor) -> Tensor:
        arg = 2 * math.pi * t.reshape(-1, 1).to(self.B.dtype) * self.B
        return torch.cat([arg.sin(), arg.cos()], dim=-1)


def time_embedding(kind: str, dim: int, scale: float | None = None) -> nn.Module:
    """The embedding ``kind`` of width ``dim``; ``scale`` (default: the embedding's own, 1000 for
    ``sinusoidal``, 16 for ``fourier``) sets its highest frequency. A flow map differentiates its
    network in ``t`` (MeanFlow's JVP), which a lower scale keeps smooth (e.g. 10)."""
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))
                              or not 0 < scale < math.inf):
        raise ValueError(f"time embedding scale must be a positive number, got {scale!r}")
    if kind == "sinusoidal":
        return SinusoidalEmbedding(dim) if scale is None else SinusoidalEmbedding(dim, scale=float(scale))
    if kind == "fourier":
        return FourierEmbedding(dim) if scale is None else FourierEmbedding(dim, scale=float(scale))
    raise ValueError(f"unknown time_embedding {kind!r}; valid choices: fourier, sinusoidal")


#: What a flow map (a network of two times) needs when called as a velocity field ``model(x, t)``.
FLOW_MAP_HINT = ("this network is a flow map u(x, t, r) (second_time=True, trained with the mean_flow or shortcut "
                 "objective) and needs the end time r: sample it with the 'mean_flow' or 'shortcut' sampler, or "
                 "call model(x, t, r=t) for its instantaneous velocity")


def step_of(t: Tensor, r: Tensor | float | None, batch: int, like: Tensor) -> Tensor:
    r"""The step :math:`h = r - t` of a flow map's two times, ``(batch,)``; ``r`` is required."""
    if r is None:
        raise ValueError(FLOW_MAP_HINT)
    r = torch.as_tensor(r, dtype=like.dtype, device=like.device)
    if r.dim() == 0:
        r = r.expand(batch)
    if r.shape != (batch,):
        raise ValueError(f"r must be a scalar or have shape ({batch},), got {tuple(r.shape)}")
    return r - t
