"""Samplers: one registry, :data:`SAMPLERS`, of functions with one signature (:mod:`.base`):
fixed-step and adaptive ODE solvers (:mod:`.ode`), few-step diffusion samplers on any prediction
type (:mod:`.diffusion`), the Euler-Maruyama SDE sampler (:mod:`.sde`), the jumps of flow maps
(:mod:`.flow_map`: ``mean_flow``, ``shortcut``), and step grids (:mod:`.timesteps`).

:func:`sample` runs any sampler by name, on an NFE budget of uniform steps or on a grid of flow
times. Each sampler is registered with its cost per step, from which :func:`steps_for_nfe` follows;
:func:`prepare_sampling`, :class:`Denoiser`, :class:`SamplingGrid` and :func:`finish` are the
helpers for writing one.
"""

from .base import (
                   SAMPLERS,
                   Denoiser,
                   SampleOutput,
                   SamplerInfo,
                   SamplingGrid,
                   finish,
                   nfe_for_steps,
                   prepare_sampling,
                   sample,
                   steps_for_nfe,
)
from .diffusion import ddim, dpm_solver_pp, heun_edm, unipc
from .flow_map import mean_flow, shortcut
from .ode import dopri5, euler, heun, midpoint, rk4
from .sde import euler_maruyama
from .timesteps import (
                   GRIDS,
                   EvalTimeWarp,
                   fit_eval_times,
                   karras,
                   make_timesteps,
                   optimized,
                   optimized_decoupled,
                   uniform_log_snr,
                   uniform_t,
)

__all__ = [
    "SAMPLERS", "SampleOutput", "SamplerInfo", "nfe_for_steps", "sample", "steps_for_nfe",
    "prepare_sampling", "Denoiser", "SamplingGrid", "finish",
    "dopri5", "euler", "heun", "midpoint", "rk4",
    "ddim", "dpm_solver_pp", "heun_edm", "unipc",
    "euler_maruyama",
    "mean_flow", "shortcut",
    "GRIDS", "EvalTimeWarp", "fit_eval_times", "karras", "make_timesteps", "optimized", "optimized_decoupled",
    "uniform_log_snr", "uniform_t",
]
