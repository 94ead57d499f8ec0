"""The training loop: coupling -> path -> objective, with EMA, checkpoints, resume and logs.

Each step draws a source batch ``x0`` and a target batch ``x1``, re-pairs them with the
coupling, samples ``t ~ U[0,1]`` and ``(x_t, u_t)`` on the path, and takes one AdamW step on the
(weighted) velocity loss. Randomness comes from explicit generators whose states are saved with
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
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import distributed
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
from .data.sources import build_data
from .ema import EMA
from .evaluate import EvalRow, NLLResult, evaluate_field, evaluate_nll, format_nll, format_table, held_out_target
from .models import build_model
from .objectives import VelocityObjective
from .pairing import PairingPipeline
from .paths import PATHS
from .samplers.expressway import DEFAULT_T_START, Expressway

__all__ = ["Trainer", "TrainResult", "TrainingError", "load_model", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "checkpoint.safetensors"
# Parts of a config that must match to resume or to load weights into a rebuilt model.
_IDENTITY_KEYS = ("model", "data")


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
    nll: NLLResult | None = None


class Trainer:
    """Train a flow-matching model from a :class:`~monge.config.Config`.

    ``model`` may be any ``nn.Module`` with ``forward(x, t)``; by default it is built from
    ``config.model``.
    """

    def __init__(self, config: Config, model: nn.Module | None = None) -> None:
        self.config = config
        tc = config.train
        device = torch.device(tc.device)
        self.dist = distributed.setup(device)
        if device.type == "cuda" and self.dist.enabled and device.index is None:
            device = torch.device("cuda", self.dist.local_rank)
        self.device = device
        try:
            self.source, self.target = build_data(config.data)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        torch.manual_seed(tc.seed)
        self.model = (model or build_model(config.model.name, config.model.params, self.source.shape)).to(
            self.device
        )
        self.coupling = COUPLINGS.build(config.coupling.name, **config.coupling.params)
        #: classes of a class-conditional model (``model.num_classes``), else ``None``
        self.num_classes: int | None = self._check_conditional()
        self.path = PATHS.build(config.path.name, **config.path.params)
        self.objective = VelocityObjective()
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay
        )
        self.ema = EMA(self.model, tc.ema_decay)
        self.net: nn.Module = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
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

    def _check_conditional(self) -> int | None:
        k = getattr(self.model, "num_classes", None)
        if k is None:
            return None
        name = self.config.data.target
        labels = getattr(self.target, "labels", None)
        if labels is None or not hasattr(self.target, "sample_with_labels"):
            raise ConfigError(
                f"the model is class-conditional (num_classes={k}) but data.target {name} has no labels; "
                "use a labelled data set (digits, mnist, cifar10, an image folder with class sub-folders) "
                "or drop num_classes"
            )
        if int(labels.max()) >= k:
            raise ConfigError(f"data.target {name} has class {int(labels.max())} but the model has num_classes={k}")
        if not self.coupling.keeps_data:
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
        if self.num_classes is None:
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
        r"""Labels of the pairs' data points, each replaced by the null class ``num_classes`` with
        probability ``train.label_dropout`` (classifier-free guidance training)."""
        y = y[pairs.index1] if pairs.index1 is not None else y[: pairs.x1.shape[0]]
        p = self.config.train.label_dropout
        if p > 0:
            drop = torch.rand(y.shape[0], generator=self.local_generator).to(y.device) < p
            y = torch.where(drop, torch.full_like(y, self.num_classes), y)
        return y

    def _draw_checked(self) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        batch = self._draw_batch()
        self.coupling.check_inputs(batch[0], batch[1])
        return batch

    def _next_pairs(self) -> tuple[Tensor, Tensor | None, Any]:
        """``(t, labels, pairs)`` of this step; the pairing comes from the pipeline when it runs."""
        if self.pipeline is None:
            x0, x1, t, y = self._draw_batch()
            return t, y, self.coupling(x0, x1, generator=self.local_generator)
        (x0, x1, t, y), solution = self.pipeline.next(max(self.config.train.steps - self.step, 1))
        return t, y, self.coupling.pair_solved(x0, x1, solution, self.local_generator)

    def _start_pipeline(self) -> None:
        workers = self.config.train.pairing_workers
        if workers and self.coupling.threaded_solve:
            self.pipeline = PairingPipeline(self._draw_checked, self.coupling.solve, self.generator, workers)

    def _stop_pipeline(self) -> None:
        """Stop the workers and rewind the data generator to the first unused batch."""
        if self.pipeline is not None:
            self.pipeline.close()
            self.pipeline = None

    def train_step(self) -> float:
        t, y, pairs = self._next_pairs()
        ps = self.path.sample(pairs.x0, pairs.x1, t, generator=self.local_generator)
        args = () if y is None else (self._pair_labels(y, pairs),)
        self.net.train()
        bf16 = self.config.train.precision == "bf16"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
            pred = self.net(ps.x_t, ps.t, *args)
        loss = self.objective(pred.float(), ps.target, pairs.weights)
        value = distributed.all_reduce_mean(loss.detach(), self.device)
        if not math.isfinite(value):
            raise TrainingError(
                f"loss is {value} at step {self.step + 1} (batch drawn from generator state after "
                f"step {self.step}); the last good checkpoint is kept in {self.run_dir}. "
                "Lower train.lr, enable train.grad_clip, or check the data for extreme values."
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.train.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.train.grad_clip)
        self.optimizer.step()
        self.ema.update(self.model)
        self.step += 1
        self.last_loss = value
        return value

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
        state = {
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
        _check_same_identity(config, self.config.to_dict(), path)
        load_module_state(self.model, tensors, "model.", f"checkpoint {path}")
        load_module_state(self.ema.model, tensors, "ema.", f"checkpoint {path} (EMA)")
        self.optimizer.load_state_dict(unflatten_optimizer_state(tensors, state["optimizer"]))
        self.generator.set_state(tensors["rng.data"])
        torch.set_rng_state(tensors["rng.torch"])
        key = f"rng.local.{self.dist.rank}"
        if state.get("world_size") == self.dist.world_size and key in tensors:
            self.local_generator.set_state(tensors[key])
        else:  # resumed on another number of processes: fresh per-rank streams
            self.local_generator.manual_seed(_local_seed(self.config.train.seed, self.dist.rank) + self.step)
        self.step = int(state["step"])
        self.ema.updates = int(state["ema_updates"])
        self.last_loss = float("nan") if state.get("loss") is None else float(state["loss"])

    # -- evaluation ----------------------------------------------------------------
    def evaluate(self) -> list[EvalRow]:
        """Quality-versus-NFE rows of the EMA model (computed on rank 0; ``[]`` elsewhere)."""
        if self.dist.rank != 0:
            return []
        sc = self.config.sample
        return evaluate_field(
            self.ema.model,
            self.source,
            self.target,
            nfes=sc.nfe,
            sampler=sc.sampler,
            adaptive=sc.adaptive,
            n=self.config.train.eval_samples,
            seed=self.config.train.seed + 12345,
            device=self.device,
            expressway=self._expressway(),
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
        if self.coupling.prepared_file is None:
            prepare_coupling(self.coupling, self.source, self.target, self.run_dir, generator, device=self.device)
            return
        cached = self.run_dir / self.coupling.prepared_file
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
    def fit(self, resume: bool = False) -> TrainResult:
        """Train to ``config.train.steps``; ``resume=True`` continues from the run's checkpoint."""
        tc = self.config.train
        main = self.dist.rank == 0
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            if not self.checkpoint_path.is_file():
                raise CheckpointError(f"--resume: no checkpoint at {self.checkpoint_path}")
            self.load()
        if main:
            (self.run_dir / "config.yaml").write_text(self.config.to_yaml())
            for stale in self.run_dir.glob(f".{CHECKPOINT_NAME}.*.tmp"):  # left by a killed save
                stale.unlink(missing_ok=True)
        self.prepare(resume)
        log = _CsvLog(self.run_dir / "log.csv", ["step", "loss", "lr", "seconds"], append=resume, enabled=main)
        rows: list[EvalRow] = []
        start = time.perf_counter()
        progress = _progress(tc.steps, self.step, tc.progress and main, self.config.name)
        self._start_pipeline()
        try:
            while self.step < tc.steps:
                loss = self.train_step()
                progress.update(1)
                if self.step % tc.log_every == 0 or self.step == tc.steps:
                    progress.set_postfix(loss=f"{loss:.4f}")
                    log.write([self.step, loss, self.optimizer.param_groups[0]["lr"],
                               round(time.perf_counter() - start, 3)])
                if tc.checkpoint_every and self.step % tc.checkpoint_every == 0:
                    self.save()
                if tc.eval_every and self.step % tc.eval_every == 0 and self.step < tc.steps:
                    self._write_eval(self.evaluate(), self.evaluate_nll())
                    distributed.barrier()
        except KeyboardInterrupt:
            progress.close()
            self._stop_pipeline()
            self.save(gather=False)
            if main:
                print(f"\ninterrupted at step {self.step}; checkpoint saved to {self.checkpoint_path}",
                      file=sys.stderr)
            raise
        finally:
            self._stop_pipeline()
            progress.close()
            log.close()
        self.save()
        rows = self.evaluate()
        nll = self.evaluate_nll()
        self._write_eval(rows, nll)
        distributed.barrier()
        return TrainResult(self.step, self.last_loss, self.run_dir, rows, time.perf_counter() - start, nll)

    def _write_eval(self, rows: list[EvalRow], nll: NLLResult | None = None) -> None:
        if not rows:
            return
        title = f"{self.config.name} at step {self.step}"
        text = format_table(rows, title) + "\n"
        if nll is not None:
            text += "\n" + format_nll({self.config.name: nll}) + "\n"
            path = self.run_dir / "nll.csv"
            new = not path.exists()
            with path.open("a", newline="") as fh:
                writer = csv.writer(fh)
                if new:
                    writer.writerow(["step", *nll.as_dict().keys()])
                writer.writerow([self.step, *nll.as_dict().values()])
        path = self.run_dir / "eval.csv"
        new = not path.exists()
        with path.open("a", newline="") as fh:
            writer = csv.writer(fh)
            if new:
                writer.writerow(["step", *rows[0].as_dict().keys()])
            for r in rows:
                writer.writerow([self.step, *r.as_dict().values()])
        (self.run_dir / "eval.md").write_text(text)


def _local_seed(seed: int, rank: int) -> int:
    return seed + 2 + 1_000_003 * rank


def _check_same_identity(stored: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    for key in _IDENTITY_KEYS:
        if stored.get(key) != current.get(key):
            raise CheckpointError(
                f"checkpoint {path} was written with {key}={json.dumps(stored.get(key))} but the "
                f"current config has {key}={json.dumps(current.get(key))}; use a matching config "
                "or a new run name"
            )


def load_model(path: str | Path, ema: bool = True, device: str | torch.device = "cpu") -> tuple[nn.Module, Config]:
    """Rebuild the model of a checkpoint (EMA weights by default) and return it with its config."""
    tensors, raw_config, _ = load_checkpoint(path)
    try:
        config = Config.from_dict(raw_config)
    except ConfigError as err:
        raise CheckpointError(f"checkpoint {path} holds an invalid config: {err}") from None
    shape = build_data(config.data)[0].shape
    model = build_model(config.model.name, config.model.params, shape)
    prefix = "ema." if ema else "model."
    load_module_state(model, tensors, prefix, f"checkpoint {path}")
    return model.to(device).eval(), config


class _CsvLog:
    """Append-only CSV, flushed per row; a no-op off rank 0."""

    def __init__(self, path: Path, header: list[str], append: bool, enabled: bool = True) -> None:
        self._fh = None
        if not enabled:
            return
        exists = path.exists() and append
        self._fh = path.open("a" if append else "w", newline="")
        self._writer = csv.writer(self._fh)
        if not exists:
            self._writer.writerow(header)

    def write(self, row: list[Any]) -> None:
        if self._fh is not None:
            self._writer.writerow(row)
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


def _progress(total: int, initial: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc=desc, dynamic_ncols=True,
                leave=False)
