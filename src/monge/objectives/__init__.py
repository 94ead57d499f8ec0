"""Training objectives, one protocol: ``objective.loss(net, pairs, t, path, *, labels, generator) -> (loss, logs)``.

Each objective class declares ``prediction`` (what the network outputs) and ``sampler_kind``
(``"ode"``, or the flow-map sampler of its runs); see :mod:`monge.objectives.base`. Registered:
``velocity``, ``noise``, ``data``, ``score`` (:mod:`~monge.objectives.regression`), ``mean_flow``
(:mod:`~monge.objectives.mean_flow`), ``shortcut`` (:mod:`~monge.objectives.shortcut`) and
``reconstruction`` (an autoencoder's, :mod:`~monge.objectives.reconstruction`).
"""

from .base import (
    NOTHING_TO_SAMPLE,
    OBJECTIVES,
    FlowMapObjective,
    Objective,
    check_model,
    check_sampler,
    flow_map_objectives,
    is_flow_map,
    prediction_of,
    sampler_kind,
    sampler_options,
    two_time_net,
    weighted_mean,
)
from .mean_flow import MeanFlowObjective, mean_flow_target
from .reconstruction import ReconstructionObjective
from .regression import (
    DataObjective,
    NoiseObjective,
    RegressionObjective,
    ScoreObjective,
    VelocityObjective,
    regression_loss,
)
from .shortcut import ShortcutObjective, shortcut_steps, shortcut_target

__all__ = [
    "OBJECTIVES",
    "Objective",
    "FlowMapObjective",
    "RegressionObjective",
    "VelocityObjective",
    "NoiseObjective",
    "DataObjective",
    "ScoreObjective",
    "MeanFlowObjective",
    "ShortcutObjective",
    "ReconstructionObjective",
    "NOTHING_TO_SAMPLE",
    "regression_loss",
    "weighted_mean",
    "two_time_net",
    "mean_flow_target",
    "shortcut_steps",
    "shortcut_target",
    "sampler_kind",
    "is_flow_map",
    "flow_map_objectives",
    "check_model",
    "check_sampler",
    "sampler_options",
    "prediction_of",
]
