r"""Evaluation of a trained field: sample quality and path straightness against the NFE budget."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import torch
from torch import Tensor

from .data.sources import DataSource
from .metrics import mmd_rbf, mode_stats, straightness, wasserstein2
from .paths import Schedule
from .samplers import sample

if TYPE_CHECKING:  # pragma: no cover
    from .samplers.expressway import Expressway

__all__ = ["EvalRow", "evaluate_field", "format_table", "format_comparison"]


@dataclass
class EvalRow:
    """One line of a quality-versus-NFE table."""

    sampler: str
    nfe: int
    w2: float
    mmd: float
    straightness: float
    mode_coverage: float | None = None
    mode_mixture: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def evaluate_field(
    field: Callable[[Tensor, Tensor], Tensor],
    source: DataSource,
    target: DataSource,
    nfes: Sequence[int] = (1, 2, 4, 8),
    sampler: str = "euler",
    adaptive: bool = True,
    n: int = 1000,
    seed: int = 0,
    device: torch.device | str = "cpu",
    expressway: "Expressway | None" = None,
    schedule: Schedule | None = None,
) -> list[EvalRow]:
    r"""Sample ``n`` points from ``source`` pushed by ``field`` at each NFE and compare with fresh
    ``target`` samples: exact :math:`W_2`, RBF MMD², straightness
    :math:`\mathbb{E}\int_0^1\|(x_1 - x_0) - \dot x_t\|^2 dt` of the sampler's own trajectory, and,
    when the target is a known mixture, mode coverage / mode mixture.

    ``expressway`` (a :class:`~monge.samplers.expressway.Expressway`, e.g. of a ``semidiscrete_ot``
    run) adds rows ``expressway@t_start`` at each NFE: the same noises started from their OT cell's
    target noised to ``t_start`` (:func:`monge.samplers.expressway.expressway_sample`).

    ``sampler`` is any of :data:`monge.samplers.SAMPLERS`; ``schedule`` is the alpha/sigma schedule
    of the field's path, used by the samplers that need one (default: linear).
    """
    g = torch.Generator().manual_seed(seed)
    x0 = source.sample(n, generator=g, device=device)
    ref = target.sample(n, generator=g, device=device)
    modes = target.modes()
    runs: list[tuple[str, int | None]] = [(sampler, k) for k in nfes]
    if adaptive:
        runs.append(("dopri5", None))
    if expressway is not None:
        runs += [("expressway", k) for k in nfes]
    rows = []
    for name, nfe in runs:
        if name == "expressway":
            out = expressway.sample(field, x0, sampler=sampler, nfe=nfe, return_trajectory=True,
                                    generator=torch.Generator(device=x0.device).manual_seed(seed + 1))
            name = f"expressway@{expressway.t_start:g}+{sampler}"
        else:
            out = sample(field, x0, sampler=name, nfe=nfe or 1, return_trajectory=True, schedule=schedule,
                         generator=torch.Generator(device=x0.device).manual_seed(seed + 2))
        x1 = out.x
        row = EvalRow(
            sampler=name,
            nfe=out.nfe,
            w2=wasserstein2(x1, ref),
            mmd=mmd_rbf(x1, ref),
            straightness=straightness(out.trajectory, out.times),
        )
        if modes is not None:
            centres, std = modes
            stats = mode_stats(x1, centres.to(x1), std)
            row.mode_coverage, row.mode_mixture = stats.coverage, stats.mixture
        rows.append(row)
    return rows


def format_table(rows: Sequence[EvalRow], title: str | None = None) -> str:
    """Markdown table of evaluation rows."""
    has_modes = any(r.mode_coverage is not None for r in rows)
    head = "| sampler | NFE | W2 | MMD² | straightness |" + (" coverage | mixture |" if has_modes else "")
    sep = "|---|---:|---:|---:|---:|" + ("---:|---:|" if has_modes else "")
    lines = ([f"**{title}**", ""] if title else []) + [head, sep]
    for r in rows:
        line = f"| {r.sampler} | {r.nfe} | {r.w2:.4f} | {r.mmd:.5f} | {r.straightness:.4f} |"
        if has_modes:
            cov = "" if r.mode_coverage is None else f"{r.mode_coverage:.2f}"
            mix = "" if r.mode_mixture is None else f"{r.mode_mixture:.3f}"
            line += f" {cov} | {mix} |"
        lines.append(line)
    return "\n".join(lines)


_TITLES = {"w2": "W2", "mmd": "MMD²", "straightness": "Straightness", "mode_mixture": "Mode mixture",
           "mode_coverage": "Mode coverage"}


def format_comparison(results: dict[str, Sequence[EvalRow]], metric: str = "w2") -> str:
    """One column per method: ``metric`` at each NFE (rows matched by position; adaptive NFEs listed)."""
    labels = list(results)
    first = results[labels[0]]
    title = _TITLES.get(metric, metric)
    lines = [f"**{title} by NFE**", "", "| NFE | " + " | ".join(labels) + " |",
             "|---:|" + "---:|" * len(labels)]
    for i, r in enumerate(first):
        if r.sampler == "dopri5":
            nfe = f"adaptive ({'/'.join(str(results[lab][i].nfe) for lab in labels)})"
        else:
            nfe = str(r.nfe)
        cells = []
        for lab in labels:
            value = getattr(results[lab][i], metric) if i < len(results[lab]) else None
            cells.append("" if value is None else f"{value:.3f}")
        lines.append(f"| {nfe} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
