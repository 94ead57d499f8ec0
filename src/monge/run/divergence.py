"""Stopping a run that went wrong: a NaN/Inf loss or gradient, or a loss far above its running median.

After ``DIVERGENCE_WARMUP`` steps, a loss above ``DIVERGENCE_FACTOR`` times the median of the last
``DIVERGENCE_WINDOW`` losses stops the run (as a NaN/Inf loss does). The window is saved with each
checkpoint, so a resumed run is guarded at once.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = ["TrainingError", "DivergenceGuard", "clip_gradients", "DIVERGENCE_FACTOR", "DIVERGENCE_WARMUP",
           "DIVERGENCE_WINDOW"]

DIVERGENCE_FACTOR = 1e4
DIVERGENCE_WARMUP = 100
DIVERGENCE_WINDOW = 100


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN/Inf)."""


def clip_gradients(model: nn.Module, max_norm: float | None) -> Tensor:
    """The total gradient norm of ``model``'s parameters, clipped to ``max_norm`` first when given."""
    params = [p for p in model.parameters() if p.grad is not None]
    if max_norm is not None:
        return nn.utils.clip_grad_norm_(params, max_norm)
    return nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])


class DivergenceGuard:
    """The recent losses of a run and the checks that stop it, naming the step and what to do."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        #: the last ``DIVERGENCE_WINDOW`` losses
        self.losses: deque[float] = deque(maxlen=DIVERGENCE_WINDOW)

    @property
    def advice(self) -> str:
        if not (Path(self.run_dir) / "checkpoint.safetensors").is_file():  # stopped before a first checkpoint
            return ("no checkpoint was written yet. Lower train.lr or enable train.grad_clip and run the same command "
                    "again (it starts the run again), or check the data for extreme values.")
        return (f"the last good checkpoint is kept in {self.run_dir}. Lower train.lr or enable "
                "train.grad_clip (both take effect on --resume), or check the data for extreme values.")

    def check_loss(self, value: float, step: int) -> float:
        """``value`` (the loss of step ``step + 1``) when finite and not diverged, else :class:`TrainingError`."""
        if not math.isfinite(value):
            raise TrainingError(f"loss is {value} at step {step + 1} (batch drawn from generator state after "
                                f"step {step}); " + self.advice)
        if len(self.losses) < min(DIVERGENCE_WARMUP, DIVERGENCE_WINDOW):
            return value
        median = statistics.median(self.losses)
        if median > 0 and value > DIVERGENCE_FACTOR * median:
            raise TrainingError(
                f"training diverged at step {step + 1}: loss {value:.4g} is {value / median:.3g} times "
                f"its running median {median:.4g} over the last {len(self.losses)} steps (limit "
                f"{DIVERGENCE_FACTOR:g}x); " + self.advice)
        return value

    def check_gradient(self, norm: Tensor, step: int) -> None:
        if not bool(torch.isfinite(norm)):
            raise TrainingError(f"the gradient is non-finite ({float(norm)}) at step {step + 1}; " + self.advice)

    def record(self, value: float) -> None:
        self.losses.append(value)

    def reset(self, window: list[float]) -> None:
        """Back to the stored window of a checkpoint."""
        self.losses.clear()
        self.losses.extend(window[-DIVERGENCE_WINDOW:])
