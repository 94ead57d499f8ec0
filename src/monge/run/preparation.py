"""The coupling's fit before training (e.g. the ``semidiscrete_ot`` map), cached in the run directory."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ..couplings import prepare_coupling
from . import distributed

__all__ = ["prepare_run_coupling"]


def prepare_run_coupling(coupling: Any, source: Any, target: Any, run_dir: Path, seed: int,
                         info: distributed.DistInfo, device: torch.device, resume: bool = False) -> float:
    """Fit what ``coupling`` needs; return the seconds rank 0 spent fitting a cached state (else 0).

    A fitted state is cached in the run directory: rank 0 fits and writes it (a fresh run refits;
    ``resume`` reuses the cached file), the other ranks wait and load it. The fit draws from its
    own generator (``seed + 3``), so it does not shift the training batches.
    """
    generator = torch.Generator().manual_seed(seed + 3)
    args = (coupling, source, target, run_dir, generator)
    if coupling.traits.prepared_file is None:
        prepare_coupling(*args, device=device)
        return 0.0
    seconds = 0.0
    if info.rank == 0:
        if not resume:
            (run_dir / coupling.traits.prepared_file).unlink(missing_ok=True)
        start = time.perf_counter()
        prepare_coupling(*args, device=device)
        seconds = time.perf_counter() - start
    distributed.barrier()
    if info.rank != 0:
        prepare_coupling(*args, write=False, device=device)
    return seconds
