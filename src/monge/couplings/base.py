"""The coupling interface: :class:`Coupled` pairs, :class:`Traits`, the :class:`Coupling` base
classes, the ``COUPLINGS`` registry and helpers shared by the coupling families."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .._validation import check_batches, check_positive
from ..registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from torch.distributed import ProcessGroup

    from ..data.sources import DataSource

__all__ = [
    "COUPLINGS",
    "Coupled",
    "Coupling",
    "Traits",
    "SolverCoupling",
    "AssignmentCoupling",
]

COUPLINGS: Registry[Coupling] = Registry("coupling")


@dataclass(frozen=True)
class Coupled:
    """Paired batches; ``weights`` (shape ``(batch,)``, mean 1) scale each pair's loss.

    ``index1``: the rows of the given ``x1`` that became the pairs' ``x1`` when a coupling
    re-draws the data side (``None``: ``x1[:len(pairs)]`` in order), so that per-sample
    attributes such as class labels follow their data point.

    ``plan_entropy``: the normalised entropy of the plan the pairs came from on the batch
    (:func:`monge.couplings.diagnostics.plan_entropy`): 0 for a permutation or any pairing that is
    a function of the batch, 1 for the independent plan; ``None`` when the coupling forms no plan
    on the batch (``knn_immiscible`` draws fresh noise).
    """

    x0: Tensor
    x1: Tensor
    weights: Tensor | None = None
    index1: Tensor | None = None
    plan_entropy: float | None = None


@dataclass(frozen=True)
class Traits:
    """What a trainer needs to know about a coupling, declared once per class
    (``traits = Traits(...)``; an instance may replace it, e.g. when a parameter changes one)."""

    #: the pairing needs the data's labels: :meth:`Coupling.pair` then takes ``labels=``
    uses_labels: bool = False
    #: the pairs' ``x1`` are rows of the given ``x1`` (``False`` for fitted map targets or stored
    #: pairs: per-sample labels cannot follow them, so no conditional training)
    keeps_data: bool = True
    #: a :class:`SolverCoupling` whose solve is one long call that releases the GIL (POT's network
    #: simplex, SciPy's assignment, the semi-discrete cell search), so solver threads overlap
    #: training (``train.pairing_workers``). Sinkhorn is many short multi-threaded torch calls: in
    #: a thread it competes with training for the GIL and the cores (``bench/results/couplings.md``).
    threaded_solve: bool = False
    #: why ``threaded_solve`` is ``False`` (the error of ``train.pairing_workers`` says it)
    unthreaded_reason: str = "it pairs without an OT solve"
    #: file name, inside the run directory, of the state fitted by ``prepare`` (``None``: the
    #: coupling keeps nothing; :func:`monge.couplings.maps.prepare_coupling` reads and writes it)
    prepared_file: str | None = None


class Coupling(ABC):
    """Base class: ``coupling(x0, x1, generator, labels=None) -> Coupled``.

    A coupling defines :meth:`pair`, may define :meth:`prepare` (work done once before training,
    on the data sources), and declares its :class:`Traits`. ``labels`` (the ``(B,)`` classes or
    ``(B, k)`` conditions of the data ``x1``) reach only the couplings whose traits say
    ``uses_labels`` (``conditional_ot``), as ``pair(x0, x1, generator, labels=labels)``; the
    others ignore them, so a trainer may always pass them. The pairs' labels are then
    ``labels[index1]`` (or ``labels[:len(pairs)]``), as for any coupling.
    """

    traits: Traits = Traits()

    def __call__(
        self, x0: Tensor, x1: Tensor, generator: torch.Generator | None = None, *, labels: Tensor | None = None
    ) -> Coupled:
        self.check_inputs(x0, x1)
        if self.traits.uses_labels:
            return self.pair(x0, x1, generator, labels=labels)  # type: ignore[call-arg]  # uses_labels: its pair takes labels=
        return self.pair(x0, x1, generator)

    def check_inputs(self, x0: Tensor, x1: Tensor) -> None:
        """Raise ``ValueError`` unless ``x0`` and ``x1`` are batches of one sample shape."""
        check_batches(x0, x1, "x0", "x1")

    @abstractmethod
    def pair(self, x0: Tensor, x1: Tensor, generator: torch.Generator | None) -> Coupled:
        """The pairs of the batch (with ``uses_labels``: ``pair(x0, x1, generator, labels=None)``)."""

    def prepare(  # noqa: B027 - an optional hook: most couplings prepare nothing
        self, source: DataSource, target: DataSource, generator: torch.Generator | None = None
    ) -> None:
        """Work done once before training, on the data sources (no-op by default). A coupling
        with ``traits.prepared_file`` keeps what it fitted in the run directory:
        :func:`monge.couplings.maps.prepare_coupling`."""


class SolverCoupling(Coupling):
    """A coupling whose pairing is one OT solve on the batch, then cheap indexing.

    ``pair(x0, x1, g) = pair_solved(x0, x1, solve(x0, x1), g)``. :meth:`solve` holds all the
    work and uses no randomness (it is a function of the batch alone), so it may run in another
    thread, ahead of the step that uses the batch: :class:`monge.pairing.PairingPipeline`.
    Whatever randomness the pairing needs is drawn in :meth:`pair_solved`, on the training thread
    and in the order of the steps, so the pairs do not depend on where or when the solve ran.
    """

    @abstractmethod
    def solve(self, x0: Tensor, x1: Tensor) -> Tensor:
        """The batch's OT solution (a permutation or a plan); deterministic, thread-safe."""

    @abstractmethod
    def pair_solved(self, x0: Tensor, x1: Tensor, solution: Tensor, generator: torch.Generator | None) -> Coupled:
        """The pairs from a :meth:`solve` of the same ``(x0, x1)``."""

    def pair(self, x0: Tensor, x1: Tensor, generator: torch.Generator | None) -> Coupled:
        return self.pair_solved(x0, x1, self.solve(x0, x1), generator)


class AssignmentCoupling(SolverCoupling):
    r"""A solver coupling whose solution is a permutation: data point ``j`` gets noise ``perm[j]``.

    Parameters
    ----------
    solver : {"auto", "scipy", "emd", "auction"}
        The assignment solver (:func:`monge.ot.exact.assignment`). ``"auction"`` runs in torch on
        the device of the batch (no copy to numpy), certified to relative gap ``tol``;
        ``"auto"`` is the auction on CUDA and the fastest exact CPU solver on the CPU.
    scope : {"local", "global"}
        ``"local"``: each process pairs its own batch. ``"global"`` (under ``torchrun``): every
        rank all-gathers the noise and data of all ranks, solves the one global problem (the
        same deterministic computation on every rank) and keeps the noise assigned to its own
        data rows, so ``W`` processes pair exactly as one process with the global batch. The
        gather goes through a process group of its own (:func:`monge.run.distributed.new_group`),
        so it may run in one pairing worker thread; several workers would issue gathers in
        different orders on different ranks and are refused. Alone, same as ``"local"``.
    tol : float
        The auction's target relative gap.
    """

    traits = Traits(threaded_solve=True)
    #: the registry name, for messages
    label = "assignment"

    def __init__(self, solver: str = "auto", scope: str = "local", tol: float = 1e-6) -> None:
        from ..ot.exact import METHODS

        if solver not in METHODS:
            raise ValueError(f"solver must be one of {', '.join(map(repr, METHODS))}, got {solver!r}")
        if scope not in ("local", "global"):
            raise ValueError(f"scope must be 'local' or 'global', got {scope!r}")
        self.solver, self.scope = solver, scope
        self.tol = check_positive(tol, "tol")
        self._group: ProcessGroup | None = None
        self._group_ready = False

    @abstractmethod
    def cost(self, x0: Tensor, x1: Tensor) -> Tensor:
        """``(B1, B0)`` cost, rows: data ``x1``, columns: noise ``x0``."""

    def prepare(
        self, source: DataSource, target: DataSource, generator: torch.Generator | None = None
    ) -> None:
        """With ``scope="global"``, create the gather's process group (every rank calls it)."""
        self._gather_group()

    def _gather_group(self) -> ProcessGroup | None:
        from ..run import distributed

        if self.scope == "global" and not self._group_ready:
            self._group, self._group_ready = distributed.new_group(), True
        return self._group

    def _assign(self, x0: Tensor, x1: Tensor) -> Tensor:
        from ..ot.exact import assignment

        # solver: a str checked against METHODS in __init__, not the Literal the overloads name
        return assignment(self.cost(x0, x1), method=self.solver, tol=self.tol)  # type: ignore[call-overload]

    def solve(self, x0: Tensor, x1: Tensor) -> Tensor:
        """``perm`` (``(B,)`` int64, data point ``j`` gets noise ``perm[j]``); with
        ``scope="global"`` under torchrun, the ``(B, *shape)`` noise assigned to this rank's data."""
        check_equal_batches(x0, x1, self.label)
        from ..run import distributed

        if self.scope != "global" or not distributed.info().enabled:
            return self._assign(x0, x1)
        group = self._gather_group()
        g0, g1 = distributed.all_gather_rows(x0, group), distributed.all_gather_rows(x1, group)
        b, rank = x1.shape[0], distributed.info().rank
        perm = self._assign(g0, g1)[rank * b: (rank + 1) * b]
        return g0[perm]

    def pair_solved(self, x0: Tensor, x1: Tensor, solution: Tensor, generator: torch.Generator | None) -> Coupled:
        if solution.dim() == 1 and solution.dtype == torch.int64:
            return Coupled(x0[solution], x1, plan_entropy=0.0)
        return Coupled(solution.to(x0.dtype), x1, plan_entropy=0.0)  # global scope: the noise itself


# ----------------------------------------------------------------------------------- helpers
def flat(x: Tensor) -> Tensor:
    """``(n, d)`` view in at least float32 (costs of half-precision batches overflow)."""
    xf = x.reshape(x.shape[0], -1)
    if xf.dtype in (torch.float16, torch.bfloat16):
        xf = xf.float()
    return xf


def gen_device(generator: torch.Generator | None, fallback: torch.device) -> torch.device:
    return generator.device if generator is not None else fallback


def uniform(n: int, generator: torch.Generator | None, like: Tensor) -> Tensor:
    """``n`` uniforms drawn on the generator's device, returned on ``like``'s device and dtype."""
    dev = gen_device(generator, like.device)
    return torch.rand(n, generator=generator, device=dev, dtype=torch.float64).to(like.device)


def categorical(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """One index per row of the non-negative ``(n, k)`` matrix ``probs`` (rows need not sum to 1).

    Inverse-CDF sampling, so it runs on any device with a generator on another one.
    """
    cdf = probs.to(torch.float64).cumsum(1)
    u = uniform(probs.shape[0], generator, cdf) * cdf[:, -1]
    idx = torch.searchsorted(cdf, u[:, None], right=True)[:, 0]
    return idx.clamp_(max=probs.shape[1] - 1)


def check_equal_batches(x0: Tensor, x1: Tensor, name: str) -> None:
    if x0.shape[0] != x1.shape[0]:
        raise ValueError(f"{name} needs equal batch sizes, got x0: {x0.shape[0]} and x1: {x1.shape[0]}")
