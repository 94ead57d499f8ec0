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

__all__ = ["MAX_FIT_ITER", "MAX_PAIRS", "MAX_SAMPLES", "QUICK_ENV", "STEP_DIVISOR", "quick_cap", "quick_mode", "quick_steps"]

QUICK_ENV = "MONGE_QUICK"
#: Quick mode keeps ``ceil(steps / STEP_DIVISOR)`` training steps.
STEP_DIVISOR = 50
#: Quick mode caps reflow's generated pairs at this many.
MAX_PAIRS = 512
#: Quick mode caps a semi-discrete OT fit at this many iterations.
MAX_FIT_ITER = 200
#: Quick mode caps the samples of an evaluation (and of the fit-ot check) at this many.
MAX_SAMPLES = 200


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
