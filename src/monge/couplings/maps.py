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

from ..outputs import atomic_write_bytes
from ..ot.semidiscrete import MarginalReport, SemiDiscreteMap, SemiDiscreteState
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
    atomic_write_bytes(path, coupling.to_bytes())  # type: ignore[attr-defined]
    return Path(path)


def load_prepared(coupling: Coupling, path: str | Path, device: torch.device | str | None = None) -> None:
    """Give ``coupling`` the state written by :func:`save_prepared`."""
    coupling.load_bytes(Path(path).read_bytes(), device=device, origin=str(path))  # type: ignore[attr-defined]


def prepare_coupling(
    coupling: Coupling,
    source: "DataSource",
    target: "DataSource",
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
        coupling.check_prepared(source, target)  # type: ignore[attr-defined]
    else:
        coupling.prepare(source, target, generator, device=device, fit_states=states)  # type: ignore[call-arg]
        if write:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_prepared(coupling, path)
    if states is not None:
        states.clear()
    return path


def fit_or_load_map(
    source: "DataSource",
    target: "DataSource",
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
    config: "Config",
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
    ``train.seed``, as in training).
    """
    from ..data.sources import build_data

    if getattr(config.data, "latent", None) is not None:
        raise ValueError(f"the semi-discrete map of a latent flow (data.latent: {config.data.latent}) is fitted on its "
                         "encoded data when a semidiscrete_ot recipe trains; fitting it apart from training is not "
                         "supported yet: train the recipe with coupling semidiscrete_ot")
    source, target = build_data(config.data)
    params: dict[str, Any] = dict(config.coupling.params) if config.coupling.name == "semidiscrete_ot" else {}
    if progress is not None:
        params["progress"] = progress
    seed = config.train.seed if seed is None else seed
    return fit_or_load_map(source, target, run_dir, params, generator=torch.Generator().manual_seed(seed + 3),
                           device=device, refit=refit)


@dataclass(frozen=True)
class FitReport:
    """What :func:`fit_run_map` did: the ``map``, its ``path``, whether it was ``loaded`` from the
    cache (else fitted, in ``seconds``), and the independent cell-mass ``check`` on fresh source draws."""

    map: SemiDiscreteMap
    path: Path
    loaded: bool
    seconds: float
    check: MarginalReport


def fit_run_map(
    config: "Config",
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

    run_dir = Path(config.run_dir if run_dir is None else run_dir)
    if check_samples is None and quick_mode():
        check_samples = 65_536
    path = run_dir / MAP_FILE
    loaded = path.is_file() and not refit
    start = time.perf_counter()
    sd_map = run_map(config, run_dir, refit=refit, progress=progress)
    seconds = time.perf_counter() - start
    check = marginal_error(sd_map, n_samples=check_samples, source=ot_source(build_data(config.data)[0]),
                           generator=torch.Generator().manual_seed(config.train.seed + 7))
    return FitReport(map=sd_map, path=path, loaded=loaded, seconds=seconds, check=check)
