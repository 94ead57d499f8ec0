r"""The objective protocol, the registry, and what a run reads from an objective's class.

Every objective is called the same way by the trainer,

.. code-block:: python

    loss, logs = objective.loss(net, pairs, t, path, labels=labels, generator=generator)

with ``pairs`` the coupling's :class:`~monge.couplings.Coupled` (``x0``, ``x1``, ``weights``),
``t`` the trainer's uniform times ``(batch,)`` (an objective may draw its own from ``generator``),
``path`` the run's :class:`~monge.paths.ProbPath`, and ``net(x, t[, labels][, r=r])`` the network.
It returns the scalar loss to differentiate and a dict of extra figures (floats) to report.

Each objective class declares two attributes, the single source of truth for the rest of monge:

- ``prediction``: what the network outputs, one of :data:`monge.predictions.PREDICTIONS`
  (``velocity``, ``noise``, ``data``, ``score``) or ``average_velocity`` (a flow map
  :math:`u(x, t, r)`);
- ``sampler_kind``: ``"ode"`` for an instantaneous field that any ODE or diffusion sampler
  integrates, the name of the one sampler of :data:`monge.samplers.SAMPLERS` that
  jumps with the flow map (``mean_flow``, ``shortcut``), or ``None`` for a run with nothing to
  sample (``reconstruction``: an autoencoder).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..registry import Registry

__all__ = [
    "OBJECTIVES",
    "Objective",
    "weighted_mean",
    "sampler_kind",
    "is_flow_map",
    "flow_map_objectives",
    "check_model",
    "check_sampler",
    "sampler_options",
    "prediction_of",
    "FlowMapObjective",
    "two_time_net",
    "NOTHING_TO_SAMPLE",
]

#: Objectives by config name (``objective.name``).
OBJECTIVES: Registry[Objective] = Registry("objective")

Net = Callable[..., Tensor]


class Objective:
    """Base of the objectives: two class attributes and :meth:`loss`."""

    #: what the network outputs (``velocity``, ``noise``, ``data``, ``score``, ``average_velocity``)
    prediction: ClassVar[str] = "velocity"
    #: ``"ode"`` (any ODE/diffusion sampler), the name of the flow-map sampler of the run, or ``None``
    #: (nothing to sample: an autoencoder)
    sampler_kind: ClassVar[str | None] = "ode"

    def loss(self, net: Net, pairs: Any, t: Tensor, path: Any, *, labels: Tensor | None = None,
             generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        """``(loss, logs)`` of the batch of ``pairs`` on ``path`` at the times ``t``."""
        raise NotImplementedError

    def sampler_options(self) -> dict[str, Any]:
        """Options of the run's sampler that this objective fixes (none by default)."""
        return {}


class FlowMapObjective(Objective):
    r"""Base of the flow-map objectives: the network :math:`u_\theta(x, t, r)` (a model built with
    ``second_time=True``) predicts the average velocity :math:`(x_r - x_t)/(r - t)`; its runs take
    the sampler named by ``sampler_kind``."""

    prediction: ClassVar[str] = "average_velocity"


def two_time_net(net: Net, labels: Tensor | None) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """``(x, t, r) -> net(x, t[, labels], r=r)``: a flow-map network with its labels bound."""
    if labels is None:
        return lambda x, t, r: net(x, t, r=r)
    return lambda x, t, r: net(x, t, labels, r=r)


def weighted_mean(per_sample: Tensor, weights: Tensor | None) -> Tensor:
    r"""Mean over the batch, or the self-normalised weighted mean :math:`\sum_i w_i \ell_i / \sum_i w_i`
    with the coupling's pair weights (finite, non-negative, positive sum)."""
    if weights is None:
        return per_sample.mean()
    if weights.shape != per_sample.shape:
        raise ValueError(f"weights must have shape {tuple(per_sample.shape)}, got {tuple(weights.shape)}")
    w = weights.to(per_sample.dtype)
    total = w.sum()
    if not bool((w >= 0).all()) or not bool(torch.isfinite(total)) or total <= 0:
        raise ValueError("weights must be finite and non-negative with a positive sum")
    return torch.dot(w, per_sample) / total


#: What :func:`check_sampler` says of a run with nothing to sample (an autoencoder).
NOTHING_TO_SAMPLE = ("an autoencoder run has nothing to sample; train a flow with data.latent: RUN "
                     "(e.g. monge train configs/digits-latent-semidiscrete_ot.yaml)")


def sampler_kind(objective: str) -> str | None:
    """The ``sampler_kind`` of the objective registered as ``objective`` (``None``: nothing to sample)."""
    return OBJECTIVES.get_class(objective).sampler_kind


def is_flow_map(objective: str) -> bool:
    """Whether runs of ``objective`` train a flow map :math:`u(x, t, r)` (their sampler is not an ODE's)."""
    return sampler_kind(objective) not in ("ode", None)


def flow_map_objectives() -> list[str]:
    """The registered objectives that train flow maps."""
    return [name for name in OBJECTIVES.names() if is_flow_map(name)]


def check_sampler(objective: str, sampler: str) -> None:
    """Refuse a sampler of the wrong kind for a run trained with ``objective``, naming the right one."""
    kind = sampler_kind(objective)
    if kind is None:
        raise ValueError(NOTHING_TO_SAMPLE)
    if kind != "ode" and sampler != kind:
        raise ValueError(
            f"this run is a flow map trained with the {objective!r} objective (u(x, t, r), one jump per step); "
            f"sampler {sampler!r} integrates a velocity field. Use the {kind!r} sampler "
            f"(--sampler {kind} --nfe 1, 2, 4, ...)")
    if kind == "ode" and sampler in {sampler_kind(name) for name in flow_map_objectives()}:
        raise ValueError(
            f"sampler {sampler!r} jumps with a flow map u(x, t, r) ({' / '.join(flow_map_objectives())} runs); "
            f"this run is a velocity model trained with the {objective!r} objective: use euler, heun, rk4, "
            "dopri5 or a diffusion sampler (ddim, dpm_solver_pp, ...)")


def check_model(objective: str, second_time: bool) -> None:
    """A flow-map objective needs a network of two times (``second_time=True``), any other one of one."""
    if is_flow_map(objective) and not second_time:
        raise ValueError(f"objective {objective!r} trains a flow map u(x, t, r): build the model with "
                         "second_time: true (mlp or unet; a network of your own: forward(x, t, r=...) and the "
                         "attribute second_time = True)")
    if not is_flow_map(objective) and second_time:
        raise ValueError(f"the model has second_time: true (a flow map u(x, t, r)) but objective {objective!r} "
                         f"trains a field v(x, t): use objective {' or '.join(flow_map_objectives())}, or drop "
                         "second_time")


def sampler_options(objective: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Options of the run's sampler that its objective fixes (e.g. the shortcut's ``max_steps``)."""
    return OBJECTIVES.build(objective, **(params or {})).sampler_options()


def prediction_of(model: Any, objective: str) -> str:
    """What ``model`` outputs: its ``prediction`` attribute (set by :func:`monge.run.load.load_model`
    from the checkpoint), else the ``prediction`` of the run's ``objective``."""
    stored = getattr(model, "prediction", None)
    return stored if isinstance(stored, str) else OBJECTIVES.get_class(objective).prediction
