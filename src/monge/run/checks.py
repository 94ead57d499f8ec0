"""The parts of a run checked against each other before training: model and data (labels,
continuous conditions), coupling, objective, and the memory the training state needs."""

from __future__ import annotations

from typing import Any

import torch

from ..config import Config, ConfigError
from ..models import build_model
from ..objectives import OBJECTIVES, Objective, check_model

__all__ = ["build_objective", "check_continuous", "check_conditional", "check_device", "check_training_memory"]


def build_objective(config: Config, model: Any) -> Objective:
    """``config.objective`` (velocity regression by default), checked against the model's time inputs."""
    name = config.objective.name
    try:
        objective = OBJECTIVES.build(name, **config.objective.params)
        check_model(name, getattr(model, "second_time", False) is True)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return objective


def check_continuous(config: Config, model: Any, target: Any, coupling: Any) -> int | None:
    """``model.cond_dim``, checked against the target's conditions and the coupling. ``train.label_dropout``
    trains the null class of class-conditional models only: continuous conditions are never dropped."""
    k = getattr(model, "cond_dim", None)
    if k is None:
        return None
    name, coupling_name = config.data.target, config.coupling.name
    if getattr(target, "cond_dim", None) is None or not hasattr(target, "sample_with_conditions"):
        raise ConfigError(
            f"the model takes a continuous condition (cond_dim={k}) but data.target {name} has none; use a "
            "target with continuous conditions ({name: conditional_toy, set: moons, condition: x}) or drop cond_dim")
    if target.cond_dim != k:
        raise ConfigError(f"data.target {name} has {target.cond_dim}-D conditions but the model has cond_dim={k}")
    if coupling.traits.uses_labels and getattr(coupling, "condition", "continuous") != "continuous":
        raise ConfigError(
            f"coupling {coupling_name!r} pairs within discrete classes but the conditions are "
            "continuous: set coupling.condition: continuous (and its weight)")
    if not coupling.traits.keeps_data:
        raise ConfigError(
            f"coupling {coupling_name!r} pairs noise with points that are not the drawn data, so "
            "conditions cannot follow them; use a batch coupling (independent, conditional_ot, ...)")
    return int(k)


def check_conditional(config: Config, model: Any, target: Any, coupling: Any) -> int | None:
    """``model.num_classes``, checked against the target's labels and the coupling."""
    k = getattr(model, "num_classes", None)
    name, coupling_name = config.data.target, config.coupling.name
    if coupling.traits.uses_labels:
        if getattr(target, "labels", None) is None or not hasattr(target, "sample_with_labels"):
            raise ConfigError(
                f"coupling {coupling_name!r} pairs within the data's classes but data.target {name} "
                "has no labels; use a labelled data set (8gaussians, 25gaussians, digits, mnist, cifar10, an "
                "image folder with class sub-folders) or another coupling")
        if k is None:
            raise ConfigError(
                f"coupling {coupling_name!r} pairs within classes, which only helps a class-conditional "
                "model: set model.num_classes (mlp or unet; model.cond_dim for continuous conditions), or use "
                "exact_ot for an unconditional model")
    if k is None:
        return None
    labels = getattr(target, "labels", None)
    if labels is None or not hasattr(target, "sample_with_labels"):
        raise ConfigError(
            f"the model is class-conditional (num_classes={k}) but data.target {name} has no labels; "
            "use a labelled data set (digits, mnist, cifar10, an image folder with class sub-folders) "
            "or drop num_classes"
        )
    if int(labels.max()) >= k:
        raise ConfigError(f"data.target {name} has class {int(labels.max())} but the model has num_classes={k}")
    if not coupling.traits.keeps_data:
        raise ConfigError(
            f"coupling {coupling_name!r} pairs noise with points that are not the drawn data "
            "(fitted targets or stored pairs), so labels cannot follow them; class-conditional training "
            "needs a batch coupling (independent, exact_ot, entropic, wcfm, immiscible, knn_immiscible, ...)"
        )
    return int(k)


def check_training_memory(config: Config, shape: tuple[int, ...], device: torch.device) -> None:
    """The weights, gradients, AdamW moments and EMA (``TRAIN_COPIES`` float32 copies) must fit in
    the memory available, checked on a ``meta`` model before any weight is allocated."""
    from ..limits import TRAIN_COPIES, check_model_memory

    with torch.device("meta"):
        meta = build_model(config.model.name, config.model.params, shape)
    try:
        check_model_memory(meta, f"training model {config.model.name!r}", TRAIN_COPIES, device)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def check_device(name: str) -> torch.device:
    """``train.device`` as a torch device, refused with a :class:`ConfigError` when unavailable."""
    from ..limits import check_device as check

    try:
        return check(name)
    except ValueError as err:
        raise ConfigError(str(err)) from None
