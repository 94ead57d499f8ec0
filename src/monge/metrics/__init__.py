"""Evaluation metrics: Wasserstein distances, MMD, path straightness, mode statistics."""

from .mmd import median_bandwidth, mmd_rbf
from .modes import ModeStats, mode_stats
from .straightness import straightness
from .wasserstein import sliced_wasserstein, wasserstein2

__all__ = [
    "wasserstein2",
    "sliced_wasserstein",
    "mmd_rbf",
    "median_bandwidth",
    "straightness",
    "ModeStats",
    "mode_stats",
]
