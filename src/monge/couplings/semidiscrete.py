"""The semi-discrete OT coupling (DPM-OT)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from .._validation import check_number, check_positive, check_positive_int
from .base import COUPLINGS, Coupled, SolverCoupling, gen_device, prepare_coupling

if TYPE_CHECKING:  # pragma: no cover
    from ..data.sources import DataSource
    from ..ot.semidiscrete import SemiDiscreteMap, Source

__all__ = ["MAP_FILE", "FIT_STATE_FILE", "SAMPLER_TARGETS", "SemiDiscreteOT", "fit_or_load_map", "load_run_map", "ot_source"]

#: File name of a run's semi-discrete map, inside the run directory.
MAP_FILE = "semidiscrete.safetensors"
#: File name of the state of an unfinished fit, inside the run directory (removed once the map is saved).
FIT_STATE_FILE = "semidiscrete_fit.safetensors"
#: Targets drawn from a data *sampler* (no finite data set), unless ``n_targets`` says otherwise.
SAMPLER_TARGETS = 4096


@COUPLINGS.register("semidiscrete_ot")
class SemiDiscreteOT(SolverCoupling):
    r"""Semi-discrete OT coupling: global OT from the whole noise space onto the training set
    (DPM-OT, Li et al. 2023; semi-discrete flow matching, Mousavi-Hosseini et al. 2025).

    Before training, :meth:`prepare` fits once the semi-discrete OT map from the source
    :math:`\mu` onto the :math:`N` training points :math:`y_1..y_N`
    (:func:`monge.ot.semidiscrete.fit_semidiscrete`), with scores
    :math:`s_i(x) = \langle x, y_i \rangle + h_i` and cells of mass :math:`\nu_i = 1/N`. At train
    time each noise :math:`x_0` is paired with a training point chosen by its scores among *all*
    :math:`N` points, so the pairing is a sample of one global OT plan, not of a minibatch plan:

    * ``epsilon = 0``: the hard cell :math:`T(x_0) = y_{\arg\max_i s_i(x_0)}` (DPM-OT's map), one
      chunked max-inner-product search per batch, random-free (it may run in the pairing workers);
    * ``epsilon > 0``: a draw from the entropic cell probabilities
      :math:`p_i(x_0) = \mathrm{softmax}_i(s_i(x_0)/\varepsilon)` (SD-FM), chunked, from the
      step's generator.

    The drawn data batch ``x1`` is not used (only its shape is checked). The map is cached in the
    run directory as ``semidiscrete.safetensors`` (:meth:`prepare_run`), checked against the data
    when loaded, and gives the expressway start at sampling time
    (:mod:`monge.samplers.expressway`). While it is fitted, the fit's state is checkpointed in
    ``semidiscrete_fit.safetensors``, so an interrupted fit resumes where it stopped.

    Targets: a finite data set (anything with a ``data`` tensor: digits, image folders, arrays)
    gives **every** point, or a random subset of ``n_targets`` drawn with the generator; a data
    sampler (toy 2D sets) gives a fixed sample of ``n_targets`` points (default
    :data:`SAMPLER_TARGETS`). Encoder latents are used by giving a data source of latents. The map
    goes from the run's source (a ``gaussian`` source uses the built-in normal sampler).

    Parameters
    ----------
    n_targets : int, optional
        Number of target points; default ``None``: the whole finite data set, or
        :data:`SAMPLER_TARGETS` points of a sampler.
    epsilon : float
        Entropic regularisation of the map and of the pairing (0: hard cells).
    tol : float
        Target RMS relative cell-mass error of the fit, measured on fresh source draws
        (:func:`monge.ot.semidiscrete.marginal_error`).
    max_iter, max_time : int, float
        Step and wall-clock (seconds) caps of the fit; it stops as soon as it reaches ``tol``, always
        returns, and warns with the error it reached when it stopped before ``tol``. The default step
        cap lets a few thousand 2D targets converge (``bench/results/semidiscrete.md``).
    optimizer, lr, batch_size
        Passed to :func:`~monge.ot.semidiscrete.fit_semidiscrete` (defaults chosen there).
    progress : bool, optional
        Progress bar of the fit (default: when stderr is a terminal).
    """

    prepared_file = MAP_FILE
    keeps_data = False
    #: With ``epsilon = 0`` the hard-cell search depends on the noise alone and its ``addmm``
    #: blocks release the GIL, so it may run in the pairing workers (the instance attribute says
    #: ``False`` for ``epsilon > 0``, whose draws use the step's generator).
    threaded_solve = True
    unthreaded_reason = "with epsilon > 0 its pairing draws cells with the step's generator; use epsilon: 0"

    def __init__(
        self,
        n_targets: int | None = None,
        epsilon: float = 0.0,
        tol: float = 0.05,
        max_iter: int = 10_000,
        max_time: float | None = None,
        optimizer: Literal["adam", "sgd"] = "adam",
        lr: float | None = None,
        batch_size: int | None = None,
        progress: bool | None = None,
    ) -> None:
        self.n_targets = None if n_targets is None else check_positive_int(n_targets, "n_targets", 2**24)
        self.epsilon = check_number(epsilon, "epsilon", 0.0, math.inf, high_open=True)
        self.threaded_solve = self.epsilon == 0
        self.tol = check_positive(tol, "tol")
        self.max_iter = check_positive_int(max_iter, "max_iter")
        self.max_time = check_positive(max_time, "max_time", allow_none=True)
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
        self.optimizer = optimizer
        self.lr = check_positive(lr, "lr", allow_none=True)
        self.batch_size = None if batch_size is None else check_positive_int(batch_size, "batch_size")
        self.progress = None if progress is None else bool(progress)
        self.map: "SemiDiscreteMap | None" = None
        self.fit_info: dict[str, object] = {}
        self._on_device: dict[torch.device, "SemiDiscreteMap"] = {}
        self._fit_state: Path | None = None

    def targets_from(self, target: "DataSource", generator: torch.Generator | None = None) -> Tensor:
        """The ``(N, *shape)`` target points taken from ``target`` (see the class docstring)."""
        data = getattr(target, "data", None)
        if torch.is_tensor(data) and data.dim() >= 2:
            n = data.shape[0]
            if self.n_targets is None or self.n_targets >= n:
                return data
            dev = gen_device(generator, torch.device("cpu"))
            idx = torch.randperm(n, generator=generator, device=dev)[: self.n_targets].to(data.device)
            return data[idx]
        return target.sample(self.n_targets or SAMPLER_TARGETS, generator=generator)

    def prepare(
        self,
        source: "DataSource",
        target: "DataSource",
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        """Fit the semi-discrete map from ``source`` onto the targets of ``target``."""
        from ..ot.semidiscrete import fit_semidiscrete

        y = self.targets_from(target, generator)
        if device is not None:
            y = y.to(device)
        y = y.float() if not y.is_floating_point() or y.dtype in (torch.float16, torch.bfloat16) else y
        state = self._fit_state if self._fit_state is not None and self._fit_state.is_file() else None
        res = fit_semidiscrete(
            y, source=ot_source(source, y.device), epsilon=self.epsilon, optimizer=self.optimizer, lr=self.lr,
            batch_size=self.batch_size, tol=self.tol, max_iter=self.max_iter,
            max_time=math.inf if self.max_time is None else self.max_time, progress=self.progress,
            state=state, checkpoint=self._fit_state, generator=generator,
        )
        err = res.error
        self.fit_info = {"n_targets": int(y.shape[0]), "n_iter": res.n_iter, "rms_error": res.rms_error,
                         "mean_error": res.mean_error, "max_error": res.max_error, "empty_cells": err.empty,
                         "eval_samples": err.n_samples, "converged": res.converged, "reason": res.reason,
                         "duplicates": res.duplicates}
        if not res.converged:
            warnings.warn(
                f"semidiscrete_ot: the fit stopped ({res.reason}) after {res.n_iter} steps at an RMS relative "
                f"cell-mass error of {res.rms_error:.3f} (tol {self.tol}), {err.empty} of {y.shape[0]} cells "
                f"empty on {err.n_samples} fresh source draws: the cells' masses are unequal, so the pairs "
                "over-weight some training points and miss others. Raise max_iter or max_time, or set "
                "epsilon > 0",
                RuntimeWarning,
                stacklevel=2,
            )
        self.set_map(res.map)

    def prepare_run(
        self,
        source: "DataSource",
        target: "DataSource",
        run_dir: str | Path,
        generator: torch.Generator | None = None,
        *,
        write: bool = True,
        device: torch.device | str | None = None,
        refit: bool = False,
    ) -> Path | None:
        """As :meth:`Coupling.prepare_run`; a fit checkpoints its state in ``run_dir`` (with
        ``write``) and resumes from it, and the state is removed once the map is saved."""
        self._fit_state = Path(run_dir) / FIT_STATE_FILE if write else None
        if self._fit_state is not None:
            self._fit_state.parent.mkdir(parents=True, exist_ok=True)
        try:
            path = super().prepare_run(source, target, run_dir, generator, write=write, device=device, refit=refit)
        finally:
            state, self._fit_state = self._fit_state, None
        if state is not None and path is not None and path.is_file():
            state.unlink(missing_ok=True)
        return path

    def check_prepared(
        self, source: "DataSource", target: "DataSource", generator: torch.Generator | None = None
    ) -> None:
        """Refuse a cached map whose targets no longer match ``target``: a different sample shape
        or number of targets, or (for a finite data set) targets that are not its points."""
        m = self._require_map()
        data = getattr(target, "data", None)
        refit = (f"delete {MAP_FILE} in the run directory or run `monge fit-ot RUN --refit` to fit the map "
                 "again")
        if torch.is_tensor(data) and data.dim() >= 2:
            want = data.shape[0] if self.n_targets is None else min(self.n_targets, data.shape[0])
            shape = tuple(data.shape[1:])
        else:
            want, shape = self.n_targets or SAMPLER_TARGETS, tuple(getattr(target, "shape", m.shape))
        if m.shape != shape or m.n_targets != want:
            raise ValueError(
                f"the cached semi-discrete map has {m.n_targets} targets of shape {m.shape}, but the data "
                f"gives {want} of shape {shape}; {refit}"
            )
        if torch.is_tensor(data) and data.dim() >= 2 and not _rows_of(m.targets, data):
            raise ValueError(f"the cached semi-discrete map's targets are not points of the data set; {refit}")

    def set_map(self, sd_map: "SemiDiscreteMap") -> None:
        """Use an already fitted :class:`~monge.ot.SemiDiscreteMap`."""
        self.map = sd_map
        self._on_device = {sd_map.flat.device: sd_map}

    def save_prepared(self, path: str | Path) -> None:
        self._require_map().save(path)

    def load_prepared(self, path: str | Path, device: torch.device | str | None = None) -> None:
        from ..ot.semidiscrete import SemiDiscreteMap

        self.set_map(SemiDiscreteMap.load(path, device=device))

    def _require_map(self) -> "SemiDiscreteMap":
        if self.map is None:
            raise ValueError(
                "semidiscrete_ot is not fitted: call coupling.prepare(source, target, generator) "
                "(or monge.couplings.prepare_coupling) before training, or load_prepared(path)"
            )
        return self.map

    def map_on(self, device: torch.device) -> "SemiDiscreteMap":
        """The fitted map with its targets on ``device`` (copied once and kept)."""
        from ..ot.semidiscrete import SemiDiscreteMap

        m = self._require_map()
        if device not in self._on_device:
            self._on_device[device] = SemiDiscreteMap(
                m.targets.to(device), m.heights.to(device), m.weights.to(device), m.max_block_elements, m.epsilon
            )
        return self._on_device[device]

    def cells(self, x0: Tensor) -> Tensor:
        """Cell index ``(B,)`` of each noise."""
        return self.map_on(x0.device)(x0)[0]

    def solve(self, x0: Tensor, x1: Tensor) -> Tensor:
        """Cell index ``(B,)`` of each noise: one chunked max-inner-product search."""
        m = self.map_on(x0.device)
        self._check_shape(x1, m)
        return m(x0)[0]

    @staticmethod
    def _check_shape(x1: Tensor, m: "SemiDiscreteMap") -> None:
        if tuple(x1.shape[1:]) != m.shape:
            raise ValueError(f"x1 has sample shape {tuple(x1.shape[1:])} but the map's targets have {m.shape}")

    def pair_solved(self, x0: Tensor, x1: Tensor, solution: Tensor, generator: torch.Generator | None) -> Coupled:
        return Coupled(x0, self.map_on(x0.device).targets[solution].to(dtype=x0.dtype), plan_entropy=0.0)

    def pair(self, x0: Tensor, x1: Tensor, generator: torch.Generator | None) -> Coupled:
        if self.epsilon == 0:
            return super().pair(x0, x1, generator)
        m = self.map_on(x0.device)
        self._check_shape(x1, m)
        _, y = m.sample_cells(x0, self.epsilon, generator)
        return Coupled(x0, y.to(dtype=x0.dtype))


def ot_source(source: "DataSource", device: torch.device | str | None = None) -> "Source":
    """The run's source as :mod:`monge.ot.semidiscrete` takes it: ``"gaussian"`` for a standard
    Gaussian source (the built-in sampler), else ``(n, generator) -> (n, *shape)`` drawing on ``device``."""
    from ..data.sources import GaussianSource

    if isinstance(source, GaussianSource):
        return "gaussian"

    def draw(n: int, generator: torch.Generator | None) -> Tensor:
        return source.sample(n, generator=generator, device=device)

    return draw


def _rows_of(rows: Tensor, data: Tensor) -> bool:
    """Whether every row of ``rows`` is a row of ``data`` (exact bytes), in O((n + N) d)."""
    import numpy as np

    def keys(x: Tensor) -> np.ndarray:
        a = np.ascontiguousarray(x.detach().reshape(x.shape[0], -1).to("cpu", torch.float32).numpy())
        return a.view(np.dtype((np.void, a.dtype.itemsize * a.shape[1]))).ravel()

    if rows.shape[0] == data.shape[0] and torch.equal(rows.to(data.device, data.dtype), data):
        return True
    return bool(np.isin(keys(rows), keys(data)).all())


def load_run_map(run_dir: str | Path, device: torch.device | str | None = None) -> "SemiDiscreteMap | None":
    """The semi-discrete map cached in ``run_dir`` (``None`` when the run has none)."""
    from ..ot.semidiscrete import SemiDiscreteMap

    file = Path(run_dir) / MAP_FILE
    return SemiDiscreteMap.load(file, device=device) if file.is_file() else None


def fit_or_load_map(
    source: "DataSource",
    target: "DataSource",
    run_dir: str | Path | None = None,
    params: dict | None = None,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    refit: bool = False,
) -> "SemiDiscreteMap":
    """The one owner of a run's semi-discrete map: loaded from ``run_dir / MAP_FILE`` when cached
    (and checked against the data, :meth:`SemiDiscreteOT.check_prepared`), else (or with
    ``refit``) fitted from ``source`` onto ``target`` with the :class:`SemiDiscreteOT` parameters
    ``params`` and cached there, atomically (nothing is cached when ``run_dir`` is ``None``).

    Training (:meth:`monge.train.Trainer.prepare`, through :func:`prepare_coupling`), sampling and
    evaluation (:func:`monge.generate.semidiscrete_map`) and the demos all get the map here.
    """
    coupling = SemiDiscreteOT(**(params or {}))
    if run_dir is None:
        coupling.prepare(source, target, generator, device=device)
    else:
        prepare_coupling(coupling, source, target, run_dir, generator, device=device, refit=refit)
    return coupling._require_map()
