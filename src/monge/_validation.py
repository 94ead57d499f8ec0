"""Input checks shared by public functions. Each raises ``ValueError`` naming the argument."""

from __future__ import annotations

import math
from typing import Literal, overload

import torch

__all__ = [
    "check_finite",
    "check_batch",
    "check_batches",
    "check_same_shape",
    "check_positive_int",
    "check_number",
    "check_positive",
    "MAX_SAMPLES_PER_CALL",
]


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


def check_batches(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    """Raise unless ``a`` and ``b`` are non-empty finite batches of one sample shape (sizes may differ)."""
    check_batch(a, name_a)
    check_batch(b, name_b)
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(
            f"{name_a} and {name_b} must have the same sample shape, got {tuple(a.shape[1:])} and {tuple(b.shape[1:])}"
        )


def check_same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )


#: Largest number of samples one call may draw (2^27 points of 2D float32 is 1 GiB).
MAX_SAMPLES_PER_CALL = 2**27


def check_positive_int(value: object, name: str, maximum: int | None = None) -> int:
    """Return ``value`` if it is an int in ``[1, maximum]``; else raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name}={value} is too large (at most {maximum}); draw in smaller chunks")
    return value


def check_number(
    value: object,
    name: str,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
) -> float:
    """Return ``value`` (an int when ``integer``) if it is a real number (not a bool) in the
    interval from ``low`` to ``high`` (ends excluded when ``*_open``); else raise ``ValueError``."""
    kinds = (int,) if integer else (int, float)
    number = None if isinstance(value, bool) or not isinstance(value, kinds) else value
    typed = number is not None and not math.isnan(number)
    if number is None or not typed or not ((number > low if low_open else number >= low)
                                           and (number < high if high_open else number <= high)):
        interval = ("(" if low_open else "[") + f"{low:g}, {high:g}" + (")" if high_open else "]")
        what = "an integer in" if integer else ("in" if typed else "a number in")
        raise ValueError(f"{name} must be {what} {interval}, got {value!r}")
    return number if integer else float(number)


@overload
def check_positive(
    value: object, name: str, *, allow_none: Literal[False] = False, allow_inf: bool = False
) -> float: ...


@overload
def check_positive(value: object, name: str, *, allow_none: bool, allow_inf: bool = False) -> float | None: ...


def check_positive(
    value: object, name: str, *, allow_none: bool = False, allow_inf: bool = False
) -> float | None:
    """Return ``float(value)`` if it is a positive number, finite unless ``allow_inf`` (``None``
    passes when ``allow_none``); else raise ``ValueError``."""
    if value is None and allow_none:
        return None
    finite = "" if allow_inf else "finite "
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a positive {finite}number, got {value!r}")
    v = float(value)
    if not v > 0 or (v == math.inf and not allow_inf):
        raise ValueError(f"{name} must be a positive {finite}number, got {value!r}")
    return v
