"""Data: 2D toy sets, analytic Gaussian mixtures, bundled photographs and generic data sources."""

from . import conditional as _conditional  # noqa: F401 (registers conditional_toy)
from .gmm import GaussianMixture
from .photos import load_faces, load_textures
from .toy import TOY_DATASETS, sample_toy, toy_modes

__all__ = ["GaussianMixture", "TOY_DATASETS", "load_faces", "load_textures", "sample_toy", "toy_modes"]
