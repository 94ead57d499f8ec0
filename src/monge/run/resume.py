"""A training run's checkpoint: what it holds beyond the weights, and the checks before resuming it.

The state holds the step, the EMA count, AdamW's metadata, the loss window of the divergence
guard, the data's shape and fingerprint, and the objective's ``prediction`` and ``sampler_kind``
(read back by :func:`monge.run.load.load_model`), and for a latent flow its autoencoder's record
(:func:`monge.run.latent.latent_state`); the tensors hold model, EMA, optimiser moments
and every generator. A resumed run may change only the settings of ``RESUMABLE_TRAIN_KEYS``,
``data.*.path`` (same data, moved) and the sections of ``_RESUMABLE_SECTIONS``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..config import Config, ConfigError
from ..rundata import check_same_data, data_state, data_tensors
from . import distributed
from .batches import local_seed
from .checkpoint import (
    CheckpointError,
    flatten_optimizer_state,
    load_checkpoint,
    load_module_state,
    unflatten_optimizer_state,
)
from .divergence import DIVERGENCE_WINDOW
from .latent import LATENT_STATE, check_latent_state, stored_latent

__all__ = [
    "RESUMABLE_TRAIN_KEYS",
    "start_run",
    "training_state",
    "resume_training",
    "check_resumable",
    "check_resume_state",
    "check_optimizer_state",
    "nonfinite",
]

# Settings a resumed run may change (they take effect at once); any other difference is refused.
RESUMABLE_TRAIN_KEYS = ("lr", "weight_decay", "grad_clip", "ema_decay", "steps", "log_every", "eval_every",
                        "checkpoint_every", "eval_samples", "progress", "device", "compile", "pairing_workers")
# Top-level sections a resumed run may change freely (run location, evaluation sampler).
_RESUMABLE_SECTIONS = ("name", "output_dir", "sample")


def training_state(tr: Any, gather: bool = True) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Everything a checkpoint of trainer ``tr`` holds. ``gather`` collects every rank's generator (collective)."""
    tensors = {f"model.{k}": v for k, v in tr.model.state_dict().items()}
    tensors.update({f"ema.{k}": v for k, v in tr.ema.model.state_dict().items()})
    opt_tensors, opt_meta = flatten_optimizer_state(tr.optimizer)
    tensors.update(opt_tensors)
    tensors["rng.data"] = tr.batches.data_state()
    tensors["rng.torch"] = torch.get_rng_state()
    local = [tr.local_generator.get_state()]
    if gather and tr.dist.enabled:
        local = distributed.all_gather_objects(local[0])
    for r, st in enumerate(local):
        tensors[f"rng.local.{r}"] = st
    tensors.update(data_tensors(tr.source, tr.target))
    state = {
        "data_shape": list(tr.source.shape),
        "data_fingerprint": tr.data_fingerprint(),
        "loss_window": list(tr.guard.losses),
        "world_size": tr.dist.world_size if (gather or not tr.dist.enabled) else None,
        "step": tr.step,
        "loss": tr.last_loss if math.isfinite(tr.last_loss) else None,
        "ema_updates": tr.ema.updates,
        "optimizer": opt_meta,
        "prediction": tr.objective.prediction,
        "sampler_kind": tr.objective.sampler_kind,
    }
    state.update(data_state(tr.target))  # a table's schema: how samples decode to its columns
    if getattr(tr, "latent_record", None) is not None:  # a latent flow: which autoencoder decodes it
        state[LATENT_STATE] = tr.latent_record
    return tensors, state


def resume_training(tr: Any, path: Path) -> None:
    """Restore trainer ``tr``'s model, EMA, optimiser, random states and step from the checkpoint ``path``."""
    tensors, config, state = load_checkpoint(path)
    tr.resume_changes = check_resumable(config, tr.config.to_dict(), path)
    if getattr(tr, "codec", None) is not None:  # a latent flow resumes on the autoencoder it was trained with
        check_latent_state(stored_latent(state, tr.config, path), tr.codec, f"run {tr.run_dir}")
    try:  # moved or not, edited in place or not: the same data
        check_same_data(state.get("data_fingerprint"), tr.data_fingerprint(), path)
    except ValueError as err:
        raise CheckpointError(str(err)) from None
    step, tc = state["step"], tr.config.train
    if step > tc.steps:
        raise CheckpointError(f"checkpoint {path} is at step {step}, beyond train.steps={tc.steps}; "
                              "raise train.steps to train further")
    check_resume_state(tensors, state, path)
    _load_weights(tr, tensors, state, step, path)
    for group in tr.optimizer.param_groups:  # settings changed on resume take effect
        group["lr"], group["weight_decay"] = tc.lr, tc.weight_decay
    tr.ema.decay = tc.ema_decay
    try:
        tr.generator.set_state(tensors["rng.data"])
        torch.set_rng_state(tensors["rng.torch"])
        key = f"rng.local.{tr.dist.rank}"
        if state.get("world_size") == tr.dist.world_size and key in tensors:
            tr.local_generator.set_state(tensors[key])
        else:  # resumed on another number of processes: fresh per-rank streams
            tr.local_generator.manual_seed(local_seed(tc.seed, tr.dist.rank) + tr.step)
    except (RuntimeError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path}: invalid random generator state ({err})") from None
    tr.step = step
    tr.guard.reset(loss_window(state, path))
    tr.ema.updates = state["ema_updates"]
    tr.last_loss = float("nan") if state.get("loss") is None else float(state["loss"])
    if tr.resume_changes and tr.dist.rank == 0:
        print(f"resuming {tr.run_dir} at step {step} with changed settings: " + "; ".join(tr.resume_changes),
              file=sys.stderr, flush=True)


def _load_weights(tr: Any, tensors: dict[str, Tensor], state: dict[str, Any], step: int, path: Path) -> None:
    """Model, EMA and optimiser of the checkpoint into ``tr``, each checked first."""
    load_module_state(tr.model, tensors, "model.", f"checkpoint {path}")
    load_module_state(tr.ema.model, tensors, "ema.", f"checkpoint {path} (EMA)")
    for prefix in ("model.", "ema."):
        bad = nonfinite({k: v for k, v in tensors.items() if k.startswith(prefix)})
        if bad:
            raise CheckpointError(f"checkpoint {path} holds non-finite weights ({bad}); it cannot be resumed")
    optim = unflatten_optimizer_state(tensors, state["optimizer"])
    check_optimizer_state(optim, list(tr.model.parameters()), step, path)
    try:
        tr.optimizer.load_state_dict(optim)
    except (ValueError, KeyError, TypeError, RuntimeError, IndexError) as err:
        raise CheckpointError(f"checkpoint {path}: the optimiser state does not fit this model ({err})") from None


def check_resumable(stored: dict[str, Any], current: dict[str, Any], path: Path) -> list[str]:
    """The allowed changes (``"train.lr: 0.001 -> 0.5"``); refuse any other difference, naming it."""
    try:
        stored = Config.from_dict(stored, check_data=False).to_dict()  # fill defaults of settings added since
    except ConfigError as err:
        raise CheckpointError(f"checkpoint {path} holds an invalid config: {err}") from None
    allowed: list[str] = []
    refused: list[str] = []
    for key in sorted(set(stored) | set(current)):
        old, new = stored.get(key), current.get(key)
        if old == new or key in _RESUMABLE_SECTIONS:
            continue
        if key == "data" and _same_but_paths(old, new):  # the data moved: same data, new location
            allowed += [f"data.{side}.path: {json.dumps(_path_of(old, side))} -> {json.dumps(_path_of(new, side))}"
                        for side in ("source", "target") if _path_of(old, side) != _path_of(new, side)]
        elif key == "train" and isinstance(old, dict) and isinstance(new, dict):
            for sub in sorted(set(old) | set(new)):
                if old.get(sub) != new.get(sub):
                    change = f"train.{sub}: {json.dumps(old.get(sub))} -> {json.dumps(new.get(sub))}"
                    (allowed if sub in RESUMABLE_TRAIN_KEYS else refused).append(change)
        else:
            refused.append(f"{key}={json.dumps(old)} -> {key}={json.dumps(new)}")
    if refused:
        raise CheckpointError(
            f"cannot resume {path}: " + "; ".join(refused) + " cannot change on resume (only "
            + ", ".join(f"train.{k}" for k in RESUMABLE_TRAIN_KEYS) + ", data.*.path and sample.* may); "
            "start a new run (another name) or use --overwrite"
        )
    return allowed


def _path_of(data: Any, side: str) -> Any:
    spec = data.get(side) if isinstance(data, dict) else None
    return spec.get("path") if isinstance(spec, dict) else None


def _same_but_paths(old: Any, new: Any) -> bool:
    """Whether two ``data`` sections differ only in their sides' ``path``."""
    if not isinstance(old, dict) or not isinstance(new, dict) or set(old) != set(new):
        return False
    for side in old:
        a, b = old[side], new[side]
        if isinstance(a, dict) and isinstance(b, dict):
            a, b = {k: v for k, v in a.items() if k != "path"}, {k: v for k, v in b.items() if k != "path"}
        if a != b:
            return False
    return True


def check_resume_state(tensors: dict[str, Tensor], state: dict[str, Any], path: Path) -> None:
    """What resuming needs beyond the weights: generator states, EMA count, optimiser metadata."""
    for key in ("rng.data", "rng.torch"):
        t = tensors.get(key)
        if t is None or t.dtype != torch.uint8 or t.dim() != 1:
            raise CheckpointError(f"checkpoint {path} has no valid random generator state {key!r}; it cannot be "
                                  "resumed "
                                  "exactly (it can still be sampled)")
    updates = state.get("ema_updates")
    if not isinstance(updates, int) or isinstance(updates, bool) or updates < 0:
        raise CheckpointError(f"checkpoint {path}: state.ema_updates must be a non-negative integer, got {updates!r}")
    meta = state.get("optimizer")
    if not isinstance(meta, dict) or not isinstance(meta.get("param_groups"), list) or \
            not all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in meta["param_groups"]) or \
            not isinstance(meta.get("scalars", {}), dict):
        raise CheckpointError(f"checkpoint {path} has no valid optimiser state (state.optimizer); resuming would "
                              "silently reset AdamW. Start a new run or use --overwrite")
    loss = state.get("loss")
    if loss is not None and (not isinstance(loss, (int, float)) or isinstance(loss, bool)):
        raise CheckpointError(f"checkpoint {path}: state.loss must be a number, got {loss!r}")


def check_optimizer_state(optim: dict[str, Any], params: list[Tensor], step: int, path: Path) -> None:
    """After step 0 every parameter needs its AdamW moments, shaped like the parameter."""
    indices = [i for g in optim["param_groups"] for i in g["params"]]
    if sorted(indices) != list(range(len(params))):
        raise CheckpointError(f"checkpoint {path}: the optimiser state covers {len(indices)} parameters, the model "
                              f"has {len(params)}")
    for i, p in enumerate(params):
        st = optim["state"].get(i)
        if not st:
            if step > 0:
                raise CheckpointError(f"checkpoint {path} at step {step} has no optimiser state for parameter {i}; "
                                      "resuming would silently reset AdamW. Start a new run or use --overwrite")
            continue
        for key, value in st.items():
            if torch.is_tensor(value) and value.dim() > 0 and value.shape != p.shape:
                raise CheckpointError(f"checkpoint {path}: optimiser state {key} of parameter {i} has shape "
                                      f"{tuple(value.shape)}, the parameter {tuple(p.shape)}")


def nonfinite(tensors: dict[str, Tensor]) -> str:
    """``""`` when every floating tensor is finite, else a short description of the first bad ones."""
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    return "" if not bad else f"non-finite values in {', '.join(bad[:3])}{'...' if len(bad) > 3 else ''}"


def loss_window(state: dict[str, Any], path: Path) -> list[float]:
    """The divergence guard's recent losses stored in a checkpoint (empty in older ones)."""
    window = state.get("loss_window", [])
    if not isinstance(window, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                               and math.isfinite(v) for v in window):
        raise CheckpointError(f"checkpoint {path}: state.loss_window must be a list of finite numbers")
    return [float(v) for v in window[-DIVERGENCE_WINDOW:]]


def start_run(trainer: Any, resume: bool) -> None:
    """Before the first step: the run directory, the resumed state (``resume``), ``config.yaml``
    (rank 0; stale temporary files of a killed save removed) and the coupling's fit
    (:meth:`~monge.train.Trainer.prepare`)."""
    from ..outputs import atomic_write_bytes
    from .checkpoint import CHECKPOINT_NAME
    from .rundir import no_checkpoint_message
    from .signals import interrupt_note

    trainer.run_dir.mkdir(parents=True, exist_ok=True)
    if resume:
        if not trainer.checkpoint_path.is_file():
            raise CheckpointError(no_checkpoint_message(trainer.run_dir))
        trainer.load()
    if trainer.dist.rank == 0:
        atomic_write_bytes(trainer.run_dir / "config.yaml", trainer.config.to_yaml().encode("utf-8"))
        for stale in trainer.run_dir.glob(f".{CHECKPOINT_NAME}.*.tmp"):  # left by a killed save
            stale.unlink(missing_ok=True)
    with interrupt_note(_preparation_note(trainer)):
        trainer.prepare(resume)


def _preparation_note(trainer: Any) -> str:
    """What an interrupt of the coupling's preparation leaves, and how to continue."""
    every = getattr(getattr(trainer.coupling, "solver", None), "checkpoint_every", None)
    if trainer.coupling.traits.prepared_file is None or not every:
        return "interrupted before the first step; nothing was trained: the same command starts the run again"
    return (f"interrupted while fitting the coupling before training; the fit's state is saved in {trainer.run_dir} "
            f"every {every} steps: the same command resumes the fit")
