r"""The words of ``monge demo``'s report: its conclusion with the figures, the noise floor of W2 at
the sample size, and why some rows look wrong.

The noise floor: two independent samples of ``n`` points of the *same* distribution are at an
empirical :math:`W_2` well above zero (:math:`W_2(\hat\nu_n, \hat\nu'_n) \to 0` only like
:math:`n^{-1/2}` in 2D, with a log factor), so a model's W2 against ``n`` target points cannot go
below it, and W2 differences smaller than its spread are not evidence.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

import torch

from .evaluate import EvalRow
from .metrics import wasserstein2

__all__ = ["MMD_NOTE", "conclusion", "explanations", "w2_noise_floor"]

MMD_NOTE = (
    "MMD²: squared maximum mean discrepancy with an RBF kernel, the unbiased estimator (Gretton et al. "
    "2012): it averages kernel values over distinct pairs only, so it is centred on the true MMD² and "
    "can be slightly negative when the model is as close to the target as the sample size can tell "
    "(a negative value means \"indistinguishable at this sample size\", not an error)."
)


def w2_noise_floor(target, n: int, draws: int = 3, seed: int = 0) -> tuple[float, float]:
    """Mean and standard deviation over ``draws`` of :math:`W_2` between two independent
    ``n``-point samples of ``target`` (a data source): the best W2 any model can show at ``n``."""
    g = torch.Generator().manual_seed(seed)
    values = [wasserstein2(target.sample(n, generator=g), target.sample(n, generator=g)) for _ in range(draws)]
    return statistics.fmean(values), (statistics.stdev(values) if draws > 1 else math.nan)


def _row(rows: Sequence[EvalRow], sampler: str, nfe: int | None = None) -> EvalRow | None:
    return next((r for r in rows if r.sampler == sampler and (nfe is None or r.nfe == nfe)), None)


def conclusion(rows: Mapping[str, Sequence[EvalRow]], floor: tuple[float, float], sampler: str = "euler") -> str:
    """The report's first sentence(s): W2 of each method against the first one at the smallest
    NFE and with the adaptive solver, and the noise floor they are measured against."""
    labels = list(rows)
    base = labels[0]
    nfes = sorted({r.nfe for r in rows[base] if r.sampler == sampler})
    if not nfes:
        return ""
    k = nfes[0]
    mean, std = floor
    parts = []
    all_same = True
    for other in labels[1:]:
        a, b = _row(rows[base], sampler, k), _row(rows[other], sampler, k)
        ad_a, ad_b = _row(rows[base], "dopri5"), _row(rows[other], "dopri5")
        if a is None or b is None:
            continue
        ratio = a.w2 / b.w2 if b.w2 > 0 else math.inf
        text = (f"At {k} NFE ({sampler}), {other} reaches W2 {b.w2:.3f} against {base}'s {a.w2:.3f} "
                f"({ratio:.1f}x {'lower' if ratio > 1 else 'higher'})")
        if ad_a is not None and ad_b is not None:
            gap = abs(ad_a.w2 - ad_b.w2)
            same = gap <= 2 * max(std, 0.0) if math.isfinite(std) else False
            all_same = all_same and same
            text += (f"; with the adaptive solver (dopri5) {other} reaches {ad_b.w2:.3f} at {ad_b.nfe} NFE and "
                     f"{base} {ad_a.w2:.3f} at {ad_a.nfe} NFE, " + ("a difference within the noise" if same
                                                                  else "a difference beyond the noise"))
        parts.append(text + ".")
    head = " ".join(parts)
    return (f"**Conclusion.** {head} The noise floor, W2 between two independent samples of the target "
            f"of the same size, is {mean:.3f} ± {std:.3f}: no model can score below it, and gaps smaller "
            "than a few times its spread are not evidence. OT pairing straightens the paths "
            "(straightness near 0), so few steps suffice; "
            + ("with enough steps every coupling converges to about the same distribution." if all_same else
               "with enough steps the couplings still differ beyond the noise: they learned slightly different "
               "distributions (see the notes below)."))


def explanations(rows: Mapping[str, Sequence[EvalRow]], floor: tuple[float, float]) -> list[str]:
    """Notes on rows that look wrong: expressway rows, and an adaptive W2 where I-CFM beats OT-CFM."""
    notes = []
    express = [(label, r) for label, rs in rows.items() for r in rs if r.sampler.startswith("expressway")]
    if express:
        label, ex = express[0]
        plain = _row(rows[label], ex.sampler.rpartition("+")[2], ex.nfe)
        worse = plain is not None and ex.w2 > plain.w2
        notes.append(
            "- **expressway rows** (semi-discrete OT runs): each noise starts from its OT cell's training point "
            "noised to t_s and the flow runs only on [t_s, 1]; NFE counts those flow steps (the cell search is "
            "not a network evaluation). The start x_t = (1-t_s) z + t_s y with fresh noise z is the path of a "
            "model trained with *independent* pairs (DPM-OT's setting); a model trained on OT pairs has seen "
            "at t_s only its own cell's noise, so from this start it can leave its training paths"
            + (f": here W2 {ex.w2:.3f} against {plain.w2:.3f} for its plain rows at {ex.nfe} NFE ({label}). "
               "The rows show the expressway's cost on such a model, not a bug."
               if worse and plain is not None else "."))
    dop = {label: row for label, rs in rows.items() if (row := _row(rs, "dopri5")) is not None}
    labels = list(dop)
    if len(labels) >= 2:
        first, others = labels[0], labels[1:]
        better = [lab for lab in others if dop[first].w2 < dop[lab].w2]
        if better:
            notes.append(
                f"- **{first} better than {', '.join(better)} with the adaptive solver**: dopri5 follows "
                "each learned flow to its end, so this row compares the learned distributions, not the "
                "paths. Minibatch OT pairs are an approximation of the OT plan and bias the learned "
                "marginal slightly, and the gap "
                f"({', '.join(f'{dop[lab].w2 - dop[first].w2:+.3f}' for lab in better)}) is to be read "
                f"against the noise floor's spread ({floor[1]:.3f}); the point of OT pairing is the "
                "few-step rows.")
    return notes
