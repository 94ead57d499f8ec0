"""Networks ``model(x, t)``; any ``nn.Module`` with that signature works in their place."""

from ..registry import Registry
from .mlp import MLP

MODELS: Registry = Registry("model")
MODELS.register("mlp")(MLP)

__all__ = ["MODELS", "MLP"]
