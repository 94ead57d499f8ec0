"""The training loop: coupling -> path -> objective, with EMA, checkpoints, resume and logs.

Each step draws a source batch ``x0`` and a target batch ``x1``, re-pairs them with the
coupling, samples ``t ~ U[0,1]`` and ``(x_t, u_t)`` on the path, and takes one AdamW step on the
(weighted) velocity loss; a flow-map objective (``objective: mean_flow`` or ``shortcut``,
:mod:`monge.flow_map`) takes the pairs and the network and computes its own loss. Randomness comes from explicit generators whose states are saved with
the checkpoint, so a resumed run continues exactly where it stopped.

Under ``torchrun`` (``WORLD_SIZE > 1``) the same loop runs data-parallel (DDP; gloo on CPU,
NCCL on GPU; see :mod:`monge.distributed`). ``train.batch_size`` is the batch *per process*.
Every rank draws the global batch ``(x0, x1, t)`` of ``W * batch_size`` points from one shared
data generator and keeps its own slice, so the ranks see disjoint data and a run with ``W``
processes draws the same data as one process with batch ``W * batch_size``. The coupling then
runs per rank on its local batch, and path noise comes from a per-rank generator. Rank 0 alone
writes checkpoints, logs and evaluations; the logged loss is the mean over ranks.

With ``train.pairing_workers = W > 0`` (the assignment couplings ``exact_ot`` and ``immiscible``), the
batches are drawn ahead and their solves run in ``W`` threads while the network trains
(:class:`~monge.pairing.PairingPipeline`); the run is the same as with ``W = 0``, step for step.
"""

from __future__ import annotations

import csv
import json
import math
import signal
import statistics
import sys
import threading
import time
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import distributed
from .outputs import atomic_write_bytes
from .checkpoint import (
    CheckpointError,
    flatten_optimizer_state,
    load_checkpoint,
    load_module_state,
    save_checkpoint,
    unflatten_optimizer_state,
)
from .config import Config, ConfigError
from .couplings import COUPLINGS
from .data.sources import build_data, moved_data_hint
from .ema import EMA
from .evaluate import (EvalRow, NLLResult, evaluate_field, evaluate_nll, format_nll, format_table, held_out_target,
                       reference_data)
from .models import build_model
from .pairing import PairingPipeline
from .paths import PATHS
from .rundata import check_same_data, data_fingerprint, data_tensors, stored_shape, stored_standardizer
from .rundir import RunExistsError, RunLock, RunLockedError, claim_run_dir
from .samplers.expressway import DEFAULT_T_START, Expressway

__all__ = ["Trainer", "TrainResult", "TrainingError", "load_model", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "checkpoint.safetensors"
# Settings a resumed run may change (they take effect at once); any other difference is refused.
RESUMABLE_TRAIN_KEYS = ("lr", "weight_decay", "grad_clip", "ema_decay", "steps", "log_every", "eval_every",
                        "checkpoint_every", "eval_samples", "progress", "device", "compile", "pairing_workers")
# Top-level sections a resumed run may change freely (run location, evaluation sampler).
_RESUMABLE_SECTIONS = ("name", "output_dir", "sample")

#: Divergence guard: after ``DIVERGENCE_WARMUP`` steps, a loss above ``DIVERGENCE_FACTOR`` times
#: the median of the last ``DIVERGENCE_WINDOW`` losses stops the run (as a NaN/Inf loss does).
DIVERGENCE_FACTOR = 1e4
DIVERGENCE_WARMUP = 100
DIVERGENCE_WINDOW = 100


#: Start time of the expressway rows in evaluations of ``semidiscrete_ot`` runs.
EXPRESSWAY_T = DEFAULT_T_START


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN/Inf)."""


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
        self.config = config
        tc = config.train
        from .limits import check_device

        try:
            device = check_device(tc.device)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        self.dist = distributed.setup(device)
        if device.type == "cuda" and self.dist.enabled and device.index is None:
            device = torch.device("cuda", self.dist.local_rank)
        self.device = device
        try:
            self.source, self.target = build_data(config.data)
        except ValueError as err:
            raise ConfigError(moved_data_hint(str(err), config.data)) from None
        torch.manual_seed(tc.seed)
        if model is None:
            _check_training_memory(config, self.source.shape, device)
        self.model = (model or build_model(config.model.name, config.model.params, self.source.shape)).to(
            self.device
        )
        self.coupling = COUPLINGS.build(config.coupling.name, **config.coupling.params)
        #: size of a continuous-condition model's condition (``model.cond_dim``), else ``None``
        self.cond_dim: int | None = self._check_continuous()
        #: classes of a class-conditional model (``model.num_classes``), else ``None``
        self.num_classes: int | None = None if self.cond_dim is not None else self._check_conditional()
        self.path = PATHS.build(config.path.name, **config.path.params)
        self.objective = self._build_objective()
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay
        )
        self.ema = EMA(self.model, tc.ema_decay)
        for module in (self.model, self.ema.model):  # generate() maps a table's samples back to data units
            module.standardizer = getattr(self.target, "standardizer", None)
        self.net: nn.Module = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            # a flow map's JVP may not mutate captured tensors: no buffer broadcast inside its forward
            # (monge's networks hold only constant buffers, identical on every rank)
            self.net = DistributedDataParallel(self.model, device_ids=ids,
                                               broadcast_buffers=not getattr(self.objective, "flow_map", False))
        if tc.compile:
            self.net = torch.compile(self.net)
        #: shared by all ranks: the global batch of data and times
        self.generator = torch.Generator().manual_seed(tc.seed + 1)
        #: per rank: coupling and path randomness
        self.local_generator = torch.Generator().manual_seed(_local_seed(tc.seed, self.dist.rank))
        #: solves the pairing of upcoming batches during :meth:`fit` (``train.pairing_workers``)
        self.pipeline: PairingPipeline | None = None
        self.step = 0
        self.prepare_seconds = 0.0
        self.last_loss = float("nan")
        self.run_dir = config.run_dir
        #: where :meth:`train_step` is: None (between steps), "draw" (nothing updated yet) or
        #: "update" (optimiser/EMA being updated: an exception here leaves a torn state)
        self._phase: str | None = None
        self._interrupt = False  # Ctrl-C seen during a step: stop at the next step boundary
        self._stop_all = False  # the interrupt, agreed by all ranks (distributed)
        self._losses: deque[float] = deque(maxlen=DIVERGENCE_WINDOW)
        #: "key: old -> new" of the settings changed on the last :meth:`load`
        self.resume_changes: list[str] = []
        #: ``(x0, x1, pairs)`` of the latest step, for :meth:`diagnostics`
        self._last_batch: tuple[Tensor, Tensor, Any] | None = None

    def _check_continuous(self) -> int | None:
        """``model.cond_dim``, checked against the target's conditions and the coupling. ``train.label_dropout``
        trains the null class of class-conditional models only: continuous conditions are never dropped."""
        k = getattr(self.model, "cond_dim", None)
        if k is None:
            return None
        name, target = self.config.data.target, self.target
        if getattr(target, "cond_dim", None) is None or not hasattr(target, "sample_with_conditions"):
            raise ConfigError(
                f"the model takes a continuous condition (cond_dim={k}) but data.target {name} has none; use a "
                "target with continuous conditions ({name: conditional_toy, set: moons, condition: x}) or drop cond_dim")
        if target.cond_dim != k:
            raise ConfigError(f"data.target {name} has {target.cond_dim}-D conditions but the model has cond_dim={k}")
        if self.coupling.traits.uses_labels and getattr(self.coupling, "condition", "continuous") != "continuous":
            raise ConfigError(
                f"coupling {self.config.coupling.name!r} pairs within discrete classes but the conditions are "
                "continuous: set coupling.condition: continuous (and its weight)")
        if not self.coupling.traits.keeps_data:
            raise ConfigError(
                f"coupling {self.config.coupling.name!r} pairs noise with points that are not the drawn data, so "
                "conditions cannot follow them; use a batch coupling (independent, conditional_ot, ...)")
        return int(k)

    def _build_objective(self) -> Any:
        """``config.objective`` (velocity regression by default), checked against the model's time inputs."""
        from . import flow_map
        from .objectives import OBJECTIVES

        name = self.config.objective.name
        try:
            objective = OBJECTIVES.build(name, **self.config.objective.params)
            flow_map.check_model(name, getattr(self.model, "second_time", False) is True)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        return objective

    def _check_conditional(self) -> int | None:
        k = getattr(self.model, "num_classes", None)
        name = self.config.data.target
        if self.coupling.traits.uses_labels:
            if getattr(self.target, "labels", None) is None or not hasattr(self.target, "sample_with_labels"):
                raise ConfigError(
                    f"coupling {self.config.coupling.name!r} pairs within the data's classes but data.target {name} "
                    "has no labels; use a labelled data set (8gaussians, 25gaussians, digits, mnist, cifar10, an "
                    "image folder with class sub-folders) or another coupling")
            if k is None:
                raise ConfigError(
                    f"coupling {self.config.coupling.name!r} pairs within classes, which only helps a class-conditional "
                    "model: set model.num_classes (mlp or unet; model.cond_dim for continuous conditions), or use "
                    "exact_ot for an unconditional model")
        if k is None:
            return None
        labels = getattr(self.target, "labels", None)
        if labels is None or not hasattr(self.target, "sample_with_labels"):
            raise ConfigError(
                f"the model is class-conditional (num_classes={k}) but data.target {name} has no labels; "
                "use a labelled data set (digits, mnist, cifar10, an image folder with class sub-folders) "
                "or drop num_classes"
            )
        if int(labels.max()) >= k:
            raise ConfigError(f"data.target {name} has class {int(labels.max())} but the model has num_classes={k}")
        if not self.coupling.traits.keeps_data:
            raise ConfigError(
                f"coupling {self.config.coupling.name!r} pairs noise with points that are not the drawn data "
                "(fitted targets or stored pairs), so labels cannot follow them; class-conditional training "
                "needs a batch coupling (independent, exact_ot, entropic, wcfm, immiscible, knn_immiscible, ...)"
            )
        return int(k)

    # -- one step --------------------------------------------------------------
    def _draw_batch(self) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """This rank's slice of the global batch ``(x0, x1, t, labels)`` (labels: conditional models)."""
        bs, g, dev = self.config.train.batch_size, self.generator, self.device
        world, rank = self.dist.world_size, self.dist.rank
        x0 = self.source.sample(bs * world, generator=g, device=dev)
        y = None
        if self.cond_dim is not None:
            x1, y = self.target.sample_with_conditions(bs * world, generator=g, device=dev)
            if not bool(torch.isfinite(y).all()):
                raise TrainingError(f"data.target {self.config.data.target} drew NaN/Inf conditions at step "
                                    f"{self.step + 1}; clean or impute the conditions before training")
        elif self.num_classes is None:
            x1 = self.target.sample(bs * world, generator=g, device=dev)
        else:
            x1, y = self.target.sample_with_labels(bs * world, generator=g, device=dev)
        t = torch.rand(bs * world, generator=g).to(dev)
        if world > 1:
            local = slice(rank * bs, (rank + 1) * bs)
            x0, x1, t = x0[local], x1[local], t[local]
            y = None if y is None else y[local]
        return x0, x1, t, y

    def _pair_labels(self, y: Tensor, pairs: Any) -> Tensor:
        r"""Labels (or continuous conditions) of the pairs' data points; class labels are each replaced
        by the null class ``num_classes`` with probability ``train.label_dropout`` (classifier-free
        guidance training), continuous conditions are never dropped."""
        y = y[pairs.index1] if pairs.index1 is not None else y[: pairs.x1.shape[0]]
        p = self.config.train.label_dropout
        if p > 0 and self.num_classes is not None:
            drop = torch.rand(y.shape[0], generator=self.local_generator).to(y.device) < p
            y = torch.where(drop, torch.full_like(y, self.num_classes), y)
        return y

    def _draw_checked(self) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        batch = self._draw_batch()
        self.coupling.check_inputs(batch[0], batch[1])
        return batch

    def _next_pairs(self) -> tuple[Tensor, Tensor | None, Any]:
        """``(t, labels, pairs)`` of this step; the pairing comes from the pipeline when it runs."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if self.pipeline is None:
                x0, x1, t, y = self._draw_batch()
                pairs = self.coupling(x0, x1, generator=self.local_generator, labels=y)
            else:
                (x0, x1, t, y), solution = self.pipeline.next(max(self.config.train.steps - self.step, 1))
                pairs = self.coupling.pair_solved(x0, x1, solution, self.local_generator)
        for w in caught:  # the coupling's warnings (a Sinkhorn that did not converge, ...), with the step
            warnings.warn(f"step {self.step + 1}: {w.message}", w.category, stacklevel=2)
        self._last_batch = (x0, x1, pairs)
        return t, y, pairs

    def diagnostics(self) -> dict[str, float]:
        """:func:`~monge.couplings.diagnostics.coupling_diagnostics` of the latest step's batch
        (logged in ``log.csv`` at every log step; empty before the first step)."""
        from .couplings.diagnostics import coupling_diagnostics

        if self._last_batch is None:
            return {}
        return coupling_diagnostics(*self._last_batch)

    def _start_pipeline(self) -> None:
        workers = self.config.train.pairing_workers
        if workers and self.coupling.traits.threaded_solve:
            self.pipeline = PairingPipeline(self._draw_checked, self.coupling.solve, self.generator, workers)

    def _stop_pipeline(self) -> None:
        """Stop the workers and rewind the data generator to the first unused batch."""
        if self.pipeline is not None:
            self.pipeline.close()
            self.pipeline = None

    def _rng_snapshot(self) -> tuple[Tensor, Tensor, Tensor]:
        data = self.pipeline.resume_state() if self.pipeline else self.generator.get_state()
        return data, self.local_generator.get_state(), torch.get_rng_state()

    def _rng_restore(self, snapshot: tuple[Tensor, Tensor, Tensor]) -> None:
        """Back to the random state before the step (the pipeline drops what it drew ahead)."""
        if self.pipeline is not None:
            self.pipeline.reset()
        self.generator.set_state(snapshot[0])
        self.local_generator.set_state(snapshot[1])
        torch.set_rng_state(snapshot[2])

    def train_step(self) -> float:
        """One optimiser step. An exception before the update (an interrupt, a non-finite loss)
        leaves the trainer as it was before the step, random states included."""
        snapshot = self._rng_snapshot()
        self._phase = "draw"
        try:
            value = self._train_step()
        except BaseException:
            if self._phase == "draw":
                self._rng_restore(snapshot)
                self._phase = None
            raise
        self._phase = None
        return value

    def _train_step(self) -> float:
        t, y, pairs = self._next_pairs()
        args = () if y is None else (self._pair_labels(y, pairs),)
        self.net.train()
        bf16 = self.config.train.precision == "bf16"
        if getattr(self.objective, "flow_map", False):  # a flow map u(x, t, r): the objective runs the network
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = self.objective.loss(self.net, pairs.x0, pairs.x1, t.to(pairs.x0.device), self.path,
                                           weights=pairs.weights, labels=args[0] if args else None,
                                           generator=self.local_generator)
        else:
            ps = self.path.sample(pairs.x0, pairs.x1, t, generator=self.local_generator)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
                pred = self.net(ps.x_t, ps.t, *args)
            loss = self.objective(pred.float(), ps.target, pairs.weights)
        value = self._reduce_loss(loss.detach())
        advice = (f"the last good checkpoint is kept in {self.run_dir}. Lower train.lr or enable "
                  "train.grad_clip (both take effect on --resume), or check the data for extreme values.")
        if not math.isfinite(value):
            raise TrainingError(
                f"loss is {value} at step {self.step + 1} (batch drawn from generator state after "
                f"step {self.step}); " + advice
            )
        self._check_divergence(value, advice)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in self.model.parameters() if p.grad is not None]
        if self.config.train.grad_clip is not None:
            norm = nn.utils.clip_grad_norm_(params, self.config.train.grad_clip)
        else:
            norm = nn.utils.get_total_norm([p.grad for p in params])
        if not bool(torch.isfinite(norm)):
            raise TrainingError(f"the gradient is non-finite ({float(norm)}) at step {self.step + 1}; " + advice)
        self._phase = "update"
        self.optimizer.step()
        self.ema.update(self.model)
        self.step += 1
        self.last_loss = value
        self._losses.append(value)
        return value

    def _reduce_loss(self, loss: Tensor) -> float:
        """The loss averaged over ranks; distributed, the Ctrl-C flag travels with it, so every
        rank learns of an interrupt at the same step and all stop at the same boundary."""
        if not self.dist.enabled:
            return float(loss)
        both = torch.stack([loss.double().reshape(()),
                            torch.tensor(float(self._interrupt), dtype=torch.float64, device=loss.device)])
        import torch.distributed as dist

        dist.all_reduce(both)
        self._stop_all = self._stop_all or bool(both[1] > 0)
        return float(both[0]) / self.dist.world_size

    def _check_divergence(self, value: float, advice: str) -> None:
        """Stop when the loss jumps far above its running median (see ``DIVERGENCE_FACTOR``)."""
        if len(self._losses) < min(DIVERGENCE_WARMUP, DIVERGENCE_WINDOW):
            return
        median = statistics.median(self._losses)
        if median > 0 and value > DIVERGENCE_FACTOR * median:
            raise TrainingError(
                f"training diverged at step {self.step + 1}: loss {value:.4g} is {value / median:.3g} times "
                f"its running median {median:.4g} over the last {len(self._losses)} steps (limit "
                f"{DIVERGENCE_FACTOR:g}x); " + advice
            )

    def _data_fingerprint(self) -> dict[str, list]:
        """:func:`~monge.rundata.data_fingerprint` of the run's data, computed once."""
        if getattr(self, "_fingerprint", None) is None:
            self._fingerprint = data_fingerprint(self.source, self.target)
        return self._fingerprint

    # -- checkpoints -------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT_NAME

    def state_tensors(self, gather: bool = True) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Everything a checkpoint holds. ``gather`` collects every rank's generator (collective)."""
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors.update({f"ema.{k}": v for k, v in self.ema.model.state_dict().items()})
        opt_tensors, opt_meta = flatten_optimizer_state(self.optimizer)
        tensors.update(opt_tensors)
        tensors["rng.data"] = self.pipeline.resume_state() if self.pipeline else self.generator.get_state()
        tensors["rng.torch"] = torch.get_rng_state()
        local = [self.local_generator.get_state()]
        if gather and self.dist.enabled:
            local = distributed.all_gather_objects(local[0])
        for r, st in enumerate(local):
            tensors[f"rng.local.{r}"] = st
        tensors.update(data_tensors(self.source, self.target))
        state = {
            "data_shape": list(self.source.shape),
            "data_fingerprint": self._data_fingerprint(),
            "loss_window": list(self._losses),
            "world_size": self.dist.world_size if (gather or not self.dist.enabled) else None,
            "step": self.step,
            "loss": self.last_loss if math.isfinite(self.last_loss) else None,
            "ema_updates": self.ema.updates,
            "optimizer": opt_meta,
        }
        return tensors, state

    def save(self, path: str | Path | None = None, gather: bool = True) -> Path:
        """Write a checkpoint atomically (default: ``run_dir/checkpoint.safetensors``).

        Distributed: a collective call (all ranks), rank 0 writes; ``gather=False`` skips the
        collection of the other ranks' generators (used on interrupt, when ranks may be out of step).
        """
        path = Path(path) if path is not None else self.checkpoint_path
        bad = _nonfinite(self.model.state_dict())
        if bad:
            raise TrainingError(
                f"the weights are non-finite at step {self.step} ({bad}); the checkpoint was not written, the "
                f"last good one is kept in {self.run_dir}. Lower train.lr or enable train.grad_clip."
            )
        tensors, state = self.state_tensors(gather)
        if self.dist.rank == 0:
            save_checkpoint(path, tensors, self.config.to_dict(), state)
        if gather:
            distributed.barrier()
        return path

    def load(self, path: str | Path | None = None) -> None:
        """Restore model, EMA, optimiser, RNG states and step from a checkpoint."""
        path = Path(path) if path is not None else self.checkpoint_path
        tensors, config, state = load_checkpoint(path)
        self.resume_changes = _check_resumable(config, self.config.to_dict(), path)
        if any(change.startswith("data.") for change in self.resume_changes):  # the data moved: is it the same?
            try:
                check_same_data(state.get("data_fingerprint"), self._data_fingerprint(), path)
            except ValueError as err:
                raise CheckpointError(str(err)) from None
        step = state["step"]
        if step > self.config.train.steps:
            raise CheckpointError(
                f"checkpoint {path} is at step {step}, beyond train.steps={self.config.train.steps}; "
                "raise train.steps to train further")
        _check_resume_state(tensors, state, path)
        load_module_state(self.model, tensors, "model.", f"checkpoint {path}")
        load_module_state(self.ema.model, tensors, "ema.", f"checkpoint {path} (EMA)")
        for prefix in ("model.", "ema."):
            bad = _nonfinite({k: v for k, v in tensors.items() if k.startswith(prefix)})
            if bad:
                raise CheckpointError(f"checkpoint {path} holds non-finite weights ({bad}); it cannot be resumed")
        params = list(self.model.parameters())
        optim = unflatten_optimizer_state(tensors, state["optimizer"])
        _check_optimizer_state(optim, params, step, path)
        try:
            self.optimizer.load_state_dict(optim)
        except (ValueError, KeyError, TypeError, RuntimeError, IndexError) as err:
            raise CheckpointError(f"checkpoint {path}: the optimiser state does not fit this model ({err})") from None
        tc = self.config.train
        for group in self.optimizer.param_groups:  # settings changed on resume take effect
            group["lr"], group["weight_decay"] = tc.lr, tc.weight_decay
        self.ema.decay = tc.ema_decay
        try:
            self.generator.set_state(tensors["rng.data"])
            torch.set_rng_state(tensors["rng.torch"])
            key = f"rng.local.{self.dist.rank}"
            if state.get("world_size") == self.dist.world_size and key in tensors:
                self.local_generator.set_state(tensors[key])
            else:  # resumed on another number of processes: fresh per-rank streams
                self.local_generator.manual_seed(_local_seed(tc.seed, self.dist.rank) + self.step)
        except (RuntimeError, TypeError, ValueError) as err:
            raise CheckpointError(f"checkpoint {path}: invalid random generator state ({err})") from None
        self.step = step
        self._losses.clear()
        self._losses.extend(_loss_window(state, path))
        self.ema.updates = state["ema_updates"]
        self.last_loss = float("nan") if state.get("loss") is None else float(state["loss"])
        if self.resume_changes and self.dist.rank == 0:
            print(f"resuming {self.run_dir} at step {step} with changed settings: "
                  + "; ".join(self.resume_changes), file=sys.stderr, flush=True)

    # -- evaluation ----------------------------------------------------------------
    def evaluate(self) -> list[EvalRow]:
        """Quality-versus-NFE rows of the EMA model (computed on rank 0; ``[]`` elsewhere)."""
        if self.dist.rank != 0:
            return []
        sc = self.config.sample
        return evaluate_field(
            self.ema.model,
            self.source,
            reference_data(self.target),
            nfes=sc.nfe,
            sampler=sc.sampler,
            adaptive=sc.adaptive,
            n=self.config.train.eval_samples,
            seed=self.config.train.seed + 12345,
            device=self.device,
            expressway=self._expressway(),
            schedule=getattr(self.path, "schedule", None),
            options=_sampler_options(self.config),
        )

    def evaluate_nll(self) -> NLLResult | None:
        """Held-out negative log-likelihood of the EMA model (``sample.nll``; rank 0 only, else ``None``)."""
        if self.dist.rank != 0 or not self.config.sample.nll:
            return None
        data, what, _ = held_out_target(self.config.data.target, self.target)
        return evaluate_nll(self.ema.model, self.source, data, n=min(self.config.train.eval_samples, 1000),
                            seed=self.config.train.seed + 54321, description=what, device=self.device)

    def _expressway(self) -> "Expressway | None":
        """The expressway of the evaluation rows when the coupling holds a semi-discrete map."""
        sd_map = getattr(self.coupling, "map", None)
        if sd_map is None or not hasattr(sd_map, "topk"):
            return None
        return Expressway(sd_map, EXPRESSWAY_T, self.path)

    def prepare(self, resume: bool = False) -> None:
        """Fit what the coupling needs before training (e.g. the ``semidiscrete_ot`` map).

        A fitted state is cached in the run directory: rank 0 fits and writes it (a fresh run
        refits; ``resume`` reuses the cached file), the other ranks wait and load it. The fit
        draws from its own generator (seed + 3), so it does not shift the training batches.
        """
        from .couplings import prepare_coupling

        generator = torch.Generator().manual_seed(self.config.train.seed + 3)
        if self.coupling.traits.prepared_file is None:
            prepare_coupling(self.coupling, self.source, self.target, self.run_dir, generator, device=self.device)
            return
        cached = self.run_dir / self.coupling.traits.prepared_file
        if self.dist.rank == 0:
            if not resume:
                cached.unlink(missing_ok=True)
            start = time.perf_counter()
            prepare_coupling(self.coupling, self.source, self.target, self.run_dir, generator, device=self.device)
            self.prepare_seconds = time.perf_counter() - start
        distributed.barrier()
        if self.dist.rank != 0:
            prepare_coupling(self.coupling, self.source, self.target, self.run_dir, generator, write=False,
                             device=self.device)

    # -- the loop --------------------------------------------------------------------
    def fit(self, resume: bool = False, overwrite: bool | str = False) -> TrainResult:
        """Train to ``config.train.steps``; ``resume=True`` continues from the run's checkpoint.

        A run directory that already holds a run is refused unless ``resume`` or ``overwrite``
        (``True``: move the old run to ``RUN.bak-<time>``; ``"replace"``: delete its files, naming
        them), see :mod:`monge.rundir`. The run is locked while training (rank 0 holds the lock).
        Ctrl-C stops at the next step boundary and saves a checkpoint there (a second Ctrl-C
        stops at once; the checkpoint is then saved only if no update was under way).
        """
        if resume and overwrite:
            raise ValueError("resume and overwrite exclude each other: continue the run or start it again")
        lock = self._claim(resume, overwrite)
        try:
            return self._fit(resume)
        finally:
            if lock is not None:
                lock.release()

    def _claim(self, resume: bool, overwrite: bool | str) -> RunLock | None:
        """Rank 0 locks the run directory and checks it may be written; all ranks share the verdict."""
        lock, error = None, None
        if self.dist.rank == 0:
            try:
                lock = RunLock(self.run_dir).acquire()
                extra = (self.coupling.traits.prepared_file,) if self.coupling.traits.prepared_file else ()
                claim_run_dir(self.run_dir, resume, overwrite, extra)
            except (RunExistsError, RunLockedError, ValueError, OSError) as err:
                if lock is not None:
                    lock.release()
                error = err
        if self.dist.enabled:
            verdicts = distributed.all_gather_objects(None if error is None else (type(error).__name__, str(error)))
            if error is None and verdicts[0] is not None:
                kind, message = verdicts[0]
                cls = {"RunExistsError": RunExistsError, "RunLockedError": RunLockedError}.get(kind, ValueError)
                error = cls(message)
        if error is not None:
            raise error
        return lock

    def _fit(self, resume: bool) -> TrainResult:
        tc = self.config.train
        main = self.dist.rank == 0
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            if not self.checkpoint_path.is_file():
                raise CheckpointError(f"--resume: no checkpoint at {self.checkpoint_path}")
            self.load()
        first_step = self.step
        if main:
            atomic_write_bytes(self.run_dir / "config.yaml", self.config.to_yaml().encode("utf-8"))
            for stale in self.run_dir.glob(f".{CHECKPOINT_NAME}.*.tmp"):  # left by a killed save
                stale.unlink(missing_ok=True)
        self.prepare(resume)
        from .couplings.diagnostics import DIAGNOSTICS

        log = _CsvLog(self.run_dir / "log.csv", ["step", "loss", "lr", "seconds", *DIAGNOSTICS], append=resume,
                      enabled=main)
        rows: list[EvalRow] = []
        start = time.perf_counter()
        progress = _progress(tc.steps, self.step, tc.progress and main, self.config.name)
        self._interrupt = self._stop_all = False
        restore_sigint = self._install_sigint()
        self._start_pipeline()
        try:
            while self.step < tc.steps:
                loss = self.train_step()
                progress.update(1)
                if self.step % tc.log_every == 0 or self.step == tc.steps:
                    progress.set_postfix(loss=f"{loss:.4f}")
                    diag = self.diagnostics()
                    log.write([self.step, loss, self.optimizer.param_groups[0]["lr"],
                               round(time.perf_counter() - start, 3), *(round(diag.get(k, math.nan), 5)
                                                                       for k in DIAGNOSTICS)])
                if tc.checkpoint_every and self.step % tc.checkpoint_every == 0:
                    self.save()
                if tc.eval_every and self.step % tc.eval_every == 0 and self.step < tc.steps:
                    self._write_eval(self.evaluate(), self.evaluate_nll())
                    distributed.barrier()
                if self._stop_all if self.dist.enabled else self._interrupt:
                    raise KeyboardInterrupt  # Ctrl-C during the step, honoured at its end
        except KeyboardInterrupt:
            progress.close()
            torn = self._phase is not None  # interrupted inside an optimiser/EMA update
            synced = self.dist.enabled and self._stop_all and not torn
            self._stop_pipeline()
            if torn:
                if main:
                    print(f"\ninterrupted in the middle of step {self.step + 1}'s update; the checkpoint was not "
                          f"updated (the last one in {self.run_dir} stays valid)", file=sys.stderr)
            else:
                self.save(gather=synced)
                if main:
                    print(f"\ninterrupted at step {self.step}; checkpoint saved to {self.checkpoint_path}",
                          file=sys.stderr)
            raise
        finally:
            restore_sigint()
            self._stop_pipeline()
            progress.close()
            log.close()
        self.save()
        rows = self.evaluate()
        nll = self.evaluate_nll()
        self._write_eval(rows, nll)
        distributed.barrier()
        return TrainResult(self.step, self.last_loss, self.run_dir, rows, time.perf_counter() - start,
                           trained=self.step - first_step, nll=nll)

    def _install_sigint(self):
        """Route Ctrl-C to a flag while a step runs (main thread, default handler only); return the undo."""
        if threading.current_thread() is not threading.main_thread() or \
                signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            return lambda: None

        def on_sigint(signum, frame):
            if self._phase is None or self._interrupt:  # between steps, or a second Ctrl-C
                raise KeyboardInterrupt
            self._interrupt = True
            if self.dist.rank == 0:
                print(f"\nCtrl-C: stopping after step {self.step + 1} (press again to stop at once)",
                      file=sys.stderr, flush=True)

        signal.signal(signal.SIGINT, on_sigint)
        return lambda: signal.signal(signal.SIGINT, signal.default_int_handler)

    def _write_eval(self, rows: list[EvalRow], nll: NLLResult | None = None) -> None:
        if not rows:
            return
        title = f"{self.config.name} at step {self.step}"
        text = format_table(rows, title) + "\n"
        if nll is not None:
            text += "\n" + format_nll({self.config.name: nll}) + "\n"
            _append_csv(self.run_dir / "nll.csv", ["step", *nll.as_dict().keys()],
                        [[self.step, *nll.as_dict().values()]])
        _append_csv(self.run_dir / "eval.csv", ["step", *rows[0].as_dict().keys()],
                    [[self.step, *r.as_dict().values()] for r in rows])
        atomic_write_bytes(self.run_dir / "eval.md", text.encode("utf-8"))


def _append_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    """Append ``rows`` to a CSV log (with ``header`` when new); a new file whose write fails (disk
    full) is removed, so no empty file is left behind."""
    new = not path.exists()
    try:
        with path.open("a", newline="") as fh:
            writer = csv.writer(fh)
            if new:
                writer.writerow(header)
            writer.writerows(rows)
    except OSError:
        if new:
            path.unlink(missing_ok=True)
        raise


def _check_training_memory(config: Config, shape: tuple[int, ...], device: torch.device) -> None:
    """The weights, gradients, AdamW moments and EMA (``TRAIN_COPIES`` float32 copies) must fit in
    the memory available, checked on a ``meta`` model before any weight is allocated."""
    from .limits import TRAIN_COPIES, check_model_memory

    with torch.device("meta"):
        meta = build_model(config.model.name, config.model.params, shape)
    try:
        check_model_memory(meta, f"training model {config.model.name!r}", TRAIN_COPIES, device)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _sampler_options(config: Config) -> dict[str, Any]:
    """The sampler options the run's objective fixes (:func:`monge.flow_map.sampler_options`)."""
    from .flow_map import sampler_options

    return sampler_options(config.objective.name, config.objective.params)


def _local_seed(seed: int, rank: int) -> int:
    return seed + 2 + 1_000_003 * rank


def _check_resumable(stored: dict[str, Any], current: dict[str, Any], path: Path) -> list[str]:
    """The allowed changes (``"train.lr: 0.001 -> 0.5"``); refuse any other difference, naming it."""
    try:
        stored = Config.from_dict(stored, check_data=False).to_dict()  # fill defaults of settings added since
    except ConfigError as err:
        raise CheckpointError(f"checkpoint {path} holds an invalid config: {err}") from None
    allowed, refused = [], []
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


def _check_resume_state(tensors: dict[str, Tensor], state: dict[str, Any], path: Path) -> None:
    """What resuming needs beyond the weights: generator states, EMA count, optimiser metadata."""
    for key in ("rng.data", "rng.torch"):
        t = tensors.get(key)
        if t is None or t.dtype != torch.uint8 or t.dim() != 1:
            raise CheckpointError(f"checkpoint {path} has no valid random generator state {key!r}; it cannot be resumed "
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


def _check_optimizer_state(optim: dict[str, Any], params: list[Tensor], step: int, path: Path) -> None:
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


def _nonfinite(tensors: dict[str, Tensor]) -> str:
    """``""`` when every floating tensor is finite, else a short description of the first bad ones."""
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    return "" if not bad else f"non-finite values in {', '.join(bad[:3])}{'...' if len(bad) > 3 else ''}"


def load_model(path: str | Path, ema: bool = True, device: str | torch.device = "cpu") -> tuple[nn.Module, Config]:
    """Rebuild the model of a checkpoint (EMA weights by default) and return it with its config.

    The data is not read: the sample shape comes from the checkpoint (older checkpoints read the
    data for it). A run trained on a standardised table gets its statistics as
    ``model.standardizer`` (:class:`~monge.data.tabular.Standardizer`), which
    :func:`monge.generate.generate` uses to return samples in data units.
    """
    tensors, raw_config, state = load_checkpoint(path)
    try:
        config = Config.from_dict(raw_config, check_data=False)
    except ConfigError as err:
        raise CheckpointError(f"checkpoint {path} holds an invalid config: {err}") from None
    shape = stored_shape(state, config, path)
    from .limits import check_model_memory

    with torch.device("meta"):
        meta = build_model(config.model.name, config.model.params, shape)
    check_model_memory(meta, f"the model of checkpoint {path}", copies=2)
    model = build_model(config.model.name, config.model.params, shape)
    prefix = "ema." if ema else "model."
    load_module_state(model, tensors, prefix, f"checkpoint {path}")
    bad = _nonfinite({k: v for k, v in tensors.items() if k.startswith(prefix)})
    if bad:
        raise CheckpointError(f"checkpoint {path} holds non-finite weights ({bad}); the run diverged before it was "
                              "saved. Use an earlier checkpoint or train again with a lower train.lr")
    model.standardizer = stored_standardizer(tensors, config, path)
    return model.to(device).eval(), config


def _loss_window(state: dict[str, Any], path: Path) -> list[float]:
    """The divergence guard's recent losses stored in a checkpoint (empty in older ones)."""
    window = state.get("loss_window", [])
    if not isinstance(window, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                               and math.isfinite(v) for v in window):
        raise CheckpointError(f"checkpoint {path}: state.loss_window must be a list of finite numbers")
    return [float(v) for v in window[-DIVERGENCE_WINDOW:]]


class _CsvLog:
    """Append-only CSV, flushed per row; a no-op off rank 0."""

    def __init__(self, path: Path, header: list[str], append: bool, enabled: bool = True) -> None:
        self._fh = None
        if not enabled:
            return
        exists = path.exists() and append
        #: positions of the written columns: a resumed log keeps its own header (older runs have
        #: fewer columns), so only the columns it names are written
        self._keep: list[int] | None = None
        if exists:
            with path.open(newline="") as fh:
                old = next(csv.reader(fh), None)
            if old and old != header:
                self._keep = [header.index(c) for c in old if c in header]
        self._fh = path.open("a" if append else "w", newline="")
        self._writer = csv.writer(self._fh)
        if not exists:
            try:
                self._writer.writerow(header)
                self._fh.flush()
            except OSError:  # disk full: leave no empty log (it would mark the folder as a run)
                try:
                    self._fh.close()
                except OSError:
                    pass
                self._fh = None
                if not append:
                    path.unlink(missing_ok=True)
                raise

    def write(self, row: list[Any]) -> None:
        if self._fh is not None:
            self._writer.writerow(row if self._keep is None else [row[i] for i in self._keep])
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


def _progress(total: int, initial: int, enabled: bool, desc: str):
    """The training bar: when ``enabled``, shown if stderr is a terminal (:mod:`monge.progress`)."""
    from .progress import progress_bar

    return progress_bar(total, desc, progress=None if enabled else False, initial=initial, unit="step")
