r"""``monge demo --data digits``: couplings compared on scikit-learn's handwritten digits.

Every coupling trains the same network with the same optimiser, batch, steps and seed on the
same training split (80% of the 1797 digits); only the pairing of noise and data differs. The
EMA model is sampled from one fixed set of noises at NFE 1, 2, 4, 10 (Euler) and adaptively
(dopri5). The ``independent`` and ``semidiscrete_ot`` models are also sampled by DPM-OT's
expressway (Li et al. 2023): each noise goes to its semi-discrete OT cell's digit :math:`y`, which
is noised back to :math:`t_s` as :math:`x_{t_s} = (1-t_s)\,\xi + t_s\,y` (fresh :math:`\xi`) and
integrated over :math:`[t_s, 1]`. ``independent`` + expressway is DPM-OT proper: a normally
trained model, the OT map used only at sampling time.

Expressway defaults, chosen by measurement (``bench/digits_expressway.py``; figures in
``bench/results/digits.md``):

* the model matters most: the expressway suits the *independent* model, whose path at
  :math:`t_s` is exactly such noised data; a model trained with ``semidiscrete_ot`` pairs only saw
  points :math:`(1-t)\,z + t\,T(z)` with :math:`z` in the cell of :math:`T(z)`, so a digit noised
  with fresh noise is off its training distribution;
* :math:`t_s = 0.5` is kept: lower :math:`t_s` loses the map's effect, higher :math:`t_s` moves the
  samples towards copies of the map's training digits (closer to the training set than new real
  digits are, by the median distance to the nearest training digit).

Metrics, against the held-out 20% of the digits (never seen in training):

* classifier Fréchet distance (Lucic et al. 2018, FID with a data-set classifier): the
  :math:`W_2` distance between Gaussians fitted to penultimate features of a small CNN trained on
  the training split (:func:`monge.metrics.frechet.classifier_frechet_distance`);
* mode mixture (DPM-OT): share of samples with at least two classes of probability
  :math:`\ge \tau` under the same classifier, and class coverage
  (:func:`monge.metrics.classifier.classifier_mode_stats`);
* exact :math:`W_2` in pixel space (:func:`monge.metrics.wasserstein.wasserstein2`);
* is a sample new? (:class:`monge.evaluate.NoveltyReference`): the share of samples closer to a
  training digit, in the classifier's features, than the 1st percentile of held-out digits are
  (near-copies), beside that share of the held-out digits (about 1%), for every row, expressway
  rows included; the report names any row more than 2 points above the held-out share.

Samples are clipped to the pixel range :math:`[-1, 1]` before they are scored or drawn. Two
reference rows bound the scale: the training split against the held-out split (what a perfect
copy of the training data scores) and pure Gaussian noise.

With ``latent=RUN`` (``monge demo --data digits --latent RUN``) every coupling trains on the
latents of the autoencoder run ``RUN`` and every sample is decoded before it is scored against the
same held-out images (:mod:`monge.demo_latent`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ._validation import check_number, check_positive_int
from .config import Config
from .progress import item_status
from .run.rundir import claim_demo_dir
from .run.signals import interrupt_note

if TYPE_CHECKING:  # pragma: no cover
    from .data.sources import DataSource
    from .demo_latent import DemoLatent
    from .evaluate import NoveltyReference, RowNovelty

__all__ = [
    "DIGITS_COUPLINGS",
    "DIGITS_MODELS",
    "ImageDemoResult",
    "ImageRow",
    "image_demo_config",
    "run_image_demo",
    "score_images",
]

#: Couplings compared by default.
DIGITS_COUPLINGS = ("independent", "exact_ot", "wcfm", "immiscible", "semidiscrete_ot")
#: Networks the demo offers (CPU-sized).
DIGITS_MODELS: dict[str, dict] = {
    "mlp": {"name": "mlp", "hidden": 512, "depth": 3, "time_embedding": "sinusoidal"},
    "unet": {"name": "unet", "channels": [16, 32]},
}
_COUPLING_PARAMS: dict[str, dict] = {
    "semidiscrete_ot": {"max_time": 600},  # every training digit; the fit is bounded in time
}


@dataclass
class ImageRow:
    """Scores of one sampling setting: ``setting`` (e.g. ``"euler"``, ``"expressway t=0.5"``),
    the NFE used, classifier Fréchet distance, mode mixture at ``tau``, coverage, pixel W2 and,
    when measured, the samples' :class:`~monge.evaluate.RowNovelty`."""

    setting: str
    nfe: int
    frechet: float
    mixture: float
    coverage: float
    w2: float
    novelty: RowNovelty | None = None

    @property
    def near_copies(self) -> float:
        """Near-copy share of the samples in classifier features (NaN when not measured)."""
        f = None if self.novelty is None else self.novelty.features
        return math.nan if f is None else f.near_copy_share

    @property
    def heldout_near_copies(self) -> float:
        """Near-copy share of the held-out digits at the same threshold (NaN when not measured)."""
        f = None if self.novelty is None else self.novelty.features
        return math.nan if f is None else f.heldout_near_copy_share


@dataclass
class ImageDemoResult:
    report: Path
    rows: dict[str, list[ImageRow]]
    baselines: dict[str, ImageRow]
    grids: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    #: the latent space the couplings trained in (``latent=RUN``), else ``None``
    latent: DemoLatent | None = None


def image_demo_config(coupling: str, out: str | Path, size: int = 16, steps: int = 5000, batch_size: int = 128,
                      model: str = "mlp", seed: int = 0, coupling_params: dict | None = None,
                      latent: str | Path | None = None) -> Config:
    """The run configuration of one coupling (the ``configs/digits-*.yaml`` recipes at ``size``);
    ``coupling_params`` replaces the coupling's default parameters. ``latent``: a latent flow on
    that autoencoder (``configs/digits-latent-*.yaml``), its digits the demo's split
    (:func:`monge.demo_latent.demo_digits_target`)."""
    from .demo_latent import demo_digits_target

    if model not in DIGITS_MODELS:
        raise ValueError(f"model must be one of {', '.join(DIGITS_MODELS)}, got {model!r}")
    params = _COUPLING_PARAMS.get(coupling, {}) if coupling_params is None else dict(coupling_params)
    data = {"source": "gaussian", "target": {"name": "digits", "size": size}} if latent is None else \
        {"source": "gaussian", "target": demo_digits_target(size, seed), "latent": str(latent)}
    return Config.from_dict({
        "name": coupling,
        "output_dir": str(out),
        "data": data,
        "coupling": {"name": coupling, **params},
        "path": {"name": "linear", "sigma": 0.0},
        "model": DIGITS_MODELS[model],
        "train": {"steps": steps, "batch_size": batch_size, "lr": 1e-3, "ema_decay": 0.999, "seed": seed,
                  "checkpoint_every": 0, "eval_every": 0},
        "sample": {"sampler": "euler", "nfe": [1, 2, 4, 10], "adaptive": True},
    })


def score_images(samples: Tensor, reference: Tensor, classifier: nn.Module, tau: float = 0.2,
                 setting: str = "", nfe: int = 0, w2: bool = True,
                 novelty: NoveltyReference | None = None) -> ImageRow:
    r"""Classifier Fréchet distance, mode mixture at ``tau``, coverage and pixel :math:`W_2` of
    ``samples`` (clipped to [-1, 1]) against ``reference`` images; with ``novelty``, their
    :class:`~monge.evaluate.RowNovelty` against its training and held-out digits."""
    from .metrics.classifier import classifier_mode_stats, classifier_probs
    from .metrics.frechet import classifier_frechet_distance
    from .metrics.wasserstein import wasserstein2

    if samples.shape[1:] != reference.shape[1:]:
        raise ValueError(f"samples {tuple(samples.shape)} and reference {tuple(reference.shape)} differ in image shape")
    x = samples.detach().float().clamp(-1.0, 1.0)
    stats = classifier_mode_stats(classifier_probs(classifier, x), threshold=tau)
    return ImageRow(setting, int(nfe), classifier_frechet_distance(x, reference, classifier), stats.mixture,
                    stats.coverage, wasserstein2(x, reference) if w2 else math.nan,
                    None if novelty is None else novelty.measure(x))


def _train(config: Config, train_set, progress: bool | None):
    """The trained run of ``config`` on ``train_set``: the training digits, or a latent run's
    latents of them (encoded once for all couplings, :class:`~monge.demo_latent.DemoLatent`)."""
    from .progress import training_bar
    from .run.preparation import prepare_run_coupling
    from .train import Trainer

    trainer = Trainer(config)
    trainer.target = train_set  # train on the training split only; the rest is held out for scoring
    config.run_dir.mkdir(parents=True, exist_ok=True)
    (config.run_dir / "config.yaml").write_text(config.to_yaml())
    if trainer.codec is None:
        trainer.prepare()
    else:  # already encoded: fit the coupling's state only (Trainer.prepare would encode again)
        trainer.prepare_seconds = prepare_run_coupling(trainer.coupling, trainer.source, train_set, trainer.run_dir,
                                                       config.train.seed, trainer.dist, trainer.device)
    bar = training_bar(config.train.steps, 0, progress is not False, config.name)
    try:
        while trainer.step < config.train.steps:
            loss = trainer.train_step()
            bar.update(1)
            if trainer.step % 100 == 0:
                bar.set_postfix(loss=f"{loss:.4f}")
    finally:
        bar.close()
    trainer.save()
    return trainer


@interrupt_note("interrupted; the runs finished so far and a partial report are kept in the -o folder: the same "
                "command starts the demo again")
def run_image_demo(
    out: str | Path = "runs/demo-digits",
    couplings: Sequence[str] = DIGITS_COUPLINGS,
    size: int = 16,
    steps: int = 5000,
    batch_size: int = 128,
    model: str = "mlp",
    seed: int = 0,
    n: int = 1000,
    nfes: Sequence[int] = (1, 2, 4, 10),
    expressway: float = 0.5,
    expressway_nfes: Sequence[int] = (2, 4, 10),
    expressway_couplings: Sequence[str] = ("independent", "semidiscrete_ot"),
    expressway_targets: int | None = None,
    tau: float = 0.2,
    classifier_cache: str | Path | None = None,
    classifier_epochs: int = 15,
    coupling_params: dict[str, dict] | None = None,
    progress: bool | None = True,
    command: str | None = None,
    latent: str | Path | None = None,
) -> ImageDemoResult:
    r"""Train one model per coupling on ``size`` x ``size`` digits and write ``out/report.md``.

    Each coupling shares network (``model``: ``"mlp"`` or ``"unet"``), ``steps``, ``batch_size``
    and ``seed``. Samples: ``n`` from one fixed noise batch, Euler at each of ``nfes``, dopri5
    (adaptive, rtol = atol = 1e-5), and for the trained couplings among ``expressway_couplings`` the
    expressway from ``t_s = expressway`` with Euler at each of ``expressway_nfes``. A
    ``semidiscrete_ot`` model uses the map it was trained with; any other model uses one map from
    the noise onto ``expressway_targets`` training digits (``None``: all of them), fitted once
    with the ``semidiscrete_ot`` coupling's parameters and generator (seed + 3): when
    ``expressway_targets`` equals its ``n_targets``, the same map (defaults: see the module
    docstring). Scores: :func:`score_images`
    against the held-out split. Writes one PNG grid per coupling (a row of 16 samples per setting).
    ``classifier_cache``: where the scoring classifier (trained for ``classifier_epochs``) is cached
    (default ``out/cache``). ``coupling_params`` overrides the parameters of named couplings
    (default: semi-discrete OT onto 512 training digits, ``tol=0.1``).
    ``command`` is quoted in the report. ``latent``: the run directory of an autoencoder trained on
    these digits (``configs/digits-autoencoder.yaml``); every coupling then trains on their latents,
    the expressway starts from encoded training digits, and samples are decoded before they are
    scored and drawn (:mod:`monge.demo_latent`; checked before any training).
    """
    from .couplings import COUPLINGS
    from .data.digits import load_digits
    from .demo_latent import HOLDOUT, open_demo_latent
    from .evaluate import IMAGE_RANGE, NoveltyReference
    from .imageio import save_image_grid
    from .metrics.classifier import load_or_train_classifier
    from .samplers import sample
    from .samplers.expressway import expressway_sample

    names = list(couplings)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"couplings must list distinct coupling names, got {couplings!r}")
    for name in names:
        COUPLINGS.get(name)
    steps = check_positive_int(steps, "steps", 10**7)
    batch_size = check_positive_int(batch_size, "batch_size", 2**16)
    n = check_positive_int(n, "n", 20_000)
    if batch_size < 2:
        raise ValueError("batch_size must be >= 2")
    nfes = [check_positive_int(k, "nfes", 10_000) for k in nfes]
    expressway_nfes = [check_positive_int(k, "expressway_nfes", 10_000) for k in expressway_nfes]
    if isinstance(expressway_couplings, str):
        raise ValueError(f"expressway_couplings must be a sequence of coupling names, got {expressway_couplings!r}")
    for name in expressway_couplings:
        COUPLINGS.get(name)
    if expressway_targets is not None:
        expressway_targets = check_positive_int(expressway_targets, "expressway_targets", 2**24)
    check_number(expressway, "expressway (the start time t_s)", 0.0, 1.0, high_open=True)
    if model not in DIGITS_MODELS:
        raise ValueError(f"model must be one of {', '.join(DIGITS_MODELS)}, got {model!r}")
    lat = None if latent is None else open_demo_latent(
        latent, image_demo_config(names[0], out, size, steps, batch_size, model, seed, latent=latent), model,
        DIGITS_MODELS[model])
    out = claim_demo_dir(out, list(names))
    digits = load_digits(size)
    train_set, test_set = digits.split(HOLDOUT, seed=seed)
    cache = Path(classifier_cache) if classifier_cache is not None else out / "cache"
    classifier_epochs = check_positive_int(classifier_epochs, "classifier_epochs", 10_000)
    classifier = load_or_train_classifier(train_set, cache, seed=seed, epochs=classifier_epochs)
    reference = test_set.data
    against = NoveltyReference.from_data(train_set.data, test_set.data, f"{len(train_set)} training and "
                                         f"{len(test_set)} held-out digits", classifier=classifier, clip=IMAGE_RANGE)
    g = torch.Generator().manual_seed(seed + 999)
    noise = torch.randn((n, *digits.shape), generator=g)
    baselines = {
        "training split (real digits)": score_images(train_set.data, reference, classifier, tau, "real", 0),
        "Gaussian noise": score_images(noise, reference, classifier, tau, "noise", 0),
    }
    data: DataSource = train_set
    decode: Callable[[Tensor], Tensor] = _identity
    if lat is not None:  # the latents of the same split; the flows start from noise of their shape
        data, decode = lat.encode(out / "cache", classifier, seed), lat.decode
        noise = torch.randn((n, *lat.codec.latent_shape), generator=torch.Generator().manual_seed(seed + 999))
    rows: dict[str, list[ImageRow]] = {}
    grids: dict[str, Path] = {}
    seconds: dict[str, float] = {}
    show = noise[:16]
    shared_map = None
    real_grid = save_image_grid(test_set.data[:16], out / "samples_real.png", nrow=16, scale=max(1, 64 // size))
    report = out / "report.md"
    loop_start = time.perf_counter()
    for k, name in enumerate(names, 1):
        config = image_demo_config(name, out, size, steps, batch_size, model, seed,
                                   (coupling_params or {}).get(name), latent)
        start = time.perf_counter()
        item_status(k, len(names), f"model ({name}, {steps} steps)", time.perf_counter() - loop_start,
                    progress=progress, prefix="demo")
        trainer = _train(config, data, progress)
        seconds[name] = time.perf_counter() - start
        net = trainer.ema.model.eval()
        r: list[ImageRow] = []
        panels: list[Tensor] = []
        with torch.no_grad():
            for k in nfes:
                x = decode(sample(net, noise, sampler="euler", nfe=k).x)
                r.append(score_images(x, reference, classifier, tau, "euler", k, novelty=against))
                panels.append(x[:16])
            ad = sample(net, noise, sampler="dopri5")
            x = decode(ad.x)
            r.append(score_images(x, reference, classifier, tau, "dopri5 (adaptive)", ad.nfe, novelty=against))
            panels.append(x[:16])
            if name in expressway_couplings:
                if name == "semidiscrete_ot":
                    sd_map = trainer.coupling.map_on(noise.device)
                else:
                    if shared_map is None:
                        sd = (coupling_params or {}).get("semidiscrete_ot", _COUPLING_PARAMS["semidiscrete_ot"])
                        shared_map = _expressway_map(trainer, data, dict(sd, n_targets=expressway_targets), seed)
                    sd_map = shared_map
                for k in expressway_nfes:
                    ex = expressway_sample(net, sd_map, noise, t_start=float(expressway), sampler="euler", nfe=k,
                                           path=trainer.path, generator=torch.Generator().manual_seed(seed + 5))
                    x = decode(ex.x)
                    r.append(score_images(x, reference, classifier, tau, f"expressway t_s={expressway:g}", k,
                                          novelty=against))
                    panels.append(x[:16])
        rows[name] = r
        grids[name] = save_image_grid(torch.cat(panels).clamp(-1, 1), out / f"samples_{name}.png", nrow=len(show),
                                      scale=max(1, 64 // size))
        text = _report(rows, baselines, seconds, grids, real_grid, size=size, steps=steps, batch_size=batch_size,
                       model=model, n=n, tau=tau, n_test=len(test_set), n_train=len(train_set),
                       accuracy=classifier.test_accuracy, expressway=expressway, command=command,
                       expressway_targets=expressway_targets, latent=lat)
        if k < len(names):  # partial results as each model finishes: an interrupted demo keeps them
            text = (f"> Partial report: {k} of {len(names)} models done ({', '.join(names[k:])} still to "
                    "train); the demo rewrites it as each model finishes.\n\n" + text)
        report.write_text(text)
    return ImageDemoResult(report, rows, baselines, grids, seconds, lat)


def _identity(x: Tensor) -> Tensor:
    return x


def _expressway_map(trainer, train_set, params: dict, seed: int):
    """The semi-discrete map from the run's source onto training digits (or their latents;
    ``params`` of the ``semidiscrete_ot`` coupling), fitted as in :meth:`monge.train.Trainer.prepare`."""
    from .couplings.maps import fit_or_load_map

    return fit_or_load_map(trainer.source, train_set, None, params, generator=torch.Generator().manual_seed(seed + 3))


def _fmt(v: float, digits: int = 2) -> str:
    return "–" if not math.isfinite(v) else f"{v:.{digits}f}"


def _key(row: ImageRow) -> str:
    return "adaptive" if row.setting.startswith("dopri5") else (
        f"{row.nfe}" if row.setting == "euler" else f"{row.nfe} (expressway)")


def _report(rows: dict[str, list[ImageRow]], baselines: dict[str, ImageRow], seconds: dict[str, float],
            grids: dict[str, Path], real_grid: Path, *, size: int, steps: int, batch_size: int, model: str, n: int,
            tau: float, n_test: int, n_train: int, accuracy: float, expressway: float,
            command: str | None, expressway_targets: int | None = None, latent: DemoLatent | None = None) -> str:
    net = DIGITS_MODELS[model]
    parts = [
        f"# monge demo: couplings on {size}x{size} digits" + ("" if latent is None else
                                                              f" in the latent space of {latent.spec}"),
        "",
        f"Same network ({net}), AdamW lr 1e-3, batch {batch_size}, {steps} steps, seed, linear path, EMA "
        f"weights; trained on {n_train} digits, scored on the {n_test} held-out digits. Only the coupling "
        f"differs. {n} samples from one fixed noise batch per setting, clipped to [-1, 1].",
        "",
        f"Fréchet: classifier Fréchet distance (features of a CNN trained on the training split, held-out "
        f"accuracy {accuracy:.3f}); mixture: share of samples with at least two classes of probability "
        f">= {tau:g} (DPM-OT's mode mixture); coverage: share of classes that are the top class of at least "
        f"10% of their fair share; W2: exact pixel-space Wasserstein-2. Expressway (DPM-OT): the noise's "
        f"semi-discrete OT cell's digit noised to t_s = {expressway:g}, then Euler on [t_s, 1]; the "
        f"semidiscrete_ot model uses its training map, the others a map onto "
        f"{'all' if expressway_targets is None else expressway_targets} training digits "
        f"(independent + expressway is DPM-OT proper). Near-copies: share of samples closer to a training "
        f"digit, in the classifier's features, than the 1st percentile of held-out digits are, beside that "
        f"share of the held-out digits; Fréchet to train: the samples' classifier Fréchet distance to "
        f"training digits (subsets of the held-out split's size), below the held-out one when they copy.",
        "",
        *([] if latent is None else latent.report_lines()),
    ]
    if command:
        parts += ["Command:", "", "```", command, "```", ""]
    parts += ["Training time (2-core CPU): " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()), ""]
    parts += ["**References**", "", "| data | Fréchet | mixture | coverage | W2 |", "|---|---|---|---|---|"]
    for label, b in baselines.items():
        parts.append(f"| {label} | {_fmt(b.frechet)} | {_fmt(b.mixture, 3)} | {_fmt(b.coverage)} | {_fmt(b.w2)} |")
    parts.append("")
    for label, metric, d in (("Fréchet distance", "frechet", 2), ("Mode mixture", "mixture", 3),
                             ("Pixel W2", "w2", 2)):
        keys: list[str] = []
        for r in rows.values():
            for row in r:
                if _key(row) not in keys:
                    keys.append(_key(row))
        parts += [f"**{label} by NFE** (lower is better)", "",
                  "| coupling | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        for name, r in rows.items():
            cells = {_key(row): _fmt(getattr(row, metric), d) for row in r}
            parts.append(f"| {name} | " + " | ".join(cells.get(k, "") for k in keys) + " |")
        parts.append("")
    parts += ["**All settings**", "", "| coupling | sampler | NFE | Fréchet | mixture | coverage | W2 | near-copies: "
              "samples / held-out | Fréchet to train |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        for row in r:
            fd = None if row.novelty is None else row.novelty.frechet
            parts.append(f"| {name} | {row.setting} | {row.nfe} | {_fmt(row.frechet)} | {_fmt(row.mixture, 3)} | "
                         f"{_fmt(row.coverage)} | {_fmt(row.w2)} | {_share_pair(row)} | "
                         f"{'–' if fd is None else _fmt(fd.train)} |")
    parts.append("")
    sentence = _novelty_sentence(rows)
    if sentence:
        parts += [sentence, ""]
    goal = _goal(rows)
    if goal:
        parts += goal
    plain = [_key(row) for row in next(iter(rows.values())) if not row.setting.startswith("expressway")]
    parts += ["**Samples**: one grid per coupling; each row is one sampling setting, top to bottom "
              + ", ".join(f"NFE {p}" if p[0].isdigit() else p for p in plain)
              + "; each column is one of the same 16 noises in every row and grid.", ""]
    for name, path in grids.items():
        extra = " (last rows: expressway)" if any(r.setting.startswith("expressway") for r in rows[name]) else ""
        parts += [f"{name}{extra}:", "", f"![{name}]({path.name})", ""]
    parts += ["held-out real digits:", "", f"![real]({real_grid.name})", ""]
    return "\n".join(parts)


def _share_pair(row: ImageRow) -> str:
    if not math.isfinite(row.near_copies):
        return "–"
    return f"{100 * row.near_copies:.1f}% / {100 * row.heldout_near_copies:.1f}%"


def _novelty_sentence(rows: dict[str, list[ImageRow]]) -> str:
    """:func:`monge.evaluate.novelty_sentence` over every measured row (feature space)."""
    from .evaluate import novelty_sentence

    shares = {f"{name} {row.setting} at {row.nfe} NFE": (row.near_copies, row.heldout_near_copies)
              for name, r in rows.items() for row in r if math.isfinite(row.near_copies)}
    return novelty_sentence(shares, "training digits") if shares else ""


def _find(rows: list[ImageRow], key: str) -> ImageRow | None:
    return next((row for row in rows if _key(row) == key), None)


def _goal(rows: dict[str, list[ImageRow]]) -> list[str]:
    """The issue's performance goal (the expressway at 10 NFE against the independent model at 10 NFE
    and adaptively), for each model sampled by the expressway, when the independent run is present."""
    if "independent" not in rows:
        return []
    ind = rows["independent"]
    ind10, ind_ad = _find(ind, "10"), _find(ind, "adaptive")
    if ind10 is None or ind_ad is None:
        return []
    lines: list[str] = []
    for name, r in rows.items():
        ex10 = _find(r, "10 (expressway)")
        if ex10 is None:
            continue
        label = f"{name} + expressway" + (" (DPM-OT)" if name == "independent" else "")
        mix_ok = ex10.mixture < ind10.mixture
        fd_ok = ex10.frechet <= ind_ad.frechet
        lines += [
            f"- {label}: mode mixture {ex10.mixture:.3f} vs independent at 10 NFE {ind10.mixture:.3f}: "
            f"{'met' if mix_ok else 'not met'}; Fréchet {ex10.frechet:.2f} vs independent adaptive "
            f"({ind_ad.nfe} NFE) {ind_ad.frechet:.2f}: {'met' if fd_ok else 'not met'}",
        ]
    if not lines:
        return []
    return ["**Goal** (expressway at 10 NFE vs independent, equal training steps):", "", *lines, ""]

