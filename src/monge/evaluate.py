r"""Evaluation of a trained field: sample quality and path straightness against the NFE budget, whether
its samples are new (:class:`NoveltyReference`: nearest training point against held-out points, see
:mod:`monge.metrics.novelty`), and the negative log-likelihood of held-out data (:func:`evaluate_nll`)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .data.sources import DataSource, FiniteRows, build_source
from .flow_likelihood import log_likelihood
from .metrics import bits_per_dim, dequantize, mmd_rbf, mode_stats, straightness, wasserstein2
from .metrics.novelty import NoveltyReport, TrainHeldoutFrechet, frechet_train_heldout
from .metrics.novelty import novelty as measure_novelty
from .paths import Schedule
from .samplers import SAMPLERS, sample

if TYPE_CHECKING:  # pragma: no cover
    from .generate import RunSampler
    from .samplers.expressway import Expressway

__all__ = [
    "EvalRow",
    "evaluate_field",
    "format_table",
    "format_comparison",
    "NLLResult",
    "held_out_target",
    "reference_data",
    "evaluate_nll",
    "format_nll",
    "RowNovelty",
    "NoveltyReference",
    "novelty_reference",
    "format_novelty",
    "novelty_sentence",
    "COPY_MARGIN",
    "MAX_HELD_OUT",
    "Reconstruction",
    "evaluate_reconstruction",
    "format_reconstruction",
    "LATENT_NOTE",
    "NEGATIVE_MMD_NOTE",
]

#: A row copies when its near-copy share exceeds the held-out points' by more than this (2 points).
COPY_MARGIN = 0.02
#: Held-out points a novelty reference keeps (a seeded subset beyond): the 1st percentile of their
#: nearest-training-point distances is the near-copy threshold.
MAX_HELD_OUT = 2000


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
    novelty: RowNovelty | None = None

    def as_dict(self) -> dict:
        """The scores as flat columns; with :attr:`novelty`, its :meth:`RowNovelty.columns` too."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "novelty"}
        return out if self.novelty is None else {**out, **self.novelty.columns()}


@dataclass(frozen=True)
class RowNovelty:
    r"""Is a sample new? The tests of :func:`monge.metrics.novelty.novelty` for one row of samples: in the
    data space (pixels for images) and, when the data set has a classifier, in its feature space, with
    the classifier Fréchet distance to the train split beside the one to the held-out split
    (:func:`~monge.metrics.novelty.frechet_train_heldout`); ``against`` says what the samples were
    compared with (:attr:`NoveltyReference.description`)."""

    data: NoveltyReport
    features: NoveltyReport | None = None
    frechet: TrainHeldoutFrechet | None = None
    against: str = ""

    @property
    def reports(self) -> list[NoveltyReport]:
        """The data-space report, then the feature-space one when measured."""
        return [self.data] + ([self.features] if self.features is not None else [])

    @property
    def worst(self) -> NoveltyReport:
        """The report whose near-copy share exceeds the held-out share the most."""
        return max(self.reports, key=lambda r: r.excess)

    def copies(self, margin: float = COPY_MARGIN) -> bool:
        """Whether, in any space, the near-copy share exceeds the held-out share by more than ``margin``."""
        return any(r.copies(margin) for r in self.reports)

    def verdict(self, margin: float = COPY_MARGIN) -> str:
        """One sentence (:meth:`NoveltyReport.verdict`) for the space that looks most like copying."""
        return self.worst.verdict(margin)

    def columns(self) -> dict[str, float | bool | None]:
        """Flat CSV columns: ratio, near-copy shares (samples, held-out) and duplicate share per space
        (``feature_*``: ``None`` without a classifier), Fréchet to train / held-out, and ``copying``."""
        out: dict[str, float | bool | None] = {}
        for prefix, r in (("", self.data), ("feature_", self.features)):
            out[f"{prefix}nn_ratio"] = None if r is None else r.ratio
            out[f"{prefix}near_copies"] = None if r is None else r.near_copy_share
            out[f"{prefix}heldout_near_copies"] = None if r is None else r.heldout_near_copy_share
            out[f"{prefix}duplicates"] = None if r is None else r.duplicate_share
        f = self.frechet
        out["frechet_train"] = None if f is None else f.train
        out["frechet_heldout"] = None if f is None else f.held_out
        out["frechet_reference"] = None if f is None else f.reference
        out["copying"] = self.copies()
        return out


@dataclass(frozen=True)
class NoveltyReference:
    r"""What a row's novelty is measured against (made by :func:`novelty_reference` or
    :meth:`from_data`): the ``train`` points the model was trained on and ``held_out`` points it never
    saw, in model space, and with ``classifier`` (a
    :class:`~monge.metrics.classifier.FeatureClassifier` of the data set) their features.

    Nearest-neighbour search is exact over the whole training set (chunked; no subsampling: a copy
    of a training point left out of a subsample would look new). Samples are clipped to ``clip``
    (images: the pixel range) first, as the classifier's inputs are.
    """

    train: Tensor
    held_out: Tensor
    description: str
    space: str = "data"
    classifier: Any = None
    train_features: Tensor | None = None
    held_features: Tensor | None = None
    clip: tuple[float, float] | None = None
    quantile: float = 0.01

    @classmethod
    def from_data(cls, train: Tensor, held_out: Tensor, description: str, *, classifier: Any = None,
                  clip: tuple[float, float] | None = None, space: str | None = None,
                  quantile: float = 0.01) -> NoveltyReference:
        """A reference on ``train`` and ``held_out`` (same point shape); the classifier's features of both
        are computed once here. ``space`` defaults to ``"pixels"`` for images, else ``"data"``."""
        from .metrics.classifier import classifier_features

        if train.shape[1:] != held_out.shape[1:]:
            raise ValueError(f"train points {tuple(train.shape[1:])} and held_out points {tuple(held_out.shape[1:])} "
                             "differ in shape; pass two splits of one data set")
        if held_out.shape[0] < 2:
            raise ValueError(f"held_out needs at least 2 points, got {held_out.shape[0]}; hold out more data")
        train, held_out = train.detach().float().cpu(), held_out.detach().float().cpu()
        space = space if space is not None else ("pixels" if train.dim() == 4 else "data")
        feats = (None, None) if classifier is None else (classifier_features(classifier, train).cpu(),
                                                         classifier_features(classifier, held_out).cpu())
        return cls(train, held_out, description, space, classifier, feats[0], feats[1], clip, quantile)

    def mode_stats(self, samples: Tensor) -> tuple[float, float] | None:
        """``(coverage, mixture)`` of image ``samples`` under the reference's classifier
        (:func:`~monge.metrics.classifier.classifier_mode_stats`), ``None`` without one."""
        from .metrics.classifier import classifier_mode_stats, classifier_probs

        if self.classifier is None:
            return None
        x = samples.detach().float()
        if self.clip is not None:
            x = x.clamp(*self.clip)
        stats = classifier_mode_stats(classifier_probs(self.classifier, x))
        return stats.coverage, stats.mixture

    def measure(self, samples: Tensor, seed: int = 0) -> RowNovelty:
        """The :class:`RowNovelty` of ``samples`` (``seed``: the train subsets of the Fréchet pair)."""
        from .metrics.classifier import classifier_features

        x = samples.detach().float()
        if self.clip is not None:
            x = x.clamp(*self.clip)
        data = measure_novelty(x, self.train, self.held_out, quantile=self.quantile, space=self.space)
        if self.classifier is None or self.train_features is None or self.held_features is None:
            return RowNovelty(data, against=self.description)
        feats = classifier_features(self.classifier, x).cpu()
        return RowNovelty(
            data,
            measure_novelty(feats, self.train_features, self.held_features, quantile=self.quantile,
                            space="classifier features"),
            frechet_train_heldout(feats, self.train_features, self.held_features, seed=seed),
            self.description,
        )


@torch.no_grad()
def evaluate_field(
    field: Callable[[Tensor, Tensor], Tensor],
    source: DataSource,
    target: DataSource,
    nfes: Sequence[int] = (1, 2, 4, 8),
    sampler: str | RunSampler = "euler",
    adaptive: bool = True,
    n: int = 1000,
    seed: int = 0,
    device: torch.device | str = "cpu",
    expressway: Expressway | None = None,
    schedule: Schedule | None = None,
    options: dict[str, Any] | None = None,
    novelty: NoveltyReference | None = None,
    decode: Callable[[Tensor], Tensor] | None = None,
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

    ``novelty`` (:func:`novelty_reference`) measures every row's :class:`RowNovelty`: how close its
    samples are to the training points against how close held-out points are; a reference with a
    classifier (labelled images) also gives the rows' mode coverage and mixture in its classes.

    ``decode`` (a latent flow's :meth:`~monge.latent.LatentCodec.decode`): ``source``, ``target`` and
    the field live in a latent space, where W2, MMD² and straightness are measured; the samples are
    decoded to images for the novelty, coverage and mixture, against ``novelty``'s images.
    """
    if isinstance(sampler, str):
        settings: dict[str, Any] = {"schedule": schedule}
        options = dict(options or {})
    else:
        if schedule is not None or options:
            raise ValueError("a RunSampler carries its schedule and options; drop schedule= and options=")
        settings = {"schedule": sampler.schedule, "prediction": sampler.prediction}
        options = dict(sampler.options)
        sampler = sampler.sampler
    g = torch.Generator().manual_seed(seed)
    x0 = source.sample(n, generator=g, device=device)
    if getattr(field, "cond_dim", None) is not None:  # each sample conditioned on a reference point's condition
        from .data.conditional import ConditionalToy
        from .models.conditioning import ContinuousConditional

        if not isinstance(target, ConditionalToy):
            raise ValueError(f"the field takes a continuous condition (cond_dim) but the target {target!r} gives "
                             "none; evaluate it against a target with conditions (conditional_toy)")
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
        if name == "expressway" and expressway is not None:
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
            straightness=straightness(*out.trajectory_and_times()),
        )
        if modes is not None:
            centres, std = modes
            stats = mode_stats(x1, centres.to(x1), std)
            row.mode_coverage, row.mode_mixture = stats.coverage, stats.mixture
        if novelty is not None:
            images = x1 if decode is None else decode(x1)
            row.novelty = novelty.measure(images, seed=seed)
            classes = novelty.mode_stats(images) if modes is None else None
            if classes is not None:
                row.mode_coverage, row.mode_mixture = classes
        rows.append(row)
    return rows


#: Said under a table with a negative MMD² (the unbiased estimate is centred on the true value).
NEGATIVE_MMD_NOTE = ("MMD² is the unbiased estimate, centred on the true value: a negative one means the samples "
                     "are as close to the reference as this many samples can tell, not a negative distance (more "
                     "samples narrow it).")


def format_table(rows: Sequence[EvalRow], title: str | None = None) -> str:
    """Markdown table of evaluation rows, followed by :func:`format_novelty` when they carry novelty."""
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
    text = "\n".join(lines)
    if any(r.mmd < 0 for r in rows):
        text += "\n\n" + NEGATIVE_MMD_NOTE
    if any(r.novelty is not None for r in rows):
        text += "\n\n" + format_novelty(rows)
    return text


def _pct(share: float) -> str:
    return f"{100 * share:.1f}%"


def novelty_sentence(shares: Mapping[str, tuple[float, float]], what: str = "training points",
                     margin: float = COPY_MARGIN) -> str:
    r"""One sentence on copying from ``{row label: (near-copy share of its samples, of held-out points)}``
    (:class:`~monge.metrics.novelty.NoveltyReport`): the rows whose share exceeds the held-out share by
    more than ``margin`` (2 points), with both shares, or that none does, with the largest excess."""
    if not shares:
        raise ValueError("shares is empty; pass {row label: (sample share, held-out share)}")
    if not 0.0 <= margin <= 1.0:
        raise ValueError(f"margin must be a share in [0, 1] (0.02 for 2 points), got {margin!r}")

    def pair(label: str) -> str:
        s, h = shares[label]
        return f"{label}: {100 * s:.1f}% vs {100 * h:.1f}%"

    copying = [label for label, (s, h) in shares.items() if s - h > margin]
    if copying:
        verb = "is" if len(copying) == 1 else "are"
        return (f"**Copying:** {'; '.join(pair(label) for label in copying)} (near-copy share of the samples vs "
                f"held-out points): {'this row' if len(copying) == 1 else 'these rows'} {verb} near-copies of "
                f"{what}, more than {100 * margin:g} points above held-out data.")
    top = max(shares, key=lambda label: shares[label][0] - shares[label][1])
    return (f"No sign of copying: no row's near-copy share exceeds that of held-out points by more than "
            f"{100 * margin:g} points (largest excess, {pair(top)}).")


def format_novelty(rows: Sequence[EvalRow], margin: float = COPY_MARGIN) -> str:
    r"""Markdown table of the rows' :class:`RowNovelty` (one line per row and space) and a sentence
    naming the rows whose near-copy share exceeds the held-out share by more than ``margin``, or
    saying that none does (:func:`novelty_sentence`).

    Columns: the median nearest-training-point distance of the samples over that of held-out points
    (ratio, 1 for samples as new as fresh data), the share of samples closer to the training set than
    the 1st percentile of held-out points (near-copies) beside the held-out share, exact duplicates,
    and the classifier Fréchet distance to the train split / to the held-out split.
    """
    measured = [(r, r.novelty) for r in rows if r.novelty is not None]
    if not measured:
        return ""
    ref = next((nov.frechet for _, nov in measured if nov.frechet is not None), None)
    against = measured[0][1].against
    head = ("**Is a sample new?** Nearest training point of each sample against that of held-out points"
            + (f" ({against})" if against else "") + "; near-copies: closer to the training set than "
            f"the 1st percentile of held-out points; copying: near-copies above the held-out share by more than "
            f"{100 * margin:g} points.")
    if ref is not None:
        head += (f" Classifier Fréchet of the held-out points to the train split: {ref.reference:.2f} (what "
                 "fresh data scores); a model that copies scores well below it on train and above on held-out.")
    lines = [head, "", "| sampler | NFE | space | NN distance ratio | near-copies: samples / held-out | duplicates "
             "| Fréchet: train / held-out | copying? |", "|---|---:|---|---:|---:|---:|---:|---|"]
    shares: dict[str, tuple[float, float]] = {}
    for r, nov in measured:
        for rep in nov.reports:
            fd = nov.frechet if rep is nov.features else None
            flag = f"yes (+{100 * rep.excess:.1f} pts)" if rep.copies(margin) else "no"
            lines.append(f"| {r.sampler} | {r.nfe} | {rep.space} | {rep.ratio:.3f} | {_pct(rep.near_copy_share)} / "
                         f"{_pct(rep.heldout_near_copy_share)} | {_pct(rep.duplicate_share)} | "
                         + ("–" if fd is None else f"{fd.train:.2f} / {fd.held_out:.2f}") + f" | {flag} |")
        w = nov.worst
        shares[f"{r.sampler} at {r.nfe} NFE ({w.space})"] = (w.near_copy_share, w.heldout_near_copy_share)
    return "\n".join(lines) + "\n\n" + novelty_sentence(shares, "training points", margin)


_TITLES = {"w2": "W2", "mmd": "MMD²", "straightness": "Straightness", "mode_mixture": "Mode mixture",
           "mode_coverage": "Mode coverage"}


def format_comparison(results: Mapping[str, Sequence[EvalRow]], metric: str = "w2") -> str:
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

    A sampler (toy sets, Gaussians) gives fresh samples; a table with ``holdout`` its held-out rows;
    an image set with a held-out split (``digits`` with ``holdout``, ``faces``, ``textures``) its
    held-out images; ``mnist`` / ``cifar10`` trained on their ``train`` split their ``test`` split.
    Any other finite data set (image folders, arrays) has no held-out split, so its training
    images (or rows) are scored and the description says so.
    """
    from .data.images import ImageDataset

    if not isinstance(target, FiniteRows):
        return target, "fresh target samples", True
    held = getattr(target, "held_out", None)
    if held is not None:  # a table's holdout rows, or an image set's held-out images
        kind = "images" if isinstance(target, ImageDataset) else "rows"
        return held, f"{len(held)} held-out {kind} of {target.name}", False
    if not isinstance(target, ImageDataset):
        return target, f"training rows of {target.name} (no held-out split; set holdout)", False
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
    :math:`\log p_0` of :func:`monge.flow_likelihood.log_likelihood`), with dopri5.

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


#: What a latent flow's tables measure where (after its quality table).
LATENT_NOTE = ("Latent flow: W2, MMD² and straightness are measured in the autoencoder's latent space; the samples are "
               "decoded to images for the novelty, the classifier Fréchet distances, coverage and mixture.")


@dataclass(frozen=True)
class Reconstruction:
    r"""An autoencoder's reconstructions :math:`\hat x = D(E(x))` of ``n`` images (``data`` says which):
    ``mse`` :math:`= \tfrac{1}{nd}\sum\lVert\hat x - x\rVert^2`, and for labelled images ``frechet``, the
    classifier Fréchet distance of the reconstructions to the images: the floor that no latent flow
    on this autoencoder goes below, since its samples are decoded by the same decoder."""

    mse: float
    frechet: float | None
    n: int
    data: str

    def as_dict(self) -> dict:
        return asdict(self)


def evaluate_reconstruction(
    reconstruct: Callable[[Tensor], Tensor],
    spec: Any,
    target: DataSource,
    *,
    classifier: bool | torch.nn.Module = True,
    cache_dir: str | Path | None = None,
    max_images: int = MAX_HELD_OUT,
    seed: int = 0,
    batch_size: int = 256,
) -> Reconstruction:
    """The :class:`Reconstruction` of the held-out images of ``target`` (:func:`held_out_target`; a
    seeded subset of ``max_images`` when larger) by ``reconstruct`` (images -> images), in batches.
    ``classifier``: for labelled images, the classifier of :func:`novelty_reference` (same cache), or
    the feature classifier given (e.g. the one a report scores its samples with)."""
    from .metrics.frechet import classifier_frechet_distance

    held, what, _ = held_out_target(spec, target)
    x = getattr(held, "data", None)
    if not torch.is_tensor(x):
        x = held.sample(max_images, generator=torch.Generator().manual_seed(seed))
    if x.shape[0] > max_images:
        x = x[torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:max_images]]
    x = x.float()
    with torch.no_grad():
        recon = torch.cat([reconstruct(chunk).float().cpu() for chunk in x.split(batch_size)])
    mse = float((recon - x).pow(2).mean())
    frechet = None
    labels = getattr(target, "labels", None)
    if classifier is not False and x.dim() == 4 and labels is not None \
            and (getattr(target, "num_classes", 0) or 0) >= 2 and isinstance(target, FiniteRows) and len(target) >= 10:
        from .metrics.classifier import load_or_train_classifier

        clf = classifier if isinstance(classifier, torch.nn.Module) else load_or_train_classifier(target, cache_dir,
                                                                                                  seed=0)
        frechet = classifier_frechet_distance(recon.clamp(*IMAGE_RANGE), x, clf)
    return Reconstruction(mse, frechet, int(x.shape[0]), what)


def format_reconstruction(results: Mapping[str, Reconstruction], title: str = "Reconstruction") -> str:
    """Markdown table of :class:`Reconstruction` by label, with what the Fréchet distance means."""
    lines = [f"**{title}** (decode(encode(x)) of held-out images against those images; classifier Fréchet in "
             "the features of the data set's classifier: the floor of any latent flow on the autoencoder, whose "
             "samples go through the same decoder)", "",
             "| autoencoder | MSE | classifier Fréchet | images | data |", "|---|---:|---:|---:|---|"]
    for label, r in results.items():
        fd = "–" if r.frechet is None else f"{r.frechet:.2f}"
        lines.append(f"| {label} | {r.mse:.5f} | {fd} | {r.n} | {r.data} |")
    return "\n".join(lines)


def reference_data(target: DataSource) -> DataSource:
    """What samples are compared against: a table's held-out rows (``holdout``) when it has them,
    else the target itself."""
    held = getattr(target, "held_out", None)
    return target if held is None else held


def novelty_reference(
    spec: Any,
    target: DataSource,
    *,
    classifier: bool = True,
    cache_dir: str | Path | None = None,
    seed: int = 0,
    max_held_out: int = MAX_HELD_OUT,
) -> tuple[NoveltyReference | None, str]:
    """``(reference, description)``: what the novelty of samples of a model of ``target`` is measured
    against, or ``(None, why not)``.

    The training points are the ``target``'s own (what the run trained on); the held-out points are
    :func:`held_out_target`'s split, a seeded subset of ``max_held_out`` when larger. A target
    sampled afresh (toy sets) or without a held-out split (image folders, arrays, tables without
    ``holdout``) gives ``None`` and a sentence saying so: novelty is not guessed from training data.
    ``classifier``: labelled images are also measured in the features of the data set's classifier
    (:func:`~monge.metrics.classifier.load_or_train_classifier` on the training split, cached in
    ``cache_dir``, default ``$MONGE_CACHE_DIR`` or ``~/.cache/monge``).
    """
    from .data.images import ImageDataset
    from .data.tabular import VectorDataset

    if not isinstance(target, FiniteRows):
        return None, "the target is sampled afresh (no finite training set): novelty not measured"
    train = target.data
    held, _, fresh = held_out_target(spec, target)
    if fresh or held is target or not isinstance(held, FiniteRows):
        name = getattr(spec, "name", None)
        splits = isinstance(target, VectorDataset) or name in ("digits", "faces", "textures")
        hint = " (set holdout in data.target, e.g. holdout: 0.2)" if splits else ""
        return None, f"no held-out split: novelty not measured{hint}"
    held_x = held.data
    if held_x.shape[0] > max_held_out:
        keep = torch.randperm(held_x.shape[0], generator=torch.Generator().manual_seed(seed))[:max_held_out]
        held_x = held_x[keep]
    image = isinstance(target, ImageDataset)
    kind = "images" if image else "rows"
    description = f"{len(train)} training and {len(held_x)} held-out {kind} of {target.name}"
    clf = None
    if classifier and isinstance(target, ImageDataset) and target.labels is not None \
            and (target.num_classes or 0) >= 2 and len(train) >= 10:
        from .metrics.classifier import load_or_train_classifier

        clf = load_or_train_classifier(target, cache_dir, seed=0)
        description += (f", and the features of a classifier trained on the training split (accuracy "
                        f"{clf.test_accuracy:.3f})")
    ref = NoveltyReference.from_data(train, held_x, description, classifier=clf, clip=IMAGE_RANGE if image else None)
    return ref, description
