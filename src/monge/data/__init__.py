"""Data: 2D toy sets, analytic Gaussian mixtures and generic data sources."""

from . import conditional as _conditional  # noqa: F401 (registers conditional_toy)
from .gmm import GaussianMixture
from .toy import TOY_DATASETS, sample_toy, toy_modes

__all__ = ["GaussianMixture", "TOY_DATASETS", "sample_toy", "toy_modes"]
