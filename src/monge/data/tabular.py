r"""Vector (tabular) data: ``(N, D)`` rows from ``.npy`` / ``.npz`` / ``.csv`` files.

Rows are held in memory as a float32 tensor and drawn uniformly with replacement, like the
images of :mod:`monge.data.images`. Two options every table gets:

- ``standardize=True``: each column is mapped to zero mean and unit variance,
  :math:`z = (x - \mu) / \sigma` (:class:`Standardizer`, :math:`\mu, \sigma` fitted on the
  training rows; a constant column keeps :math:`\sigma = 1`). The model trains on :math:`z`; the
  run stores :math:`(\mu, \sigma)` in its checkpoint and sampling returns
  :math:`x = \sigma z + \mu` in the data's own units.
- ``holdout=f``: a seeded random share ``f`` of the rows is kept out of training
  (:attr:`VectorDataset.held_out`); evaluation compares samples against those rows.

Bad files get one error naming the line and column (non-numeric, missing or non-finite value,
ragged row), before any training.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .._validation import check_finite, check_number
from ..outputs import atomic_write_bytes
from .sources import FiniteRows

__all__ = [
    "MAX_COLUMNS",
    "MAX_TABLE_BYTES",
    "SKLEARN_TABLES",
    "Standardizer",
    "VectorDataset",
    "integer_labels",
    "load_table",
    "read_array_file",
    "read_csv",
    "save_sklearn_table",
    "table_from_array",
]

#: Widest table accepted (columns).
MAX_COLUMNS = 1 << 20
#: Largest CSV file read (bytes; parsing holds about 4 times as much): larger tables belong in a ``.npy`` file.
MAX_TABLE_BYTES = 512 << 20


class Standardizer:
    r"""Column-wise :math:`z = (x - \mu)/\sigma` and its inverse :math:`x = \sigma z + \mu`."""

    def __init__(self, mean: Tensor, std: Tensor) -> None:
        mean, std = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
        if mean.dim() != 1 or mean.shape != std.shape:
            raise ValueError(f"mean and std must be vectors of one length, got {tuple(mean.shape)} and "
                             f"{tuple(std.shape)}")
        check_finite(mean, "mean")
        check_finite(std, "std")
        if bool((std <= 0).any()):
            raise ValueError("std must be > 0 in every column")
        self.mean, self.std = mean, std

    @classmethod
    def fit(cls, x: Tensor) -> Standardizer:
        r""":math:`\mu` and :math:`\sigma` (population) of the rows ``x`` ``(N, D)``; :math:`\sigma = 1`
        where a column is constant."""
        x64 = x.to(torch.float64)
        mean, std = x64.mean(0), x64.std(0, correction=0)
        std = torch.where(std > 1e-12 * (1 + mean.abs()), std, torch.ones_like(std))
        return cls(mean, std)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean.to(x)) / self.std.to(x)

    def inverse(self, z: Tensor) -> Tensor:
        """Model space back to data units, for samples ``(n, D)``."""
        return z * self.std.to(z) + self.mean.to(z)

    def to_tensors(self, prefix: str) -> dict[str, Tensor]:
        return {f"{prefix}mean": self.mean, f"{prefix}std": self.std}

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor], prefix: str) -> Standardizer | None:
        """The standardizer stored under ``prefix`` (``None`` if absent); raises ``ValueError`` if malformed."""
        mean, std = tensors.get(f"{prefix}mean"), tensors.get(f"{prefix}std")
        if mean is None and std is None:
            return None
        if mean is None or std is None:
            raise ValueError(f"only one of {prefix}mean and {prefix}std is stored")
        return cls(mean, std)

    def __repr__(self) -> str:
        return f"Standardizer(columns={self.mean.numel()})"


class VectorDataset(FiniteRows):
    """Rows ``(N, D)`` (and optional integer labels) in model space, drawn with replacement.

    ``standardizer`` (if any) maps data units to the stored rows; ``held_out`` holds the rows kept
    out of training (``holdout``), in the same model space; ``columns`` names the columns.
    """

    labels_hint = "give label_column (csv) or labels_key (npz)"

    def __init__(
        self,
        data: Tensor,
        labels: Tensor | None = None,
        name: str = "table",
        standardizer: Standardizer | None = None,
        held_out: VectorDataset | None = None,
        columns: Sequence[str] | None = None,
        num_classes: int | None = None,
    ) -> None:
        check_finite(data, "data")
        if data.dim() != 2 or data.shape[0] == 0 or data.shape[1] == 0 or not data.is_floating_point():
            raise ValueError(f"data must be a non-empty float tensor (N, D), got {data.dtype} {tuple(data.shape)}")
        if labels is not None:
            if labels.shape != (data.shape[0],) or labels.dtype != torch.int64:
                raise ValueError(f"labels must be int64 of shape ({data.shape[0]},), got {labels.dtype} "
                                 f"{tuple(labels.shape)}")
            num_classes = num_classes if num_classes is not None else int(labels.max()) + 1
        self.data = data.to(torch.float32)
        self.labels = labels
        self.num_classes = num_classes if labels is not None else None
        self.name = str(name)
        self.standardizer = standardizer
        self.held_out = held_out
        self.columns = list(columns) if columns is not None else None
        self.shape = (int(data.shape[1]),)

    def __repr__(self) -> str:
        extra = f", held_out={len(self.held_out)}" if self.held_out is not None else ""
        extra += ", standardized" if self.standardizer is not None else ""
        return f"VectorDataset(name={self.name!r}, n={len(self)}, dim={self.shape[0]}{extra})"


# ---------------------------------------------------------------------------------------------
# reading files


def integer_labels(values: np.ndarray, where: str) -> Tensor:
    """Class labels as int64; float labels must be whole numbers (``2.0``), never truncated."""
    values = np.asarray(values).reshape(-1)
    if values.dtype.kind == "f":
        if not np.isfinite(values).all():
            raise ValueError(f"{where}: labels hold NaN/Inf; labels must be non-negative integer class indices")
        if not (values == np.round(values)).all():
            bad = float(values[values != np.round(values)][0])
            raise ValueError(f"{where}: labels must be whole numbers (class indices), got {bad:g}; they are not "
                             "truncated. Map them to classes 0..K-1 first")
    elif values.dtype.kind not in "iub":
        raise ValueError(f"{where}: labels must be integer class indices, got dtype {values.dtype}")
    labels = torch.from_numpy(values.astype(np.int64))
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError(f"{where}: labels must be non-negative class indices, got {int(labels.min())}")
    return labels


def read_array_file(path: str | Path, key: str | None = None,
                    labels_key: str | None = None) -> tuple[np.ndarray, Tensor | None]:
    """``(array, labels)`` of a ``.npy`` or ``.npz`` file (``allow_pickle=False``).

    In an ``.npz``, ``key`` defaults to ``images``, ``x``, ``data``, ``arr_0`` or the only array;
    ``labels_key`` to ``labels`` or ``y`` when present.
    """
    file = Path(path)
    if file.suffix.lower() not in (".npy", ".npz"):
        raise ValueError(f"path must end in .npy or .npz, got {str(file)!r}")
    try:
        if file.suffix.lower() == ".npy":  # the header first: the array must fit in memory
            _check_array_memory(file, np.load(file, mmap_mode="r", allow_pickle=False))
        loaded = np.load(file, allow_pickle=False)
    except (OSError, EOFError) as err:
        raise ValueError(f"cannot read array file {file}: {err}") from None
    except ValueError as err:
        if str(err).startswith(("the array", "cannot read")):
            raise
        raise ValueError(f"cannot read array file {file}: {err}") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        return loaded, None
    with loaded:
        names = list(loaded.files)
        if key is None:
            key = next((k for k in ("images", "x", "data", "arr_0") if k in names), None)
            if key is None and len(names) == 1:
                key = names[0]
            if key is None:
                raise ValueError(f"{file} holds arrays {names}; pass key= to choose the data")
        if key not in names:
            raise ValueError(f"{file} has no array {key!r}; it holds {names}")
        if labels_key is None:
            labels_key = next((k for k in ("labels", "y") if k in names), None)
        elif labels_key not in names:
            raise ValueError(f"{file} has no array {labels_key!r}; it holds {names}")
        try:
            a = loaded[key]
            labels = None if labels_key is None else integer_labels(loaded[labels_key], f"{file}[{labels_key!r}]")
        except (OSError, ValueError, EOFError) as err:
            if str(err).startswith(str(file)):
                raise
            raise ValueError(f"cannot read array file {file}: {err}") from None
    return a, labels


def _check_array_memory(file: Path, header: np.ndarray) -> None:
    """The array as read plus its float copies (about 12 bytes a value more) must fit in memory."""
    from ..limits import check_memory

    check_memory(header.size * (header.dtype.itemsize + 12), f"the array {file} ({header.dtype} {header.shape})",
                 "use a smaller array (a subset of its rows, or a smaller image size)")


def _header_auto(row: list[str]) -> bool:
    """A first row is a header when one of its fields is not a number."""
    for field in row:
        try:
            float(field)
        except ValueError:
            return True
    return False


def read_csv(
    path: str | Path,
    header: bool | str = "auto",
    delimiter: str = ",",
) -> tuple[np.ndarray, list[str] | None]:
    """``(values (N, D) float64, column names or None)`` of a CSV file of numbers.

    ``header``: ``True`` (first row names the columns), ``False`` (every row is data) or
    ``"auto"`` (a header when a field of the first row is not a number). Blank lines are skipped.
    A non-numeric, missing or non-finite value, or a row with another number of fields, raises
    ``ValueError`` naming its line and column.
    """
    file = Path(path)
    if header not in (True, False, "auto"):
        raise ValueError(f"header must be true, false or 'auto', got {header!r}")
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise ValueError(f"delimiter must be one character, got {delimiter!r}")
    if not file.is_file():
        raise ValueError(f"CSV file not found: {str(file)!r}")
    size = file.stat().st_size
    if size > MAX_TABLE_BYTES:
        raise ValueError(f"{file} is {size / 2**20:.0f} MiB; CSV tables are read up to {MAX_TABLE_BYTES / 2**20:.0f} "
                         "MiB. Save it as a .npy array (numpy.save) and use the array source")
    rows: list[list[float]] = []
    names: list[str] | None = None
    width = None
    try:
        with file.open(newline="", encoding="utf-8-sig") as fh:
            for line, row in enumerate(csv.reader(fh, delimiter=delimiter), start=1):
                if not row or all(not f.strip() for f in row):
                    continue
                if width is None:
                    width = len(row)
                    if width > MAX_COLUMNS:
                        raise ValueError(f"{file}: {width} columns, at most {MAX_COLUMNS}")
                    if header is True or (header == "auto" and _header_auto(row)):
                        names = [f.strip() for f in row]
                        continue
                if len(row) != width:
                    raise ValueError(f"{file}, line {line}: {len(row)} fields, but the first row has {width}; "
                                     "every row needs the same columns")
                rows.append([_number(f, file, line, i, names) for i, f in enumerate(row)])
    except UnicodeDecodeError:
        raise ValueError(f"{file} is not UTF-8 text; a CSV table is text") from None
    except csv.Error as err:
        raise ValueError(f"{file}: malformed CSV ({err})") from None
    if not rows:
        raise ValueError(f"{file} holds no data rows")
    return np.asarray(rows, dtype=np.float64), names


def _number(field: str, file: Path, line: int, col: int, names: list[str] | None) -> float:
    where = f"{file}, line {line}, column {col + 1}" + (f" ({names[col]!r})" if names else "")
    text = field.strip()
    try:
        value = float(text)
    except ValueError:
        if not text:
            raise ValueError(f"{where}: missing value; fill or drop incomplete rows first") from None
        raise ValueError(f"{where}: {text!r} is not a number; a table holds numbers only (encode categories as "
                         "integers, or drop the column)") from None
    if not math.isfinite(value):
        raise ValueError(f"{where}: non-finite value {text!r}; fill or drop such rows first")
    return value


def _column_index(spec: int | str, names: list[str] | None, width: int, what: str) -> int:
    if isinstance(spec, str) and not isinstance(spec, bool):
        if names is None:
            raise ValueError(f"{what} {spec!r} names a column but the table has no header; give its index (0-based)")
        if spec not in names:
            raise ValueError(f"{what} {spec!r} is not a column; the columns are {names}")
        return names.index(spec)
    index = int(check_number(spec, what, -width, width - 1, integer=True))
    return index % width


def table_from_array(
    values: np.ndarray,
    labels: Tensor | None = None,
    *,
    name: str = "table",
    columns: list[str] | None = None,
    standardize: bool = False,
    holdout: float = 0.0,
    holdout_seed: int = 0,
) -> VectorDataset:
    """A :class:`VectorDataset` of the rows ``values`` ``(N, D)``: split off ``holdout`` (seeded),
    then standardise with the training rows' statistics when ``standardize``."""
    if not isinstance(standardize, bool):
        raise ValueError(f"standardize must be true or false, got {standardize!r}")
    if values.ndim != 2 or values.shape[0] == 0 or values.shape[1] == 0:
        raise ValueError(f"{name}: a table must be a non-empty (N, D) array, got shape {values.shape}")
    if values.dtype.kind not in "uif":
        raise ValueError(f"{name}: a table must hold numbers, got dtype {values.dtype}")
    x = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64))
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).any(1).sum())
        row = int((~torch.isfinite(x)).any(1).nonzero()[0])
        raise ValueError(f"{name}: {bad} row(s) hold NaN/Inf (the first is row {row}); fill or drop them first")
    if labels is not None and labels.shape[0] != x.shape[0]:
        raise ValueError(f"{name}: {labels.shape[0]} labels for {x.shape[0]} rows")
    holdout = check_number(holdout, "holdout", 0.0, 1.0, high_open=True)
    held_x = held_y = None
    if holdout > 0:
        n_held = round(x.shape[0] * holdout)
        if n_held < 1 or n_held >= x.shape[0]:
            raise ValueError(f"holdout={holdout} of {x.shape[0]} rows leaves an empty split; use a share that keeps "
                             "at least one row on each side")
        perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(int(holdout_seed)))
        held, kept = perm[:n_held].sort().values, perm[n_held:].sort().values
        held_x, x = x[held], x[kept]
        if labels is not None:
            held_y, labels = labels[held], labels[kept]
    num_classes = None if labels is None else int(max(labels.max(), -1 if held_y is None else held_y.max())) + 1
    scaler = Standardizer.fit(x) if standardize else None

    def model_space(rows: Tensor) -> Tensor:
        rows = rows.to(torch.float32)
        return scaler.forward(rows) if scaler is not None else rows

    held_out = None
    if held_x is not None:
        held_out = VectorDataset(model_space(held_x), held_y, f"{name}-holdout", scaler, None, columns, num_classes)
    return VectorDataset(model_space(x), labels, name, scaler, held_out, columns, num_classes)


def load_table(
    path: str | Path,
    *,
    header: bool | str = "auto",
    delimiter: str = ",",
    columns: Sequence[int | str] | None = None,
    label_column: int | str | None = None,
    standardize: bool = False,
    holdout: float = 0.0,
    holdout_seed: int = 0,
) -> VectorDataset:
    """Rows of a CSV file (:func:`read_csv`) as a :class:`VectorDataset`.

    ``label_column`` (name or 0-based index) holds integer class labels and is not a feature;
    ``columns`` keeps only these features (names or indices). See :func:`table_from_array` for
    ``standardize`` and ``holdout``.
    """
    file = Path(path)
    values, names = read_csv(file, header=header, delimiter=delimiter)
    width = values.shape[1]
    labels = None
    keep = list(range(width))
    if label_column is not None:
        li = _column_index(label_column, names, width, "label_column")
        labels = integer_labels(values[:, li], f"{file}, label column {label_column!r}")
        keep.remove(li)
    if columns is not None:
        if isinstance(columns, (str, int)) or not isinstance(columns, (list, tuple)) or not columns:
            raise ValueError(f"columns must be a non-empty list of column names or indices, got {columns!r}")
        keep = [_column_index(c, names, width, "columns entry") for c in columns]
        if label_column is not None and li in keep:
            raise ValueError(f"column {label_column!r} is the label column; it cannot also be a feature")
    if not keep:
        raise ValueError(f"{file}: no feature column left besides the labels")
    feature_names = None if names is None else [names[i] for i in keep]
    return table_from_array(values[:, keep], labels, name=file.stem, columns=feature_names,
                            standardize=standardize, holdout=holdout, holdout_seed=holdout_seed)


#: Tables bundled with scikit-learn (no download): ``load_<name>`` of :mod:`sklearn.datasets`.
SKLEARN_TABLES = ("wine", "iris", "breast_cancer", "diabetes")


def save_sklearn_table(name: str, path: str | Path) -> Path:
    """Write one of scikit-learn's bundled tables (:data:`SKLEARN_TABLES`) to a CSV file with a
    header: its feature columns, then ``target`` (the class of ``wine``, ``iris`` and
    ``breast_cancer``; a disease-progression score for ``diabetes``)."""
    if name not in SKLEARN_TABLES:
        raise ValueError(f"unknown table {name!r}; scikit-learn bundles {', '.join(SKLEARN_TABLES)}")
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{name}")()
    header = ",".join([*map(str, bunch.feature_names), "target"])
    rows = np.c_[bunch.data, bunch.target]
    buf = io.StringIO()
    np.savetxt(buf, rows, delimiter=",", fmt="%.10g", header=header, comments="")
    atomic_write_bytes(path, buf.getvalue().encode("utf-8"))
    return Path(path)
