"""Samplers: one registry, :data:`SAMPLERS`, of functions with one signature (:mod:`.base`):
fixed-step and adaptive ODE solvers (:mod:`.ode`), few-step diffusion samplers on any prediction
type (:mod:`.diffusion`), the Euler-Maruyama SDE sampler (:mod:`.sde`), the jumps of flow maps
(:mod:`.flow_map`: ``mean_flow``, ``shortcut``), and step grids (:mod:`.timesteps`).

:func:`sample` runs any sampler with an NFE budget on a uniform grid from ``t0`` to ``t1``;
:func:`solve` runs it on a given grid of flow times with a :class:`~monge.paths.Schedule`.
Each sampler is registered with its cost per step, from which :func:`steps_for_nfe` follows.
"""

import warnings
from typing import Any

from .base import SAMPLERS, SampleOutput, SamplerInfo, nfe_for_steps, sample, solve, steps_for_nfe
from .ode import dopri5, euler, heun, midpoint, rk4
from .diffusion import ddim, dpm_solver_pp, heun_edm, unipc
from .sde import euler_maruyama
from .flow_map import mean_flow, shortcut
from .timesteps import (GRIDS, EvalTimeWarp, fit_eval_times, karras, make_timesteps, optimized,
                        optimized_decoupled, uniform_log_snr, uniform_t)

__all__ = [
    "SAMPLERS", "SampleOutput", "SamplerInfo", "nfe_for_steps", "sample", "solve", "steps_for_nfe",
    "dopri5", "euler", "heun", "midpoint", "rk4",
    "ddim", "dpm_solver_pp", "heun_edm", "unipc",
    "euler_maruyama",
    "mean_flow", "shortcut",
    "GRIDS", "EvalTimeWarp", "fit_eval_times", "karras", "make_timesteps", "optimized", "optimized_decoupled",
    "uniform_log_snr", "uniform_t",
]

#: Old names kept for one release (each access warns): name -> (module, new name).
_DEPRECATED = {
    "MODEL_SAMPLERS": (".diffusion", "SAMPLERS"),
    "STEP_COST": (".diffusion", "SAMPLERS.info(name).evals_per_step"),
    "EVALS_PER_STEP": (".ode", "SAMPLERS.info(name).evals_per_step"),
    "STEP_SCHEDULES": (".timesteps", "GRIDS"),
    "fit_optimized_schedule": (".timesteps", "optimized"),
}


def __getattr__(name: str) -> Any:
    if name in _DEPRECATED:
        import importlib

        module = importlib.import_module(_DEPRECATED[name][0], __name__)
        with warnings.catch_warnings():  # warn once, here, pointing at the caller
            warnings.simplefilter("ignore", DeprecationWarning)
            value = getattr(module, name)
        warnings.warn(f"monge.samplers.{name} is deprecated; use monge.samplers.{_DEPRECATED[name][1]}",
                      DeprecationWarning, stacklevel=2)
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
