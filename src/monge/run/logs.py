"""The logs of a run directory: ``log.csv`` (one row per logged step), evaluation tables and,
with ``train.tensorboard: true``, TensorBoard event files in ``tb/``."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

__all__ = [
    "CsvLog",
    "RunLogs",
    "TENSORBOARD_DIR",
    "TensorBoardLog",
    "append_csv",
    "require_tensorboard",
    "sample_figure",
]


def append_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
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


class CsvLog:
    """Append-only CSV, flushed per row; a no-op when not ``enabled`` (off rank 0)."""

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


# -- TensorBoard ---------------------------------------------------------------------------------
#: Folder of a run directory that holds the TensorBoard event files (``train.tensorboard: true``).
TENSORBOARD_DIR = "tb"
TENSORBOARD_INSTALL = "pip install 'monge[tensorboard]'"
#: Samples drawn for the figure written at each evaluation.
FIGURE_SAMPLES = 512


def require_tensorboard() -> None:
    """Raise a :class:`~monge.config.ConfigError` naming the install command when the
    ``tensorboard`` package is missing (``train.tensorboard: true`` needs it)."""
    from importlib.util import find_spec

    if find_spec("tensorboard") is None:
        from ..config import ConfigError

        raise ConfigError(f"train.tensorboard: true (--tensorboard) needs the tensorboard package: "
                          f"{TENSORBOARD_INSTALL}, or set train.tensorboard: false (the CSV logs stay)")


class TensorBoardLog:
    """TensorBoard event files in ``log_dir`` beside the CSV logs; a no-op when not ``enabled``.

    Tags: ``train/<column>`` (the CSV's loss, lr, seconds and ``train/grad_norm``),
    ``coupling/<diagnostic>``, ``eval/<metric>/<sampler>_nfe<k>`` (one per evaluation row and
    metric, e.g. ``eval/w2/euler_nfe4``), ``eval/nll`` and the image ``eval/samples``. A fresh run
    removes the event files a replaced run left; a resumed one drops the events logged after its
    checkpoint (``purge_step``). Every write is flushed, so an interrupted run keeps its curves.
    """

    def __init__(self, log_dir: Path, enabled: bool = True, resume_step: int | None = None) -> None:
        self._writer = None
        if not enabled:
            return
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        if resume_step is None and log_dir.is_dir():
            for stale in log_dir.glob("events.out.tfevents.*"):
                stale.unlink()
        self._writer = SummaryWriter(str(log_dir), purge_step=None if resume_step is None else resume_step + 1)

    @property
    def enabled(self) -> bool:
        return self._writer is not None

    def scalars(self, step: int, values: dict[str, float], prefix: str) -> None:
        """``prefix/<name>`` for each finite value of ``values`` at ``step``."""
        if self._writer is None:
            return
        for name, value in values.items():
            if value is not None and math.isfinite(float(value)):
                self._writer.add_scalar(f"{prefix}/{name}", float(value), step)
        self._writer.flush()

    def evaluation(self, step: int, rows: list[Any], nll: Any = None, figure: Any = None) -> None:
        """The numeric columns of each :class:`~monge.evaluate.EvalRow`, the held-out NLL (an
        :class:`~monge.evaluate.NLLResult`) and a matplotlib ``figure`` of samples."""
        if self._writer is None:
            return
        for row in rows:
            for metric, value in row.as_dict().items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and metric not in ("nfe",):
                    if math.isfinite(value):
                        self._writer.add_scalar(f"eval/{metric}/{row.sampler}_nfe{row.nfe}", value, step)
        if nll is not None and math.isfinite(getattr(nll, "nll", math.nan)):
            self._writer.add_scalar("eval/nll", nll.nll, step)
        if figure is not None:
            self._writer.add_figure("eval/samples", figure, step, close=True)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def sample_figure(trainer: Any, n: int = FIGURE_SAMPLES) -> Any:
    """A matplotlib figure of ``n`` samples of the trainer's EMA model (its recipe's sampler at its
    largest NFE) beside the target: a scatter of the first two coordinates, or a grid of images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from ..objectives import sampler_options
    from ..samplers import SAMPLERS, sample
    from .evaluation import velocity_field

    config, sc = trainer.config, trainer.config.sample
    g = torch.Generator().manual_seed(config.train.seed + 777)
    x0 = trainer.source.sample(n, generator=g, device=trainer.device)
    field = velocity_field(trainer)
    if getattr(field, "cond_dim", None) is not None:
        from ..models.conditioning import ContinuousConditional

        ref, cond = trainer.target.sample_with_conditions(n, generator=g, device=trainer.device)
        field = ContinuousConditional(field, cond)
    else:
        ref = trainer.target.sample(n, generator=g, device=trainer.device)
    nfe = None if SAMPLERS.info(sc.sampler).adaptive else max(sc.nfe)
    x = sample(field, x0, sampler=sc.sampler, nfe=nfe, schedule=getattr(trainer.path, "schedule", None),
               generator=torch.Generator(device=x0.device).manual_seed(config.train.seed + 778),
               **sampler_options(config.objective.name, config.objective.params)).x.float().cpu()
    ref = ref.float().cpu()
    if getattr(trainer, "codec", None) is not None:  # a latent flow: show decoded images against its images
        from ..latent import decode_latents

        x = decode_latents(trainer.codec, x).float().cpu()
        ref = trainer.images.sample(n, generator=g).float().cpu()
    title = f"{sc.sampler}" + (f", {nfe} NFE" if nfe else "") + f", step {trainer.step}"
    if x.dim() == 4:  # images (n, C, H, W): a square grid scaled to the reference's range
        from ..imageio import make_grid

        lo, hi = float(ref.min()), float(ref.max())
        imgs = x[:64]
        grid = make_grid(imgs, nrow=math.ceil(math.sqrt(len(imgs))), padding=1, value_range=(lo, max(hi, lo + 1e-8)))
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.imshow(grid.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray" if grid.shape[0] == 1 else None)
        ax.set_axis_off()
    else:
        x, ref = x.reshape(len(x), -1), ref.reshape(len(ref), -1)
        fig, ax = plt.subplots(figsize=(4, 4))
        if x.shape[1] == 1:
            ax.hist([ref[:, 0].numpy(), x[:, 0].numpy()], bins=40, label=["target", "samples"])
        else:
            ax.scatter(ref[:, 0], ref[:, 1], s=2, alpha=0.4, color="k", label="target")
            ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.5, label="samples")
        ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


class RunLogs:
    """What a run logs at its log steps and evaluations: ``log.csv`` (step, loss, lr, seconds and the
    coupling diagnostics) and, with ``train.tensorboard``, the same scalars, the gradient norm, the
    evaluation rows and a sample figure under ``RUN/tb`` (rank 0 only)."""

    def __init__(self, trainer: Any, resume: bool) -> None:
        from ..couplings.diagnostics import DIAGNOSTICS

        main, run_dir = trainer.dist.rank == 0, trainer.run_dir
        self.columns = DIAGNOSTICS
        self.csv = CsvLog(run_dir / "log.csv", ["step", "loss", "lr", "seconds", *DIAGNOSTICS], append=resume,
                          enabled=main)
        self.tb = TensorBoardLog(run_dir / TENSORBOARD_DIR, main and trainer.config.train.tensorboard,
                                 trainer.step if resume else None)

    def step(self, trainer: Any, loss: float, seconds: float) -> None:
        """One log step's row and scalars."""
        import math

        diag = trainer.diagnostics()
        lr = trainer.optimizer.param_groups[0]["lr"]
        self.csv.write([trainer.step, loss, lr, round(seconds, 3),
                        *(round(diag.get(k, math.nan), 5) for k in self.columns)])
        grad_norm = math.nan if trainer.grad_norm is None else float(trainer.grad_norm)
        self.tb.scalars(trainer.step, {"loss": loss, "lr": lr, "seconds": round(seconds, 3), "grad_norm": grad_norm},
                        "train")
        self.tb.scalars(trainer.step, diag, "coupling")

    def evaluation(self, trainer: Any, rows: list[Any], nll: Any) -> None:
        """An evaluation's rows (and a sample figure) in TensorBoard; the CSV files are the trainer's."""
        self.tb.evaluation(trainer.step, rows, nll, sample_figure(trainer) if self.tb.enabled else None)

    def close(self) -> None:
        self.csv.close()
        self.tb.close()
