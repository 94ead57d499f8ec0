r"""OT pairing ahead of training: the solves of upcoming batches run in worker threads.

A coupling with a solver costs one OT problem per batch. ``exact_ot`` at :math:`B = 512` spends
longer in the network simplex on a CPU core than the whole step of a small network takes
(``bench/results/couplings.md``). The solve depends on the batch alone, not on the model
(:class:`~monge.couplings.SolverCoupling`). So :class:`PairingPipeline` draws batches ahead of
the training loop and hands their solves to ``workers`` threads. POT, SciPy and torch release
the GIL while they compute, so the threads run in parallel on free cores (the couplings with
``traits.threaded_solve``; Sinkhorn's many short torch calls are not among them). A step then waits
only for a solution that is usually ready. With solve time :math:`T_s`, step time :math:`T`
and :math:`W` workers on free cores, the pairing is hidden once

.. math:: W \, T \;\ge\; T_s .

The workers need cores of their own: give training the others (``torch.set_num_threads(cores -
W)``). With every core also given to torch's intra-op threads, the two contend, and a step can
take longer than with the solve in line.

Same results as without workers: batches are drawn from the same generator in the same order,
the solve draws no random numbers, and the coupling's own randomness (e.g. the entropic plan's
sampling) is drawn by :meth:`~monge.couplings.SolverCoupling.pair_solved` on the training thread
when the batch is used. :meth:`PairingPipeline.resume_state` gives the data generator's state
before the first batch not yet used, which is what a checkpoint must hold for a resumed run to
draw the same batches.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch
from torch import Tensor

from ._validation import check_positive_int

__all__ = ["PairingPipeline"]

#: a drawn batch: ``(x0, x1, *extras)``; the extras (times, labels) travel with it untouched
Batch = Sequence[Any]


class PairingPipeline:
    """Draw batches ahead and solve their pairing in ``workers`` threads.

    Parameters
    ----------
    draw : callable
        ``draw() -> (x0, x1, *extras)``: the next batch, drawn from ``generator``. Called on the
        caller's thread only, in order.
    solve : callable
        ``solve(x0, x1) -> solution``: random-free and thread-safe (a
        :meth:`~monge.couplings.SolverCoupling.solve`).
    generator : torch.Generator
        The generator ``draw`` uses; its state is recorded before each draw (:meth:`resume_state`).
    workers : int
        Solver threads, at least 1. Batches in flight: ``depth`` (default ``2 * workers``).

    Example
    -------
    >>> pipe = PairingPipeline(draw, coupling.solve, generator, workers=4)
    >>> (x0, x1, t), perm = pipe.next()                 # doctest: +SKIP
    >>> pairs = coupling.pair_solved(x0, x1, perm, g)  # doctest: +SKIP
    """

    def __init__(
        self,
        draw: Callable[[], Batch],
        solve: Callable[[Tensor, Tensor], Any],
        generator: torch.Generator,
        workers: int,
        depth: int | None = None,
    ) -> None:
        self.workers = check_positive_int(workers, "workers")
        self.depth = check_positive_int(depth if depth is not None else 2 * self.workers, "depth")
        self._draw, self._solve, self._generator = draw, solve, generator
        self._pool: ThreadPoolExecutor | None = ThreadPoolExecutor(self.workers, thread_name_prefix="monge-pairing")
        #: (generator state before the draw, batch, future solution), oldest first
        self._queue: deque[tuple[Tensor, Batch, Future]] = deque()

    def next(self, remaining: int | None = None) -> tuple[Batch, Any]:
        """The next batch and its solution, waiting for the solve if it is not done.

        ``remaining``: batches still to be used, this one included (``None``: unbounded);
        no batch beyond them is drawn, so no solve is wasted at the end of training.
        """
        if self._pool is None:
            raise RuntimeError("the pairing pipeline is closed")
        self._fill(remaining)
        _, batch, future = self._queue.popleft()
        self._fill(None if remaining is None else remaining - 1)
        return batch, future.result()

    def _fill(self, remaining: int | None) -> None:
        if self._pool is None:
            raise RuntimeError("the pairing pipeline is closed")
        limit = self.depth if remaining is None else min(self.depth, remaining)
        while len(self._queue) < limit:
            state = self._generator.get_state()
            batch = self._draw()
            self._queue.append((state, batch, self._pool.submit(self._solve, batch[0], batch[1])))

    def resume_state(self) -> Tensor:
        """State of the data generator before the first batch that :meth:`next` has not returned."""
        return self._queue[0][0] if self._queue else self._generator.get_state()

    def reset(self) -> None:
        """Drop the batches drawn ahead and rewind the generator to :meth:`resume_state`."""
        state = self.resume_state()
        self._discard()
        self._generator.set_state(state)

    def _discard(self) -> None:
        while self._queue:
            _, _, future = self._queue.popleft()
            future.cancel()

    def close(self) -> None:
        """:meth:`reset`, then stop the workers (waiting for solves already running)."""
        if self._pool is not None:
            self.reset()
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> PairingPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
