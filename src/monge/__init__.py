"""monge: optimal-transport-aware flow matching and diffusion.

``import monge`` gives the everyday names; each is imported from its module on first use, so
``import monge`` itself stays cheap (no torch) and ``monge.X`` is ``monge.<module>.X`` (a name never shadows a
submodule's name):

================================================ =============================================
``COUPLINGS``, ``Coupled``                       :mod:`monge.couplings`
``PATHS``, ``SCHEDULES``                         :mod:`monge.paths`
``OBJECTIVES``                                   :mod:`monge.objectives`
``TIMES``                                        :mod:`monge.times`
``SAMPLERS``, ``GRIDS``, ``sample``              :mod:`monge.samplers`
``MODELS``, ``MLP``, ``UNet``, ``build_model``   :mod:`monge.models`
``DATA_SOURCES``, ``build_source``               :mod:`monge.data.sources`
``PREDICTIONS``                                  :mod:`monge.predictions`
``Config``, ``ConfigError``, ``load_config``,    :mod:`monge.config`
``build_path``
``Trainer``, ``TrainResult``, ``TrainingError``  :mod:`monge.train`
``load_model``                                   :mod:`monge.run.load`
``log_likelihood``                               :mod:`monge.flow_likelihood`
================================================ =============================================
"""

from __future__ import annotations

from importlib import import_module

__version__ = "0.1.0"

#: Each public name and the module that holds it.
_HOME: dict[str, str] = {
    "COUPLINGS": "monge.couplings",
    "Coupled": "monge.couplings",
    "PATHS": "monge.paths",
    "SCHEDULES": "monge.paths",
    "OBJECTIVES": "monge.objectives",
    "TIMES": "monge.times",
    "SAMPLERS": "monge.samplers",
    "GRIDS": "monge.samplers",
    "sample": "monge.samplers",
    "MODELS": "monge.models",
    "MLP": "monge.models",
    "UNet": "monge.models",
    "build_model": "monge.models",
    "DATA_SOURCES": "monge.data.sources",
    "build_source": "monge.data.sources",
    "PREDICTIONS": "monge.predictions",
    "Config": "monge.config",
    "ConfigError": "monge.config",
    "load_config": "monge.config",
    "build_path": "monge.config",
    "Trainer": "monge.train",
    "TrainResult": "monge.train",
    "TrainingError": "monge.train",
    "load_model": "monge.run.load",
    "log_likelihood": "monge.flow_likelihood",
}

__all__ = ["__version__", *_HOME]

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ imports on first use
    from typing import Any

    from .config import Config, ConfigError, build_path, load_config
    from .couplings import COUPLINGS, Coupled
    from .data.sources import DATA_SOURCES, build_source
    from .flow_likelihood import log_likelihood
    from .models import MLP, MODELS, UNet, build_model
    from .objectives import OBJECTIVES
    from .paths import PATHS, SCHEDULES
    from .predictions import PREDICTIONS
    from .run.load import load_model
    from .samplers import GRIDS, SAMPLERS, sample
    from .times import TIMES
    from .train import Trainer, TrainingError, TrainResult


def __getattr__(name: str) -> Any:
    """``monge.<name>``: import it from its module (:data:`_HOME`) on first use, then keep it."""
    if name not in _HOME:
        raise AttributeError(f"module 'monge' has no attribute {name!r}")
    value = getattr(import_module(_HOME[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME})
