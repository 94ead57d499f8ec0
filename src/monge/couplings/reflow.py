"""Reflow pairs: fixed (noise, sample) pairs of a trained flow, and their file format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from .._validation import check_batch
from .base import COUPLINGS, Coupled, Coupling, Traits, gen_device

__all__ = ["PAIRS_NAME", "ReflowPairs", "check_pairs", "save_pairs", "load_pairs"]

#: File name of the pairs inside a reflow run directory.
PAIRS_NAME = "reflow_pairs.safetensors"
_FORMAT = "monge.reflow_pairs"


def check_pairs(z0: Tensor, z1: Tensor) -> None:
    """Raise ``ValueError`` unless ``z0``, ``z1`` are finite floating batches of the same shape."""
    check_batch(z0, "z0")
    check_batch(z1, "z1")
    if z0.shape != z1.shape:
        raise ValueError(f"z0 and z1 must have the same shape, got {tuple(z0.shape)} and {tuple(z1.shape)}")
    if not z0.is_floating_point() or not z1.is_floating_point():
        raise ValueError(f"z0 and z1 must be floating tensors, got {z0.dtype} and {z1.dtype}")


def save_pairs(path: str | Path, z0: Tensor, z1: Tensor, metadata: dict[str, Any] | None = None) -> Path:
    """Write pairs (and JSON-able ``metadata``) to a ``.safetensors`` file atomically."""
    from ..outputs import atomic_write_bytes

    check_pairs(z0, z1)
    meta = {"format": _FORMAT, "info": json.dumps(metadata or {}, sort_keys=True, default=str)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"z0": z0.detach().to("cpu").contiguous(), "z1": z1.detach().to("cpu").contiguous()}
    atomic_write_bytes(path, st_save(tensors, metadata=meta))
    return path


def load_pairs(path: str | Path) -> tuple[Tensor, Tensor]:
    """Read pairs written by :func:`save_pairs` (checks format and shapes, executes no code)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"pairs file not found: {path}")
    raw = path.read_bytes()
    try:
        tensors = st_load(raw)
        header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    except (SafetensorError, ValueError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a readable safetensors file: {exc}") from None
    if (header.get("__metadata__") or {}).get("format") != _FORMAT or set(tensors) != {"z0", "z1"}:
        raise ValueError(f"{path} is not a reflow pairs file (written by monge.couplings.reflow.save_pairs)")
    check_pairs(tensors["z0"], tensors["z1"])
    return tensors["z0"], tensors["z1"]


@COUPLINGS.register("reflow")
class ReflowPairs(Coupling):
    r"""Fixed ``(noise, sample)`` pairs of a trained flow, for reflow (Liu et al. 2023, rectified flow).

    The pairs :math:`(Z_0, Z_1)` with :math:`Z_1 = \mathrm{ODE}_v(Z_0)` are written by
    :func:`monge.rectify.generate_pairs` / :func:`save_pairs`. Every training step
    serves ``B`` stored pairs drawn uniformly (with replacement) with ``generator``, so each noise
    stays with its own sample; the drawn ``x0``/``x1`` only set the batch size and are checked
    for shape. Training on them with the linear path,
    :math:`\min_v \mathbb E\|v(X_t, t) - (Z_1 - Z_0)\|^2`, straightens the flow.

    Parameters
    ----------
    pairs : str
        ``.safetensors`` file of pairs (loaded on first use).
    """

    traits = Traits(keeps_data=False)

    def __init__(self, pairs: str) -> None:
        if not isinstance(pairs, (str, Path)):
            raise ValueError(f"pairs must be the path of a pairs file, got {type(pairs).__name__}")
        if not Path(pairs).is_file():
            raise ValueError(
                f"pairs file not found: {pairs}; create it with monge.rectify.generate_pairs / `monge reflow`"
            )
        self.pairs = str(pairs)
        self._z: tuple[Tensor, Tensor] | None = None
        self._on_device: dict[torch.device, tuple[Tensor, Tensor]] = {}

    @classmethod
    def from_tensors(cls, z0: Tensor, z1: Tensor) -> ReflowPairs:
        """Serve pairs held in memory (no file)."""
        check_pairs(z0, z1)
        obj = cls.__new__(cls)
        obj.pairs = "<memory>"
        obj._z = (z0, z1)
        obj._on_device = {}
        return obj

    def tensors(self) -> tuple[Tensor, Tensor]:
        if self._z is None:
            self._z = load_pairs(self.pairs)
        return self._z

    def pair(self, x0: Tensor, x1: Tensor, generator: torch.Generator | None) -> Coupled:
        z0, z1 = self.tensors()
        if tuple(z1.shape[1:]) != tuple(x1.shape[1:]):
            raise ValueError(f"reflow pairs have sample shape {tuple(z1.shape[1:])}, the data {tuple(x1.shape[1:])}")
        dev = x1.device
        if dev not in self._on_device:
            self._on_device[dev] = (z0.to(dev), z1.to(dev))
        z0d, z1d = self._on_device[dev]
        idx = torch.randint(z0.shape[0], (x1.shape[0],), generator=generator, device=gen_device(generator, dev)).to(dev)
        return Coupled(z0d[idx].to(x1.dtype), z1d[idx].to(x1.dtype), plan_entropy=0.0)
