r"""Evaluation of a trained field: sample quality and path straightness against the NFE budget, and
the negative log-likelihood of held-out data (:func:`evaluate_nll`)."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
from torch import Tensor

from .data.sources import DataSource, build_source
from .likelihood import bits_per_dim, dequantize, log_likelihood
from .metrics import mmd_rbf, mode_stats, straightness, wasserstein2
from .paths import Schedule
from .samplers import SAMPLERS, sample

if TYPE_CHECKING:  # pragma: no cover
    from .generate import RunSampler
    from .samplers.expressway import Expressway

__all__ = ["EvalRow", "evaluate_field", "format_table", "format_comparison", "NLLResult", "held_out_target", "reference_data",
           "evaluate_nll", "format_nll"]


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
    sampler: "str | RunSampler" = "euler",
    adaptive: bool = True,
    n: int = 1000,
    seed: int = 0,
    device: torch.device | str = "cpu",
    expressway: "Expressway | None" = None,
    schedule: Schedule | None = None,
    options: dict[str, Any] | None = None,
) -> list[EvalRow]:
    r"""Sample ``n`` points from ``source`` pushed by ``field`` at each NFE and compare with fresh
    ``target`` samples: exact :math:`W_2`, RBF MMD², straightness
    :math:`\mathbb{E}\int_0^1\|(x_1 - x_0) - \dot x_t\|^2 dt` of the sampler's own trajectory, and,
    when the target is a known mixture, mode coverage / mode mixture.

    ``expressway`` (a :class:`~monge.samplers.expressway.Expressway`, e.g. of a ``semidiscrete_ot``
    run) adds rows ``expressway@t_start`` at each NFE: the same noises started from their OT cell's
    target noised to ``t_start`` (:func:`monge.samplers.expressway.expressway_sample`).

    A field with a continuous condition (``field.cond_dim``, e.g. an MLP built with ``cond_dim``)
    generates sample ``i`` conditioned on the condition of reference point ``i``
    (``target.sample_with_conditions``), so the W2 compares the generated points with the
    reference points whose conditions they were given (C2OT's metric).

    ``sampler`` is any of :data:`monge.samplers.SAMPLERS`; ``schedule`` is the alpha/sigma schedule
    of the field's path, used by the samplers that need one (default: linear); ``options`` go to
    ``sampler`` (e.g. the ``max_steps`` of a ``shortcut`` run). A run's
    :class:`~monge.generate.RunSampler` (:func:`monge.generate.run_sampler`) carries all three and the
    run's prediction type.
    """
    if isinstance(sampler, str):
        settings: dict[str, Any] = {"schedule": schedule}
        options = dict(options or {})
    else:
        if schedule is not None or options:
            raise ValueError("a RunSampler carries its schedule and options; drop schedule= and options=")
        settings = {"schedule": sampler.schedule, "prediction": sampler.prediction}
        sampler, options = sampler.sampler, dict(sampler.options)
    g = torch.Generator().manual_seed(seed)
    x0 = source.sample(n, generator=g, device=device)
    if getattr(field, "cond_dim", None) is not None:  # each sample conditioned on a reference point's condition
        from .models.conditioning import ContinuousConditional

        ref, cond = target.sample_with_conditions(n, generator=g, device=device)
        field = ContinuousConditional(field, cond)
    else:
        ref = target.sample(n, generator=g, device=device)
    modes = target.modes()
    runs: list[tuple[str, int | None]] = [(sampler, k) for k in nfes]
    if adaptive:
        runs.append(("dopri5", None))
    if expressway is not None:
        runs += [("expressway", k) for k in nfes]
    rows = []
    for name, nfe in runs:
        if SAMPLERS.info(sampler if name == "expressway" else name).adaptive:
            nfe = None
        if name == "expressway":
            out = expressway.sample(field, x0, sampler=sampler, nfe=nfe, return_trajectory=True,
                                    generator=torch.Generator(device=x0.device).manual_seed(seed + 1))
            name = f"expressway@{expressway.t_start:g}+{sampler}"
        else:
            out = sample(field, x0, sampler=name, nfe=nfe, return_trajectory=True,
                         generator=torch.Generator(device=x0.device).manual_seed(seed + 2),
                         **settings, **(options if name == sampler else {}))
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
            nfe = f"adaptive ({'/'.join(str(results[lab][i].nfe) for lab in labels if i < len(results[lab]))})"
        else:
            nfe = str(r.nfe)
        cells = []
        for lab in labels:
            value = getattr(results[lab][i], metric) if i < len(results[lab]) else None
            cells.append("" if value is None else f"{value:.3f}")
        lines.append(f"| {nfe} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# likelihood of held-out data

#: Pixel levels and model-space range of monge's images (8-bit, scaled to [-1, 1]).
IMAGE_BINS = 256
IMAGE_RANGE = (-1.0, 1.0)


@dataclass
class NLLResult:
    """Negative log-likelihood of held-out data under a trained flow (:func:`evaluate_nll`).

    ``nll`` is the mean of :math:`-\\log p(x)` in nats over ``n`` points, ``nll_se`` its standard
    error over the points; images also get bits per dimension (``bpd``, ``bpd_se``) of the
    dequantised data. ``data`` says which data were scored.
    """

    nll: float
    nll_se: float
    n: int
    nfe: int
    divergence: str
    data: str
    seconds: float
    bpd: float | None = None
    bpd_se: float | None = None
    tol: float = 1e-5

    def as_dict(self) -> dict:
        return asdict(self)


def held_out_target(spec: Any, target: DataSource) -> tuple[DataSource, str, bool]:
    """``(data, description, fresh)``: data a model of ``target`` did not train on.

    A sampler (toy sets, Gaussians) gives fresh samples; ``mnist`` / ``cifar10`` trained on
    their ``train`` split give their ``test`` split; another finite data set (digits, image
    folders, arrays) has no held-out split in the run, so its training images are scored and
    the description says so.
    """
    from .data.images import ImageDataset

    held = getattr(target, "held_out", None)
    if held is not None:  # a table with a holdout split
        return held, f"{len(held)} held-out rows of {target.name}", False
    if not isinstance(target, ImageDataset):
        if hasattr(target, "__len__"):
            return target, f"training rows of {target.name} (no held-out split; set holdout)", False
        return target, "fresh target samples", True
    name = getattr(spec, "name", None)
    params = dict(getattr(spec, "params", {}) or {})
    if name in ("mnist", "cifar10") and params.get("split", "train") == "train":
        try:
            return build_source({"name": name, **params, "split": "test"}), f"{name} test split", False
        except (ValueError, OSError):
            pass
    return target, f"training images of {target.name} (no held-out split)", False


def evaluate_nll(
    field: Callable[[Tensor, Tensor], Tensor],
    source: DataSource,
    data: DataSource,
    n: int = 500,
    seed: int = 0,
    description: str = "fresh target samples",
    device: torch.device | str = "cpu",
    divergence: str | None = None,
    probes: int = 4,
    rtol: float = 1e-5,
    atol: float = 1e-5,
) -> NLLResult:
    r"""Mean negative log-likelihood of ``n`` points of ``data`` under the flow ``field`` from
    ``source`` (whose closed-form :meth:`~monge.data.sources.DataSource.log_prob` is the
    :math:`\log p_0` of :func:`monge.likelihood.log_likelihood`), with dopri5.

    ``divergence`` defaults to ``"exact"`` up to 64 dimensions and ``"hutchinson"`` (``probes``
    Rademacher probes) above. Images (``(C, H, W)`` samples in :math:`[-1, 1]`) are dequantised
    to 256 levels and also reported in bits per dimension (:func:`monge.metrics.bits_per_dim`).
    """
    g = torch.Generator().manual_seed(seed)
    x = data.sample(n, generator=g).to(device)
    image = x.dim() == 4
    if image:
        x = dequantize(x, data_range=IMAGE_RANGE, n_bins=IMAGE_BINS, generator=g)
    dim = x[0].numel()
    divergence = divergence or ("exact" if dim <= 64 else "hutchinson")
    start = time.perf_counter()
    out = log_likelihood(field, x, source_log_prob=source.log_prob, divergence=divergence, probes=probes,
                         generator=torch.Generator(device=x.device).manual_seed(seed + 1), rtol=rtol, atol=atol)
    seconds = time.perf_counter() - start
    nll = -out.log_prob.double()
    root = math.sqrt(n)
    res = NLLResult(nll=float(nll.mean()), nll_se=float(nll.std() / root) if n > 1 else float("nan"), n=n,
                    nfe=out.nfe, divergence=divergence, data=description, seconds=seconds, tol=max(rtol, atol))
    if image:
        bpd = bits_per_dim(out.log_prob, tuple(x.shape[1:]), data_scale=IMAGE_RANGE[1] - IMAGE_RANGE[0],
                           n_bins=IMAGE_BINS)
        res.bpd, res.bpd_se = float(bpd.mean()), float(bpd.std() / root) if n > 1 else float("nan")
    return res


def format_nll(results: dict[str, NLLResult], title: str = "Negative log-likelihood") -> str:
    """Markdown table of :class:`NLLResult` by label (bits/dim columns when any is an image run)."""
    images = any(r.bpd is not None for r in results.values())
    head = "| run | NLL (nats) | ± s.e. |" + (" bits/dim | ± s.e. |" if images else "") + \
        " points | divergence | NFE | data | seconds |"
    sep = "|---|---:|---:|" + ("---:|---:|" if images else "") + "---:|---|---:|---|---:|"
    tols = sorted({f"{r.tol:g}" for r in results.values()})
    lines = [f"**{title}** (−log p under the flow from the run's source; dopri5, rtol = atol = "
             f"{'/'.join(tols)})", "", head, sep]
    for label, r in results.items():
        cells = f"| {label} | {r.nll:.4f} | {r.nll_se:.4f} |"
        if images:
            cells += " | |" if r.bpd is None else f" {r.bpd:.4f} | {r.bpd_se:.4f} |"
        cells += f" {r.n} | {r.divergence} | {r.nfe} | {r.data} | {r.seconds:.1f} |"
        lines.append(cells)
    return "\n".join(lines)


def read_coupling_diagnostics(run_dir: Path | str) -> dict[str, float] | None:
    """The coupling diagnostics of a run (:mod:`monge.couplings.diagnostics`), averaged over the
    logged steps of ``run_dir/log.csv``; ``None`` when the log has none (older runs)."""
    import csv as _csv
    import math as _math

    from .couplings.diagnostics import DIAGNOSTICS

    path = Path(run_dir) / "log.csv"
    if not path.is_file():
        return None
    with path.open(newline="") as fh:
        rows = list(_csv.DictReader(fh))
    out = {}
    for key in DIAGNOSTICS:
        values = [float(r[key]) for r in rows if r.get(key) not in (None, "", "nan")]
        values = [v for v in values if _math.isfinite(v)]
        if values:
            out[key] = sum(values) / len(values)
    return out or None


def format_coupling_diagnostics(diagnostics: dict[str, dict[str, float]]) -> str:
    """Markdown table of :func:`read_coupling_diagnostics` per run label."""
    from .couplings.diagnostics import DIAGNOSTICS

    lines = ["**Coupling diagnostics (training log, mean over the logged steps)**", "",
             "| run | " + " | ".join(DIAGNOSTICS) + " |", "|---|" + "---:|" * len(DIAGNOSTICS)]
    for label, diag in diagnostics.items():
        lines.append(f"| {label} | " + " | ".join(f"{diag[k]:.4g}" if k in diag else "-" for k in DIAGNOSTICS) + " |")
    return "\n".join(lines)


def reference_data(target: DataSource) -> DataSource:
    """What samples are compared against: a table's held-out rows (``holdout``) when it has them,
    else the target itself."""
    held = getattr(target, "held_out", None)
    return target if held is None else held
