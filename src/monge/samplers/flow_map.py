r"""Samplers of flow maps :math:`u_\theta(x, t, r)` (``mean_flow`` and ``shortcut`` runs, :mod:`monge.objectives`).

Each step is one jump of the learned map from grid time :math:`t_k` to :math:`t_{k+1}`,

.. math:: x_{k+1} = x_k + (t_{k+1} - t_k)\,u_\theta(x_k, t_k, t_{k+1}),

one network evaluation per step, on an increasing grid (``t = 0`` noise to ``t = 1`` data: the
models are trained on jumps forward in time, :math:`r \ge t`; a decreasing grid is refused).
``mean_flow`` takes any steps (its times are continuous); ``shortcut`` takes only the dyadic steps
its model was trained on, :math:`1, \tfrac12, \dots, 1/N` (``max_steps`` :math:`N`), so ``k``
uniform steps need ``k`` a power of two up to :math:`N`. The model is called ``model(x, t, r=r)``
with ``t`` and ``r`` of shape ``(batch,)``; a velocity model (``second_time=False``) is refused.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .._validation import check_batch, check_finite
from ..objectives.shortcut import shortcut_steps
from ..paths import Schedule
from ..predictions import Model
from .base import SAMPLERS, SampleOutput

__all__ = ["mean_flow", "shortcut"]


def _check(model: Model, x: Tensor, ts: Tensor | None, prediction: str, name: str) -> Tensor:
    if getattr(model, "second_time", None) is False:
        raise ValueError(f"sampler {name!r} jumps with a flow map u(x, t, r) but the model is a velocity field "
                         "v(x, t) (second_time=False): use euler, heun, rk4, dopri5 or a diffusion sampler")
    if prediction != "velocity":
        raise ValueError(f"sampler {name!r} takes the average velocity of a flow map (prediction='velocity'), "
                         f"got prediction={prediction!r}")
    if not torch.is_tensor(x):
        raise ValueError("x must be a torch tensor of shape (batch, *shape)")
    check_batch(x, "x", min_dim=1)
    if not torch.is_tensor(ts) or ts.dim() != 1 or ts.numel() < 2:
        raise ValueError("ts (the timesteps) must be a 1D tensor of at least 2 flow times (both ends included)")
    check_finite(ts, "ts")
    ts = ts.to(device=x.device, dtype=x.dtype)
    if not bool((ts.diff() > 0).all()):
        raise ValueError(f"sampler {name!r}: timesteps must increase (a flow map is trained on jumps from t to a "
                         "later r, noise to data); r < t is outside its training")
    if float(ts[0]) < 0.0 or float(ts[-1]) > 1.0:
        raise ValueError(f"timesteps must lie in [0, 1], got [{float(ts[0])}, {float(ts[-1])}]")
    return ts


def _jump(model: Callable[..., Tensor], x: Tensor, ts: Tensor, return_trajectory: bool) -> SampleOutput:
    # model: a flow map, called as model(x, t, r=r)
    states = [x] if return_trajectory else None
    nfe = 0
    for k in range(ts.numel() - 1):
        t, r = ts[k].expand(x.shape[0]), ts[k + 1].expand(x.shape[0])
        u = model(x, t, r=r)
        nfe += 1
        if not torch.is_tensor(u) or u.shape != x.shape:
            shape = tuple(u.shape) if torch.is_tensor(u) else type(u).__name__
            raise ValueError(f"model returned {shape} for input {tuple(x.shape)}; they must match")
        x = x + (ts[k + 1] - ts[k]) * u
        if states is not None:
            states.append(x)
    if states is None:
        return SampleOutput(x=x, nfe=nfe)
    return SampleOutput(x=x, nfe=nfe, trajectory=torch.stack(states), times=ts)


@SAMPLERS.register("mean_flow", evals_per_step=1, flow_map=True)
def mean_flow(model: Model, x: Tensor, schedule: Schedule | None = None, ts: Tensor | None = None, *,
              prediction: str = "velocity", return_trajectory: bool = False,
              generator: torch.Generator | None = None) -> SampleOutput:
    r"""Jumps :math:`x_{k+1} = x_k + (t_{k+1} - t_k)\,u(x_k, t_k, t_{k+1})` of a MeanFlow model
    (any increasing grid in ``[0, 1]``; ``schedule`` and ``generator`` unused)."""
    ts = _check(model, x, ts, prediction, "mean_flow")
    return _jump(model, x, ts, return_trajectory)


@SAMPLERS.register("shortcut", evals_per_step=1, flow_map=True)
def shortcut(model: Model, x: Tensor, schedule: Schedule | None = None, ts: Tensor | None = None, *,
             prediction: str = "velocity", return_trajectory: bool = False,
             generator: torch.Generator | None = None, max_steps: int = 128) -> SampleOutput:
    r"""Jumps of a shortcut model, each step one of its trained sizes :math:`2^{-k} \ge 1/` ``max_steps``
    (the objective's ``max_steps``, default 128); another step size is refused."""
    ts = _check(model, x, ts, prediction, "shortcut")
    trained = shortcut_steps(max_steps)
    for h in ts.diff().tolist():
        if not any(math.isclose(h, d, rel_tol=1e-4) for d in trained):
            raise ValueError(
                f"sampler 'shortcut': step {h:.6g} is not a trained step size (1, 1/2, ..., 1/{max_steps}); take "
                f"k uniform steps with k a power of two up to {max_steps} (--nfe 1, 2, 4, ...), or use a "
                "mean_flow run for other step counts")
    return _jump(model, x, ts, return_trajectory)
