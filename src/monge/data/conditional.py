r"""Conditional 2D tasks: toy points that carry a class or a continuous condition.

``conditional_toy`` draws the points of a 2D toy set (:mod:`monge.data.toy`) together with a
condition :math:`c` of each point, for conditional generation :math:`p(x \mid c)`:

=========== ===================================================================================
``class``   the point's class: ``moons``: its moon (0 upper, 1 lower); ``8gaussians``,
            ``25gaussians``: its mode index. ``(n,)`` int64 (``sample_with_labels``).
``x``, ``y`` the point's own first / second coordinate, a ``(n, 1)`` real condition
            (``sample_with_conditions``), as in C2OT's continuous 2D tasks.
=========== ===================================================================================

With ``source: 8gaussians`` and ``set: moons`` this is the conditional 8gaussians -> moons task of
C2OT (Cheng & Schwing 2025): ``condition: class`` is its discrete variant, ``x`` its continuous one.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._validation import MAX_SAMPLES_PER_CALL, check_positive_int
from .sources import DATA_SOURCES, DataSource

__all__ = ["CONDITIONS", "ConditionalToy"]

#: the conditions of :class:`ConditionalToy`
CONDITIONS = ("class", "x", "y")
_CLASSES = {"moons": 2, "8gaussians": 8, "25gaussians": 25}


@DATA_SOURCES.register("conditional_toy")
class ConditionalToy(DataSource):
    """Points of the toy set ``set`` with their condition (see the module docstring).

    Parameters
    ----------
    set : ``moons``, ``8gaussians`` or ``25gaussians`` (``class``), or any toy set (``x``, ``y``).
    condition : ``class``, ``x`` or ``y``.
    """

    shape = (2,)

    def __init__(self, set: str = "moons", condition: str = "class") -> None:
        from .toy import TOY_DATASETS

        if condition not in CONDITIONS:
            raise ValueError(f"conditional_toy: condition must be one of {', '.join(CONDITIONS)}, got {condition!r}")
        if set not in TOY_DATASETS or set == "gaussian":
            valid = [n for n in TOY_DATASETS.names() if n != "gaussian"]
            raise ValueError(f"conditional_toy: set must be a toy set ({', '.join(valid)}), got {set!r}")
        if condition == "class" and set not in _CLASSES:
            raise ValueError(f"conditional_toy: set {set!r} has no classes; the class sets are "
                             f"{', '.join(_CLASSES)} (or use condition: x / y)")
        self.set, self.condition = set, condition

    def __repr__(self) -> str:
        return f"ConditionalToy(set={self.set!r}, condition={self.condition!r})"

    @property
    def labels(self) -> Tensor | None:
        """The classes ``0..K-1`` (``condition: class``), else ``None``."""
        return torch.arange(_CLASSES[self.set]) if self.condition == "class" else None

    @property
    def num_classes(self) -> int | None:
        return _CLASSES[self.set] if self.condition == "class" else None

    @property
    def cond_dim(self) -> int | None:
        """The size of a continuous condition (1 for ``x``, ``y``); ``None`` for classes."""
        return None if self.condition == "class" else 1

    def _draw(self, n: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        from .toy import moons_labelled, sample_toy, sample_toy_with_labels

        check_positive_int(n, "n", MAX_SAMPLES_PER_CALL)
        if self.condition != "class":
            x = sample_toy(self.set, n, generator=generator)
            return x, x[:, CONDITIONS.index(self.condition) - 1:CONDITIONS.index(self.condition)].clone()
        if self.set == "moons":
            return moons_labelled(n, generator)
        return sample_toy_with_labels(self.set, n, generator=generator)

    def sample(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> Tensor:
        return self._draw(n, generator)[0].to(device)

    def sample_with_labels(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> tuple[Tensor, Tensor]:
        """Points and their ``(n,)`` classes (``condition: class``); the same points as :meth:`sample`."""
        if self.condition != "class":
            raise ValueError(f"conditional_toy with condition: {self.condition} has continuous conditions, not "
                             "classes: use sample_with_conditions (a model with cond_dim, not num_classes)")
        x, y = self._draw(n, generator)
        return x.to(device), y.to(device)

    def sample_with_conditions(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> tuple[Tensor, Tensor]:
        """Points and their ``(n, cond_dim)`` real conditions (``condition: x`` or ``y``)."""
        if self.condition == "class":
            raise ValueError("conditional_toy with condition: class has classes, not continuous conditions: use "
                             "sample_with_labels (a model with num_classes, not cond_dim)")
        x, c = self._draw(n, generator)
        return x.to(device), c.to(device)

    def modes(self) -> tuple[Tensor, float] | None:
        from .toy import toy_modes

        return toy_modes(self.set)
