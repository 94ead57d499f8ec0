"""Data sources: anything that draws ``(n, *shape)`` samples from an explicit generator.

A run's source (t=0) and target (t=1) are both data sources, so ``gaussian -> moons`` and
``8gaussians -> moons`` are configured the same way.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .._validation import MAX_SAMPLES_PER_CALL, check_positive_int
from ..registry import Registry

__all__ = ["DATA_SOURCES", "DataSource", "GaussianSource", "ToySource", "build_source", "build_data", "data_paths",
           "moved_data_hint"]

DATA_SOURCES: Registry[DataSource] = Registry("data source")


class DataSource:
    """Base class. ``shape`` is the shape of one sample."""

    shape: tuple[int, ...]

    def sample(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> Tensor:
        raise NotImplementedError

    def modes(self) -> tuple[Tensor, float] | None:
        """Mode centres ``(K, *shape)`` and their std, for mode-coverage metrics; ``None`` if not a mixture."""
        return None

    def log_prob(self, x: Tensor) -> Tensor:
        """Closed-form log-density ``(batch,)`` of samples ``x`` ``(batch, *shape)``, for sources of
        likelihood evaluation; raises ``ValueError`` when the source has none."""
        raise ValueError(f"{self!r} has no closed-form log-density; likelihoods need a source that has one "
                         "(gaussian, 8gaussians, 25gaussians)")


class FiniteRows(DataSource):
    """A finite set of rows ``data`` ``(N, *shape)`` with optional integer ``labels`` ``(N,)``,
    drawn uniformly with replacement. Subclasses set ``data``, ``labels``, ``name`` and
    ``labels_hint`` (how to get labels, for the error of :meth:`sample_with_labels`)."""

    data: Tensor
    labels: Tensor | None
    name: str
    labels_hint: str = "load it with labels or use sample()"

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def _indices(self, n: int, generator: torch.Generator | None) -> Tensor:
        check_positive_int(n, "n", MAX_SAMPLES_PER_CALL)
        dev = generator.device if generator is not None else torch.device("cpu")
        return torch.randint(len(self), (n,), generator=generator, device=dev).cpu()

    def sample(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> Tensor:
        """``n`` rows drawn uniformly with replacement, using ``generator``."""
        return self.data[self._indices(n, generator)].to(device)

    def sample_with_labels(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> tuple[Tensor, Tensor]:
        """Like :meth:`sample`, also returning the ``(n,)`` labels of the drawn rows."""
        if self.labels is None:
            raise ValueError(f"data set {self.name!r} has no labels; {self.labels_hint}")
        idx = self._indices(n, generator)
        return self.data[idx].to(device), self.labels[idx].to(device)


@dataclass
class ToySource(DataSource):
    """One of the 2D sets of :mod:`monge.data.toy`."""

    name: str
    shape: tuple[int, ...] = (2,)

    def sample(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> Tensor:
        from .toy import sample_toy

        return sample_toy(self.name, n, generator=generator).to(device)

    def modes(self) -> tuple[Tensor, float] | None:
        from .toy import toy_modes

        return toy_modes(self.name)

    @property
    def labels(self) -> Tensor | None:
        """The classes of a mixture set (its mode indices ``0..K-1``), else ``None``."""
        modes = self.modes()
        return None if modes is None else torch.arange(modes[0].shape[0])

    @property
    def num_classes(self) -> int | None:
        labels = self.labels
        return None if labels is None else int(labels.numel())

    def sample_with_labels(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> tuple[Tensor, Tensor]:
        """Points and their mode index (``8gaussians``, ``25gaussians``): the same points as
        :meth:`sample` with the same generator."""
        from .toy import sample_toy_with_labels

        return sample_toy_with_labels(self.name, n, generator=generator, device=device)

    def log_prob(self, x: Tensor) -> Tensor:
        """Closed form for ``gaussian`` and the Gaussian mixtures ``8gaussians``, ``25gaussians``."""
        if self.name == "gaussian":
            return _standard_normal_log_prob(x)
        modes = self.modes()
        if modes is None:
            return super().log_prob(x)
        from .gmm import GaussianMixture

        centres, std = modes
        return GaussianMixture(centres.to(torch.float64), float(std)).log_prob(x)


class GaussianSource(DataSource):
    r"""The standard normal :math:`\mathcal N(0, I)` with sample shape ``shape``.

    ``shape=None`` (the default in recipes) takes the target's shape in :func:`build_data`, so
    ``gaussian -> digits`` draws ``(1, 16, 16)`` noise; alone it is 2D.
    """

    def __init__(self, shape: int | list[int] | tuple[int, ...] | None = None) -> None:
        if shape is None:
            self.shape: tuple[int, ...] = (2,)
            self.shape_given = False
            return
        dims = (shape,) if isinstance(shape, int) else tuple(shape)
        if not dims or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims) or len(dims) > 8:
            raise ValueError(f"gaussian: shape must be a positive integer or a list of them, got {shape!r}")
        self.shape = dims
        self.shape_given = True

    def __repr__(self) -> str:
        return f"GaussianSource(shape={self.shape})"

    def sample(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> Tensor:
        from .._validation import MAX_SAMPLES_PER_CALL, check_positive_int

        n = check_positive_int(n, "n", MAX_SAMPLES_PER_CALL)
        gdev = generator.device if generator is not None else torch.device("cpu")
        return torch.randn((n, *self.shape), generator=generator, device=gdev).to(device)

    def log_prob(self, x: Tensor) -> Tensor:
        return _standard_normal_log_prob(x)


def _standard_normal_log_prob(x: Tensor) -> Tensor:
    flat = x.flatten(1)
    return -0.5 * flat.pow(2).sum(1) - 0.5 * flat.shape[1] * math.log(2.0 * math.pi)


def _register_toy() -> None:
    from .toy import TOY_DATASETS

    for name in TOY_DATASETS.names():
        if name != "gaussian":
            DATA_SOURCES.register(name)(lambda name=name: ToySource(name))


DATA_SOURCES.register("gaussian")(GaussianSource)
_register_toy()

# Image data sets are read once per process and kept (a few recent ones) in memory.
_CACHE: OrderedDict[str, DataSource] = OrderedDict()
_CACHE_SIZE = 4


def _cached(kind: str, loader: Any, **params: Any) -> DataSource:
    """``loader(**params)``, reused while its ``path`` is unchanged (same size and modification time;
    a path that vanished is read again, so the error says so)."""
    key = json.dumps([kind, params, _stamp(params.get("path", params.get("root")))], sort_keys=True, default=str)
    if key not in _CACHE:
        _CACHE[key] = loader(**params)
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    _CACHE.move_to_end(key)
    return _CACHE[key]


def _stamp(path: Any) -> list[int] | None:
    import os

    if path is None:
        return None
    try:
        st = os.stat(path)
    except (OSError, TypeError, ValueError):
        return None
    return [st.st_mtime_ns, st.st_size]


@DATA_SOURCES.register("digits")
def _digits(size: int = 16, holdout: float = 0.0, seed: int = 0) -> DataSource:
    """scikit-learn's 1797 handwritten digits, 8x8 upsampled to ``size`` (8, 16 or 32); ``holdout`` > 0
    keeps that share out of training as the held-out split (``ImageDataset.split(holdout, seed)``,
    the split of ``monge demo --data digits``)."""
    from .digits import load_digits

    if not holdout:
        return _cached("digits", load_digits, size=size)
    return _cached("digits", _split_digits, size=size, holdout=holdout, seed=seed)


def _split_digits(size: int, holdout: float, seed: int) -> DataSource:
    from .digits import load_digits
    from .images import ImageDataset

    train, test = load_digits(size).split(holdout, seed)
    return ImageDataset(train.data, train.labels, train.name, train.num_classes, train.class_names, held_out=test)


@DATA_SOURCES.register("faces")
def _faces(size: int = 16, non_faces: bool = False, holdout: float = 0.2, crops: int = 1, crop: int = 25,
           seed: int = 0) -> DataSource:
    """scikit-image's bundled lfw_subset faces at ``size`` (16 or 32), with a held-out split of
    whole images (see :func:`monge.data.photos.load_faces`); never downloads."""
    from .photos import load_faces

    return _cached("faces", load_faces, size=size, non_faces=non_faces, holdout=holdout, crops=crops, crop=crop,
                   seed=seed)


@DATA_SOURCES.register("textures")
def _textures(size: int = 16, n: int = 1000, images: list[str] | None = None, channels: int = 1,
              scale: float = 1.0, holdout: float = 0.25, n_held_out: int | None = None, seed: int = 0) -> DataSource:
    """Random crops of scikit-image's bundled textures (brick, grass, gravel; labels 0-2) or, with
    ``channels: 3``, colour photographs; held-out crops come from the bottom ``holdout`` rows of
    each picture (see :func:`monge.data.photos.load_textures`); never downloads."""
    from .photos import load_textures

    return _cached("textures", load_textures, size=size, n=n, images=None if images is None else list(images),
                   channels=channels, scale=scale, holdout=holdout, n_held_out=n_held_out, seed=seed)


@DATA_SOURCES.register("image_folder")
def _image_folder(path: str, size: int | list[int] | None = None, channels: int | None = None,
                  skip_corrupt: bool = False) -> DataSource:
    """PNG/JPEG/... files under ``path`` (sub-folders name classes), resized to ``size``."""
    from .images import load_image_folder

    return _cached("image_folder", load_image_folder, path=path, size=size, channels=channels,
                   skip_corrupt=skip_corrupt)


@DATA_SOURCES.register("array")
def _array(path: str, key: str | None = None, labels_key: str | None = None, layout: str | None = None,
           value_range: list[float] | None = None, size: int | list[int] | None = None,
           standardize: bool | None = None, holdout: float | None = None, holdout_seed: int = 0) -> DataSource:
    """A ``.npy`` / ``.npz`` file: a 2-D array is a table of ``(N, D)`` rows (see
    :mod:`monge.data.tabular`: ``standardize``, ``holdout``); 3-D / 4-D arrays are images (see
    :func:`monge.data.images.load_array`: ``layout``, ``value_range``, ``size``)."""
    return _cached("array", _load_array, path=path, key=key, labels_key=labels_key, layout=layout,
                   value_range=None if value_range is None else tuple(value_range), size=size,
                   standardize=standardize, holdout=holdout, holdout_seed=holdout_seed)


def _load_array(path: str, key: str | None, labels_key: str | None, layout: str | None, value_range: Any,
                size: Any, standardize: bool | None, holdout: float | None, holdout_seed: int) -> DataSource:
    from pathlib import Path

    from .images import images_from_array
    from .tabular import read_array_file, table_from_array

    file = Path(path)
    a, labels = read_array_file(file, key, labels_key)
    if a.ndim == 2:
        image_only = {k: v for k, v in (("layout", layout), ("value_range", value_range), ("size", size))
                      if v is not None}
        if image_only:
            raise ValueError(f"{file} holds a (N, D) table; {', '.join(image_only)} apply to images only "
                             "(a table takes standardize, holdout, holdout_seed, labels_key)")
        return table_from_array(a, labels, name=file.stem, standardize=bool(standardize), holdout=holdout or 0.0,
                                holdout_seed=holdout_seed)
    if standardize is not None or holdout is not None:
        raise ValueError(f"{file} holds images of shape {a.shape[1:]}; standardize and holdout apply to (N, D) "
                         "tables only")
    return images_from_array(a, labels, file, layout=layout or "auto", value_range=value_range, size=size)


@DATA_SOURCES.register("csv")
def _csv(path: str, header: bool | str = "auto", delimiter: str = ",", columns: list[int | str] | None = None,
         drop: list[int | str] | None = None, label_column: int | str | None = None,
         categorical: list[int | str] | None = None, integer: list[int | str] | None = None,
         numeric: list[int | str] | None = None, missing: str = "refuse", max_categories: int = 100,
         standardize: bool = False, holdout: float = 0.0, holdout_seed: int = 0) -> DataSource:
    """A CSV table, one row per sample: numbers, integers and categories (text), each column's kind
    inferred or declared (``categorical``, ``integer``, ``numeric``), ``missing: refuse | impute``
    (see :func:`monge.data.tabular.load_table` and :mod:`monge.data.schema`)."""
    from .tabular import load_table

    def names(specs: Any, default: Any = None) -> Any:  # a list (also from YAML), else left for the check
        return default if specs is None else list(specs) if isinstance(specs, (list, tuple)) else specs

    return _cached("csv", load_table, path=path, header=header, delimiter=delimiter, columns=names(columns),
                   drop=names(drop), label_column=label_column, categorical=names(categorical, []),
                   integer=names(integer, []), numeric=names(numeric, []), missing=missing,
                   max_categories=max_categories, standardize=standardize, holdout=holdout, holdout_seed=holdout_seed)


@DATA_SOURCES.register("mnist")
def _mnist(path: str, split: str = "train", size: int | list[int] | None = None) -> DataSource:
    """MNIST IDX files (optionally ``.gz``) under ``path``; never downloads."""
    from .images import load_mnist

    return _cached("mnist", load_mnist, root=path, split=split, size=size)


@DATA_SOURCES.register("cifar10")
def _cifar10(path: str, split: str = "train", size: int | list[int] | None = None) -> DataSource:
    """CIFAR-10 python batches under ``path``, read with an array-only unpickler; never downloads."""
    from .images import load_cifar10

    return _cached("cifar10", load_cifar10, root=path, split=split, size=size)


def _spec(spec: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, Mapping):
        params = {k: v for k, v in spec.items() if k != "name"}
        return spec["name"] if "name" in spec else "", params
    if hasattr(spec, "name") and hasattr(spec, "params"):
        return spec.name, dict(spec.params)
    raise ValueError(f"a data source is a name or a mapping with 'name', got {spec!r}")


def build_source(spec: Any, like: DataSource | None = None) -> DataSource:
    """The data source ``spec`` (a registered name, a mapping ``{name, **params}`` or a config
    component); ``gaussian`` without a shape takes ``like``'s shape. The error lists valid names."""
    name, params = _spec(spec)
    source = DATA_SOURCES.build(name, **params)
    if like is not None and isinstance(source, GaussianSource) and not source.shape_given:
        source = GaussianSource(like.shape)
    return source


def build_data(data: Any) -> tuple[DataSource, DataSource]:
    """``(source, target)`` of a :class:`~monge.config.DataConfig` (target first, so a bare
    ``gaussian`` source matches its shape); raises if the sample shapes differ."""
    target = build_source(data.target)
    source = build_source(data.source, like=target)
    if source.shape != target.shape:
        raise ValueError(
            f"data.source {data.source} has sample shape {source.shape} but data.target {data.target} "
            f"has {target.shape}; use sources of the same shape (e.g. source: gaussian)"
        )
    return source, target


def data_paths(data: Any) -> list[str]:
    """``"data.target.path = '...'"`` for each side of a data config read from a file."""
    out = []
    for side in ("source", "target"):
        params = getattr(getattr(data, side, None), "params", None) or {}
        if "path" in params:
            out.append(f"data.{side}.path = {params['path']!r}")
    return out


def moved_data_hint(message: str, data: Any) -> str:
    """``message`` (a data error) with how to point a run at data that moved, when a path is missing."""
    missing = ("not found", "No such file", "is not a folder")
    if not data_paths(data) or not any(m in message for m in missing):
        return message
    return (f"{message}. If the data moved, point at its new place with data.target.path=NEW (or "
            "data.source.path=NEW); on --resume only the location may change, not the data")
