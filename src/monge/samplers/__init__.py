"""Samplers: fixed-step and adaptive ODE solvers for learned velocity fields."""

from .ode import EVALS_PER_STEP, SAMPLERS, SampleOutput, dopri5, euler, heun, midpoint, rk4, sample

__all__ = ["EVALS_PER_STEP", "SAMPLERS", "SampleOutput", "dopri5", "euler", "heun", "midpoint", "rk4", "sample"]
