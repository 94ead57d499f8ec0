r"""Sampling a trained run: ODE samplers, few-step samplers on a step grid (fixed or
optimized for the model and cached next to the checkpoint), and DPM-OT's expressway.

A run trained by :class:`~monge.train.Trainer` predicts the velocity :math:`u_\theta(x, t)` of
its path, so the diffusion samplers of :mod:`monge.samplers` run on it through
``prediction="velocity"`` and the path's schedule :math:`x_t = \sigma_t x_0 + \alpha_t x_1`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor, nn

from .run.checkpoint import run_dir_of
from .config import Config
from .objectives import prediction_of
from .samplers import SampleOutput

if TYPE_CHECKING:  # pragma: no cover
    from .data.tabular import Standardizer
    from .ot.semidiscrete import SemiDiscreteMap
    from .samplers.expressway import Expressway

__all__ = ["TIMESTEPS_FILE", "run_dir_of", "path_schedule", "optimized_timesteps", "optimized_eval_times",
           "semidiscrete_map", "expressway_of", "generate", "generate_model_space"]

#: Optimized step grids of a run, one per ``"<sampler>/nfe<N>"`` (and the decoupled grids with their
#: evaluation times, under ``"<sampler>/nfe<N>/decoupled/..."``), next to its checkpoint.
TIMESTEPS_FILE = "timesteps.safetensors"


def path_schedule(config: Config):
    """The :class:`~monge.paths.Schedule` of the run's path (affine paths only)."""
    from .paths import PATHS

    path = PATHS.build(config.path.name, **config.path.params)
    schedule = getattr(path, "schedule", None)
    if schedule is None:
        raise ValueError(
            f"path {config.path.name!r} has no alpha/sigma schedule; step grids and diffusion samplers "
            "need an affine path (linear, vp, ...): use an ODE sampler without --timesteps"
        )
    return schedule


def _read_grids(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        return {}
    try:
        return dict(st_load(path.read_bytes()))
    except (SafetensorError, ValueError) as err:
        raise ValueError(f"{path} is not a readable step-grid file ({err}); delete it to refit") from None


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
    return _cached_fit(run_dir, (key,), refit, lambda: (optimized(
        model, path_schedule(config), nfe, sampler, _fit_noise(config, n_noise, seed, getattr(model, "shape", None)), prediction=prediction_of(model, config.objective.name)),))[0]


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
    ts, ev = _cached_fit(run_dir, (f"{key}/timesteps", f"{key}/eval_times"), refit, lambda: optimized_decoupled(
        model, path_schedule(config), nfe, sampler, _fit_noise(config, n_noise, seed, getattr(model, "shape", None)), prediction=prediction_of(model, config.objective.name)))
    return ts, ev


def _fit_noise(config: Config, n: int, seed: int, shape: tuple[int, ...] | None = None) -> Tensor:
    from .rundata import sampling_source

    return sampling_source(config.data, shape).sample(n, generator=torch.Generator().manual_seed(seed + 7))


def _cached_fit(run_dir: str | Path, keys: tuple[str, ...], refit: bool,
                fit: Callable[[], tuple[Tensor, ...]]) -> tuple[Tensor, ...]:
    """The tensors of ``fit()``, cached under ``keys`` in ``run_dir / timesteps.safetensors``: read when
    every key is there (and not ``refit``), else fitted and written together, atomically."""
    from .outputs import atomic_write_bytes

    file = Path(run_dir) / TIMESTEPS_FILE
    grids = _read_grids(file)
    if not refit and all(k in grids for k in keys):
        return tuple(grids[k].to(torch.float64) for k in keys)
    for k, value in zip(keys, fit(), strict=True):
        grids[k] = value.detach().to(torch.float64).cpu().contiguous()
    atomic_write_bytes(file, st_save(grids, metadata={"format": "monge.timesteps", "version": "1"}))
    return tuple(grids[k] for k in keys)


def semidiscrete_map(
    config: Config,
    run_dir: str | Path,
    seed: int | None = None,
    device: torch.device | str | None = None,
    refit: bool = False,
    progress: bool | None = None,
) -> "SemiDiscreteMap":
    """The run's semi-discrete map, loaded from its cache or fitted now (and cached).

    A ``semidiscrete_ot`` run cached its map while training (with its own parameters). For any
    other run (DPM-OT proper: a model trained with independent pairs) the map from the run's source
    onto its data is fitted with :class:`monge.couplings.SemiDiscreteOT`'s defaults (every point of
    a finite data set) by :func:`monge.couplings.semidiscrete.fit_or_load_map`; ``progress`` shows
    the fit's progress bar (default: when stderr is a terminal). The fit draws
    from a generator seeded ``seed + 3`` (default: the run's ``train.seed``, as in training).
    """
    from .couplings.semidiscrete import fit_or_load_map
    from .data.sources import build_data

    source, target = build_data(config.data)
    params = dict(config.coupling.params) if config.coupling.name == "semidiscrete_ot" else {}
    if progress is not None:
        params["progress"] = progress
    seed = config.train.seed if seed is None else seed
    return fit_or_load_map(source, target, run_dir, params, generator=torch.Generator().manual_seed(seed + 3),
                           device=device, refit=refit)


def expressway_of(config: Config, sd_map: "SemiDiscreteMap", t_start: float | None = None) -> "Expressway":
    """The run's :class:`~monge.samplers.expressway.Expressway`: ``sd_map`` with the run's path."""
    from .paths import PATHS
    from .samplers.expressway import DEFAULT_T_START, Expressway

    path = PATHS.build(config.path.name, **config.path.params)
    return Expressway(sd_map, DEFAULT_T_START if t_start is None else t_start, path)


def _conditioned(model: nn.Module, label: int | str, guidance: float, n: int) -> nn.Module:
    from .models import ClassConditional

    k = getattr(model, "num_classes", None)
    if k is None:
        raise ValueError("this run's model is not class-conditional (no num_classes); drop the label")
    if label == "all":
        return ClassConditional(model, torch.arange(n) % k, guidance)
    if isinstance(label, str):
        if not label.lstrip("-").isdigit():
            raise ValueError(f"label must be a class index in [0, {k}) or 'all', got {label!r}")
        label = int(label)
    return ClassConditional(model, label, guidance)


def _check_kind(config: Config, sampler: str, timesteps: str | None, expressway: float | None) -> bool:
    """Refuse a sampler of the wrong kind for the run (:func:`monge.objectives.check_sampler`); whether the
    run is a flow map."""
    from .objectives import check_sampler, is_flow_map

    check_sampler(config.objective.name, sampler)
    if not is_flow_map(config.objective.name):
        return False
    if timesteps is not None or expressway is not None:
        raise ValueError(f"a {config.objective.name} run jumps on nfe uniform steps; drop --timesteps and --expressway")
    return True


def generate(
    model: nn.Module,
    config: Config,
    n: int,
    *,
    standardizer: "Standardizer | None" = None,
    data_units: bool = True,
    **options,
) -> SampleOutput:
    r"""``n`` samples of a trained run, in data units (see :func:`generate_model_space` for the
    options: sampler, nfe, timesteps, expressway, run_dir, seed, device, label, guidance).

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
    out = generate_model_space(model, config, n, **options)
    if data_units and scaler is not None:
        out = dataclasses.replace(out, x=scaler.inverse(out.x))
    return out


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
    schedule: str | None = None,
    conditions: Tensor | None = None,
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
      fixed-step sampler of :data:`monge.samplers.SAMPLERS`. ``schedule=`` is its deprecated name.
    - a flow-map run (``objective: mean_flow`` or ``shortcut``): ``nfe`` uniform jumps of its sampler
      (``mean_flow`` / ``shortcut``, :mod:`monge.samplers.flow_map`); any other sampler, a step grid
      or the expressway is refused, as is a flow-map sampler on a velocity run.
    - ``expressway=t_s``: DPM-OT's expressway. Map the noise to its OT cell (the run's
      :func:`semidiscrete_map`, fitted on first use when the run has none), start from the cell's
      target noised to :math:`t_s` and integrate :math:`[t_s, 1]` with ``sampler``/``nfe``
      (:func:`monge.couplings.expressway_sample`). In DPM-OT the model is trained with
      independent pairs, so that the noised target is a typical point of the path at :math:`t_s`.
    """
    from .samplers import GRIDS, SAMPLERS, EvalTimeWarp, make_timesteps, sample, solve, steps_for_nfe

    if schedule is not None:
        import warnings

        warnings.warn("generate(schedule=...) is deprecated; the step grid is generate(timesteps=...)",
                      DeprecationWarning, stacklevel=3)
        if timesteps is not None:
            raise ValueError("give the step grid once, as timesteps=")
        timesteps = schedule
    from .rundata import sampling_source

    info = SAMPLERS.info(sampler)
    flow_map_run = _check_kind(config, sampler, timesteps, expressway)
    prediction = prediction_of(model, config.objective.name)
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
    if flow_map_run:
        from .objectives import sampler_options

        return sample(model, x0, sampler=sampler, nfe=nfe,
                      **sampler_options(config.objective.name, config.objective.params))
    if expressway is not None:
        if timesteps is not None:
            raise ValueError("--expressway integrates uniform steps on [t_s, 1]; drop --timesteps")
        if run_dir is None:
            raise ValueError("the expressway needs the run directory, where the semi-discrete map is cached")
        sd_map = semidiscrete_map(config, run_dir, device=device)
        return expressway_of(config, sd_map, expressway).sample(model, x0, sampler=sampler, nfe=nfe,
                                                                generator=generator)
    if timesteps is None and not info.needs_schedule:
        if prediction != "velocity":  # an ODE sampler integrates the velocity the prediction converts to
            from .predictions import as_velocity

            model = as_velocity(model, prediction, path_schedule(config))
        return sample(model, x0, sampler=sampler, nfe=nfe)
    if info.adaptive:
        raise ValueError(f"{sampler!r} is adaptive: it takes no step grid; drop --timesteps")
    sched = path_schedule(config)
    timesteps = timesteps or "uniform"
    if timesteps in ("optimized", "optimized_decoupled"):
        if run_dir is None:
            raise ValueError(f"step grid {timesteps!r} needs the run directory to cache the fitted grid")
        if timesteps == "optimized":
            ts = optimized_timesteps(model, config, run_dir, sampler, nfe)
        else:
            ts, ev = optimized_eval_times(model, config, run_dir, sampler, nfe)
            model = EvalTimeWarp(model, ts, ev)
    elif timesteps in GRIDS:
        ts = make_timesteps(timesteps, steps_for_nfe(sampler, nfe), sched)
    else:
        valid = sorted(GRIDS.names()) + ["optimized", "optimized_decoupled"]
        raise ValueError(f"unknown step grid (timesteps) {timesteps!r}; valid choices: {', '.join(valid)}")
    return solve(model, x0, sched, ts.to(device), sampler, prediction=prediction, generator=generator)


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
