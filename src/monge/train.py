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

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .config import Config, ConfigError, build_path
from .couplings import COUPLINGS
from .data.sources import FiniteRows, build_data, moved_data_hint
from .ema import EMA
from .evaluate import EvalRow, NLLResult
from .models import AutoEncoder, build_model, set_attributes
from .progress import training_bar
from .run import distributed
from .run.batches import Batches, local_seed
from .run.checkpoint import CHECKPOINT_NAME, save_checkpoint
from .run.checks import build_objective, check_conditional, check_continuous, check_device, check_training_memory
from .run.divergence import DivergenceGuard, TrainingError, clip_gradients
from .run.evaluation import eval_due, evaluate_run, evaluate_run_nll, evaluation_notes, write_eval
from .run.latent import encode_run_target, open_latent
from .run.logs import RunLogs, require_tensorboard
from .run.preparation import prepare_run_coupling
from .run.resume import nonfinite, resume_training, start_run, training_state
from .run.rundir import claim_for_ranks
from .run.signals import interrupt_note, route_sigint, save_on_interrupt
from .rundata import data_fingerprint

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
    """Train a flow-matching model from a :class:`~monge.config.Config`; ``model`` may be any
    ``nn.Module`` with ``forward(x, t)`` (default: built from ``config.model``).

    A latent flow (``data.latent``) opens its autoencoder here (``codec``; checked against the
    data, so a mismatch fails before any work) and keeps the image set as ``images``; ``target``
    becomes the encoded images when :meth:`prepare` runs (:meth:`fit` calls it), so the model, the
    source and every coupling work on the latents. An autoencoder run (``model: autoencoder``,
    ``objective: reconstruction``) trains on the images alone; each checkpoint's EMA model has its
    latent scale set exactly on the training images (:meth:`~monge.models.AutoEncoder.calibrate`).
    """

    def __init__(self, config: Config, model: nn.Module | None = None) -> None:
        self.config, tc = config, config.train
        device = check_device(tc.device)
        if tc.tensorboard:
            require_tensorboard()
        self.dist = distributed.setup(device)
        self.device = distributed.rank_device(device, self.dist)
        try:
            self.source, self.target = build_data(config.data)
        except ValueError as err:
            raise ConfigError(moved_data_hint(str(err), config.data)) from None
        #: a latent flow's autoencoder and image set (``data.latent``), else ``None``
        self.codec, self.images, self.latent_record = None, None, None
        if config.data.latent is not None:
            self.codec, self.images, self.source, self.latent_record = open_latent(config, self.target, self.device)
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
            set_attributes(module, standardizer=getattr(self.target, "standardizer", None))
        # a flow map's JVP may not mutate captured tensors: no buffer broadcast inside its forward under DDP
        self.net = distributed.wrap_model(self.model, self.dist, self.device, compile=tc.compile,
                                          broadcast_buffers=self.objective.sampler_kind in ("ode", None))
        #: shared by all ranks: the global batch of data and times; per rank: coupling and path randomness
        self.generator = torch.Generator().manual_seed(tc.seed + 1)
        self.local_generator = torch.Generator().manual_seed(local_seed(tc.seed, self.dist.rank))
        self.batches = Batches(self)
        self.guard = DivergenceGuard(config.run_dir)
        #: steps done, the last step's loss and its objective's logs (e.g. mean_flow's ``adaptive_loss``)
        self.step, self.last_loss, self.last_logs = 0, float("nan"), dict[str, float]()
        #: the last step's total gradient norm (before clipping)
        self.grad_norm: torch.Tensor | None = None
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
            self.grad_norm = clip_gradients(self.model, self.config.train.grad_clip)
            self.guard.check_gradient(self.grad_norm, self.step)
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
        if getattr(self, "_fingerprint", None) is None:  # a latent flow's: of its images
            self._fingerprint = data_fingerprint(self.source, self.target if self.images is None else self.images)
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
        if isinstance(self.ema.model, AutoEncoder) and isinstance(self.target, FiniteRows):  # exact latent scale
            self.ema.model.calibrate(self.target.data)
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
        """``eval.md`` / ``eval.csv`` (/ ``nll.csv``, ``reconstruction.csv``) of the run directory at the
        current step, with :func:`~monge.run.evaluation.evaluation_notes`."""
        if self.dist.rank != 0:
            return
        notes, reconstruction = evaluation_notes(self)
        write_eval(self.run_dir, self.config.name, self.step, rows, nll, notes, reconstruction)

    def prepare(self, resume: bool = False) -> None:
        """Encode a latent flow's images (:meth:`encode_latents`), then fit what the coupling needs
        before training (e.g. the ``semidiscrete_ot`` map on all encoded points), see
        :func:`monge.run.preparation.prepare_run_coupling`."""
        if self.codec is not None:
            self.encode_latents(rebuild=not resume)
        self.prepare_seconds = prepare_run_coupling(self.coupling, self.source, self.target, self.run_dir,
                                                    self.config.train.seed, self.dist, self.device, resume)

    def encode_latents(self, rebuild: bool = False) -> None:
        """A latent flow's ``target``: its images and their held-out split encoded once, cached in the
        run directory (:func:`monge.run.latent.encode_target`). A fresh run encodes again
        (``rebuild``); a resumed one reads the cache, refused when the autoencoder changed since."""
        self.target = encode_run_target(self, rebuild)

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
        tc, main = self.config.train, self.dist.rank == 0
        start_run(self, resume)
        first_step, start = self.step, time.perf_counter()
        logs = RunLogs(self, resume)
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
                    logs.step(self, loss, time.perf_counter() - start)
                if tc.checkpoint_every and self.step % tc.checkpoint_every == 0:
                    self.save()
                if eval_due(self.step, tc.eval_every, tc.steps):
                    self._evaluate_and_log(logs)
                if self._stop_all if self.dist.enabled else self.interrupted:
                    raise KeyboardInterrupt  # Ctrl-C during the step, honoured at its end
        except KeyboardInterrupt:
            progress.close()
            logs.close()
            raise KeyboardInterrupt(save_on_interrupt(self)) from None
        finally:
            restore_sigint()
            self.batches.stop_pipeline()
            progress.close()
            logs.csv.close()  # TensorBoard stays open for the final evaluation
        self.save()
        with interrupt_note(f"interrupted during the final evaluation; the checkpoint at step {self.step} is saved "
                            f"in {self.checkpoint_path}: the same command with --resume evaluates it"):
            rows, nll = self._evaluate_and_log(logs)
        logs.close()
        return TrainResult(self.step, self.last_loss, self.run_dir, rows, time.perf_counter() - start,
                           trained=self.step - first_step, nll=nll)

    def _evaluate_and_log(self, logs: RunLogs) -> tuple[list[EvalRow], NLLResult | None]:
        """Evaluate, write ``eval.md`` / ``eval.csv`` and the TensorBoard rows and sample figure; all ranks."""
        rows, nll = self.evaluate(), self.evaluate_nll()
        self.write_eval(rows, nll)
        logs.evaluation(self, rows, nll)
        distributed.barrier()
        return rows, nll
