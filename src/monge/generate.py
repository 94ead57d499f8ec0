r"""Sampling a trained run: ODE samplers, few-step samplers on a step grid (fixed or
optimized for the model and cached next to the checkpoint), and DPM-OT's expressway.

:func:`run_sampler` is the one road from a run to :func:`monge.samplers.sample`: it checks that
the sampler suits the run (a flow map jumps with its own sampler), adds the options the objective
fixes, and reads the run's schedule :math:`x_t = \sigma_t x_0 + \alpha_t x_1` and prediction type.
:func:`sample_run` turns (run, sampler, nfe, step grid, options, prediction) into the call; ``monge
sample`` (:func:`sample_checkpoint`) and ``monge eval`` (:func:`evaluate_checkpoints`) both go
through :func:`run_sampler`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor, nn

from .config import Config, build_path
from .paths import Schedule
from .run.checkpoint import run_dir_of
from .run.signals import NOTHING_WRITTEN, interrupt_note
from .samplers import SAMPLERS, SampleOutput, sample

if TYPE_CHECKING:  # pragma: no cover
    from .data.tabular import Standardizer
    from .evaluate import EvalRow, NLLResult, Reconstruction
    from .latent import LatentCodec
    from .ot.semidiscrete import SemiDiscreteMap
    from .samplers.expressway import Expressway

__all__ = ["TIMESTEPS_FILE", "run_dir_of", "path_schedule", "RunSampler", "run_sampler", "sample_run",
           "optimized_timesteps", "optimized_eval_times", "expressway_of", "run_expressway",
           "generate", "generate_model_space", "read_conditions", "sample_checkpoint", "SamplesWritten",
           "check_finite_output", "evaluate_checkpoints", "RunsEvaluation", "run_codec"]

#: Optimized step grids of a run, one per ``"<sampler>/nfe<N>"`` (and the decoupled grids with their
#: evaluation times, under ``"<sampler>/nfe<N>/decoupled/..."``), next to its checkpoint.
TIMESTEPS_FILE = "timesteps.safetensors"


def path_schedule(config: Config) -> Schedule:
    """The :class:`~monge.paths.Schedule` of the run's path (affine paths only)."""
    schedule = getattr(build_path(config), "schedule", None)
    if schedule is None:
        raise ValueError(
            f"path {config.path.name!r} has no alpha/sigma schedule; step grids and diffusion samplers "
            "need an affine path (linear, vp, ...): use an ODE sampler without --timesteps"
        )
    return schedule


@dataclass(frozen=True)
class RunSampler:
    """How a run is sampled (made by :func:`run_sampler`): ``sampler`` on the run's alpha/sigma
    ``schedule`` (``None``: a path without one) with its ``prediction`` type and ``options``
    (those its objective fixes included); ``flow_map``: the run is a flow map u(x, t, r)."""

    sampler: str
    schedule: Schedule | None
    prediction: str = "velocity"
    options: dict[str, Any] = field(default_factory=dict)
    flow_map: bool = False

    @property
    def adaptive(self) -> bool:
        return SAMPLERS.info(self.sampler).adaptive

    def __call__(self, model: Callable, x: Tensor, *, nfe: int | None = None, timesteps: Tensor | None = None,
                 generator: torch.Generator | None = None, return_trajectory: bool = False) -> SampleOutput:
        """:func:`monge.samplers.sample` with these settings; an adaptive sampler ignores ``nfe``."""
        return sample(model, x, sampler=self.sampler, nfe=None if self.adaptive else nfe, timesteps=timesteps,
                      schedule=self.schedule, prediction=self.prediction, generator=generator,
                      return_trajectory=return_trajectory, **self.options)


def _sampled_prediction(config: Config, prediction: str | None, model: Any = None) -> str:
    """What the sampler is told the network outputs: ``prediction`` when given, else the model's stored
    one (:func:`monge.objectives.prediction_of`); a flow map's average velocity is sampled as such by
    its own sampler, which takes no conversion."""
    from .objectives import prediction_of

    found = prediction if prediction is not None else prediction_of(model, config.objective.name)
    return "velocity" if found == "average_velocity" else found


def run_sampler(config: Config, sampler: str = "euler", *, prediction: str | None = None,
                options: dict[str, Any] | None = None) -> RunSampler:
    """The :class:`RunSampler` of ``sampler`` for the run of ``config``: refuses a sampler of the wrong
    kind (a velocity sampler on a flow map, a flow-map sampler on a velocity), adds the options the
    objective fixes (the shortcut's ``max_steps``) to ``options``, and takes the path's schedule and
    the run's ``prediction`` (default: the run's)."""
    from .objectives import check_sampler, is_flow_map, sampler_options

    SAMPLERS.info(sampler)  # an unknown name: ValueError naming the choices
    check_sampler(config.objective.name, sampler)
    fixed = sampler_options(config.objective.name, config.objective.params)
    given = options or {}
    clash = [k for k in fixed if k in given and given[k] != fixed[k]]
    if clash:
        raise ValueError(f"sampler option {clash[0]}={given[clash[0]]!r} differs from the run's "
                         f"{clash[0]}={fixed[clash[0]]!r}, which its objective fixes; drop it")
    return RunSampler(sampler, getattr(build_path(config), "schedule", None),
                      _sampled_prediction(config, prediction), {**(options or {}), **fixed},
                      is_flow_map(config.objective.name))


def sample_run(
    model: nn.Module,
    config: Config,
    x: Tensor,
    *,
    sampler: str = "euler",
    nfe: int = 8,
    timesteps: str | None = None,
    options: dict[str, Any] | None = None,
    prediction: str | None = None,
    run_dir: str | Path | None = None,
    generator: torch.Generator | None = None,
) -> SampleOutput:
    """Samples of the run from the noise ``x``: :func:`run_sampler`, then ``nfe`` evaluations on the
    step grid named ``timesteps`` (see :func:`generate_model_space`; ``None``: uniform steps)."""
    from .samplers import GRIDS, EvalTimeWarp, make_timesteps, steps_for_nfe

    rs = run_sampler(config, sampler, prediction=_sampled_prediction(config, prediction, model), options=options)
    if rs.flow_map and timesteps is not None:
        raise ValueError(f"a {config.objective.name} run jumps on nfe uniform steps; drop --timesteps and --expressway")
    if timesteps is None and not SAMPLERS.info(sampler).needs_schedule:
        return rs(model, x, nfe=nfe, generator=generator)
    if rs.adaptive:
        raise ValueError(f"{sampler!r} is adaptive: it takes no step grid; drop --timesteps")
    sched = path_schedule(config)
    timesteps = timesteps or "uniform"
    net: Callable[..., Tensor] = model
    if timesteps in ("optimized", "optimized_decoupled"):
        if run_dir is None:
            raise ValueError(f"step grid {timesteps!r} needs the run directory to cache the fitted grid")
        if timesteps == "optimized":
            ts = optimized_timesteps(model, config, run_dir, sampler, nfe)
        else:
            ts, ev = optimized_eval_times(model, config, run_dir, sampler, nfe)
            net = EvalTimeWarp(model, ts, ev)
    elif timesteps in GRIDS:
        ts = make_timesteps(timesteps, steps_for_nfe(sampler, nfe), sched)
    else:
        valid = sorted(GRIDS.names()) + ["optimized", "optimized_decoupled"]
        raise ValueError(f"unknown step grid (timesteps) {timesteps!r}; valid choices: {', '.join(valid)}")
    return rs(net, x, timesteps=ts.to(x.device), generator=generator)


def _read_grids(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The grids of a step-grid file and the fingerprint of each (``{}`` for a file without them)."""
    if not path.is_file():
        return {}, {}
    try:
        raw = path.read_bytes()
        grids = dict(st_load(raw))
        meta = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")]).get("__metadata__") or {}
        prints = json.loads(meta.get("fingerprints", "{}"))
    except (SafetensorError, ValueError) as err:
        raise ValueError(f"{path} is not a readable step-grid file ({err}); delete it to refit") from None
    return grids, prints if isinstance(prints, dict) else {}


def _grid_fingerprint(model: nn.Module, config: Config, sampler: str, nfe: int) -> str:
    """SHA-256 (hex) of what a fitted grid is for: the model's weights, the sampler and its budget,
    the path, the source and the prediction (the fit's own noises only refine it)."""
    from .rundata import tensor_digest

    raw = config.to_dict()
    h = hashlib.sha256(json.dumps([sampler, int(nfe), raw.get("path"), raw["data"]["source"],
                                   _sampled_prediction(config, None, model)], sort_keys=True, default=repr).encode())
    for name, value in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor_digest(value).encode())
    return h.hexdigest()


def optimized_timesteps(
    model: nn.Module,
    config: Config,
    run_dir: str | Path,
    sampler: str,
    nfe: int,
    *,
    n_noise: int = 256,
    seed: int = 0,
    refit: bool = False,
) -> Tensor:
    r"""The step grid for ``sampler`` at ``nfe`` fitted to this model (:func:`monge.samplers.optimized`:
    a BOSS-style search minimising the gap to a fine reference trajectory on ``n_noise`` noises).

    Fitted once and cached in ``run_dir / timesteps.safetensors`` under ``"<sampler>/nfe<N>"``
    (written atomically); later calls read it. ``refit`` fits again and replaces the entry.
    """
    from .samplers import optimized

    key = f"{sampler}/nfe{int(nfe)}"
    return _fitted_grids(model, config, run_dir, (key,), sampler, nfe, optimized, n_noise, seed, refit)[0]


def optimized_eval_times(
    model: nn.Module,
    config: Config,
    run_dir: str | Path,
    sampler: str,
    nfe: int,
    *,
    n_noise: int = 256,
    seed: int = 0,
    refit: bool = False,
) -> tuple[Tensor, Tensor]:
    r"""``(timesteps, eval_times)`` fitted together to this model
    (:func:`monge.samplers.optimized_decoupled`, same noises as :func:`optimized_timesteps`); sample
    with :class:`monge.samplers.EvalTimeWarp`. Cached like the grid, under
    ``"<sampler>/nfe<N>/decoupled/timesteps"`` and ``".../eval_times"``; ``refit`` refits."""
    from .samplers import optimized_decoupled

    key = f"{sampler}/nfe{int(nfe)}/decoupled"
    keys = (f"{key}/timesteps", f"{key}/eval_times")
    ts, ev = _fitted_grids(model, config, run_dir, keys, sampler, nfe, optimized_decoupled, n_noise, seed, refit)
    return ts, ev


def _fitted_grids(model: nn.Module, config: Config, run_dir: str | Path, keys: tuple[str, ...], sampler: str,
                  nfe: int, fit: Callable[..., Any], n_noise: int, seed: int, refit: bool) -> tuple[Tensor, ...]:
    """The cached entries ``keys`` of the run's grid file (:func:`_cached_fit`), or ``fit`` (a grid search
    of :mod:`monge.samplers`) run now on ``n_noise`` of the run's noises and cached."""
    from .samplers import steps_for_nfe

    def run() -> tuple[Tensor, ...]:
        noise = _fit_noise(config, n_noise, seed, getattr(model, "shape", None))
        prediction = _sampled_prediction(config, None, model)
        out = fit(model, path_schedule(config), nfe, sampler, noise, prediction=prediction)
        return out if isinstance(out, tuple) else (out,)

    return _cached_fit(run_dir, keys, refit, _grid_fingerprint(model, config, sampler, nfe),
                       steps_for_nfe(sampler, nfe) + 1, run)


def _fit_noise(config: Config, n: int, seed: int, shape: tuple[int, ...] | None = None) -> Tensor:
    from .rundata import sampling_source

    return sampling_source(config.data, shape).sample(n, generator=torch.Generator().manual_seed(seed + 7))


def _cached_fit(run_dir: str | Path, keys: tuple[str, ...], refit: bool, fingerprint: str, length: int,
                fit: Callable[[], tuple[Tensor, ...]]) -> tuple[Tensor, ...]:
    """The tensors of ``fit()``, cached under ``keys`` in ``run_dir / timesteps.safetensors`` with
    ``fingerprint`` (:func:`_grid_fingerprint`): read when every key is there with that fingerprint
    and ``length`` finite values (and not ``refit``); else fitted, saying why a cached one was not
    used, and written together, atomically."""
    from .outputs import atomic_write_bytes

    file = Path(run_dir) / TIMESTEPS_FILE
    grids, prints = _read_grids(file)
    usable = [k in grids and prints.get(k) == fingerprint and grids[k].shape == (length,)
              and bool(torch.isfinite(grids[k]).all()) for k in keys]
    if not refit and all(usable):
        return tuple(grids[k].to(torch.float64) for k in keys)
    stale = [k for k, ok in zip(keys, usable, strict=True) if k in grids and not ok]
    if stale and not refit:
        print(f"the cached step grid {stale[0]} in {file} was fitted to other weights or settings (or has not "
              f"{length} finite times); fitting it again", file=sys.stderr, flush=True)
    for k, value in zip(keys, fit(), strict=True):
        grids[k] = value.detach().to(torch.float64).cpu().contiguous()
        prints[k] = fingerprint
    prints = {k: v for k, v in prints.items() if k in grids}
    atomic_write_bytes(file, st_save(grids, metadata={"format": "monge.timesteps", "version": "2",
                                                      "fingerprints": json.dumps(prints, sort_keys=True)}))
    return tuple(grids[k] for k in keys)


def expressway_of(config: Config, sd_map: SemiDiscreteMap, t_start: float | None = None) -> Expressway:
    """The run's :class:`~monge.samplers.expressway.Expressway`: ``sd_map`` with the run's path."""
    from .samplers.expressway import DEFAULT_T_START, Expressway

    return Expressway(sd_map, DEFAULT_T_START if t_start is None else t_start, build_path(config))


def run_expressway(config: Config, run_dir: str | Path) -> Expressway | None:
    """The expressway of the run in ``run_dir`` when it holds a semi-discrete map (a
    ``semidiscrete_ot`` run, or any run sampled once with an expressway), else ``None``."""
    from .couplings.maps import load_run_map

    sd_map = load_run_map(Path(run_dir))
    return None if sd_map is None else expressway_of(config, sd_map)


def _conditioned(model: nn.Module, label: int | str, guidance: float, n: int) -> nn.Module:
    from .models import ClassConditional

    k = getattr(model, "num_classes", None)
    if k is None:
        raise ValueError("this run's model is not class-conditional (no num_classes); drop the label")
    if isinstance(label, str) and label == "all":
        return ClassConditional(model, torch.arange(n) % k, guidance)
    schema = getattr(model, "schema", None)
    if isinstance(label, str) and schema is not None and schema.label is not None:
        label = schema.class_index(label)  # a table's class, by its name in the label column
    if isinstance(label, str):
        if not label.lstrip("-").isdigit():
            raise ValueError(f"label must be a class index in [0, {k}) or 'all', got {label!r}")
        label = int(label)
    return ClassConditional(model, label, guidance)


def generate(
    model: nn.Module,
    config: Config,
    n: int,
    *,
    standardizer: Standardizer | None = None,
    data_units: bool = True,
    codec: LatentCodec | None = None,
    **options,
) -> SampleOutput:
    r"""``n`` samples of a trained run, in data units (see :func:`generate_model_space` for the
    options: sampler, nfe, timesteps, expressway, run_dir, seed, device, label, guidance).

    A latent flow (``data.latent``) samples latents :math:`z_1` and returns the images
    :math:`D(z_1)`, decoded by ``codec`` (default: :func:`run_codec`, the run's autoencoder, checked
    against the one it was trained with).

    A run trained on a table with ``standardize: true`` samples in standardised units
    :math:`z`; the samples are mapped back by :math:`x = \sigma z + \mu` with ``standardizer``
    (default: ``model.standardizer``, which :func:`monge.run.load.load_model` attaches).
    ``data_units=False`` returns the model-space samples.
    """
    from .rundata import is_standardized

    scaler = standardizer if standardizer is not None else getattr(model, "standardizer", None)
    if data_units and scaler is None and is_standardized(config):
        raise ValueError("this run was trained on standardised data: pass standardizer= (monge.run.load.load_model "
                         "attaches it as model.standardizer) or data_units=False")
    if data_units and config.data.latent is not None and codec is None:
        codec = run_codec(model, config)  # checked before sampling
    out = generate_model_space(model, config, n, **options)
    if data_units and scaler is not None:
        out = dataclasses.replace(out, x=scaler.inverse(out.x))
    if data_units and codec is not None:
        from .latent import decode_latents

        out = dataclasses.replace(out, x=decode_latents(codec, out.x))
    return out


def run_codec(model: nn.Module, config: Config, device: torch.device | str = "cpu") -> LatentCodec:
    """The autoencoder that decodes a latent flow's samples (``config.data.latent``), refused when it is
    not the one the run was trained with (``model.latent``, which :func:`monge.run.load.load_model`
    attaches: the autoencoder's fingerprint)."""
    from .run.latent import run_codec as open_run_codec

    stored = getattr(model, "latent", None)
    if config.data.latent is None:
        raise ValueError(f"run {config.name} is not a latent flow (no data.latent); its samples are data already")
    if not isinstance(stored, dict):
        raise ValueError(f"run {config.name} is a latent flow: pass codec= (a Trainer's .codec), or load its model "
                         "with monge.run.load.load_model, which attaches the record of its autoencoder (model.latent)")
    return open_run_codec(config, stored, f"run {config.name}", device)


def generate_model_space(
    model: nn.Module,
    config: Config,
    n: int,
    *,
    sampler: str = "euler",
    nfe: int = 8,
    timesteps: str | None = None,
    expressway: float | None = None,
    run_dir: str | Path | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    label: int | str | None = None,
    guidance: float = 1.0,
    conditions: Tensor | None = None,
    options: dict[str, Any] | None = None,
) -> SampleOutput:
    r"""``n`` samples of a trained run.

    - ``label`` (class-conditional models): the class of every sample, or ``"all"`` for the
      classes in turn (sample ``i`` gets ``i mod K``); ``guidance`` is the classifier-free
      guidance weight ``w`` of :class:`monge.models.ClassConditional`. Without ``label`` such a
      model samples its unconditional (null-label) field.
    - ``conditions`` (models with a continuous condition, ``model.cond_dim``): ``(n, cond_dim)``
      conditions, one per sample, or ``(cond_dim,)`` for all (:func:`read_conditions` reads them
      from a file, values, or the held-out data); such a model needs them.

    - ``timesteps=None``, ODE sampler (``euler``, ``heun``, ``midpoint``, ``rk4``, ``dopri5``):
      uniform steps in :math:`t` (:func:`monge.samplers.sample`); a sampler that needs the path's
      schedule (``ddim``, ``dpm_solver_pp``, ``unipc``, ...): the ``uniform`` grid.
    - ``timesteps`` (the step grid) in ``uniform``, ``uniform_log_snr``, ``karras``: that grid;
      ``"optimized"``: :func:`optimized_timesteps` (needs ``run_dir``); ``"optimized_decoupled"``: a
      grid and network evaluation times fitted together (:func:`optimized_eval_times`); any
      fixed-step sampler of :data:`monge.samplers.SAMPLERS`.
    - a flow-map run (``objective: mean_flow`` or ``shortcut``): ``nfe`` uniform jumps of its sampler
      (``mean_flow`` / ``shortcut``, :mod:`monge.samplers.flow_map`); any other sampler, a step grid
      or the expressway is refused, as is a flow-map sampler on a velocity run.
    - ``expressway=t_s``: DPM-OT's expressway. Map the noise to its OT cell (the run's
      :func:`monge.couplings.maps.run_map`, fitted on first use when the run has none), start from the cell's
      target noised to :math:`t_s` and integrate :math:`[t_s, 1]` with ``sampler``/``nfe``
      (:func:`monge.samplers.expressway.expressway_sample`). In DPM-OT the model is trained with
      independent pairs, so that the noised target is a typical point of the path at :math:`t_s`.
    - ``options`` go to the sampler (:func:`run_sampler`), with those the run's objective fixes.
    """
    from .rundata import sampling_source

    if run_sampler(config, sampler).flow_map and expressway is not None:
        raise ValueError(f"a {config.objective.name} run jumps on nfe uniform steps; drop --timesteps and --expressway")
    generator = torch.Generator().manual_seed(seed)
    x0 = sampling_source(config.data, getattr(model, "shape", None)).sample(n, generator=generator).to(device)
    model = model.to(device)
    if getattr(model, "cond_dim", None) is not None or conditions is not None:
        from .models import ContinuousConditional

        if label is not None or guidance != 1.0:
            raise ValueError("a model with continuous conditions takes conditions, not a class label or guidance")
        if conditions is None:
            raise ValueError(f"this run's model takes a continuous condition (cond_dim={model.cond_dim}): give "
                             "conditions (monge sample --condition VALUES|FILE|held-out)")
        model = ContinuousConditional(model, conditions)
    elif label is not None:
        model = _conditioned(model, label, guidance, n)
    elif guidance != 1.0:
        raise ValueError("guidance needs a class label (label=K or 'all')")
    if expressway is not None:
        if timesteps is not None:
            raise ValueError("--expressway integrates uniform steps on [t_s, 1]; drop --timesteps")
        if run_dir is None:
            raise ValueError("the expressway needs the run directory, where the semi-discrete map is cached")
        from .couplings.maps import run_map

        sd_map = run_map(config, run_dir, device=device)
        adaptive = SAMPLERS.info(sampler).adaptive
        return expressway_of(config, sd_map, expressway).sample(model, x0, sampler=sampler,
                                                                nfe=None if adaptive else nfe, generator=generator)
    return sample_run(model, config, x0, sampler=sampler, nfe=nfe, timesteps=timesteps, options=options,
                      run_dir=run_dir, generator=generator)


def read_conditions(spec: str, config: Config, cond_dim: int, n: int, seed: int = 0) -> Tensor:
    """Conditions for :func:`generate` from the command line's ``--condition``:

    - ``held-out``: the conditions of ``n`` fresh points of the run's target (its
      ``sample_with_conditions``, seeded by ``seed + 1``), one per sample;
    - a ``.npy`` file, or a ``.csv`` / ``.txt`` file of comma- or space-separated numbers:
      ``(m, cond_dim)`` rows (or ``m`` values when ``cond_dim = 1``), one sample per row;
    - comma-separated values (``"0.5"``, ``"1,-2"``): one condition of ``cond_dim`` values for every
      sample.
    Raises ``ValueError`` on a wrong size or NaN/Inf values.
    """
    import numpy as np

    from .data.sources import build_data

    if spec == "held-out":
        target = build_data(config.data)[1]
        if not hasattr(target, "sample_with_conditions"):
            raise ValueError(f"data.target {config.data.target} has no continuous conditions to hold out")
        return target.sample_with_conditions(n, generator=torch.Generator().manual_seed(seed + 1))[1]
    path = Path(spec)
    if path.suffix.lower() in (".npy", ".csv", ".txt"):
        if not path.is_file():
            raise ValueError(f"--condition file not found: {path}")
        if path.suffix.lower() == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            text = path.read_text()
            arr = np.loadtxt(path, delimiter="," if "," in text else None, ndmin=2)
        c = torch.as_tensor(np.asarray(arr, dtype=np.float64))
        if c.dim() == 1 and cond_dim == 1:
            c = c[:, None]
        if c.dim() == 2 and c.shape[1] != cond_dim and c.shape[0] == 1 and cond_dim == 1:
            c = c.T  # one line of values of a 1-D condition
        if c.dim() != 2 or c.shape[1] != cond_dim or c.shape[0] < 1:
            raise ValueError(f"--condition {path}: need rows of {cond_dim} value(s), got shape {tuple(c.shape)}")
    else:
        try:
            values = [float(v) for v in spec.split(",")]
        except ValueError:
            raise ValueError(f"--condition takes {cond_dim} comma-separated number(s), a .npy/.csv/.txt file or "
                             f"'held-out', got {spec!r}") from None
        if len(values) != cond_dim:
            raise ValueError(f"--condition {spec!r}: the model's condition has {cond_dim} value(s), got {len(values)}")
        c = torch.tensor(values, dtype=torch.float64)
    if not bool(torch.isfinite(c).all()):
        raise ValueError(f"--condition {spec}: the conditions hold NaN or Inf")
    return c.float()


# ---------------------------------------------------------------------------- monge sample and monge eval
@dataclass(frozen=True)
class SamplesWritten:
    """What :func:`sample_checkpoint` wrote: ``n`` samples of ``nfe`` evaluations (made as ``sampling``
    says: sampler, step grid, expressway) to ``output``, their conditions to ``conditions`` and a PNG
    grid of ``n_grid`` images to ``grid`` (``None``: not written)."""

    n: int
    nfe: int
    output: Path
    sampling: str
    conditions: Path | None = None
    grid: Path | None = None
    n_grid: int = 0


@interrupt_note(NOTHING_WRITTEN)
def sample_checkpoint(
    checkpoint: str | Path,
    *,
    n: int = 1000,
    output: str | Path | None = None,
    grid: str | Path | None = None,
    ema: bool = True,
    condition: str | None = None,
    seed: int = 0,
    **options: Any,
) -> SamplesWritten:
    """``monge sample``: ``n`` samples of the run at ``checkpoint`` (a file or run directory) written
    to ``output`` (default ``RUN/samples.npy``; ``.npy``, or ``.csv`` for tables), and an 8-wide PNG
    ``grid`` of image samples. ``condition`` is read by :func:`read_conditions`; ``options``
    (sampler, nfe, timesteps, expressway, label, guidance) go to :func:`generate`. A latent flow's
    samples are decoded to images (:func:`run_codec`). Every check runs before any sampling; an
    autoencoder run is refused (nothing to sample)."""
    from ._validation import MAX_SAMPLES_PER_CALL
    from .limits import check_guidance, check_nfe
    from .outputs import check_output_file, write_array
    from .run.load import load_model

    if n < 1 or n > MAX_SAMPLES_PER_CALL:
        raise ValueError(f"-n must be in [1, {MAX_SAMPLES_PER_CALL:,}], got {n}")
    check_nfe(options.get("nfe", 8))
    if "guidance" in options:
        options["guidance"] = check_guidance(options["guidance"])
    grid = None if grid is None else Path(grid)
    if grid is not None and grid.suffix.lower() != ".png":
        raise ValueError(f"--grid needs a .png path, got {grid}")
    run_dir = run_dir_of(checkpoint)
    default_output = output is None
    output = Path(output) if output is not None else run_dir / "samples.npy"
    check_output_file(output, instead=run_dir / "samples.npy")
    if grid is not None:
        check_output_file(grid, "--grid", instead=run_dir / "samples.png")
    if condition is not None:
        check_output_file(output.with_suffix(".conditions.npy"), "-o (its conditions)",
                          instead=run_dir / "samples.conditions.npy")
    model, cfg = load_model(checkpoint, ema=ema)
    if model.sampler_kind is None:
        from .objectives import NOTHING_TO_SAMPLE

        raise ValueError(NOTHING_TO_SAMPLE)
    codec = None if cfg.data.latent is None else run_codec(model, cfg)
    from .data.tabular import table_sampling

    table = table_sampling(model, output, default_output, options, n, seed)
    output = output if table is None else table.output
    conds = None
    if condition is not None:
        cond_dim = getattr(model, "cond_dim", None)
        if cond_dim is None:
            raise ValueError("--condition: this run's model takes no continuous condition (no model.cond_dim)")
        conds = read_conditions(condition, cfg, cond_dim, n, seed)
        n = conds.shape[0] if conds.dim() == 2 else n  # a file or held-out: one sample per condition
    _check_sampling_memory(model, cfg, n)
    out = generate(model, cfg, n, run_dir=run_dir_of(checkpoint), seed=seed, conditions=conds, codec=codec, **options)
    if grid is not None and out.x.dim() != 4:
        raise ValueError(f"--grid needs image data (N, C, H, W); samples have shape {tuple(out.x.shape[1:])}")
    check_finite_output(out.x, "the samples", "nothing was written; lower --guidance, or use more steps (--nfe)")
    if table is not None:
        table.write(out.x.cpu().numpy())
    else:
        write_array(output, out.x.cpu().numpy())
    sampling = options.get("sampler", "euler")
    if options.get("timesteps") is not None:
        sampling += f", {options['timesteps']} steps"
    if options.get("expressway") is not None:
        sampling += f", expressway from t={options['expressway']}"
    written = SamplesWritten(n, out.nfe, output, sampling)
    if conds is not None and conds.dim() == 2:
        written = dataclasses.replace(written, conditions=write_array(output.with_suffix(".conditions.npy"),
                                                                      conds.numpy()))
    if grid is not None:
        from .imageio import save_image_grid

        save_image_grid(out.x[:64].clamp(-1, 1).cpu(), grid, nrow=8, scale=max(1, 64 // out.x.shape[-1]))
        written = dataclasses.replace(written, grid=grid, n_grid=min(n, 64))
    return written


def check_finite_output(x: Tensor, what: str, fix: str) -> None:
    """Raise ``ValueError`` when ``x`` holds NaN or Inf: a result that is not finite is never written."""
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise ValueError(f"{what} hold {bad:,} NaN/Inf values of {x.numel():,}; {fix}")


def _check_sampling_memory(model: nn.Module, config: Config, n: int) -> None:
    """Refuse a sampling batch larger than the memory available, before sampling."""
    from .limits import check_sampling_memory
    from .models import build_model

    shape = getattr(model, "shape", None)
    if shape is None:
        return
    with torch.device("meta"):
        meta = build_model(config.model.name, config.model.params, tuple(shape))
    check_sampling_memory(meta, n, tuple(shape), "sampling")


@dataclass(frozen=True)
class RunsEvaluation:
    """What :func:`evaluate_checkpoints` measured: quality rows per run label (with their
    :class:`~monge.evaluate.RowNovelty` where measured), NLL results and coupling diagnostics per
    label, why novelty was not measured per label (``novelty_skipped``), the autoencoder runs'
    :class:`~monge.evaluate.Reconstruction` and the latent flows' floors (their autoencoder's
    reconstruction) per label, the tabular reports of CSV table runs per label and setting
    (:func:`monge.table_eval.evaluate_table_run`), and the Markdown ``report``."""

    rows: dict[str, list[EvalRow]]
    nlls: dict[str, NLLResult]
    diagnostics: dict[str, dict[str, float]]
    report: str
    novelty_skipped: dict[str, str] = field(default_factory=dict)
    reconstructions: dict[str, Reconstruction] = field(default_factory=dict)
    floors: dict[str, Reconstruction] = field(default_factory=dict)
    tables: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    def csv_text(self) -> str:
        """One CSV line per run and row: ``run`` then :meth:`EvalRow.as_dict` (novelty columns included
        when any row has them; empty where a run has none)."""
        import csv
        import io

        lines = [{"run": label, **row.as_dict()} for label, rows in self.rows.items() for row in rows]
        header: list[str] = []
        for line in lines:
            header += [k for k in line if k not in header]
        out = io.StringIO()
        writer = csv.DictWriter(out, header, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in line.items()} for line in lines)
        return out.getvalue()

    def save(self, tables: str | Path | None = None, plot: str | Path | None = None,
             csv: str | Path | None = None) -> Iterator[tuple[str, Path]]:
        """Write the report to ``tables``, :meth:`csv_text` to ``csv`` and a W2-vs-NFE PNG (one curve per
        run) to ``plot``, yielding ``(what, path)`` after each file is written."""
        from .outputs import write_text

        if tables is not None:
            write_text(Path(tables), self.report + "\n")
            yield "the tables", Path(tables)
        if csv is not None:
            write_text(Path(csv), self.csv_text())
            yield "the rows as CSV", Path(csv)
        if plot is not None:
            from .plots import plot_metric_vs_nfe

            Path(plot).parent.mkdir(parents=True, exist_ok=True)
            plot_metric_vs_nfe(self.rows, Path(plot), "w2")
            yield "the W2-vs-NFE plot", Path(plot)


def _check_finite_rows(rows: Sequence[EvalRow], label: str) -> None:
    """Refuse evaluation rows whose figures are not finite (samples that hold NaN/Inf)."""
    import math

    for row in rows:
        for name, value in (("W2", row.w2), ("MMD²", row.mmd), ("straightness", row.straightness)):
            if not math.isfinite(value):
                raise ValueError(f"{label}: {name} of {row.sampler} at {row.nfe} NFE is {value} (the samples hold "
                                 "NaN/Inf); nothing was written. Check the run (monge sample) or use more steps")


@interrupt_note(NOTHING_WRITTEN)
def evaluate_checkpoints(
    checkpoints: Sequence[str | Path],
    *,
    nfes: Sequence[int] = (1, 2, 4, 8),
    sampler: str = "euler",
    adaptive: bool = True,
    n: int = 1000,
    seed: int = 0,
    nll: bool = False,
    nll_n: int = 500,
    data_path: str | Path | None = None,
    novelty: bool = True,
) -> RunsEvaluation:
    """``monge eval``: every run of ``checkpoints`` (one task) sampled on the same noise by
    :func:`run_sampler` at each NFE of ``nfes`` (:func:`monge.evaluate.evaluate_field`, plus dopri5
    with ``adaptive`` on velocity runs and expressway rows on runs holding a semi-discrete map),
    ``nll``: the held-out NLL of ``nll_n`` points; ``data_path`` replaces a moved target file.
    ``novelty``: every row's :class:`~monge.evaluate.RowNovelty` where the data have a held-out split
    (:func:`monge.evaluate.novelty_reference`; the report says why where they have none).

    A latent flow (``data.latent``) is sampled on its latents (W2, MMD² and straightness against the
    encoded held-out images, cached in the run), its samples decoded to images for the novelty,
    Fréchet, coverage and mixture, and its autoencoder's reconstruction Fréchet reported as the
    floor. An autoencoder run reports its held-out reconstruction MSE and Fréchet. A CSV table run
    with a held-out split also gets :func:`monge.table_eval.evaluate_table_run`'s tabular report in the
    file's units (shapes, trends, α-precision / β-recall, C2ST, distance to closest record, ML
    efficiency on its label column)."""
    from .evaluate import (
        LATENT_NOTE,
        evaluate_field,
        evaluate_nll,
        evaluate_reconstruction,
        format_comparison,
        format_coupling_diagnostics,
        format_nll,
        format_reconstruction,
        format_table,
        held_out_target,
        novelty_reference,
        read_coupling_diagnostics,
        reference_data,
    )
    from .run.load import load_model
    from .rundata import build_run_data
    from .table_eval import evaluate_table_run, format_table_quality, table_target

    if not 2 <= n <= 20_000:
        raise ValueError(f"-n must be in [2, 20000] (exact W2 costs O(n^3) in it), got {n}")
    if nll and nll_n < 2:
        raise ValueError(f"--nll-n must be >= 2, got {nll_n}")
    rows: dict[str, list] = {}
    nlls: dict[str, NLLResult] = {}
    diagnostics: dict[str, dict[str, float]] = {}
    skipped: dict[str, str] = {}
    recons: dict[str, Reconstruction] = {}
    floors: dict[str, Reconstruction] = {}
    tables: dict[str, dict[str, dict[str, float]]] = {}
    latent_labels: set[str] = set()
    tasks = set()
    for checkpoint in checkpoints:
        model, cfg = load_model(checkpoint)
        label = cfg.name if cfg.name not in rows and cfg.name not in recons else f"{cfg.name} ({checkpoint})"
        if data_path is not None:
            if "path" not in cfg.data.target.params:
                raise ValueError(f"--data-path: data.target {cfg.data.target} is not read from a file")
            cfg.data.target.params["path"] = str(data_path)
        if model.sampler_kind is None:  # an autoencoder: its reconstructions, nothing to sample
            images = build_run_data(cfg, "monge eval")[1]
            recons[label] = evaluate_reconstruction(lambda x, m=model: m(x), cfg.data.target, images, seed=seed)
            continue
        rs = run_sampler(cfg, sampler)
        if rs.flow_map and nll:
            raise ValueError(
                f"--nll integrates a velocity field; the {cfg.objective.name} run {cfg.name} is a flow map"
            )
        if nll and cfg.data.latent is not None:
            raise ValueError(f"--nll: run {cfg.name} is a latent flow; the likelihood of its latents is not one of "
                             "images. Drop --nll")
        tasks.add((str(cfg.data.source), str(cfg.data.target), cfg.data.latent))
        if len(tasks) > 1:
            raise ValueError(f"checkpoints compare different tasks {sorted(tasks, key=str)}; evaluate them separately")
        source_data, target_data = build_run_data(cfg, "monge eval")
        images, decode = target_data, None
        if cfg.data.latent is not None:  # the flow lives on latents; its samples are scored as images
            latent_labels.add(label)
            from .run.latent import encode_target, latent_source

            codec = run_codec(model, cfg)
            target_data = encode_target(codec, images, run_dir_of(checkpoint))
            source_data, decode = latent_source(cfg, tuple(codec.latent_shape)), codec.decode
            def reconstruct(x: Tensor, c: LatentCodec = codec) -> Tensor:
                return c.decode(c.encode(x))

            floors[f"{cfg.data.latent} (of {label})"] = evaluate_reconstruction(
                reconstruct, cfg.data.target, images, seed=seed)
        against = None
        if novelty:
            against, why = novelty_reference(cfg.data.target, images, seed=seed)
            if against is None:
                skipped[label] = why
        rows[label] = evaluate_field(model, source_data, reference_data(target_data), nfes=nfes, sampler=rs,
                                     adaptive=adaptive and not rs.flow_map, n=n, seed=seed,
                                     expressway=run_expressway(cfg, run_dir_of(checkpoint)), novelty=against,
                                     decode=decode)
        if nll:
            held, what, _ = held_out_target(cfg.data.target, target_data)
            nlls[label] = evaluate_nll(model, source_data, held, n=nll_n, seed=seed, description=what)
        _check_finite_rows(rows[label], label)
        table = table_target(model, target_data)
        if table is not None and table[1]:
            skipped.setdefault(label, table[1])
        elif table is not None:
            def draw_rows(k: int, m: nn.Module = model, c: Config = cfg, **opts: Any) -> torch.Tensor:
                return generate(m, c, k, **opts).x

            tables[label] = evaluate_table_run(model, draw_rows, target_data, nfes=nfes, sampler=sampler,
                                               adaptive=adaptive and not rs.flow_map, n=n, seed=seed)
        diag = read_coupling_diagnostics(run_dir_of(checkpoint))
        if diag is not None:
            diagnostics[label] = diag
    parts = []
    if rows:
        source, target, _ = tasks.pop()
        parts = [format_table(r, f"{label}: {source} -> {target}")
                 + (f"\n\n{LATENT_NOTE}" if label in latent_labels else "")
                 + (f"\n\nNovelty: {skipped[label]}." if label in skipped else "") for label, r in rows.items()]
    if len(rows) > 1:
        parts.append(format_comparison(rows))
    if tables:
        parts.append(format_table_quality(tables, f"Table quality in the file's units: {source} -> {target}"))
    if floors:
        parts.append(format_reconstruction(floors, "Autoencoder floor of the latent flows"))
    if recons:
        parts.append(format_reconstruction(recons))
    if nlls:
        parts.append(format_nll(nlls, f"Negative log-likelihood: {source} -> {target}"))
    if diagnostics:
        parts.append(format_coupling_diagnostics(diagnostics))
    return RunsEvaluation(rows, nlls, diagnostics, "\n\n".join(parts), skipped, recons, floors, tables)
