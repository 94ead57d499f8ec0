"""The batches of a run: the global batch drawn from one shared generator, this rank's slice of it,
its coupling (in line or solved ahead by the pairing pipeline), the pairs' labels, and the random
states a step may have to roll back.

Every rank draws the global batch ``(x0, x1, t[, labels])`` of ``W * batch_size`` points from the
shared data generator (``t`` from ``train.time_sampling``, :mod:`monge.times`) and keeps its own
slice, so the ranks see disjoint data and a run with ``W`` processes draws the same data as one
process with batch ``W * batch_size``. The coupling, label dropout and path noise draw from a
per-rank generator.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..pairing import PairingPipeline
from ..times import TIMES, TimeSampler
from .divergence import TrainingError

__all__ = ["Batch", "Batches", "local_seed"]


def local_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s generator (coupling, label dropout, path noise)."""
    return seed + 2 + 1_000_003 * rank


@dataclass
class Batch:
    """This rank's slice of a global batch; ``solution``: its pairing, when solved ahead."""

    x0: Tensor
    x1: Tensor
    t: Tensor
    labels: Tensor | None
    solution: Any = None


class Batches:
    """Draws and couples the batches of a :class:`~monge.train.Trainer` (its data, coupling, generators)."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        #: shared by all ranks: the global batch of data and times
        self.generator: torch.Generator = trainer.generator
        #: per rank: coupling, label dropout and path randomness
        self.local_generator: torch.Generator = trainer.local_generator
        #: solves the pairing of upcoming batches while training (``train.pairing_workers``)
        self.pipeline: PairingPipeline | None = None
        #: the law of the training times (``train.time_sampling``)
        law = trainer.config.train.time_sampling
        self.times: TimeSampler = TIMES.build(law.name, **law.params)
        #: ``(x0, x1, pairs)`` of the latest step, for the coupling diagnostics
        self.last: tuple[Tensor, Tensor, Any] | None = None

    # -- drawing -------------------------------------------------------------------
    def _draw_slice(self) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """This rank's slice of the global batch ``(x0, x1, t, labels)`` (labels: conditional models)."""
        tr = self.trainer
        bs, g, dev = tr.config.train.batch_size, self.generator, tr.device
        world, rank = tr.dist.world_size, tr.dist.rank
        x0 = tr.source.sample(bs * world, generator=g, device=dev)
        y = None
        if tr.cond_dim is not None:
            x1, y = tr.target.sample_with_conditions(bs * world, generator=g, device=dev)
            if not bool(torch.isfinite(y).all()):
                raise TrainingError(f"data.target {tr.config.data.target} drew NaN/Inf conditions at step "
                                    f"{tr.step + 1}; clean or impute the conditions before training")
        elif tr.num_classes is None:
            x1 = tr.target.sample(bs * world, generator=g, device=dev)
        else:
            x1, y = tr.target.sample_with_labels(bs * world, generator=g, device=dev)
        t = self.times(bs * world, generator=g).to(dev)
        if world > 1:
            local = slice(rank * bs, (rank + 1) * bs)
            x0, x1, t = x0[local], x1[local], t[local]
            y = None if y is None else y[local]
        return x0, x1, t, y

    def _draw_checked(self) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        batch = self._draw_slice()
        self.trainer.coupling.check_inputs(batch[0], batch[1])
        return batch

    def draw(self) -> Batch:
        """The step's batch: drawn now, or the pipeline's next one with its solved pairing."""
        with _step_warnings(self.trainer.step):
            if self.pipeline is None:
                return Batch(*self._draw_slice())
            remaining = max(self.trainer.config.train.steps - self.trainer.step, 1)
            (x0, x1, t, labels), solution = self.pipeline.next(remaining)
            return Batch(x0, x1, t, labels, solution=solution)

    def couple(self, batch: Batch) -> Any:
        """The coupling's pairs (:class:`~monge.couplings.Coupled`) of ``batch``."""
        coupling = self.trainer.coupling
        with _step_warnings(self.trainer.step):
            if self.pipeline is None:
                pairs = coupling(batch.x0, batch.x1, generator=self.local_generator, labels=batch.labels)
            else:
                pairs = coupling.pair_solved(batch.x0, batch.x1, batch.solution, self.local_generator)
        self.last = (batch.x0, batch.x1, pairs)
        return pairs

    def pair_labels(self, labels: Tensor | None, pairs: Any) -> Tensor | None:
        r"""Labels (or continuous conditions) of the pairs' data points; class labels are each replaced
        by the null class ``num_classes`` with probability ``train.label_dropout`` (classifier-free
        guidance training), continuous conditions are never dropped."""
        if labels is None:
            return None
        y = labels[pairs.index1] if pairs.index1 is not None else labels[: pairs.x1.shape[0]]
        p, k = self.trainer.config.train.label_dropout, self.trainer.num_classes
        if p > 0 and k is not None:
            drop = torch.rand(y.shape[0], generator=self.local_generator).to(y.device) < p
            y = torch.where(drop, torch.full_like(y, k), y)
        return y

    # -- the pipeline ------------------------------------------------------------------
    def start_pipeline(self) -> None:
        workers, coupling = self.trainer.config.train.pairing_workers, self.trainer.coupling
        if workers and coupling.traits.threaded_solve:
            self.pipeline = PairingPipeline(self._draw_checked, coupling.solve, self.generator, workers)

    def stop_pipeline(self) -> None:
        """Stop the workers (the data generator is rewound to the first unused batch)."""
        if self.pipeline is not None:
            self.pipeline.close()
            self.pipeline = None

    # -- random states -------------------------------------------------------------------
    def data_state(self) -> Tensor:
        """The data generator's state before the first batch not yet used (what a checkpoint holds)."""
        return self.pipeline.resume_state() if self.pipeline else self.generator.get_state()

    def snapshot(self) -> tuple[Tensor, Tensor, Tensor]:
        return self.data_state(), self.local_generator.get_state(), torch.get_rng_state()

    def restore(self, snapshot: tuple[Tensor, Tensor, Tensor]) -> None:
        """Back to the random state of ``snapshot`` (the pipeline drops what it drew ahead)."""
        if self.pipeline is not None:
            self.pipeline.reset()
        self.generator.set_state(snapshot[0])
        self.local_generator.set_state(snapshot[1])
        torch.set_rng_state(snapshot[2])


@contextmanager
def _step_warnings(step: int) -> Iterator[None]:
    """Re-issue the warnings raised inside (a Sinkhorn that did not converge, ...) with the step."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        warnings.warn(f"step {step + 1}: {w.message}", w.category, stacklevel=4)
