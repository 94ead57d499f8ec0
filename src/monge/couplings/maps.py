r"""The files of a run's fitted couplings: semi-discrete maps and resumable fit states.

Why here. :mod:`monge.ot` computes maps and fit states and turns them into bytes, but opens no
file (a solver is a function of tensors). What a run keeps of them is decided by the couplings
(a coupling's ``prepare`` fits them, ``traits.prepared_file`` names the file), so the files live
beside the couplings, below the run layer (:mod:`monge.train`, :mod:`monge.run`) that chooses the
run directory: training, sampling, evaluation, ``monge fit-ot`` and the demos all get a run's map
through this module. Every write is atomic (:func:`monge.outputs.atomic_write_bytes`): a cached
file stays until its replacement is complete.

====================================== ====================================================
``semidiscrete.safetensors``           the map of ``semidiscrete_ot`` (:data:`MAP_FILE`)
``semidiscrete_classes.safetensors``   the per-class maps of ``conditional_semidiscrete_ot``
``semidiscrete_fit[_class<k>].safetensors`` the state of an unfinished fit (removed once the map is saved)
====================================== ====================================================
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..ot.semidiscrete import MarginalReport, SemiDiscreteMap, SemiDiscreteState
from ..outputs import atomic_write_bytes
from ..run.signals import interrupt_note
from .base import Coupling

if TYPE_CHECKING:  # pragma: no cover
    from ..config import Config
    from ..data.sources import DataSource

__all__ = [
    "MAP_FILE",
    "CLASS_MAPS_FILE",
    "FIT_STATE_FILE",
    "FitStates",
    "FitReport",
    "save_map",
    "load_map",
    "load_run_map",
    "save_prepared",
    "load_prepared",
    "prepare_coupling",
    "fit_or_load_map",
    "run_map",
    "fit_run_map",
    "max_check_samples",
    "merged_duplicates",
]

#: File name of a run's semi-discrete map, inside the run directory.
MAP_FILE = "semidiscrete.safetensors"
#: File name of a run's per-class semi-discrete maps, inside the run directory.
CLASS_MAPS_FILE = "semidiscrete_classes.safetensors"
#: File name of the state of an unfinished fit (per class: ``semidiscrete_fit_class<k>.safetensors``).
FIT_STATE_FILE = "semidiscrete_fit.safetensors"


# ------------------------------------------------------------------------------- one map
def save_map(path: str | Path, sd_map: SemiDiscreteMap) -> Path:
    """Write ``sd_map`` to ``path`` (``.safetensors``, atomically); returns the path."""
    atomic_write_bytes(path, sd_map.to_bytes())
    return Path(path)


def load_map(path: str | Path, device: torch.device | str | None = None) -> SemiDiscreteMap:
    """Read a map written by :func:`save_map` (format and shapes checked, no code executed)."""
    return SemiDiscreteMap.from_bytes(Path(path).read_bytes(), device=device, origin=str(path))


def load_run_map(run_dir: str | Path, device: torch.device | str | None = None) -> SemiDiscreteMap | None:
    """The semi-discrete map cached in ``run_dir`` (``None`` when the run has none)."""
    file = Path(run_dir) / MAP_FILE
    return load_map(file, device=device) if file.is_file() else None


# ---------------------------------------------------------------------------- fit states
class FitStates:
    """The resumable fit states of a run directory: ``key=None`` is the single map's fit,
    ``key="class3"`` that of class 3. A fit starts from :meth:`load` and passes :meth:`saver`
    as its ``checkpoint`` hook; :meth:`clear` removes them all once the maps are saved."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)

    def path(self, key: str | None = None) -> Path:
        stem = Path(FIT_STATE_FILE).stem
        return self.run_dir / (FIT_STATE_FILE if key is None else f"{stem}_{key}.safetensors")

    def load(self, key: str | None = None) -> SemiDiscreteState | None:
        """The saved state under ``key``, or ``None`` when there is none."""
        file = self.path(key)
        if not file.is_file():
            return None
        return SemiDiscreteState.from_bytes(file.read_bytes(), origin=str(file))

    def saver(self, key: str | None = None) -> Callable[[SemiDiscreteState], None]:
        """The ``checkpoint`` hook of a fit: writes its state under ``key``, atomically."""
        file = self.path(key)

        def save(state: SemiDiscreteState) -> None:
            file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(file, state.to_bytes())

        return save

    def clear(self) -> None:
        stem = Path(FIT_STATE_FILE).stem
        for file in (self.path(), *self.run_dir.glob(f"{stem}_*.safetensors")):
            file.unlink(missing_ok=True)


# ------------------------------------------------------------------ a coupling's prepared state
def save_prepared(coupling: Coupling, path: str | Path) -> Path:
    """Write the state ``coupling.prepare`` fitted (``coupling.to_bytes()``) to ``path``,
    atomically; returns the path."""
    atomic_write_bytes(path, coupling.to_bytes())  # type: ignore[attr-defined]  # a prepared_file coupling has it
    return Path(path)


def load_prepared(coupling: Coupling, path: str | Path, device: torch.device | str | None = None) -> None:
    """Give ``coupling`` the state written by :func:`save_prepared`."""
    # a coupling with traits.prepared_file has load_bytes (the base Coupling does not)
    coupling.load_bytes(Path(path).read_bytes(), device=device, origin=str(path))  # type: ignore[attr-defined]


def prepare_coupling(
    coupling: Coupling,
    source: DataSource,
    target: DataSource,
    run_dir: str | Path,
    generator: torch.Generator | None = None,
    *,
    write: bool = True,
    device: torch.device | str | None = None,
    refit: bool = False,
) -> Path | None:
    """Prepare ``coupling`` for training in the run directory ``run_dir``.

    A coupling without a kept state (``traits.prepared_file is None``) just gets ``prepare``
    (cheap: e.g. ``knn_immiscible`` records the source) and ``None`` is returned. Otherwise
    ``run_dir / prepared_file`` is loaded when it exists (resume, or the other ranks of a
    distributed run after rank 0 wrote it) and checked against the data
    (``coupling.check_prepared``); else (or with ``refit``) ``prepare`` fits it, resuming from and
    checkpointing to the run's :class:`FitStates` (with ``write``), and, with ``write``, it is
    saved there and the fit states removed. Returns that path.
    """
    name = coupling.traits.prepared_file
    if name is None:
        coupling.prepare(source, target, generator)
        return None
    path = Path(run_dir) / name
    states = FitStates(run_dir) if write else None
    if path.is_file() and not refit:
        load_prepared(coupling, path, device=device)
        coupling.check_prepared(source, target)  # type: ignore[attr-defined]  # prepared_file couplings have it
    else:
        # a coupling with a prepared_file fits resumably: its prepare takes device= and fit_states=
        coupling.prepare(source, target, generator, device=device, fit_states=states)  # type: ignore[call-arg]
        if write:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_prepared(coupling, path)
    if states is not None:
        states.clear()
    return path


def fit_or_load_map(
    source: DataSource,
    target: DataSource,
    run_dir: str | Path | None = None,
    params: dict | None = None,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    refit: bool = False,
) -> SemiDiscreteMap:
    """The one owner of a run's semi-discrete map: loaded from ``run_dir / MAP_FILE`` when cached
    (and checked against the data), else (or with ``refit``) fitted from ``source`` onto ``target``
    with the :class:`~monge.couplings.SemiDiscreteOT` parameters ``params`` and cached there
    (nothing is cached when ``run_dir`` is ``None``)."""
    from .semidiscrete import SemiDiscreteOT

    coupling = SemiDiscreteOT(**(params or {}))
    if run_dir is None:
        coupling.prepare(source, target, generator, device=device)
    else:
        prepare_coupling(coupling, source, target, run_dir, generator, device=device, refit=refit)
    return coupling.fitted_map()


# --------------------------------------------------------------------------- a run's map
def run_map(
    config: Config,
    run_dir: str | Path,
    *,
    seed: int | None = None,
    device: torch.device | str | None = None,
    refit: bool = False,
    progress: bool | None = None,
) -> SemiDiscreteMap:
    """The run's semi-discrete map, loaded from its cache or fitted now (and cached).

    A ``semidiscrete_ot`` run cached its map while training (with its own parameters). For any
    other run (DPM-OT proper: a model trained with independent pairs) the map from the run's
    source onto its data is fitted with :class:`~monge.couplings.SemiDiscreteOT`'s defaults
    (every point of a finite data set); ``progress`` shows the fit's bar (default: when stderr is
    a terminal). The fit draws from a generator seeded ``seed + 3`` (default: the run's
    ``train.seed``, as in training). A latent flow's map exists only as its ``semidiscrete_ot`` run
    cached it on the encoded data; other latent flows are refused.
    """
    from ..data.sources import build_data

    if getattr(config.data, "latent", None) is not None:
        cached = None if refit else load_run_map(run_dir, device=device)  # fitted on the latents while training
        if cached is not None:
            return cached
        _refuse_latent_fit(config)
    source, target = build_data(config.data)
    params = _map_params(config)
    if progress is not None:
        params["progress"] = progress
    seed = config.train.seed if seed is None else seed
    return fit_or_load_map(source, target, run_dir, params, generator=torch.Generator().manual_seed(seed + 3),
                           device=device, refit=refit)


def _refuse_latent_fit(config: Config) -> None:
    """A latent flow's map is fitted on its encoded data only while its ``semidiscrete_ot`` recipe trains."""
    if getattr(config.data, "latent", None) is not None:
        raise ValueError(f"the semi-discrete map of a latent flow (data.latent: {config.data.latent}) is fitted on its "
                         "encoded data when a semidiscrete_ot recipe trains; fitting it apart from training is not "
                         "supported yet: train the recipe with coupling semidiscrete_ot")


def _map_params(config: Config) -> dict[str, Any]:
    """The :class:`~monge.couplings.SemiDiscreteOT` parameters of the run's map: a ``semidiscrete_ot``
    run's own, else the defaults."""
    return dict(config.coupling.params) if config.coupling.name == "semidiscrete_ot" else {}


def _run_coupling(config: Config) -> Any:
    from .semidiscrete import SemiDiscreteOT

    return SemiDiscreteOT(**_map_params(config))


def max_check_samples(n_targets: int) -> int:
    r"""Most fresh source draws of a cell-mass check of a map onto ``n_targets`` points: four times
    the fit's own largest check, :math:`\max(2^{20}, 20N)` (the noise of the :math:`\chi^2` estimate,
    :math:`\sqrt{2N}/M`, then a quarter of that check's; the cost, :math:`M N d`, four times it)."""
    return 4 * max(2**20, 20 * n_targets)


def _check_own_run(config: Config, run_dir: Path) -> None:
    """Refuse to fit into ``run_dir`` when it holds the run of another recipe (its ``config.yaml``
    names other data or another coupling): the map would not be that run's."""
    from ..limits import load_yaml_bounded

    stored_file = run_dir / "config.yaml"
    if not stored_file.is_file():
        return
    try:
        stored = load_yaml_bounded(stored_file.read_text(encoding="utf-8"), str(stored_file))
    except (ValueError, OSError, UnicodeDecodeError):
        return  # unreadable: the run's own commands report it
    mine = config.to_dict()
    differ = [key for key in ("data", "coupling") if isinstance(stored, dict) and stored.get(key) != mine.get(key)]
    if differ:
        raise ValueError(f"{run_dir} holds a run of another recipe ({' and '.join(differ)} differ); its map would "
                         f"not be that run's: fit the run's own map with `monge fit-ot {run_dir}`, or give the recipe "
                         "another name")


@dataclass(frozen=True)
class FitReport:
    """What :func:`fit_run_map` did: the ``map``, its ``path``, whether it was ``loaded`` from the
    cache (else fitted, in ``seconds``), and the independent cell-mass ``check`` on fresh source draws."""

    map: SemiDiscreteMap
    path: Path
    loaded: bool
    seconds: float
    check: MarginalReport
    #: repeated targets, merged into their first copy's cell for the ``check``
    duplicates: int = 0

    @property
    def note(self) -> str:
        """What the cell counts of the ``check`` leave out: ``""``, or the repeated targets."""
        return f" ({self.duplicates} repeated targets counted in their first copy's cell)" if self.duplicates else ""


def fit_run_map(
    config: Config,
    run_dir: str | Path | None = None,
    *,
    refit: bool = False,
    check_samples: int | None = None,
    progress: bool | None = None,
) -> FitReport:
    """Fit (or load) the run's semi-discrete map (:func:`run_map`) in ``run_dir`` (default: the
    config's) and check its cell masses on ``check_samples`` fresh source draws (default: as many as
    the fit's own check; 65,536 in quick mode), from a generator seeded ``train.seed + 7``."""
    from ..data.sources import build_data
    from ..ot.semidiscrete import marginal_error
    from ..quick import quick_mode
    from .semidiscrete import ot_source

    _refuse_latent_fit(config)  # its check would draw images, not latents
    run_dir = Path(config.run_dir if run_dir is None else run_dir)
    _check_own_run(config, run_dir)
    source, target = build_data(config.data)
    if check_samples is None and quick_mode():
        check_samples = 65_536
    if check_samples is not None:
        n = _run_coupling(config).n_targets_of(target)
        top = max_check_samples(n)
        if isinstance(check_samples, bool) or not isinstance(check_samples, int) or not 2 <= check_samples <= top:
            raise ValueError(f"--check-samples must be an integer in [2, {top:,}] for a map onto {n:,} targets "
                             f"(four times the fit's own largest check), got {check_samples!r}")
    path = run_dir / MAP_FILE
    loaded = path.is_file() and not refit
    start = time.perf_counter()
    every = _run_coupling(config).solver.checkpoint_every
    with interrupt_note(f"interrupted while fitting the map; its state is saved in {FitStates(run_dir).path()} every "
                        f"{every} steps: the same command resumes the fit"):
        sd_map = run_map(config, run_dir, refit=refit, progress=progress)
    seconds = time.perf_counter() - start
    cells, duplicates = merged_duplicates(sd_map)
    with interrupt_note(f"interrupted while checking the map; the map is saved in {path}: the same command (without "
                        "--refit) loads it and checks it again"):
        check = marginal_error(cells, n_samples=check_samples, source=ot_source(source),
                               generator=torch.Generator().manual_seed(config.train.seed + 7))
    return FitReport(map=sd_map, path=path, loaded=loaded, seconds=seconds, check=check, duplicates=duplicates)


def merged_duplicates(sd_map: SemiDiscreteMap) -> tuple[SemiDiscreteMap, int]:
    r"""``sd_map`` with each group of equal targets merged into one cell (its first member; weights
    summed; heights :math:`\varepsilon \log \sum_j e^{h_j/\varepsilon}`, the first one's at
    :math:`\varepsilon = 0`), and the number of repeated targets. The fit merges them the same way:
    a repeated target's own cell is empty by construction, not by a failed fit."""
    from ..ot.semidiscrete import _find_duplicates

    first, group, n_dup = _find_duplicates(sd_map.flat)
    if not n_dup:
        return sd_map, 0
    weights = torch.zeros(first.numel(), dtype=sd_map.weights.dtype, device=first.device).index_add_(
        0, group, sd_map.weights)
    heights = sd_map.heights[first]
    if sd_map.epsilon > 0:
        top = sd_map.heights.max()
        mass = torch.zeros_like(heights).index_add_(0, group, ((sd_map.heights - top) / sd_map.epsilon).exp())
        heights = top + sd_map.epsilon * mass.log()
    merged = SemiDiscreteMap(sd_map.targets[first], heights, weights, sd_map.max_block_elements, sd_map.epsilon)
    return merged, n_dup
