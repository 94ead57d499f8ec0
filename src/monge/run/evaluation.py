"""Evaluations during and after training: quality-versus-NFE rows (with the novelty of their samples
where the data have a held-out split) and held-out NLL of the EMA model, an autoencoder's
reconstruction and a latent flow's floor, written to ``eval.md``, ``eval.csv``, ``nll.csv`` and
``reconstruction.csv`` of the run directory (rank 0 only)."""

from __future__ import annotations

from typing import Any

from ..evaluate import (
    LATENT_NOTE,
    EvalRow,
    NLLResult,
    NoveltyReference,
    Reconstruction,
    evaluate_field,
    evaluate_nll,
    evaluate_reconstruction,
    format_nll,
    format_reconstruction,
    format_table,
    held_out_target,
    novelty_reference,
    reference_data,
)
from ..objectives import prediction_of
from ..outputs import atomic_write_bytes
from ..samplers.expressway import DEFAULT_T_START, Expressway
from .logs import append_csv

__all__ = ["EXPRESSWAY_T", "velocity_field", "evaluate_run", "evaluate_run_nll", "run_novelty", "evaluation_notes",
           "write_eval", "eval_due"]

#: Start time of the expressway rows in evaluations of ``semidiscrete_ot`` runs.
EXPRESSWAY_T = DEFAULT_T_START


def eval_due(step: int, every: int, last: int) -> bool:
    """Whether step ``step`` evaluates: every ``every`` steps (0: never) before the ``last`` one,
    which always evaluates when the run ends."""
    return bool(every) and step % every == 0 and step < last


def velocity_field(trainer: Any):
    """The EMA model as a velocity field (a model of another prediction converted on the path's schedule)."""
    model, config = trainer.ema.model, trainer.config
    prediction = prediction_of(model, config.objective.name)
    if prediction in ("velocity", "average_velocity"):
        return model
    from ..predictions import as_velocity

    return as_velocity(model, prediction, trainer.path.schedule)


def _expressway(trainer: Any) -> Expressway | None:
    """The expressway of the evaluation rows when the coupling holds a semi-discrete map."""
    sd_map = getattr(trainer.coupling, "map", None)
    if sd_map is None or not hasattr(sd_map, "topk"):
        return None
    return Expressway(sd_map, EXPRESSWAY_T, trainer.path)


def _images(trainer: Any) -> Any:
    """The run's data as images: a latent flow's image set, else its target."""
    return trainer.target if getattr(trainer, "images", None) is None else trainer.images


def run_novelty(trainer: Any) -> tuple[NoveltyReference | None, str]:
    """The run's :func:`~monge.evaluate.novelty_reference` (on its images), built once per run."""
    if getattr(trainer, "_novelty", None) is None:
        config = trainer.config
        trainer._novelty = novelty_reference(config.data.target, _images(trainer), seed=config.train.seed)
    return trainer._novelty


def evaluate_run(trainer: Any) -> list[EvalRow]:
    """Quality-versus-NFE rows of the EMA model (computed on rank 0; ``[]`` elsewhere and for an
    autoencoder, which has nothing to sample). A latent flow's samples are decoded for the novelty."""
    from ..objectives import sampler_options

    if trainer.dist.rank != 0 or trainer.objective.sampler_kind is None:
        return []
    codec = getattr(trainer, "codec", None)
    config, sc = trainer.config, trainer.config.sample
    return evaluate_field(
        velocity_field(trainer),
        trainer.source,
        reference_data(trainer.target),
        nfes=sc.nfe,
        sampler=sc.sampler,
        adaptive=sc.adaptive,
        n=config.train.eval_samples,
        seed=config.train.seed + 12345,
        device=trainer.device,
        expressway=_expressway(trainer),
        schedule=getattr(trainer.path, "schedule", None),
        options=sampler_options(config.objective.name, config.objective.params),
        novelty=run_novelty(trainer)[0],
        decode=None if codec is None else codec.decode,
    )


def _reconstruction(trainer: Any) -> Reconstruction:
    """An autoencoder run's EMA reconstructions of its held-out images."""
    model, device = trainer.ema.model, trainer.device
    return evaluate_reconstruction(lambda x: model(x.to(device)), trainer.config.data.target, trainer.target,
                                   seed=trainer.config.train.seed)


def _floor(trainer: Any) -> Reconstruction:
    """A latent flow's floor: its autoencoder's reconstructions of the held-out images, measured once."""
    if getattr(trainer, "_floor", None) is None:
        codec = trainer.codec
        trainer._floor = evaluate_reconstruction(lambda x: codec.decode(codec.encode(x)), trainer.config.data.target,
                                                 trainer.images, seed=trainer.config.train.seed)
    return trainer._floor


def evaluation_notes(trainer: Any) -> tuple[list[str], Reconstruction | None]:
    """What ``eval.md`` says besides the quality table, and an autoencoder's reconstruction: for an
    autoencoder run its held-out reconstruction (MSE and classifier Fréchet); for a latent flow
    what is measured where and its autoencoder's floor; why novelty was not measured, where not."""
    config = trainer.config
    if trainer.objective.sampler_kind is None:
        rec = _reconstruction(trainer)
        return [format_reconstruction({config.name: rec}, "Reconstruction (EMA weights)")], rec
    notes = []
    if getattr(trainer, "codec", None) is not None:
        notes += [LATENT_NOTE, format_reconstruction({str(config.data.latent): _floor(trainer)}, "Autoencoder floor")]
    reference, why = run_novelty(trainer)
    if reference is None:
        notes.append(f"Novelty: {why}.")
    return notes, None


def evaluate_run_nll(trainer: Any) -> NLLResult | None:
    """Held-out negative log-likelihood of the EMA model (``sample.nll``; rank 0 only, else ``None``)."""
    config = trainer.config
    if trainer.dist.rank != 0 or not config.sample.nll:
        return None
    data, what, _ = held_out_target(config.data.target, trainer.target)
    return evaluate_nll(velocity_field(trainer), trainer.source, data, n=min(config.train.eval_samples, 1000),
                        seed=config.train.seed + 54321, description=what, device=trainer.device)


def write_eval(run_dir: Any, name: str, step: int, rows: list[EvalRow], nll: NLLResult | None = None,
               notes: list[str] | tuple[str, ...] = (), reconstruction: Reconstruction | None = None) -> None:
    """``eval.md`` (the latest table, then ``notes``), and a row per NFE in ``eval.csv`` (and
    ``nll.csv``; an autoencoder's ``reconstruction`` in ``reconstruction.csv``)."""
    if not rows and not notes:
        return
    parts = [format_table(rows, f"{name} at step {step}")] if rows else [f"**{name} at step {step}**"]
    if nll is not None:
        parts.append(format_nll({name: nll}))
        append_csv(run_dir / "nll.csv", ["step", *nll.as_dict().keys()], [[step, *nll.as_dict().values()]])
    if rows:
        append_csv(run_dir / "eval.csv", ["step", *rows[0].as_dict().keys()],
                   [[step, *r.as_dict().values()] for r in rows])
    if reconstruction is not None:
        append_csv(run_dir / "reconstruction.csv", ["step", *reconstruction.as_dict().keys()],
                   [[step, *reconstruction.as_dict().values()]])
    text = "\n\n".join([*parts, *notes]) + "\n"
    atomic_write_bytes(run_dir / "eval.md", text.encode("utf-8"))
