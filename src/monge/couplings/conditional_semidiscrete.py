r"""Per-class semi-discrete OT (DPM-OT's global map, one per class): OT that respects the class."""

from __future__ import annotations

import json
import math
import warnings
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..ot.semidiscrete import SemiDiscreteMap
from .base import COUPLINGS, Coupled, Traits, gen_device
from .maps import CLASS_MAPS_FILE, FitStates
from .semidiscrete import SAMPLER_TARGETS, SemiDiscreteCoupling, _floating, _with_settings_signature

if TYPE_CHECKING:  # pragma: no cover
    from ..data.sources import DataSource

__all__ = ["ConditionalSemiDiscreteOT", "class_maps_to_bytes", "class_maps_from_bytes"]

_FORMAT = "monge.semidiscrete_classes"
_VERSION = "1"


@COUPLINGS.register("conditional_semidiscrete_ot")
@_with_settings_signature
class ConditionalSemiDiscreteOT(SemiDiscreteCoupling):
    r"""One semi-discrete OT map per class: noise is paired with a training point of its data
    point's class, chosen by that class's global OT map (DPM-OT per class; C2OT's condition rule).

    :meth:`prepare` splits the targets by class and fits, for each class :math:`k` with targets
    :math:`y^k_1..y^k_{N_k}`, the semi-discrete map from the source :math:`\mu` onto them
    (:class:`~monge.ot.semidiscrete.SemiDiscreteSolver`, cells of mass :math:`1/N_k`). On each step,
    data point :math:`j` of class :math:`c_j` keeps its class and its noise :math:`x_0^j` and gets
    the target

    .. math:: T_{c_j}(x_0^j) = y^{c_j}_{\arg\max_i \langle x_0^j, y^{c_j}_i\rangle + h^{c_j}_i}

    (``epsilon > 0``: a draw from that class's entropic cell probabilities). Pairs never cross
    classes; the noise stays fresh :math:`\mathcal N(0, I)` and, within class :math:`k`, the
    targets are uniform over the class's points; the classes keep the frequencies of the drawn
    batch. Labels stay aligned with the batch (``index1`` is ``None``), so a class-conditional model
    trains on them (with label dropout).

    Targets: a finite data set with per-point ``labels`` (digits, image folders with class
    sub-folders, labelled arrays) gives every point (or ``n_targets`` of them); a labelled
    sampler (``conditional_toy``, ``8gaussians``, ``25gaussians``) gives ``n_targets`` draws
    (default :data:`~monge.couplings.semidiscrete.SAMPLER_TARGETS`) with their classes. A class with
    a single target maps all its noise there (warned); a batch label of a class without targets
    raises. The maps are cached in the run directory as ``semidiscrete_classes.safetensors``;
    each class's fit checkpoints its state while it runs.

    Parameters: as :class:`~monge.couplings.semidiscrete.SemiDiscreteCoupling` (the settings apply
    to each class's fit).
    """

    traits = Traits(uses_labels=True, keeps_data=True,  # the pairs' labels are the batch's, row for row
                    unthreaded_reason="its pairing needs the batch's labels", prepared_file=CLASS_MAPS_FILE)

    def __init__(self, n_targets: int | None = None, *, progress: bool | None = None, **settings: object) -> None:
        super().__init__(n_targets, progress=progress, **settings)
        #: class index -> its fitted map
        self.maps: dict[int, SemiDiscreteMap] = {}

    # -- targets and fit -------------------------------------------------------------
    def labelled_targets(self, target: DataSource, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``(N, *shape)`` targets and their ``(N,)`` classes taken from ``target``."""
        data, labels = getattr(target, "data", None), getattr(target, "labels", None)
        if torch.is_tensor(data) and data.dim() >= 2 and torch.is_tensor(labels) and labels.shape == (data.shape[0],):
            n = data.shape[0]
            if self.n_targets is None or self.n_targets >= n:
                return data, labels.long()
            dev = gen_device(generator, torch.device("cpu"))
            idx = torch.randperm(n, generator=generator, device=dev)[: self.n_targets].to(data.device)
            return data[idx], labels[idx.to(labels.device)].long()
        if not hasattr(target, "sample_with_labels") or getattr(target, "labels", None) is None:
            raise ValueError(
                f"conditional_semidiscrete_ot fits one map per class, but the data {target!r} has no class labels; "
                "use a labelled data set (conditional_toy, 8gaussians, 25gaussians, digits, image folders with class "
                "sub-folders) or semidiscrete_ot")
        x, y = target.sample_with_labels(self.n_targets or SAMPLER_TARGETS, generator=generator)
        return x, y.long()

    def prepare(
        self,
        source: DataSource,
        target: DataSource,
        generator: torch.Generator | None = None,
        *,
        device: torch.device | str | None = None,
        fit_states: FitStates | None = None,
    ) -> None:
        """Fit one semi-discrete map per class from ``source`` onto that class's targets
        (each resuming from and checkpointing to ``fit_states["class<k>"]``, when given)."""
        y, c = self.labelled_targets(target, generator)
        y = _floating(y, device)
        c = c.to(y.device)
        maps: dict[int, SemiDiscreteMap] = {}
        classes: dict[int, dict[str, object]] = {}
        self.fit_info = {"n_targets": int(y.shape[0]), "classes": classes}
        for k in torch.unique(c).tolist():
            yk = y[c == k]
            if yk.shape[0] == 1:
                warnings.warn(f"conditional_semidiscrete_ot: class {k} has a single target point: all its noise is "
                              "paired with it (raise n_targets to give it more)", RuntimeWarning, stacklevel=2)
                maps[k] = SemiDiscreteMap(yk, torch.zeros(1, dtype=yk.dtype, device=yk.device), epsilon=self.epsilon)
                continue
            res, maps[k] = self._fit(yk, source, generator, fit_states, f"class{k}",
                                     f"conditional_semidiscrete_ot: the fit of class {k}")
            classes[k] = {"n_targets": int(yk.shape[0]), "n_iter": res.n_iter, "rms_error": res.rms_error,
                          "converged": res.converged}
        fingerprint = self.fingerprint(source, target)
        for m in maps.values():
            m.fingerprint = fingerprint
        self.set_maps(maps)

    def set_maps(self, maps: dict[int, SemiDiscreteMap]) -> None:
        """Use already fitted per-class maps ``{class: map}``."""
        if not maps:
            raise ValueError("conditional_semidiscrete_ot needs at least one class map")
        self.maps = dict(sorted(maps.items()))
        self._copies = {}

    def fitted_maps(self) -> dict[int, SemiDiscreteMap]:
        """The per-class maps; ``ValueError`` before :meth:`prepare` or :meth:`set_maps`."""
        if not self.maps:
            raise ValueError(
                "conditional_semidiscrete_ot is not fitted: call coupling.prepare(source, target, generator) "
                "(or monge.couplings.prepare_coupling) before training, or set_maps(maps)")
        return self.maps

    def check_prepared(self, source: DataSource, target: DataSource) -> None:
        """Refuse cached maps whose classes or point shape no longer match ``target``."""
        maps = self.fitted_maps()
        shape = tuple(getattr(target, "shape", ()))
        refit = f"delete {CLASS_MAPS_FILE} in the run directory to fit the maps again"
        got = next(iter(maps.values())).shape
        if shape and got != shape:
            raise ValueError(f"the cached per-class maps have targets of shape {got}, the data {shape}; {refit}")
        labels = getattr(target, "labels", None)
        if torch.is_tensor(labels) and labels.numel():
            want = set(torch.unique(labels).tolist())
            if not set(maps) <= want or (self.n_targets is None and set(maps) != want):
                raise ValueError(f"the cached per-class maps cover classes {sorted(maps)}, the data has "
                                 f"{sorted(want)}; {refit}")
        stored = next(iter(maps.values())).fingerprint
        if stored and stored != self.fingerprint(source, target):
            raise ValueError("the cached per-class maps were fitted from other data or labels, another source, or "
                             f"other fit settings; {refit}")

    # -- prepared state ----------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The per-class maps as bytes (:func:`class_maps_to_bytes`)."""
        return class_maps_to_bytes(self.fitted_maps())

    def load_bytes(self, raw: bytes, *, device: torch.device | str | None = None, origin: str = "the data") -> None:
        """Use the per-class maps in ``raw`` (made by :meth:`to_bytes`)."""
        self.set_maps(class_maps_from_bytes(raw, device=device, origin=origin))

    # -- pairing -------------------------------------------------------------------------
    def class_map(self, k: int, device: torch.device) -> SemiDiscreteMap:
        """Class ``k``'s map with its targets on ``device`` (copied once and kept)."""
        maps = self.fitted_maps()
        if k not in maps:
            raise ValueError(f"conditional_semidiscrete_ot: class {k} of the batch has no fitted map (the maps cover "
                             f"classes {sorted(maps)}); fit the maps on targets that hold every class")
        return self._copy_on(k, maps[k], device)

    def pair(self, x0: Tensor, x1: Tensor, generator: torch.Generator | None, labels: Tensor | None = None) -> Coupled:
        if labels is None:
            raise ValueError(
                "conditional_semidiscrete_ot needs the data's labels: call coupling(x0, x1, generator, labels=y); in "
                "training, use a labelled data.target with a class-conditional model (model.num_classes)")
        y = torch.as_tensor(labels)
        b = x0.shape[0]
        if x1.shape[0] != b:
            raise ValueError(f"conditional_semidiscrete_ot needs equal batch sizes, got x0: {b} and x1: {x1.shape[0]}")
        if y.is_floating_point() or y.is_complex() or y.shape != (b,):
            raise ValueError(f"conditional_semidiscrete_ot needs ({b},) integer class labels, got {y.dtype} "
                             f"{tuple(y.shape)}")
        y = y.to(x0.device)
        out = torch.empty_like(x0)
        for k in torch.unique(y).tolist():
            rows = (y == k).nonzero().squeeze(1)
            m = self.class_map(int(k), x0.device)
            if tuple(x1.shape[1:]) != m.shape:
                raise ValueError(f"x1 has sample shape {tuple(x1.shape[1:])} but the maps' targets have {m.shape}")
            out[rows] = self._targets_of(m, x0[rows], generator).to(x0.dtype)
        return Coupled(x0, out, plan_entropy=0.0 if self.epsilon == 0 else None)


def class_maps_to_bytes(maps: dict[int, SemiDiscreteMap]) -> bytes:
    """One ``.safetensors`` blob: the classes' targets, heights and weights end to end, and
    ``classes`` (the class of each target)."""
    from safetensors.torch import save as st_save

    first = next(iter(maps.values()))
    tensors = {
        "targets": torch.cat([m.flat.detach().cpu() for m in maps.values()]).contiguous(),
        "heights": torch.cat([m.heights.detach().cpu() for m in maps.values()]).contiguous(),
        "weights": torch.cat([m.weights.detach().cpu() for m in maps.values()]).contiguous(),
        "classes": torch.cat([torch.full((m.n_targets,), k, dtype=torch.int64) for k, m in maps.items()]),
    }
    meta = {"format": _FORMAT, "version": _VERSION, "shape": json.dumps(list(first.shape)),
            "epsilon": repr(first.epsilon)}
    if first.fingerprint:
        meta["fingerprint"] = first.fingerprint
    return st_save(tensors, metadata=meta)


def class_maps_from_bytes(raw: bytes, device: torch.device | str | None = None,
                          origin: str = "the data") -> dict[int, SemiDiscreteMap]:
    """Read maps made by :func:`class_maps_to_bytes`; checks format and shapes, never executes code."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    try:
        tensors = st_load(raw)
        meta = json.loads(raw[8: 8 + int.from_bytes(raw[:8], "little")]).get("__metadata__", {}) or {}
        shape = tuple(int(s) for s in json.loads(meta.get("shape", "null")))
        eps = float(meta.get("epsilon", "0.0"))
    except (SafetensorError, ValueError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{origin} is not a readable per-class semi-discrete map file: {exc}") from exc
    if meta.get("format") != _FORMAT or meta.get("version") != _VERSION:
        raise ValueError(f"{origin} is not a per-class semi-discrete map file (format {meta.get('format')!r})")
    t, h, w, c = (tensors.get(k) for k in ("targets", "heights", "weights", "classes"))
    if t is None or h is None or w is None or c is None or t.dim() != 2 or math.prod(shape) != t.shape[1] \
            or {tuple(h.shape), tuple(w.shape), tuple(c.shape)} != {(t.shape[0],)}:
        raise ValueError(f"{origin} has missing tensors or inconsistent shapes")
    maps = {}
    for k in torch.unique(c).tolist():
        rows = c == k
        tk = t[rows].reshape(-1, *shape)
        hk, wk = h[rows], w[rows]
        if device is not None:
            tk, hk, wk = tk.to(device), hk.to(device), wk.to(device)
        maps[int(k)] = SemiDiscreteMap(tk, hk, wk / wk.sum(), epsilon=eps)
        maps[int(k)].fingerprint = str(meta.get("fingerprint", ""))
    return maps
