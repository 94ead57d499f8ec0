r"""Quick mode: ``MONGE_QUICK=1`` cuts every long command-line step to a few seconds.

It is for trying the commands (the README's walk-through, a CI smoke run), not for results:
training runs take :math:`\lceil s / 50 \rceil` of their ``s`` steps, reflow generates at most
512 pairs, a semi-discrete OT fit stops after 200 iterations, evaluations score 200 samples and
the demo trains :math:`\lceil s / 50 \rceil` steps per model. The command line reads the variable; the Python
API never does.
"""

from __future__ import annotations

import math
import os

__all__ = [
    "MAX_EVAL_SAMPLES",
    "MAX_FIT_ITER",
    "MAX_PAIRS",
    "QUICK_ENV",
    "STEP_DIVISOR",
    "quick_cap",
    "quick_config",
    "quick_mode",
    "quick_steps",
]

QUICK_ENV = "MONGE_QUICK"
#: Quick mode keeps ``ceil(steps / STEP_DIVISOR)`` training steps.
STEP_DIVISOR = 50
#: Quick mode caps reflow's generated pairs at this many.
MAX_PAIRS = 512
#: Quick mode caps a semi-discrete OT fit at this many iterations.
MAX_FIT_ITER = 200
#: Quick mode caps the samples of an evaluation (and of the fit-ot check) at this many.
MAX_EVAL_SAMPLES = 200


def quick_mode() -> bool:
    """Whether ``MONGE_QUICK`` is set to ``1`` (unset, empty or ``0``: off; anything else is an error)."""
    value = os.environ.get(QUICK_ENV, "").strip()
    if value not in ("", "0", "1"):
        raise ValueError(f"{QUICK_ENV} must be 1 (quick mode) or 0 / unset (normal), got {value!r}")
    return value == "1"


def quick_steps(steps: int) -> int:
    """``steps``, or ``ceil(steps / STEP_DIVISOR)`` in quick mode."""
    return max(1, math.ceil(steps / STEP_DIVISOR)) if quick_mode() else steps


def quick_cap(value: int, cap: int) -> int:
    """``value``, or at most ``cap`` in quick mode."""
    return min(value, cap) if quick_mode() else value


def quick_config(cfg) -> str | None:
    """In quick mode cut the recipe ``cfg`` (a :class:`monge.config.Config`) in place: its training
    steps, evaluation samples and semi-discrete OT fit; returns the note saying so (``None``: off)."""
    if not quick_mode():
        return None
    steps = cfg.train.steps
    cfg.train.steps = quick_steps(steps)
    cfg.train.eval_samples = min(cfg.train.eval_samples, MAX_EVAL_SAMPLES)
    note = (f"{QUICK_ENV}=1: {cfg.train.steps} of the recipe's {steps} steps, "
            f"{cfg.train.eval_samples} samples per evaluation")
    if cfg.coupling.name == "semidiscrete_ot":
        cfg.coupling.params["max_iter"] = min(int(cfg.coupling.params.get("max_iter", MAX_FIT_ITER)), MAX_FIT_ITER)
        note += f", semi-discrete OT fit capped at {cfg.coupling.params['max_iter']} iterations"
    return note + " (a quick try: results are not meaningful)"
