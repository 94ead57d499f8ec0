"""Input checks shared by public functions. Each raises ``ValueError`` naming the argument."""

from __future__ import annotations

import torch

__all__ = ["check_finite", "check_batch", "check_same_shape", "check_positive_int", "MAX_SAMPLES"]


def check_finite(x: torch.Tensor, name: str) -> None:
    """Raise if ``x`` holds NaN or Inf."""
    if not torch.is_tensor(x):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} contains {bad} NaN/Inf values; clean or filter the input first")


def check_batch(x: torch.Tensor, name: str, min_dim: int = 2) -> None:
    """Raise unless ``x`` is a non-empty finite ``(batch, *shape)`` tensor."""
    check_finite(x, name)
    if x.dim() < min_dim:
        raise ValueError(
            f"{name} must have shape (batch, *shape) with at least {min_dim} dims, "
            f"got shape {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty (batch size 0)")


def check_same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )


#: Largest number of samples one call may draw (2^27 points of 2D float32 is 1 GiB).
MAX_SAMPLES = 2**27


def check_positive_int(value: object, name: str, maximum: int | None = None) -> int:
    """Return ``value`` if it is an int in ``[1, maximum]``; else raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name}={value} is too large (at most {maximum}); draw in smaller chunks")
    return value
