"""Rebuild the model of a run's checkpoint, for sampling, evaluation and restoration."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from ..config import Config, ConfigError
from ..models import build_model, set_attributes
from ..objectives import OBJECTIVES
from ..rundata import stored_schema, stored_shape, stored_standardizer
from .checkpoint import CheckpointError, load_checkpoint, load_module_state
from .latent import stored_latent
from .resume import nonfinite

__all__ = ["load_model"]


def load_model(path: str | Path, ema: bool = True, device: str | torch.device = "cpu") -> tuple[nn.Module, Config]:
    """Rebuild the model of a checkpoint (EMA weights by default) and return it with its config.

    The data is not read: the sample shape comes from the checkpoint (older checkpoints read the
    data for it). The model carries what the run stored about it:

    - ``model.prediction``: what it outputs (``velocity``, ``noise``, ``data``, ``score``,
      ``average_velocity``), and ``model.sampler_kind``: ``"ode"`` or its flow-map sampler
      (checkpoints without them: the attributes of the config's objective); ``None`` for an
      autoencoder run, which has nothing to sample;
    - ``model.latent``: a latent flow's codec record (:func:`monge.run.latent.latent_state`: the
      autoencoder's spec and fingerprint), ``None`` for a run on the data itself;
    - ``model.standardizer``: a run trained on a standardised table gets its statistics
      (:class:`~monge.data.tabular.Standardizer`), which :func:`monge.generate.generate` uses to
      return samples in data units; ``model.schema``: a CSV table's
      :class:`~monge.data.schema.TableSchema` (else ``None``), how samples decode to its columns.
    """
    tensors, raw_config, state = load_checkpoint(path)
    try:
        config = Config.from_dict(raw_config, check_data=False)
    except ConfigError as err:
        raise CheckpointError(f"checkpoint {path} holds an invalid config: {err}") from None
    shape = stored_shape(state, config, path)
    from ..limits import check_model_memory

    with torch.device("meta"):
        meta = build_model(config.model.name, config.model.params, shape)
    check_model_memory(meta, f"the model of checkpoint {path}", copies=2)
    model = build_model(config.model.name, config.model.params, shape)
    prefix = "ema." if ema else "model."
    load_module_state(model, tensors, prefix, f"checkpoint {path}")
    bad = nonfinite({k: v for k, v in tensors.items() if k.startswith(prefix)})
    if bad:
        raise CheckpointError(f"checkpoint {path} holds non-finite weights ({bad}); the run diverged before it was "
                              "saved. Use an earlier checkpoint or train again with a lower train.lr")
    prediction, sampler_kind = _stored_kind(state, config, path)
    set_attributes(model, standardizer=stored_standardizer(tensors, config, path), prediction=prediction,
                   sampler_kind=sampler_kind, latent=stored_latent(state, config, path),
                   schema=stored_schema(state, path))
    return model.to(device).eval(), config


def _stored_kind(state: dict[str, Any], config: Config, path: str | Path) -> tuple[str, str | None]:
    """``(prediction, sampler_kind)`` of the checkpoint's state, else of its config's objective."""
    objective = OBJECTIVES.get_class(config.objective.name)
    out: list[str | None] = []
    for key in ("prediction", "sampler_kind"):
        value = state.get(key, getattr(objective, key))
        if key == "sampler_kind" and value is None and objective.sampler_kind is None:
            out.append(None)  # an autoencoder run: nothing to sample
            continue
        if not isinstance(value, str) or not value:
            raise CheckpointError(f"checkpoint {path}: state.{key} must be a non-empty string, got {value!r}")
        out.append(value)
    return cast(str, out[0]), out[1]  # out[0]: the prediction, a non-empty str (checked above)
