"""Data sources: anything that draws ``(n, *shape)`` samples from an explicit generator.

A run's source (t=0) and target (t=1) are both data sources, so ``gaussian -> moons`` and
``8gaussians -> moons`` are configured the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..registry import Registry

__all__ = ["DATA_SOURCES", "DataSource", "ToySource", "build_source"]

DATA_SOURCES: Registry["DataSource"] = Registry("data source")


class DataSource:
    """Base class. ``shape`` is the shape of one sample."""

    shape: tuple[int, ...]

    def sample(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> Tensor:
        raise NotImplementedError

    def modes(self) -> tuple[Tensor, float] | None:
        """Mode centres ``(K, *shape)`` and their std, for mode-coverage metrics; ``None`` if not a mixture."""
        return None


@dataclass
class ToySource(DataSource):
    """One of the 2D sets of :mod:`monge.data.toy`."""

    name: str
    shape: tuple[int, ...] = (2,)

    def sample(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> Tensor:
        from .toy import sample_toy

        return sample_toy(self.name, n, generator=generator).to(device)

    def modes(self) -> tuple[Tensor, float] | None:
        from .toy import toy_modes

        return toy_modes(self.name)


def _register_toy() -> None:
    from .toy import TOY_DATASETS

    for name in TOY_DATASETS.names():
        DATA_SOURCES.register(name)(lambda name=name: ToySource(name))


_register_toy()


def build_source(name: str) -> DataSource:
    """The data source registered as ``name`` (the error lists valid names)."""
    return DATA_SOURCES.build(name)
