"""The semi-discrete OT couplings: what they share (:class:`SemiDiscreteCoupling`) and the
single-map coupling (DPM-OT); the per-class one is :mod:`.conditional_semidiscrete`, the files
of their maps :mod:`.maps`."""

from __future__ import annotations

import hashlib
import inspect
import json
import warnings
from dataclasses import asdict, fields, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .._validation import check_positive_int
from ..ot.semidiscrete import SemiDiscreteMap, SemiDiscreteResult, SemiDiscreteSolver
from .base import COUPLINGS, Coupled, Coupling, SolverCoupling, Traits, gen_device
from .maps import MAP_FILE, FitStates

if TYPE_CHECKING:  # pragma: no cover
    from ..data.sources import DataSource
    from ..ot.semidiscrete import Source

__all__ = ["SAMPLER_TARGETS", "SemiDiscreteCoupling", "SemiDiscreteOT", "ot_source"]

#: Targets drawn from a data *sampler* (no finite data set), unless ``n_targets`` says otherwise.
SAMPLER_TARGETS = 4096
#: The couplings' own defaults of :class:`~monge.ot.semidiscrete.SemiDiscreteSolver` settings:
#: a step cap that lets a few thousand 2D targets converge (``bench/results/semidiscrete.md``).
COUPLING_DEFAULTS = {"max_iter": 10_000}


class SemiDiscreteCoupling(Coupling):
    """What the semi-discrete couplings share: the settings of their fits (a
    :class:`~monge.ot.semidiscrete.SemiDiscreteSolver`, built from the constructor's keywords),
    the fit of one map (warned when it stops before ``tol``), maps copied once per device, and
    the pairing of noise with the cells of a map. A subclass defines ``pair``, ``prepare`` and its
    prepared state: ``to_bytes``, ``load_bytes`` and ``check_prepared`` (read and written by
    :func:`monge.couplings.maps.prepare_coupling`).

    Parameters
    ----------
    n_targets : int, optional
        Number of target points; default ``None``: the whole finite data set, or
        :data:`SAMPLER_TARGETS` points of a sampler.
    progress : bool, optional
        Progress bar of the fit (default: when stderr is a terminal).
    **settings
        Any :class:`~monge.ot.semidiscrete.SemiDiscreteSolver` setting (``epsilon``: entropic
        regularisation of the map and of the pairing, 0 for hard cells; ``tol``, ``max_iter``,
        ``max_time``, ``optimizer``, ``lr``, ``batch_size``, ...), with :data:`COUPLING_DEFAULTS`.
    """

    def __init__(self, n_targets: int | None = None, *, progress: bool | None = None, **settings: Any) -> None:
        self.n_targets = None if n_targets is None else check_positive_int(n_targets, "n_targets", 2**24)
        self.progress = None if progress is None else bool(progress)
        self.solver = SemiDiscreteSolver(**{**COUPLING_DEFAULTS, **settings})
        #: what the last fit reached (targets, steps, errors, converged, ...)
        self.fit_info: dict[str, object] = {}
        self._copies: dict[object, SemiDiscreteMap] = {}

    @property
    def epsilon(self) -> float:
        return self.solver.epsilon

    def fingerprint(self, source: DataSource, target: DataSource) -> str:
        """SHA-256 (hex) of what the maps are fitted from: the fit's settings that shape them,
        ``n_targets``, and both sides' definitions (:func:`definition_digest`)."""
        settings = {k: v for k, v in asdict(self.solver).items() if k not in _RESULT_FREE_SETTINGS}
        h = hashlib.sha256(json.dumps([type(self).__name__, settings, self.n_targets], sort_keys=True,
                                      default=repr).encode())
        for side in (source, target):
            h.update(definition_digest(side).encode())
        return h.hexdigest()

    def _fit(self, y: Tensor, source: DataSource, generator: torch.Generator | None,
             fit_states: FitStates | None, key: str | None, what: str) -> tuple[SemiDiscreteResult, SemiDiscreteMap]:
        """Fit one map onto ``y`` (resuming from and checkpointing to ``fit_states[key]``): the result and its map."""
        res = self.solver(
            y, generator, source=ot_source(source, y.device), progress=self.progress,
            init=fit_states.load(key) if fit_states is not None else None,
            checkpoint=fit_states.saver(key) if fit_states is not None else None,
        )
        if not res.converged:
            err = res.error
            warnings.warn(
                f"{what} stopped ({res.reason}) after {res.n_iter} steps at an RMS relative cell-mass error of "
                f"{res.rms_error:.3f} (tol {self.solver.tol}), {err.empty} of {y.shape[0] - res.duplicates} cells "
                f"empty on {err.n_samples} fresh source draws{_merged(res.duplicates)}: the cells' masses are unequal, "
                "so the pairs over-weight some "
                "training points and miss others. Raise max_iter or max_time, or set epsilon > 0",
                RuntimeWarning, stacklevel=3,
            )
        if res.map is None:  # only a sharded fit that does not gather its map returns none
            raise RuntimeError(f"{what} returned no map")
        return res, res.map

    def _copy_on(self, key: object, sd_map: SemiDiscreteMap, device: torch.device) -> SemiDiscreteMap:
        """``sd_map`` on ``device``, copied once and kept under ``(key, device)``."""
        if (key, device) not in self._copies:
            self._copies[(key, device)] = sd_map.on(device)
        return self._copies[(key, device)]

    def _targets_of(self, sd_map: SemiDiscreteMap, x0: Tensor, generator: torch.Generator | None) -> Tensor:
        """The target of each noise: its hard cell's (``epsilon = 0``) or one drawn from the
        entropic cell probabilities with ``generator``."""
        if self.epsilon == 0:
            return sd_map(x0)[1]
        return sd_map.sample_cells(x0, self.epsilon, generator)[1]


def _merged(duplicates: int) -> str:
    return f" ({duplicates} repeated targets share their first copy's cell)" if duplicates else ""


def _with_settings_signature(cls: type) -> type:
    """Show the settings in ``cls.__init__``'s signature (help, and the registry's errors)."""
    base = inspect.signature(SemiDiscreteCoupling.__init__)
    defaults = {**{f.name: f.default for f in fields(SemiDiscreteSolver)}, **COUPLING_DEFAULTS}
    settings = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=value)
                for name, value in defaults.items()]
    params = [p for p in base.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
    # the help text reads the signature of the class's own __init__ (a plain function here)
    cls.__init__.__signature__ = base.replace(parameters=params + settings)  # type: ignore[misc]  # a function attr
    return cls


@COUPLINGS.register("semidiscrete_ot")
@_with_settings_signature
class SemiDiscreteOT(SemiDiscreteCoupling, SolverCoupling):
    r"""Semi-discrete OT coupling: global OT from the whole noise space onto the training set
    (DPM-OT, Li et al. 2023; semi-discrete flow matching, Mousavi-Hosseini et al. 2025).

    Before training, :meth:`prepare` fits once the semi-discrete OT map from the source
    :math:`\mu` onto the :math:`N` training points :math:`y_1..y_N`
    (:class:`~monge.ot.semidiscrete.SemiDiscreteSolver`), with scores
    :math:`s_i(x) = \langle x, y_i \rangle + h_i` and cells of mass :math:`\nu_i = 1/N`. At train
    time each noise :math:`x_0` is paired with a training point chosen by its scores among *all*
    :math:`N` points, so the pairing is a sample of one global OT plan, not of a minibatch plan:

    * ``epsilon = 0``: the hard cell :math:`T(x_0) = y_{\arg\max_i s_i(x_0)}` (DPM-OT's map), one
      chunked max-inner-product search per batch, random-free (it may run in the pairing workers);
    * ``epsilon > 0``: a draw from the entropic cell probabilities
      :math:`p_i(x_0) = \mathrm{softmax}_i(s_i(x_0)/\varepsilon)` (SD-FM), chunked, from the
      step's generator.

    The drawn data batch ``x1`` is not used (only its shape is checked). The map is cached in the
    run directory as ``semidiscrete.safetensors`` (:func:`monge.couplings.maps.prepare_coupling`),
    checked against the data when loaded, and gives the expressway start at sampling time
    (:mod:`monge.samplers.expressway`). While it is fitted, the fit's state is checkpointed in
    ``semidiscrete_fit.safetensors``, so an interrupted fit resumes where it stopped.

    Targets: a finite data set (anything with a ``data`` tensor: digits, image folders, arrays)
    gives **every** point, or a random subset of ``n_targets`` drawn with the generator; a data
    sampler (toy 2D sets) gives a fixed sample of ``n_targets`` points (default
    :data:`SAMPLER_TARGETS`). Encoder latents are used by giving a data source of latents. The map
    goes from the run's source (a ``gaussian`` source uses the built-in normal sampler).

    Parameters: ``n_targets``, ``progress`` and the fit's settings, as
    :class:`SemiDiscreteCoupling`. The fit always returns; when it stopped before ``tol`` it warns
    with the error it reached.
    """

    #: With ``epsilon = 0`` the hard-cell search depends on the noise alone and its ``addmm``
    #: blocks release the GIL, so it may run in the pairing workers (an instance with
    #: ``epsilon > 0``, whose draws use the step's generator, says ``threaded_solve=False``).
    traits = Traits(keeps_data=False, threaded_solve=True, prepared_file=MAP_FILE,
                    unthreaded_reason="with epsilon > 0 its pairing draws cells with the step's generator; "
                                      "use epsilon: 0")

    def __init__(self, n_targets: int | None = None, *, progress: bool | None = None, **settings: object) -> None:
        super().__init__(n_targets, progress=progress, **settings)
        if self.epsilon > 0:
            self.traits = replace(type(self).traits, threaded_solve=False)
        self.map: SemiDiscreteMap | None = None

    def targets_from(self, target: DataSource, generator: torch.Generator | None = None) -> Tensor:
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
        source: DataSource,
        target: DataSource,
        generator: torch.Generator | None = None,
        *,
        device: torch.device | str | None = None,
        fit_states: FitStates | None = None,
    ) -> None:
        """Fit the semi-discrete map from ``source`` onto the targets of ``target`` (resuming
        from and checkpointing to ``fit_states``, when given)."""
        y = _floating(self.targets_from(target, generator), device)
        res, fitted = self._fit(y, source, generator, fit_states, None, "semidiscrete_ot: the fit")
        err = res.error
        self.fit_info = {"n_targets": int(y.shape[0]), "n_iter": res.n_iter, "rms_error": res.rms_error,
                         "mean_error": res.mean_error, "max_error": res.max_error, "empty_cells": err.empty,
                         "eval_samples": err.n_samples, "converged": res.converged, "reason": res.reason,
                         "duplicates": res.duplicates}
        fitted.fingerprint = self.fingerprint(source, target)
        self.set_map(fitted)

    def n_targets_of(self, target: DataSource) -> int:
        """How many targets the map of ``target`` has (see :meth:`targets_from`), without drawing them."""
        data = getattr(target, "data", None)
        if torch.is_tensor(data) and data.dim() >= 2:
            return data.shape[0] if self.n_targets is None else min(self.n_targets, data.shape[0])
        return self.n_targets or SAMPLER_TARGETS

    def check_prepared(self, source: DataSource, target: DataSource) -> None:
        """Refuse a cached map whose targets no longer match ``target``: a different sample shape
        or number of targets, targets that are not its points (a finite data set), or another
        :meth:`fingerprint` (data content, target or source definition, settings)."""
        m = self.fitted_map()
        data = getattr(target, "data", None)
        refit = (f"fit it again with `monge fit-ot RUN --refit` (or the recipe with --refit), or delete {MAP_FILE} "
                 "in the run directory")
        want = self.n_targets_of(target)
        if torch.is_tensor(data) and data.dim() >= 2:
            shape = tuple(data.shape[1:])
        else:
            shape = tuple(getattr(target, "shape", m.shape))
        if m.shape != shape or m.n_targets != want:
            raise ValueError(
                f"the cached semi-discrete map has {m.n_targets} targets of shape {m.shape}, but the data "
                f"gives {want} of shape {shape}; {refit}"
            )
        if torch.is_tensor(data) and data.dim() >= 2 and not _rows_of(m.targets, data):
            raise ValueError(f"the cached semi-discrete map's targets are not points of the data set; {refit}")
        if m.fingerprint and m.fingerprint != self.fingerprint(source, target):
            raise ValueError("the cached semi-discrete map was fitted from other data, another target or source "
                             f"definition, or other fit settings; {refit}")

    def set_map(self, sd_map: SemiDiscreteMap) -> None:
        """Use an already fitted :class:`~monge.ot.SemiDiscreteMap`."""
        self.map = sd_map
        self._copies = {(None, sd_map.flat.device): sd_map}

    def to_bytes(self) -> bytes:
        """The fitted map as bytes (:meth:`~monge.ot.SemiDiscreteMap.to_bytes`)."""
        return self.fitted_map().to_bytes()

    def load_bytes(self, raw: bytes, *, device: torch.device | str | None = None, origin: str = "the data") -> None:
        """Use the map in ``raw`` (made by :meth:`to_bytes`)."""
        self.set_map(SemiDiscreteMap.from_bytes(raw, device=device, origin=origin))

    def fitted_map(self) -> SemiDiscreteMap:
        """The fitted map; ``ValueError`` before :meth:`prepare` or :meth:`set_map`."""
        if self.map is None:
            raise ValueError(
                "semidiscrete_ot is not fitted: call coupling.prepare(source, target, generator) "
                "(or monge.couplings.prepare_coupling) before training, or set_map(map)"
            )
        return self.map

    def map_on(self, device: torch.device) -> SemiDiscreteMap:
        """The fitted map with its targets on ``device`` (copied once and kept)."""
        return self._copy_on(None, self.fitted_map(), device)

    def cells(self, x0: Tensor) -> Tensor:
        """Cell index ``(B,)`` of each noise."""
        return self.map_on(x0.device)(x0)[0]

    def solve(self, x0: Tensor, x1: Tensor) -> Tensor:
        """Cell index ``(B,)`` of each noise: one chunked max-inner-product search."""
        m = self.map_on(x0.device)
        _check_shape(x1, m)
        return m(x0)[0]

    def pair_solved(self, x0: Tensor, x1: Tensor, solution: Tensor, generator: torch.Generator | None) -> Coupled:
        return Coupled(x0, self.map_on(x0.device).targets[solution].to(dtype=x0.dtype), plan_entropy=0.0)

    def pair(self, x0: Tensor, x1: Tensor, generator: torch.Generator | None) -> Coupled:
        if self.epsilon == 0:
            return super().pair(x0, x1, generator)
        m = self.map_on(x0.device)
        _check_shape(x1, m)
        return Coupled(x0, self._targets_of(m, x0, generator).to(dtype=x0.dtype))


def _floating(y: Tensor, device: torch.device | str | None) -> Tensor:
    """Targets on ``device`` in at least float32."""
    if device is not None:
        y = y.to(device)
    return y.float() if not y.is_floating_point() or y.dtype in (torch.float16, torch.bfloat16) else y


def _check_shape(x1: Tensor, m: SemiDiscreteMap) -> None:
    if tuple(x1.shape[1:]) != m.shape:
        raise ValueError(f"x1 has sample shape {tuple(x1.shape[1:])} but the map's targets have {m.shape}")


def ot_source(source: DataSource, device: torch.device | str = "cpu") -> Source:
    """The run's source as :mod:`monge.ot.semidiscrete` takes it: ``"gaussian"`` for a standard
    Gaussian source (the built-in sampler), else ``(n, generator) -> (n, *shape)`` drawing on ``device``."""
    from ..data.sources import GaussianSource

    if isinstance(source, GaussianSource):
        return "gaussian"

    def draw(n: int, generator: torch.Generator | None) -> Tensor:
        return source.sample(n, generator=generator, device=device)

    return draw


#: Settings of a fit that do not change the map it returns (how often it saves, its memory blocks).
_RESULT_FREE_SETTINGS = ("checkpoint_every", "max_block_elements")
#: Draws (and their seed) that stand for a data sampler's definition in :func:`definition_digest`.
_PROBE_DRAWS, _PROBE_SEED = 256, 0x5D0


def definition_digest(data: DataSource) -> str:
    """SHA-256 (hex) of what a data source is: a finite data set's points and labels (every byte),
    else a sampler's sample shape and first :data:`_PROBE_DRAWS` draws from a fixed seed (another target
    distribution, or other parameters of it, draws other points)."""
    points = getattr(data, "data", None)
    if not torch.is_tensor(points):
        points = data.sample(_PROBE_DRAWS, generator=torch.Generator().manual_seed(_PROBE_SEED))
    h = hashlib.sha256(f"{type(data).__name__}{tuple(getattr(data, 'shape', ()))}{points.dtype}".encode())
    labels = getattr(data, "labels", None)
    for t in (points, labels) if torch.is_tensor(labels) else (points,):
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _rows_of(rows: Tensor, data: Tensor) -> bool:
    """Whether every row of ``rows`` is a row of ``data`` (exact bytes), in O((n + N) d)."""
    import numpy as np

    def keys(x: Tensor) -> np.ndarray:
        a = np.ascontiguousarray(x.detach().reshape(x.shape[0], -1).to("cpu", torch.float32).numpy())
        return a.view(np.dtype((np.void, a.dtype.itemsize * a.shape[1]))).ravel()

    if rows.shape[0] == data.shape[0] and torch.equal(rows.to(data.device, data.dtype), data):
        return True
    return bool(np.isin(keys(rows), keys(data)).all())
