"""Crash-safe checkpoints: tensors in safetensors, configuration and state as JSON metadata.

A checkpoint is one ``.safetensors`` file whose header metadata holds ``config`` and ``state``
(JSON strings), so tensors and state can never disagree. Writes are atomic: the file is written
to a temporary name in the same directory, flushed and fsync'ed, then renamed over the old one;
a crash mid-save leaves the previous checkpoint intact. Loading never executes code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor, nn

from ..locate import missing_checkpoint
from ..outputs import atomic_write_bytes

__all__ = [
    "CHECKPOINT_NAME",
    "run_dir_of",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "flatten_optimizer_state",
    "unflatten_optimizer_state",
    "load_module_state",
]

FORMAT_VERSION = 1
#: the checkpoint file of a run directory
CHECKPOINT_NAME = "checkpoint.safetensors"


class CheckpointError(ValueError):
    """An unreadable, incomplete or mismatched checkpoint."""


def run_dir_of(checkpoint: str | Path) -> Path:
    """The run directory of a checkpoint file or run directory."""
    checkpoint = Path(checkpoint)
    return checkpoint if checkpoint.is_dir() else checkpoint.parent


def save_checkpoint(
    path: str | Path, tensors: dict[str, Tensor], config: dict[str, Any], state: dict[str, Any]
) -> None:
    """Atomically save ``tensors`` with ``config`` and ``state`` (JSON-serialisable) as metadata."""
    metadata = {
        "format": "monge-checkpoint",
        "version": str(FORMAT_VERSION),
        "config": json.dumps(config, sort_keys=True),
        "state": json.dumps(state, sort_keys=True),
    }
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path, st_save(cpu, metadata=metadata))


def load_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any], dict[str, Any]]:
    """Return ``(tensors, config, state)``; raise :class:`CheckpointError` naming the problem."""
    path = Path(path)
    if path.is_dir():
        problem = missing_checkpoint(path)
        if problem is not None:
            raise CheckpointError(problem)
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    data = path.read_bytes()
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, RuntimeError, OSError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint ({err})") from None
    metadata = _read_metadata(data, path)
    if metadata.get("format") != "monge-checkpoint":
        raise CheckpointError(f"{path} is a safetensors file but not a monge checkpoint (no monge metadata)")
    if metadata.get("version") != str(FORMAT_VERSION):
        raise CheckpointError(f"{path} has checkpoint format version {metadata.get('version')!r}; this monge "
                              f"reads version {FORMAT_VERSION} (written by a newer or an unknown monge?)")
    try:
        config = json.loads(metadata["config"])
        state = json.loads(metadata["state"])
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: corrupt checkpoint metadata ({err})") from None
    _check_schema(tensors, config, state, path)
    return tensors, config, state


def _check_schema(tensors: dict[str, Tensor], config: Any, state: Any, path: Path) -> None:
    """The parts every reader relies on: a config mapping and a state mapping with a sane step
    (the weights are checked against the model by :func:`load_module_state`)."""
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: the checkpoint config must be a mapping, got {type(config).__name__}")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: the checkpoint state must be a mapping, got {type(state).__name__}")
    step = state.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step < 2**53:
        raise CheckpointError(f"{path}: state.step must be a non-negative integer, got {step!r}")


def _read_metadata(data: bytes, path: Path) -> dict[str, str]:
    if len(data) < 8:
        raise CheckpointError(f"{path} is truncated")
    n = int.from_bytes(data[:8], "little")
    try:
        header = json.loads(data[8 : 8 + n])
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{path}: unreadable safetensors header") from None
    return header.get("__metadata__", {}) or {}


def flatten_optimizer_state(
    optimizer: torch.optim.Optimizer, prefix: str = "optim."
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors and JSON-able rest."""
    sd = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for key, value in st.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}{idx}.{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def unflatten_optimizer_state(
    tensors: dict[str, Tensor], meta: dict[str, Any], prefix: str = "optim."
) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if not name.startswith(prefix):
            continue
        idx, key = name[len(prefix) :].split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    for idx, st in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(st)
    return {"state": state, "param_groups": meta["param_groups"]}


def load_module_state(module: nn.Module, tensors: dict[str, Tensor], prefix: str, what: str) -> None:
    """Load ``prefix``-ed tensors into ``module``, naming missing, unexpected or mis-shaped ones."""
    own = module.state_dict()
    found = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    missing = sorted(set(own) - set(found))
    unexpected = sorted(set(found) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(found[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(found)
        if found[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
        if shapes:
            parts.append("shape mismatch " + "; ".join(shapes[:5]))
        raise CheckpointError(
            f"{what} does not match this model ({', '.join(parts)}); "
            "was the checkpoint written with a different model config?"
        )
    module.load_state_dict(found)
