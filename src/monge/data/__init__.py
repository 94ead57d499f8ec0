"""Data: 2D toy sets, analytic Gaussian mixtures and generic data sources."""

from .toy import TOY_DATASETS, sample_toy, toy_modes

__all__ = ["TOY_DATASETS", "sample_toy", "toy_modes"]

# TODO(integration): replace the guard with a plain import once data/gmm.py has landed.
try:
    from .gmm import GaussianMixture
except ImportError:  # pragma: no cover - module not written yet
    pass
else:
    __all__ += ["GaussianMixture"]
