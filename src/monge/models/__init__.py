"""Networks ``model(x, t)``; any ``nn.Module`` with that signature works in their place."""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from ..registry import Registry
from .autoencoder import AutoEncoder
from .conditioning import ClassConditional, ContinuousConditional
from .mlp import MLP
from .unet import UNet

__all__ = ["MODELS", "MLP", "UNet", "AutoEncoder", "ClassConditional", "ContinuousConditional", "build_model",
           "set_attributes"]

MODELS: Registry[nn.Module] = Registry("model")
MODELS.register("mlp")(MLP)
MODELS.register("unet")(UNet)
MODELS.register("autoencoder")(AutoEncoder)


def build_model(name: str, params: dict[str, Any], shape: tuple[int, ...]) -> nn.Module:
    """Build the registered model ``name`` for samples of ``shape`` (vectors are flattened for the MLP;
    the U-Net and the autoencoder take ``shape = (C, H, W)``)."""
    if name == "mlp":
        extra = {"shape": tuple(shape)} if len(shape) != 1 else {}
        return MODELS.build(name, dim=math.prod(shape), **params, **extra)
    if name in ("unet", "autoencoder"):
        if "shape" in params:
            raise ValueError(f"{name}: shape is taken from the data; remove it from the model parameters")
        return MODELS.build(name, shape=tuple(shape), **params)
    return MODELS.build(name, **params)


def set_attributes(module: nn.Module, **attributes: Any) -> None:
    """Set plain attributes on ``module`` (e.g. a run's ``standardizer`` and ``prediction``, which
    :func:`monge.run.load.load_model` attaches); torch types ``Module.__setattr__`` for tensors and
    modules only."""
    for name, value in attributes.items():
        setattr(module, name, value)
