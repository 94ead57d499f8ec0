"""Samplers: fixed-step and adaptive ODE solvers for velocity fields (:mod:`.ode`), few-step
diffusion samplers on any prediction type (:mod:`.diffusion`), the Euler-Maruyama SDE sampler
(:mod:`.sde`) and step schedules (:mod:`.schedules`).

``SAMPLERS`` / :func:`sample` take a velocity ``field(x, t)``; ``MODEL_SAMPLERS`` / :func:`solve`
take ``model(x, t)`` of any prediction type plus a :class:`~monge.paths.Schedule` and a grid.
"""

from .ode import EVALS_PER_STEP, SAMPLERS, SampleOutput, dopri5, euler, heun, midpoint, rk4, sample
from .diffusion import MODEL_SAMPLERS, STEP_COST, ddim, dpm_solver_pp, heun_edm, solve, steps_for_nfe, unipc
from .sde import euler_maruyama
from .schedules import (STEP_SCHEDULES, EvalTimeWarp, fit_eval_times, fit_optimized_schedule, karras,
                        make_timesteps, optimized, optimized_decoupled, uniform_log_snr, uniform_t)

__all__ = [
    "EVALS_PER_STEP", "SAMPLERS", "SampleOutput", "dopri5", "euler", "heun", "midpoint", "rk4", "sample",
    "MODEL_SAMPLERS", "STEP_COST", "ddim", "dpm_solver_pp", "heun_edm", "solve", "steps_for_nfe", "unipc",
    "euler_maruyama",
    "STEP_SCHEDULES", "EvalTimeWarp", "fit_eval_times", "fit_optimized_schedule", "optimized_decoupled", "karras", "make_timesteps", "optimized", "uniform_log_snr",
    "uniform_t",
]
