"""The training loop: coupling -> path -> objective, with EMA, checkpoints, resume and logs.

The step is :meth:`Trainer.train_step`: draw a batch, couple it, take the objective's loss on the
path, one AdamW step, one EMA update. Randomness comes from explicit generators whose states are
saved with the checkpoint, so a resumed run continues exactly where it stopped. :meth:`Trainer.fit`
composes the pieces of :mod:`monge.run`, one job each: run directory and lock, batches and the
pairing pipeline, checkpoints and resume, divergence guard, logs, evaluations, Ctrl-C, and DDP
(under ``torchrun``: ``train.batch_size`` is per process, every rank draws the same global batch
and keeps its slice; rank 0 alone writes; the logged loss is the mean over ranks).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .config import Config, ConfigError, build_path
from .couplings import COUPLINGS
from .data.sources import build_data, moved_data_hint
from .ema import EMA
from .evaluate import EvalRow, NLLResult
from .models import build_model
from .progress import training_bar
from .rundata import data_fingerprint
from .run import distributed
from .run.batches import Batches, local_seed
from .run.checkpoint import CHECKPOINT_NAME, CheckpointError, save_checkpoint
from .run.checks import build_objective, check_conditional, check_continuous, check_device, check_training_memory
from .run.divergence import DivergenceGuard, TrainingError, clip_gradients
from .run.evaluation import eval_due, evaluate_run, evaluate_run_nll, write_eval
from .run.logs import CsvLog
from .run.preparation import prepare_run_coupling
from .run.resume import nonfinite, resume_training, training_state
from .run.rundir import claim_for_ranks, no_checkpoint_message
from .run.signals import interrupt_note, route_sigint

__all__ = ["Trainer", "TrainResult", "TrainingError"]


@dataclass
class TrainResult:
    step: int
    loss: float
    run_dir: Path
    eval_rows: list[EvalRow] = field(default_factory=list)
    seconds: float = 0.0
    #: steps trained by this call of :meth:`Trainer.fit` (``step`` minus the resumed step)
    trained: int = 0
    nll: NLLResult | None = None


class Trainer:
    """Train a flow-matching model from a :class:`~monge.config.Config`.

    ``model`` may be any ``nn.Module`` with ``forward(x, t)``; by default it is built from
    ``config.model``.
    """

    def __init__(self, config: Config, model: nn.Module | None = None) -> None:
        self.config, tc = config, config.train
        device = check_device(tc.device)
        self.dist = distributed.setup(device)
        self.device = distributed.rank_device(device, self.dist)
        try:
            self.source, self.target = build_data(config.data)
        except ValueError as err:
            raise ConfigError(moved_data_hint(str(err), config.data)) from None
        torch.manual_seed(tc.seed)
        if model is None:
            check_training_memory(config, self.source.shape, self.device)
        self.model = (model or build_model(config.model.name, config.model.params, self.source.shape)).to(self.device)
        self.coupling = COUPLINGS.build(config.coupling.name, **config.coupling.params)
        #: size of a continuous-condition model's condition (``model.cond_dim``), else ``None``
        self.cond_dim = check_continuous(config, self.model, self.target, self.coupling)
        #: classes of a class-conditional model (``model.num_classes``), else ``None``
        self.num_classes = None if self.cond_dim is not None else \
            check_conditional(config, self.model, self.target, self.coupling)
        self.path = build_path(config)
        self.objective = build_objective(config, self.model)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        self.ema = EMA(self.model, tc.ema_decay)
        for module in (self.model, self.ema.model):  # generate() maps a table's samples back to data units
            module.standardizer = getattr(self.target, "standardizer", None)
        # a flow map's JVP may not mutate captured tensors: no buffer broadcast inside its forward under DDP
        self.net = distributed.wrap_model(self.model, self.dist, self.device, compile=tc.compile,
                                          broadcast_buffers=self.objective.sampler_kind == "ode")
        #: shared by all ranks: the global batch of data and times; per rank: coupling and path randomness
        self.generator = torch.Generator().manual_seed(tc.seed + 1)
        self.local_generator = torch.Generator().manual_seed(local_seed(tc.seed, self.dist.rank))
        self.batches = Batches(self)
        self.guard = DivergenceGuard(config.run_dir)
        #: steps done, the last step's loss and its objective's logs (e.g. mean_flow's ``adaptive_loss``)
        self.step, self.last_loss, self.last_logs = 0, float("nan"), {}
        self.prepare_seconds, self.run_dir = 0.0, config.run_dir
        #: where :meth:`train_step` is: None (between steps), "draw" (nothing updated yet) or
        #: "update" (optimiser/EMA being updated: an exception here leaves a torn state)
        self.phase: str | None = None
        self.interrupted = False  # Ctrl-C seen during a step: stop at the next step boundary
        self._stop_all = False  # the interrupt, agreed by all ranks (distributed)
        #: "key: old -> new" of the settings changed on the last :meth:`load`
        self.resume_changes: list[str] = []

    # -- one step --------------------------------------------------------------------
    def train_step(self) -> float:
        """One optimiser step: draw -> couple -> path and objective loss -> optimiser -> EMA.

        An exception before the update (an interrupt, a non-finite loss) leaves the trainer as it
        was before the step, random states included."""
        snapshot = self.batches.snapshot()
        self.phase = "draw"
        try:
            batch = self.batches.draw()
            pairs = self.batches.couple(batch)
            labels = self.batches.pair_labels(batch.labels, pairs)
            self.net.train()
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.train.precision == "bf16"):
                loss, logs = self.objective.loss(self.net, pairs, batch.t.to(pairs.x0.device), self.path,
                                                 labels=labels, generator=self.local_generator)
            value = self.guard.check_loss(self._reduce_loss(loss.detach()), self.step)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.guard.check_gradient(clip_gradients(self.model, self.config.train.grad_clip), self.step)
            self.phase = "update"
            self.optimizer.step()
            self.ema.update(self.model)
            self.step, self.last_loss, self.last_logs = self.step + 1, value, logs
            self.guard.record(value)
        except BaseException:
            if self.phase == "draw":
                self.batches.restore(snapshot)
                self.phase = None
            raise
        self.phase = None
        return value

    def _reduce_loss(self, loss: torch.Tensor) -> float:
        value, stop = distributed.reduce_loss(loss, self.interrupted, self.dist)
        self._stop_all = self._stop_all or (stop and self.dist.enabled)
        return value

    def diagnostics(self) -> dict[str, float]:
        """:func:`~monge.couplings.diagnostics.coupling_diagnostics` of the latest step's batch
        (logged in ``log.csv`` at every log step; empty before the first step)."""
        from .couplings.diagnostics import coupling_diagnostics

        return {} if self.batches.last is None else coupling_diagnostics(*self.batches.last)

    def data_fingerprint(self) -> dict[str, list]:
        """:func:`~monge.rundata.data_fingerprint` of the run's data, computed once."""
        if getattr(self, "_fingerprint", None) is None:
            self._fingerprint = data_fingerprint(self.source, self.target)
        return self._fingerprint

    # -- checkpoints, evaluation, preparation ----------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT_NAME

    def save(self, path: str | Path | None = None, gather: bool = True) -> Path:
        """Write a checkpoint atomically (default: ``run_dir/checkpoint.safetensors``).

        Distributed: a collective call (all ranks), rank 0 writes; ``gather=False`` skips the
        collection of the other ranks' generators (used on interrupt, when ranks may be out of step).
        """
        path = Path(path) if path is not None else self.checkpoint_path
        bad = nonfinite(self.model.state_dict())
        if bad:
            raise TrainingError(
                f"the weights are non-finite at step {self.step} ({bad}); the checkpoint was not written, the "
                f"last good one is kept in {self.run_dir}. Lower train.lr or enable train.grad_clip.")
        tensors, state = training_state(self, gather)
        if self.dist.rank == 0:
            save_checkpoint(path, tensors, self.config.to_dict(), state)
        if gather:
            distributed.barrier()
        return path

    def load(self, path: str | Path | None = None) -> None:
        """Restore model, EMA, optimiser, RNG states and step from a checkpoint (:mod:`monge.run.resume`)."""
        resume_training(self, Path(path) if path is not None else self.checkpoint_path)

    def evaluate(self) -> list[EvalRow]:
        """Quality-versus-NFE rows of the EMA model (computed on rank 0; ``[]`` elsewhere)."""
        return evaluate_run(self)

    def evaluate_nll(self) -> NLLResult | None:
        """Held-out negative log-likelihood of the EMA model (``sample.nll``; rank 0 only, else ``None``)."""
        return evaluate_run_nll(self)

    def write_eval(self, rows: list[EvalRow], nll: NLLResult | None = None) -> None:
        """``eval.md`` / ``eval.csv`` (/ ``nll.csv``) of the run directory at the current step."""
        write_eval(self.run_dir, self.config.name, self.step, rows, nll)

    def prepare(self, resume: bool = False) -> None:
        """Fit what the coupling needs before training (e.g. the ``semidiscrete_ot`` map), see
        :func:`monge.run.preparation.prepare_run_coupling`."""
        self.prepare_seconds = prepare_run_coupling(self.coupling, self.source, self.target, self.run_dir,
                                                    self.config.train.seed, self.dist, self.device, resume)

    # -- the loop ----------------------------------------------------------------------------
    def fit(self, resume: bool = False, overwrite: bool | str = False) -> TrainResult:
        """Train to ``config.train.steps``; ``resume=True`` continues from the run's checkpoint.

        A run directory that already holds a run is refused unless ``resume`` or ``overwrite``
        (``True``: move the old run to ``RUN.bak-<time>``; ``"replace"``: delete its files, naming
        them), see :mod:`monge.run.rundir`. The run is locked while training (rank 0 holds the lock).
        Ctrl-C stops at the next step boundary and saves a checkpoint there (a second Ctrl-C
        stops at once; the checkpoint is then saved only if no update was under way).
        """
        if resume and overwrite:
            raise ValueError("resume and overwrite exclude each other: continue the run or start it again")
        extra = (self.coupling.traits.prepared_file,) if self.coupling.traits.prepared_file else ()
        lock = claim_for_ranks(self.run_dir, self.dist, resume, overwrite, extra)
        try:
            return self._fit(resume)
        finally:
            if lock is not None:
                lock.release()

    def _fit(self, resume: bool) -> TrainResult:
        from .couplings.diagnostics import DIAGNOSTICS

        tc, main = self.config.train, self.dist.rank == 0
        self._start(resume)
        first_step, start = self.step, time.perf_counter()
        log = CsvLog(self.run_dir / "log.csv", ["step", "loss", "lr", "seconds", *DIAGNOSTICS], append=resume,
                     enabled=main)
        progress = training_bar(tc.steps, self.step, tc.progress and main, self.config.name)
        self.interrupted = self._stop_all = False
        restore_sigint = route_sigint(self)
        self.batches.start_pipeline()
        try:
            while self.step < tc.steps:
                loss = self.train_step()
                progress.update(1)
                if self.step % tc.log_every == 0 or self.step == tc.steps:
                    progress.set_postfix(loss=f"{loss:.4f}")
                    diag = self.diagnostics()
                    log.write([self.step, loss, self.optimizer.param_groups[0]["lr"], round(time.perf_counter() - start, 3),
                               *(round(diag.get(k, math.nan), 5) for k in DIAGNOSTICS)])
                if tc.checkpoint_every and self.step % tc.checkpoint_every == 0:
                    self.save()
                if eval_due(self.step, tc.eval_every, tc.steps):
                    self.write_eval(self.evaluate(), self.evaluate_nll())
                    distributed.barrier()
                if self._stop_all if self.dist.enabled else self.interrupted:
                    raise KeyboardInterrupt  # Ctrl-C during the step, honoured at its end
        except KeyboardInterrupt:
            progress.close()
            raise KeyboardInterrupt(self._save_interrupted()) from None
        finally:
            restore_sigint()
            self.batches.stop_pipeline()
            progress.close()
            log.close()
        self.save()
        with interrupt_note(f"interrupted during the final evaluation; the checkpoint at step {self.step} is saved "
                            f"in {self.checkpoint_path}: the same command with --resume evaluates it"):
            rows, nll = self.evaluate(), self.evaluate_nll()
            self.write_eval(rows, nll)
        distributed.barrier()
        return TrainResult(self.step, self.last_loss, self.run_dir, rows, time.perf_counter() - start,
                           trained=self.step - first_step, nll=nll)

    def _start(self, resume: bool) -> None:
        """The run directory, the resumed state, ``config.yaml`` and the coupling's fit, before the first step."""
        from .outputs import atomic_write_bytes

        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            if not self.checkpoint_path.is_file():
                raise CheckpointError(no_checkpoint_message(self.run_dir))
            self.load()
        if self.dist.rank == 0:
            atomic_write_bytes(self.run_dir / "config.yaml", self.config.to_yaml().encode("utf-8"))
            for stale in self.run_dir.glob(f".{CHECKPOINT_NAME}.*.tmp"):  # left by a killed save
                stale.unlink(missing_ok=True)
        with interrupt_note(self._preparation_note()):
            self.prepare(resume)

    def _preparation_note(self) -> str:
        """What an interrupt of the coupling's preparation leaves, and how to continue."""
        every = getattr(getattr(self.coupling, "solver", None), "checkpoint_every", None)
        if self.coupling.traits.prepared_file is None or not every:
            return "interrupted before the first step; nothing was trained: the same command starts the run again"
        return (f"interrupted while fitting the coupling before training; the fit's state is saved in {self.run_dir} "
                f"every {every} steps: the same command resumes the fit")

    def _save_interrupted(self) -> str:
        """On Ctrl-C: save at the step boundary, unless an optimiser/EMA update was torn; returns the
        note of what was saved and how to continue."""
        torn = self.phase is not None  # interrupted inside an optimiser/EMA update
        synced = self.dist.enabled and self._stop_all and not torn
        self.batches.stop_pipeline()
        if torn and not self.checkpoint_path.is_file():
            return (f"interrupted in the middle of step {self.step + 1}'s update, before a first checkpoint: the same "
                    "command starts the run again")
        if torn:
            return (f"interrupted in the middle of step {self.step + 1}'s update; the checkpoint was not updated "
                    f"(the last one in {self.run_dir} stays valid): the same command with --resume continues")
        self.save(gather=synced)
        return (f"interrupted at step {self.step}; checkpoint saved to {self.checkpoint_path}: the same command with "
                "--resume continues")
