r"""Time embeddings for ``t`` in [0, 1]."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["SinusoidalEmbedding", "FourierEmbedding", "time_embedding"]


class SinusoidalEmbedding(nn.Module):
    r"""Transformer-style embedding :math:`[\sin(s t\,\omega_k), \cos(s t\,\omega_k)]`,
    :math:`\omega_k = 10000^{-k/(K-1)}`, with ``s = scale`` (1000 maps t in [0,1] to the usual range)."""

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


def time_embedding(kind: str, dim: int) -> nn.Module:
    if kind == "sinusoidal":
        return SinusoidalEmbedding(dim)
    if kind == "fourier":
        return FourierEmbedding(dim)
    raise ValueError(f"unknown time_embedding {kind!r}; valid choices: fourier, sinusoidal")
