"""Deprecated alias of :mod:`monge.samplers.timesteps` (step grids), kept for one release.

"Schedule" now means the alpha/sigma :class:`monge.paths.Schedule` only; import step grids from
:mod:`monge.samplers.timesteps` (or :mod:`monge.samplers`).
"""

import warnings
from typing import Any

from . import timesteps as _timesteps
from .timesteps import *  # noqa: F401,F403

warnings.warn("monge.samplers.schedules is deprecated; import from monge.samplers.timesteps",
              DeprecationWarning, stacklevel=2)

__all__ = list(_timesteps.__all__)  # the old names STEP_SCHEDULES, fit_optimized_schedule: via __getattr__


def __getattr__(name: str) -> Any:
    return getattr(_timesteps, name)  # old names (with their own warning) and private helpers
