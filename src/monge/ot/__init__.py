"""Optimal-transport solvers on torch tensors (no generative-model code here)."""

from .exact import assignment, squared_euclidean_cost
from .sliced import sliced_wasserstein

__all__ = ["assignment", "squared_euclidean_cost", "sliced_wasserstein"]
