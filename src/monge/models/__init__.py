"""Networks ``model(x, t)``; any ``nn.Module`` with that signature works in their place."""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from ..registry import Registry
from .mlp import MLP

__all__ = ["MODELS", "MLP", "build_model"]

MODELS: Registry[nn.Module] = Registry("model")
MODELS.register("mlp")(MLP)


def build_model(name: str, params: dict[str, Any], shape: tuple[int, ...]) -> nn.Module:
    """Build the registered model ``name`` for samples of ``shape`` (vectors are flattened for the MLP)."""
    if name == "mlp":
        extra = {"shape": tuple(shape)} if len(shape) != 1 else {}
        return MODELS.build(name, dim=math.prod(shape), **params, **extra)
    return MODELS.build(name, **params)
