r"""Multi-process helpers over ``torch.distributed`` (launched by ``torchrun``).

A process is part of a distributed job when ``torchrun`` has set ``WORLD_SIZE > 1`` (with
``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``). :func:`setup` then joins the
process group with the ``nccl`` backend for CUDA devices and ``gloo`` otherwise; in a single
process everything here is a cheap no-op, so the same code runs in both settings.

Single node, 4 processes::

    torchrun --standalone --nproc_per_node=4 -m monge train configs/recipe.yaml

Two nodes (run on each, with its ``--node_rank``)::

    torchrun --nnodes=2 --nproc_per_node=8 --node_rank=0 \
        --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 -m monge train configs/recipe.yaml
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import torch
import torch.distributed as dist

T = TypeVar("T")

__all__ = [
    "DistInfo", "setup", "teardown", "info", "is_main", "barrier", "all_reduce_mean", "all_gather_objects",
    "new_group", "all_gather_rows", "reduce_loss", "rank_device", "wrap_model",
]


@dataclass(frozen=True)
class DistInfo:
    """Rank of this process, number of processes and the rank on this node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def info() -> DistInfo:
    """The current process's place in the job (``DistInfo()`` when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistInfo()


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None


def setup(device: torch.device | str = "cpu") -> DistInfo:
    """Join the process group if launched with ``WORLD_SIZE > 1``; return this process's info.

    For a CUDA ``device`` the process uses GPU ``LOCAL_RANK`` and NCCL; on CPU, gloo.
    Idempotent: an already initialised group is reused.
    """
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return info()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed support")
    device = torch.device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(_env_int("LOCAL_RANK", 0))
        dist.init_process_group(backend=backend)
    return info()


def teardown(synchronize: bool = False) -> None:
    """Leave the process group (no-op when not distributed). ``synchronize``: every rank waits at a
    barrier first, so none tears its gloo pairs down while another still uses them (a rank aborted
    at teardown under load without it). Only after success: a rank that failed never reaches it."""
    if dist.is_available() and dist.is_initialized():
        if synchronize:
            dist.barrier()
        dist.destroy_process_group()


def is_main() -> bool:
    """True on rank 0 (and in a single process): the rank that writes files."""
    return info().rank == 0


def barrier() -> None:
    if info().enabled:
        dist.barrier()


def all_reduce_mean(value: float | torch.Tensor, device: torch.device | str = "cpu") -> float:
    r"""Mean of a scalar over all ranks, :math:`\frac1W \sum_r v_r` (the value itself if alone)."""
    if not info().enabled:
        return float(value)
    t = torch.as_tensor(value, dtype=torch.float64, device=device).reshape(1).clone()
    dist.all_reduce(t)
    return float(t) / info().world_size


def all_gather_objects(obj: T) -> list[T]:
    """Picklable ``obj`` from every rank, in rank order (``[obj]`` when alone)."""
    if not info().enabled:
        return [obj]
    out: list[Any] = [None] * info().world_size
    dist.all_gather_object(out, obj)
    return out


_GROUP_LOCK = threading.Lock()


def new_group() -> dist.ProcessGroup | None:
    """A new process group over all ranks with the default backend (``None`` when alone).

    Every rank must call it, in the same order relative to other group creations. Collectives
    issued from another thread (a pairing worker) go through such a group of their own, so
    they never interleave with the training thread's collectives on the default group.
    """
    if not info().enabled:
        return None
    with _GROUP_LOCK:
        return dist.new_group(backend=dist.get_backend())


def all_gather_rows(x: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Concatenate every rank's ``(b, *shape)`` tensor along dim 0, in rank order (``x`` when
    alone). All ranks must pass the same shape; ``ValueError`` otherwise."""
    if not info().enabled:
        return x
    world = info().world_size
    shape = torch.tensor(list(x.shape), dtype=torch.int64, device=x.device)
    shapes = [torch.empty_like(shape) for _ in range(world)]
    dist.all_gather(shapes, shape, group=group)
    if any(not torch.equal(s, shape) for s in shapes):
        got = [tuple(s.tolist()) for s in shapes]
        raise ValueError(f"all ranks must gather the same batch shape, got {got}; use equal per-rank batches")
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.contiguous(), group=group)
    return torch.cat(parts)


def reduce_loss(loss: torch.Tensor, interrupt: bool, info: DistInfo) -> tuple[float, bool]:
    """``(mean loss over ranks, whether any rank saw Ctrl-C)``. The interrupt flag travels with the
    loss, so every rank learns of an interrupt at the same step and all stop at the same boundary."""
    if not info.enabled:
        return float(loss), interrupt
    both = torch.stack([loss.double().reshape(()),
                        torch.tensor(float(interrupt), dtype=torch.float64, device=loss.device)])
    dist.all_reduce(both)
    return float(both[0]) / info.world_size, bool(both[1] > 0)


def rank_device(device: torch.device, info: DistInfo) -> torch.device:
    """``cuda:LOCAL_RANK`` for a plain ``cuda`` device under torchrun, else ``device``."""
    if device.type == "cuda" and info.enabled and device.index is None:
        return torch.device("cuda", info.local_rank)
    return device


def wrap_model(model: torch.nn.Module, info: DistInfo, device: torch.device, *, broadcast_buffers: bool = True,
               compile: bool = False) -> torch.nn.Module:
    """The network a training step calls: ``model`` under DDP when distributed, then compiled if asked.
    (``broadcast_buffers=False`` for flow maps: a JVP may not mutate captured tensors in the forward;
    monge's networks hold only constant buffers, identical on every rank.)"""
    net = model
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        net = DistributedDataParallel(model, device_ids=ids, broadcast_buffers=broadcast_buffers)
    # torch.compile of a module returns a module (OptimizedModule), typed as a plain callable
    return cast(torch.nn.Module, torch.compile(net)) if compile else net
