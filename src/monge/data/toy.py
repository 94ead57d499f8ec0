r"""Two-dimensional toy distributions for flow matching and diffusion experiments.

Every set is drawn in torch from an explicit :class:`torch.Generator`, is roughly zero-centred
and has a per-coordinate spread of one to a few units. Conventions (FFJORD, Grathwohl et al.
2019, where one exists; TorchCFM's ``8gaussians`` uses radius 5 instead):

=============== ==========================================================================
``gaussian``     :math:`\mathcal N(0, I_2)`, the usual source (t = 0).
``8gaussians``   equal-weight mixture, centres :math:`2\sqrt2\,(\cos\frac{k\pi}{4},
                 \sin\frac{k\pi}{4})`, :math:`k = 0..7`, isotropic std :math:`\sqrt2/4`.
``25gaussians``  equal-weight mixture on the grid :math:`\{-2,-1,0,1,2\}^2` (spacing 1),
                 std 0.1: modes are 10 std apart, for mode counting.
``moons``        two interleaved half circles of radius 1 (``sklearn.make_moons`` geometry),
                 centred by :math:`-(0.5, 0.25)`, scaled by 2; Gaussian noise std 0.2.
``circles``      two concentric circles of radii 2 and 1, equal mass, noise std 0.1.
``checkerboard`` uniform on the 8 unit squares :math:`[i, i+1]\times[j, j+1] \subset [-2, 2]^2`
                 with :math:`i + j` even.
``swissroll``    :math:`(t\cos t, t\sin t)/5` with :math:`t \sim U[1.5\pi, 4.5\pi]`, plus
                 Gaussian noise std 0.2 (FFJORD's ``make_swiss_roll(noise=1) / 5``).
=============== ==========================================================================

Randomness is drawn on the generator's device (CPU when none is given) and the result is moved
to ``device``, so a seeded CPU generator gives the same points on every device.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch import Tensor

from .._validation import MAX_SAMPLES_PER_CALL, check_positive_int
from ..registry import Registry

__all__ = ["TOY_DATASETS", "sample_toy", "sample_toy_with_labels", "toy_modes"]

#: Registered samplers ``f(n, generator, dtype) -> (n, 2)`` tensor on the generator's device.
TOY_DATASETS: Registry[Tensor] = Registry("toy dataset")

_SQRT2 = math.sqrt(2.0)
_8G_RADIUS = 2.0 * _SQRT2
_8G_STD = _SQRT2 / 4.0
_25G_SPACING = 1.0
_25G_STD = 0.1
_MOONS_SCALE = 2.0
_MOONS_NOISE = 0.2
_CIRCLES_RADII = (2.0, 1.0)
_CIRCLES_NOISE = 0.1
_SWISSROLL_NOISE = 0.2


def _gen_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, dtype: torch.dtype) -> Tensor:
    return torch.randn(shape, generator=generator, dtype=dtype, device=_gen_device(generator))


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, dtype: torch.dtype) -> Tensor:
    return torch.rand(shape, generator=generator, dtype=dtype, device=_gen_device(generator))


def _randint(high: int, n: int, generator: torch.Generator | None) -> Tensor:
    return torch.randint(high, (n,), generator=generator, device=_gen_device(generator))


@functools.cache
def _eight_centres(dtype: torch.dtype = torch.float32) -> Tensor:
    """The 8 centres (cached: shared, never modified in place; :func:`toy_modes` hands out copies)."""
    angle = torch.arange(8, dtype=torch.float64) * (math.pi / 4.0)
    unit = torch.stack([angle.cos(), angle.sin()], dim=1)
    unit = torch.where(unit.abs() < 1e-12, torch.zeros_like(unit), unit)  # exact zeros on the axes
    return (_8G_RADIUS * unit).to(dtype)


@functools.cache
def _grid_centres(dtype: torch.dtype = torch.float32) -> Tensor:
    """The 25 grid centres (cached like :func:`_eight_centres`)."""
    ticks = torch.arange(-2, 3, dtype=torch.float64) * _25G_SPACING
    gx, gy = torch.meshgrid(ticks, ticks, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1).to(dtype)


def _mixture_labelled(centres: Tensor, std: float, n: int, generator: torch.Generator | None,
                      dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    idx = _randint(centres.shape[0], n, generator)
    noise = _randn((n, 2), generator, dtype)
    return centres.to(device=noise.device, dtype=dtype)[idx] + std * noise, idx


def _mixture(centres: Tensor, std: float, n: int, generator: torch.Generator | None, dtype: torch.dtype) -> Tensor:
    return _mixture_labelled(centres, std, n, generator, dtype)[0]


def sample_toy_with_labels(
    name: str, n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """``(points (n, 2), mode index (n,))`` of a mixture set (``8gaussians``, ``25gaussians``): the
    same points as :func:`sample_toy` with the same generator, labelled by their mode."""
    _check_name(name)
    check_positive_int(n, "n", MAX_SAMPLES_PER_CALL)
    if name not in _MODES:
        raise ValueError(f"toy set {name!r} has no labels; the labelled sets are {', '.join(_MODES)}")
    centres, std = _MODES[name]()
    x, y = _mixture_labelled(centres, std, n, generator, dtype)
    return (x, y) if device is None else (x.to(device), y.to(device))


@TOY_DATASETS.register("gaussian")
def _gaussian(n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    return _randn((n, 2), generator, dtype)


@TOY_DATASETS.register("8gaussians")
def _eight_gaussians(n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    return _mixture(_eight_centres(), _8G_STD, n, generator, dtype)


@TOY_DATASETS.register("25gaussians")
def _grid_gaussians(n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    return _mixture(_grid_centres(), _25G_STD, n, generator, dtype)


def moons_labelled(n: int, generator: torch.Generator | None = None,
                   dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """``moons`` points and their moon (0: upper, 1: lower): the same points as ``moons``."""
    # upper moon (cos a, sin a); lower moon (1 - cos a, 0.5 - sin a); a ~ U[0, pi]
    lower = _randint(2, n, generator)
    angle = math.pi * _rand((n,), generator, dtype)
    x = torch.where(lower.bool(), 1.0 - angle.cos(), angle.cos())
    y = torch.where(lower.bool(), 0.5 - angle.sin(), angle.sin())
    pts = torch.stack([x - 0.5, y - 0.25], dim=1) * _MOONS_SCALE
    return pts + _MOONS_NOISE * _randn((n, 2), generator, dtype), lower


@TOY_DATASETS.register("moons")
def _moons(n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    return moons_labelled(n, generator, dtype)[0]


@TOY_DATASETS.register("circles")
def _circles(n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    inner = _randint(2, n, generator).bool()
    radius = torch.where(inner, _CIRCLES_RADII[1], _CIRCLES_RADII[0]).to(dtype)
    angle = 2.0 * math.pi * _rand((n,), generator, dtype)
    pts = radius[:, None] * torch.stack([angle.cos(), angle.sin()], dim=1)
    return pts + _CIRCLES_NOISE * _randn((n, 2), generator, dtype)


@TOY_DATASETS.register("checkerboard")
def _checkerboard(n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    # pick one of the 8 cells with i + j even, then a uniform point inside it
    cell = _randint(8, n, generator)
    i = cell // 2  # column 0..3
    j = 2 * (cell % 2) + (i % 2)  # row 0..3 with i + j even
    corner = torch.stack([i, j], dim=1).to(dtype) - 2.0
    return corner + _rand((n, 2), generator, dtype)


@TOY_DATASETS.register("swissroll")
def _swissroll(n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    t = 1.5 * math.pi * (1.0 + 2.0 * _rand((n,), generator, dtype))
    pts = torch.stack([t * t.cos(), t * t.sin()], dim=1) / 5.0
    return pts + _SWISSROLL_NOISE * _randn((n, 2), generator, dtype)


_MODES: dict[str, Callable[[], tuple[Tensor, float]]] = {
    "8gaussians": lambda: (_eight_centres(), _8G_STD),
    "25gaussians": lambda: (_grid_centres(), _25G_STD),
}


def _check_name(name: object) -> str:
    if not isinstance(name, str) or name not in TOY_DATASETS:
        raise ValueError(
            f"name must be one of the toy datasets {', '.join(TOY_DATASETS.names())}; got {name!r}"
        )
    return name


def sample_toy(
    name: str,
    n: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Draw ``n`` points ``(n, 2)`` from the toy set ``name`` (see the module table).

    Parameters
    ----------
    name : one of ``TOY_DATASETS.names()``.
    n : number of samples (positive int).
    generator : source of randomness; sampling happens on its device, then moves to ``device``.
    device : output device; defaults to the generator's device (CPU without a generator).
    dtype : floating output dtype.

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> sample_toy("moons", 4, generator=g).shape
    torch.Size([4, 2])
    """
    _check_name(name)
    check_positive_int(n, "n", MAX_SAMPLES_PER_CALL)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch.dtype such as torch.float32, got {dtype!r}")
    out = TOY_DATASETS.get(name)(n, generator, dtype)
    return out if device is None else out.to(device)


def toy_modes(name: str) -> tuple[Tensor, float] | None:
    """Mode centres ``(K, 2)`` (float32, CPU) and the common std of a mixture set, else ``None``.

    ``8gaussians`` has K = 8 and ``25gaussians`` K = 25; the other sets are not Gaussian
    mixtures and give ``None``. Feed the result to :func:`monge.metrics.mode_stats`.
    """
    _check_name(name)
    modes = _MODES.get(name)
    if modes is None:
        return None
    centres, std = modes()
    return centres.clone(), std
