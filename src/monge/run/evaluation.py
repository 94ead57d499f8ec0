"""Evaluations during and after training: quality-versus-NFE rows and held-out NLL of the EMA model,
written to ``eval.md``, ``eval.csv`` and ``nll.csv`` of the run directory (rank 0 only)."""

from __future__ import annotations

from typing import Any

from ..evaluate import (EvalRow, NLLResult, evaluate_field, evaluate_nll, format_nll, format_table,
                        held_out_target, reference_data)
from ..objectives import prediction_of
from ..outputs import atomic_write_bytes
from ..samplers.expressway import DEFAULT_T_START, Expressway
from .logs import append_csv

__all__ = ["EXPRESSWAY_T", "evaluate_run", "evaluate_run_nll", "write_eval", "eval_due"]

#: Start time of the expressway rows in evaluations of ``semidiscrete_ot`` runs.
EXPRESSWAY_T = DEFAULT_T_START


def eval_due(step: int, every: int, last: int) -> bool:
    """Whether step ``step`` evaluates: every ``every`` steps (0: never) before the ``last`` one,
    which always evaluates when the run ends."""
    return bool(every) and step % every == 0 and step < last


def _field(trainer: Any):
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


def evaluate_run(trainer: Any) -> list[EvalRow]:
    """Quality-versus-NFE rows of the EMA model (computed on rank 0; ``[]`` elsewhere)."""
    from ..objectives import sampler_options

    if trainer.dist.rank != 0:
        return []
    config, sc = trainer.config, trainer.config.sample
    return evaluate_field(
        _field(trainer),
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
    )


def evaluate_run_nll(trainer: Any) -> NLLResult | None:
    """Held-out negative log-likelihood of the EMA model (``sample.nll``; rank 0 only, else ``None``)."""
    config = trainer.config
    if trainer.dist.rank != 0 or not config.sample.nll:
        return None
    data, what, _ = held_out_target(config.data.target, trainer.target)
    return evaluate_nll(_field(trainer), trainer.source, data, n=min(config.train.eval_samples, 1000),
                        seed=config.train.seed + 54321, description=what, device=trainer.device)


def write_eval(run_dir: Any, name: str, step: int, rows: list[EvalRow], nll: NLLResult | None = None) -> None:
    """``eval.md`` (the latest table), and a row per NFE in ``eval.csv`` (and ``nll.csv``)."""
    if not rows:
        return
    text = format_table(rows, f"{name} at step {step}") + "\n"
    if nll is not None:
        text += "\n" + format_nll({name: nll}) + "\n"
        append_csv(run_dir / "nll.csv", ["step", *nll.as_dict().keys()], [[step, *nll.as_dict().values()]])
    append_csv(run_dir / "eval.csv", ["step", *rows[0].as_dict().keys()],
               [[step, *r.as_dict().values()] for r in rows])
    atomic_write_bytes(run_dir / "eval.md", text.encode("utf-8"))
