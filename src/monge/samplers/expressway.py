r"""DPM-OT's "expressway" (Li et al. 2023): start sampling from the semi-discrete OT cell's target,
forward-noised to an intermediate time, and integrate only the rest of the path.

:class:`Expressway` is the typed setting (map, start time, path) that training, sampling and
evaluation pass around; :func:`expressway_start` and :func:`expressway_sample` do the work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .._validation import check_batch, check_number

if TYPE_CHECKING:  # pragma: no cover
    from ..ot.semidiscrete import SemiDiscreteMap
    from ..paths import ProbPath
    from ..predictions import Model
    from .base import SampleOutput

__all__ = ["DEFAULT_T_START", "Expressway", "expressway_start", "expressway_sample"]

#: Start time of the expressway in evaluations and ``monge eval`` of runs holding a map.
DEFAULT_T_START = 0.5


def _check_t_start(t_start: object) -> float:
    return check_number(t_start, "t_start", 0.0, 1.0, high_open=True)


@dataclass(frozen=True)
class Expressway:
    r"""Where the expressway starts: the fitted ``map``, the start time ``t_start`` in [0, 1) and
    the ``path`` whose forward noising :math:`x_{t_s} = \sigma_{t_s}\xi + \alpha_{t_s} T(z)` is used."""

    map: SemiDiscreteMap
    t_start: float = DEFAULT_T_START
    path: ProbPath | str = "linear"

    def __post_init__(self) -> None:
        object.__setattr__(self, "t_start", _check_t_start(self.t_start))

    def sample(self, model: Model, noise: Tensor, **options) -> SampleOutput:
        """:func:`expressway_sample` with this setting."""
        return expressway_sample(model, self.map, noise, t_start=self.t_start, path=self.path, **options)


def _schedule_of(path: ProbPath | str):
    from ..paths import PATHS

    p = PATHS.build(path) if isinstance(path, str) else path
    sched = getattr(p, "schedule", None)
    if sched is None or not hasattr(sched, "alpha") or not hasattr(sched, "sigma"):
        raise ValueError("path must have a schedule with alpha(t) and sigma(t) (an affine path), got "
                         f"{type(p).__name__}")
    return sched


def expressway_start(
    sd_map: SemiDiscreteMap,
    noise: Tensor,
    t_start: float = 0.5,
    path: ProbPath | str = "linear",
    generator: torch.Generator | None = None,
    reuse_noise: bool = False,
) -> tuple[Tensor, float]:
    r"""Start of DPM-OT's "expressway": the cell's target noised to an intermediate time.

    Each noise :math:`z` is mapped to its cell's target :math:`y = T(z)` and the sampler is
    started at ``t_start`` from

    .. math:: x_{t_s} = \sigma_{t_s}\,\xi + \alpha_{t_s}\,y ,

    the path's forward noising of :math:`y` (Li et al. 2023, DPM-OT), with :math:`\xi` fresh
    standard noise from ``generator`` (default) or :math:`\xi = z` itself (``reuse_noise``:
    the exact training point of a model trained with ``semidiscrete_ot`` pairs, which then
    reproduces :math:`y`). Integrating the remaining :math:`[t_s, 1]` takes a fraction
    :math:`1 - t_s` of the time, so few steps suffice.

    Trade-off: ``t_start -> 1`` copies training points (fast, no diversity beyond the
    :math:`N` targets); ``t_start -> 0`` is ordinary sampling (diverse, slow). The default 0.5
    keeps the map's mode assignment (no mode mixing) while the noise level
    :math:`\sigma_{0.5}` of the linear path (0.5 per coordinate for standardised data)
    re-randomises the sample within its mode; pair it with 2-4 Euler/Heun steps.

    Returns ``(x_t, t_start)``, with ``x_t`` on the device and dtype of ``noise``.
    """
    check_batch(noise, "noise")
    t_start = _check_t_start(t_start)
    sched = _schedule_of(path)
    _, y = sd_map(noise)
    y = y.to(device=noise.device, dtype=noise.dtype)
    if reuse_noise:
        xi = noise
    else:
        dev = (generator.device if generator is not None else noise.device)
        xi = torch.randn(noise.shape, generator=generator, device=dev, dtype=noise.dtype).to(noise.device)
    t = torch.tensor(float(t_start), dtype=noise.dtype, device=noise.device)
    return sched.sigma(t) * xi + sched.alpha(t) * y, float(t_start)


def expressway_sample(
    model: Model,
    sd_map: SemiDiscreteMap,
    noise: Tensor,
    t_start: float = 0.5,
    sampler: str = "euler",
    nfe: int = 4,
    path: ProbPath | str = "linear",
    generator: torch.Generator | None = None,
    reuse_noise: bool = False,
    return_trajectory: bool = False,
) -> SampleOutput:
    """Sample by the expressway: :func:`expressway_start`, then ``sampler`` with ``nfe``
    evaluations over :math:`[t_{start}, 1]` (:func:`monge.samplers.sample`)."""
    from .base import sample

    x, t0 = expressway_start(sd_map, noise, t_start, path, generator, reuse_noise)
    return sample(model, x, sampler=sampler, nfe=nfe, t0=t0, return_trajectory=return_trajectory,
                  schedule=_schedule_of(path), generator=generator)

