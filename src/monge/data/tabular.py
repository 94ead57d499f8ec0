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
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._validation import check_finite, check_number
from ..outputs import atomic_write_bytes
from .schema import MAX_CATEGORIES, TableSchema, infer_schema
from .sources import FiniteRows

__all__ = [
    "MAX_COLUMNS",
    "MAX_TABLE_BYTES",
    "SKLEARN_TABLES",
    "Standardizer",
    "VectorDataset",
    "integer_labels",
    "load_table",
    "holdout_split",
    "read_array_file",
    "read_csv",
    "read_csv_cells",
    "save_sklearn_table",
    "TableSamples",
    "check_table_output",
    "table_csv",
    "table_from_array",
    "table_sampling",
    "write_table",
]

logger = logging.getLogger(__name__)

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
    def fit(cls, x: Tensor, scaled: np.ndarray | None = None) -> Standardizer:
        r""":math:`\mu` and :math:`\sigma` (population) of the rows ``x`` ``(N, D)``; :math:`\sigma = 1`
        where a column is constant. ``scaled`` ``(D,)`` bools: only these columns are standardised,
        the others keep :math:`\mu = 0, \sigma = 1` (a table's one-hot blocks)."""
        x64 = x.to(torch.float64)
        mean, std = x64.mean(0), x64.std(0, correction=0)
        std = torch.where(std > 1e-12 * (1 + mean.abs()), std, torch.ones_like(std))
        if scaled is not None:
            keep = torch.as_tensor(np.asarray(scaled, dtype=bool))
            mean, std = torch.where(keep, mean, 0.0), torch.where(keep, std, 1.0)
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
    ``schema`` (a CSV table, :class:`~monge.data.schema.TableSchema`) says how the rows decode to the
    table's columns; ``class_names`` name the classes of a label column of text.
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
        schema: TableSchema | None = None,
        class_names: Sequence[str] | None = None,
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
        self.schema = schema
        self.class_names = list(class_names) if class_names is not None else None
        self.shape = (int(data.shape[1]),)

    def __repr__(self) -> str:
        extra = f", held_out={len(self.held_out)}" if self.held_out is not None else ""
        extra += ", standardized" if self.standardizer is not None else ""
        return f"VectorDataset(name={self.name!r}, n={len(self)}, dim={self.shape[0]}{extra})"

    def table(self) -> dict[str, np.ndarray]:
        """The rows as a table in the file's units and kinds (:meth:`TableSchema.decode
        <monge.data.schema.TableSchema.decode>`, label column included), e.g. the held-out rows for
        :mod:`monge.metrics.tabular`: ``ds.held_out.table()``; needs a ``schema``."""
        if self.schema is None:
            raise ValueError(f"{self.name}: no table schema (a CSV table has one; an array does not)")
        x = self.standardizer.inverse(self.data) if self.standardizer is not None else self.data
        labels = None if self.labels is None else self.labels.numpy()
        return self.schema.decode(x.to(torch.float64).numpy(), labels)


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


def read_csv_cells(
    path: str | Path,
    header: bool | str = "auto",
    delimiter: str = ",",
) -> tuple[list[str] | None, list[list[str]], list[int]]:
    """``(column names or None, rows of cells as text, the line of each row)`` of a CSV file.

    ``header``: ``True`` (first row names the columns), ``False`` (every row is data) or
    ``"auto"`` (a header when a field of the first row is not a number). Blank lines are skipped.
    A row with another number of fields raises ``ValueError`` naming its line.
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
    rows: list[list[str]] = []
    lines: list[int] = []
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
                rows.append(row)
                lines.append(line)
    except UnicodeDecodeError:
        raise ValueError(f"{file} is not UTF-8 text; a CSV table is text") from None
    except csv.Error as err:
        raise ValueError(f"{file}: malformed CSV ({err})") from None
    if not rows:
        raise ValueError(f"{file} holds no data rows")
    return names, rows, lines


def read_csv(
    path: str | Path,
    header: bool | str = "auto",
    delimiter: str = ",",
) -> tuple[np.ndarray, list[str] | None]:
    """``(values (N, D) float64, column names or None)`` of a CSV file of numbers
    (:func:`read_csv_cells`). A non-numeric, missing or non-finite value raises ``ValueError``
    naming its line and column; :func:`load_table` reads tables of any kinds of columns."""
    file = Path(path)
    names, rows, lines = read_csv_cells(file, header, delimiter)
    values = [[_number(f, file, line, i, names) for i, f in enumerate(row)] for row, line in zip(rows, lines,
                                                                                                 strict=True)]
    return np.asarray(values, dtype=np.float64), names


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


def holdout_split(n: int, holdout: float, seed: int) -> tuple[Tensor, Tensor] | None:
    """``(held, kept)`` sorted row indices of a seeded random share ``holdout`` of ``n`` rows
    (``None`` when ``holdout`` is 0); refused when a side would be empty."""
    holdout = check_number(holdout, "holdout", 0.0, 1.0, high_open=True)
    if holdout == 0:
        return None
    n_held = round(n * holdout)
    if n_held < 1 or n_held >= n:
        raise ValueError(f"holdout={holdout} of {n} rows leaves an empty split; use a share that keeps "
                         "at least one row on each side")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    return perm[:n_held].sort().values, perm[n_held:].sort().values


def table_from_array(
    values: np.ndarray,
    labels: Tensor | None = None,
    *,
    name: str = "table",
    columns: list[str] | None = None,
    standardize: bool = False,
    holdout: float = 0.0,
    holdout_seed: int = 0,
    schema: TableSchema | None = None,
    class_names: Sequence[str] | None = None,
) -> VectorDataset:
    """A :class:`VectorDataset` of the rows ``values`` ``(N, D)``: split off ``holdout`` (seeded),
    then standardise with the training rows' statistics when ``standardize`` (only the
    coordinates :meth:`TableSchema.scaled <monge.data.schema.TableSchema.scaled>` marks, with a
    ``schema``)."""
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
    split = holdout_split(x.shape[0], holdout, holdout_seed)
    held_x = held_y = None
    num_classes = None if class_names is None else len(class_names)
    if num_classes is None and labels is not None:
        num_classes = int(labels.max()) + 1
    if split is not None:
        held, kept = split
        held_x, x = x[held], x[kept]
        if labels is not None:
            held_y, labels = labels[held], labels[kept]
    scaler = Standardizer.fit(x, None if schema is None else schema.scaled()) if standardize else None

    def dataset(rows: Tensor, y: Tensor | None, label: str, held_out: VectorDataset | None) -> VectorDataset:
        rows = rows.to(torch.float32)
        rows = scaler.forward(rows) if scaler is not None else rows
        return VectorDataset(rows, y, label, scaler, held_out, columns, num_classes, schema, class_names)

    held_out = None if held_x is None else dataset(held_x, held_y, f"{name}-holdout", None)
    return dataset(x, labels, name, held_out)


def load_table(
    path: str | Path,
    *,
    header: bool | str = "auto",
    delimiter: str = ",",
    columns: Sequence[int | str] | None = None,
    drop: Sequence[int | str] | None = None,
    label_column: int | str | None = None,
    categorical: Sequence[int | str] = (),
    integer: Sequence[int | str] = (),
    numeric: Sequence[int | str] = (),
    missing: str = "refuse",
    max_categories: int = MAX_CATEGORIES,
    standardize: bool = False,
    holdout: float = 0.0,
    holdout_seed: int = 0,
) -> VectorDataset:
    """Rows of a CSV file as a :class:`VectorDataset` with its table schema
    (:func:`monge.data.schema.infer_schema`: kinds, one-hot categories, ``missing: refuse |
    impute``, ``max_categories``, the checks of bad columns).

    ``label_column`` (name or 0-based index) holds the classes and is not a feature (whole
    non-negative numbers are class indices; text labels are classes in sorted order, named by
    ``class_names``); ``columns`` keeps only these features, ``drop`` leaves these out;
    ``categorical`` / ``integer`` / ``numeric`` declare kinds instead of inferring them. See
    :func:`table_from_array` for ``standardize`` and ``holdout``.
    """
    file = Path(path)
    names, rows, lines = read_csv_cells(file, header=header, delimiter=delimiter)
    width = len(rows[0])
    keys = names if names is not None else [str(i) for i in range(width)]
    if len(set(keys)) != width:
        twice = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"{file}: the header names columns {twice} more than once; every column needs its own name")

    def resolve(specs: Sequence[int | str] | None, what: str) -> list[str]:
        if specs is None:
            return []
        if isinstance(specs, (str, int)) or not isinstance(specs, (list, tuple)):
            raise ValueError(f"{what} must be a list of column names or indices, got {specs!r}")
        return [keys[_column_index(c, names, width, f"{what} entry")] for c in specs]

    label = None if label_column is None else keys[_column_index(label_column, names, width, "label_column")]
    if columns is not None and drop is not None:
        raise ValueError("give columns (the features to keep) or drop (those to leave out), not both")
    if columns is not None and (isinstance(columns, (str, int)) or not columns):
        raise ValueError(f"columns must be a non-empty list of column names or indices, got {columns!r}")
    features = resolve(columns, "columns") if columns is not None else \
        [k for k in keys if k not in set(resolve(drop, "drop")) and k != label]
    if label is not None and label in features:
        raise ValueError(f"column {label_column!r} is the label column; it cannot also be a feature")
    if not features:
        raise ValueError(f"{file}: no feature column left besides the labels")
    chosen = [k for k in keys if k in set(features) or k == label]
    cells = {k: [row[keys.index(k)] for row in rows] for k in chosen}
    split = holdout_split(len(rows), holdout, holdout_seed)
    schema, table, labels = infer_schema(
        cells, lines=lines, where=str(file), label=label, categorical=resolve(categorical, "categorical"),
        integer=resolve(integer, "integer"), numeric=resolve(numeric, "numeric"), missing=missing,
        max_categories=int(check_number(max_categories, "max_categories", 1, integer=True)),
        train=None if split is None else split[1].numpy(), header=names is not None,
        positions={k: i for i, k in enumerate(keys)})
    class_names = None if schema.label is None else list(schema.label.categories)
    return table_from_array(schema.encode(table, np.float64), None if labels is None else torch.from_numpy(labels),
                            name=file.stem, columns=schema.names, standardize=standardize, holdout=holdout,
                            holdout_seed=holdout_seed, schema=schema, class_names=class_names)


def write_table(path: str | Path, schema: TableSchema, table: dict[str, np.ndarray]) -> Path:
    """Write ``table`` (:meth:`TableSchema.decode <monge.data.schema.TableSchema.decode>`) at exactly
    ``path``, atomically: a CSV (:func:`table_csv`, with the header when the file had one) for a
    ``.csv`` name, else a ``.npy`` array ``(N, features)`` of the feature columns when they are all
    numbers (integers rounded; the label column is left out); a table with text features is written
    as CSV only (:func:`check_table_output`)."""
    from ..outputs import check_output_file

    path = check_table_output(path, schema)
    if path.suffix.lower() == ".csv":
        atomic_write_bytes(path, table_csv(table, header=schema.header).encode("utf-8"))
    else:
        buf = io.BytesIO()
        np.save(buf, np.stack([table[c].astype(np.float32) for c in schema.names], axis=1), allow_pickle=False)
        atomic_write_bytes(check_output_file(path), buf.getvalue())
    return path


def check_table_output(path: str | Path, schema: TableSchema) -> Path:
    """``path`` as the output file of a table's samples (:func:`monge.outputs.check_output_file`):
    a table with text columns (categories, a label column) needs a ``.csv`` name."""
    from ..outputs import check_output_file

    path = check_output_file(path)
    text = [c.name for c in schema.columns if c.kind == "categorical"]
    if path.suffix.lower() != ".csv" and text:
        raise ValueError(f"-o {path}: the table has text columns ({', '.join(text)}), which a .npy array cannot "
                         f"hold; write it as CSV, e.g. -o {path.with_suffix('.csv').name}")
    return path


@dataclass
class TableSamples:
    """Where and how a table run's samples are written: the ``schema``, the ``output`` file and the
    ``(n,)`` classes of the label column (``None``: the model is not class-conditional)."""

    schema: Any
    output: Path
    labels: np.ndarray | None

    def write(self, x: np.ndarray) -> Path:
        """Decode the samples ``x`` (data units) to the table's columns and write them."""
        return write_table(self.output, self.schema, self.schema.decode(x, self.labels))


def table_sampling(model: Any, output: Path, default_output: bool, options: dict[str, Any], n: int,
                   seed: int) -> TableSamples | None:
    """A CSV table run's sampling (``model.schema``; ``None`` for other runs), checked before any
    sampling: a table with text columns is written as CSV (default ``RUN/samples.csv``); a
    class-conditional model gets one class per sample, ``options["label"]`` (a class name, ``"all"``)
    or drawn with the training rows' frequencies when not given, so the label column is written too."""
    schema = getattr(model, "schema", None)
    if schema is None:
        return None
    if default_output and any(c.kind == "categorical" for c in schema.columns):
        output = output.with_suffix(".csv")
    output = check_table_output(output, schema)
    labels = None
    if schema.label is not None and getattr(model, "num_classes", None) is not None:
        label = options.get("label")
        labels = schema.draw_labels(None if label is None else str(label), n, seed)
        options["label"] = torch.from_numpy(labels)
    elif schema.label is not None:
        logger.warning("the model is not class-conditional: the label column %r is not generated and is left out "
                       "of the samples (set model.num_classes to generate it)", schema.label.name)
    return TableSamples(schema, output, labels)


def table_csv(table: dict[str, np.ndarray], header: bool = True, delimiter: str = ",") -> str:
    """CSV text of a table (:mod:`monge.data.schema`): a header row of the column names (``header``),
    then one row per sample; integers as integers, numbers with 10 significant digits, categories as
    their labels (quoted where the CSV needs it)."""
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=delimiter, lineterminator="\n")
    if header:
        writer.writerow(list(table))
    cols = []
    for values in table.values():
        if values.dtype.kind == "f":
            cols.append([f"{v:.10g}" for v in values])
        else:
            cols.append([str(v) for v in values])
    writer.writerows(zip(*cols, strict=True))
    return buf.getvalue()


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
