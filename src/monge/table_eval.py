r"""Tabular quality of a CSV table run, in the file's units (``monge eval`` on a table run).

Each setting (Euler at an NFE, dopri5) samples ``n`` rows from one fixed noise batch, maps them
back to the file's units (:math:`x = \sigma z + \mu`, then :meth:`TableSchema.decode
<monge.data.schema.TableSchema.decode>`: categories by argmax, integers rounded into their
training range) and scores them with :func:`monge.metrics.tabular.tabular_report` against the
training rows and the held-out rows (``holdout`` in ``data.target``). A class-conditional run
draws its labels with the training rows' frequencies, so the label column is scored too and is
the target of the machine-learning efficiency.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["COPY_MARGIN", "TABLE_COLUMNS", "copy_warning", "evaluate_table_run", "format_table_quality", "table_target"]

#: How far (a fraction) a run's near-copy share may exceed the held-out rows' before the report says it copies.
COPY_MARGIN = 0.02

#: Columns of the table-quality report: ``(key of tabular_report, header)``.
TABLE_COLUMNS = (
    ("column_shapes", "shapes"),
    ("column_pair_trends", "trends"),
    ("quality", "quality"),
    ("alpha_precision", "α-precision"),
    ("beta_recall", "β-recall"),
    ("c2st_auc", "C2ST AUC"),
    ("dcr_share", "DCR < held-out 5%"),
    ("dcr_heldout_share", "(held-out)"),
)


def table_target(model: nn.Module, target: Any) -> tuple[Any, str] | None:
    """``(schema, why)`` when ``target`` is a CSV table with a held-out split that ``model`` was trained on,
    else ``None``: only such runs get the tabular report."""
    from .data.tabular import VectorDataset

    schema = getattr(model, "schema", None) or getattr(target, "schema", None)
    if schema is None or not isinstance(target, VectorDataset):
        return None
    if target.held_out is None:
        return schema, "no held-out split: tabular quality not measured (set holdout in data.target, e.g. 0.2)"
    return schema, ""


def evaluate_table_run(
    model: nn.Module,
    sample: Callable[..., torch.Tensor],
    target: Any,
    *,
    nfes: Sequence[int] = (1, 2, 4, 8),
    sampler: str = "euler",
    adaptive: bool = True,
    n: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """``{setting: tabular_report}`` of the run's samples at each NFE of ``nfes`` (``sampler``) and,
    with ``adaptive``, dopri5; rows in the file's units against ``target``'s training and held-out
    rows (the metrics need scikit-learn: ``pip install "monge[tables]"``). ``sample(n, seed=, sampler=,
    nfe=, label=)`` draws the run's rows in its standardised units (e.g. :func:`monge.generate.generate`'s
    ``x``)."""
    from .metrics.tabular import tabular_report

    found = table_target(model, target)
    if found is None or found[1]:
        raise ValueError(found[1] if found else "not a CSV table run: the tabular report needs a table schema")
    schema = found[0]
    train, held = target.table(), target.held_out.table()
    kinds = {k: v for k, v in schema.kinds.items() if k in train}
    conditional = schema.label is not None and getattr(model, "num_classes", None) is not None
    label_col = schema.label.name if conditional else None
    if schema.label is not None and not conditional:
        train.pop(schema.label.name, None)
        held.pop(schema.label.name, None)
        kinds.pop(schema.label.name, None)
    settings: list[tuple[str, dict[str, Any]]] = [(str(k), {"sampler": sampler, "nfe": int(k)}) for k in nfes]
    if adaptive:
        settings.append(("adaptive", {"sampler": "dopri5"}))
    out: dict[str, dict[str, float]] = {}
    for name, opts in settings:
        labels = schema.draw_labels(None, n, seed) if conditional else None
        if labels is not None:
            opts["label"] = torch.from_numpy(labels)
        x = sample(n, seed=seed, **opts)
        synth = schema.decode(x.to(torch.float64).cpu().numpy(), labels)
        out[name] = tabular_report(train, synth, held, kinds, target=label_col, seed=seed)
    return out


def format_table_quality(reports: dict[str, dict[str, dict[str, float]]], title: str) -> str:
    """Markdown: one table per run of :func:`evaluate_table_run`'s figures, one row per setting."""
    parts = [f"### {title}", "",
             "Shapes: mean of 1 - KS (numbers) and 1 - TV (categories); trends: mean pair similarity "
             "(correlation / contingency); α-precision and β-recall against the training rows; C2ST AUC "
             "of a classifier telling samples from held-out rows (0.5 is ideal); DCR: share of samples "
             "closer to a training row than the 5th percentile of held-out rows, beside the held-out "
             "share (copies score high)."]
    for label, rows in reports.items():
        mle = sorted({k for r in rows.values() for k in r if k.startswith("mle_")})
        head = ["setting", *(h for _, h in TABLE_COLUMNS), *mle]
        parts += ["", f"**{label}**", "", "| " + " | ".join(head) + " |",
                  "|" + "---|" + "---:|" * (len(head) - 1)]
        for setting, r in rows.items():
            vals = [_fmt(r.get(k)) for k, _ in TABLE_COLUMNS] + [_fmt(r.get(k)) for k in mle]
            parts.append(f"| {setting} | " + " | ".join(vals) + " |")
        warning = copy_warning(label, rows)
        if warning:
            parts += ["", warning]
    return "\n".join(parts)


def copy_warning(label: str, rows: dict[str, dict[str, float]], margin: float = COPY_MARGIN) -> str:
    """A sentence naming the settings whose near-copy share (``dcr_share``) exceeds the held-out rows'
    (``dcr_heldout_share``) by more than ``margin`` (a fraction), else ``""``: those samples sit closer to
    training rows than new real rows do."""
    over = {k: r for k, r in rows.items()
            if r.get("dcr_share", 0.0) > r.get("dcr_heldout_share", 1.0) + margin}
    if not over:
        return ""
    worst = max(over, key=lambda k: over[k]["dcr_share"] - over[k]["dcr_heldout_share"])
    r = over[worst]
    return (f"**{label} copies training rows** at {', '.join(over)}: {100 * r['dcr_share']:.1f}% of its samples "
            f"at {worst} are closer to a training row than 95% of held-out rows are (held-out rows: "
            f"{100 * r['dcr_heldout_share']:.1f}%). Train fewer steps, use more rows, or keep such samples out "
            "of anything shared (distance to closest record is a privacy measure).")


def _fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.3f}" if not isinstance(v, (int, np.integer)) else str(v)
