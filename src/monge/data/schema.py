r"""Table schemas: each column's name and kind, how it becomes model coordinates and comes back.

A table in memory is ``dict[str, np.ndarray]`` in column order: ``numeric`` columns float64,
``integer`` columns int64, ``categorical`` columns object arrays of ``str`` (the labels as read).
:meth:`TableSchema.encode` maps the feature columns to one float matrix ``(N, D)`` and
:meth:`TableSchema.decode` maps a matrix (model samples in data units) back to a table:

============= ====================================== ==================================================
kind          encoded as                             decoded as
============= ====================================== ==================================================
numeric       :math:`x` (1 coordinate)               :math:`x`, to the decimals the file was written with
integer       :math:`x` (1 coordinate)               :math:`\mathrm{clip}(\mathrm{round}(x), lo, hi)`,
                                                     :math:`[lo, hi]` the training rows' range
categorical   one-hot :math:`o \in \{0,1\}^K`        :math:`c_{\arg\max_k o_k}`, :math:`K` coordinates
============= ====================================== ==================================================

One-hot is the default and only encoding of categories: the model sees no order among the labels
(each category is its own coordinate, all at distance :math:`\sqrt 2` from one another) and the
argmax decode always lands on a label seen in training. The alternative, dequantisation (category
:math:`k` as :math:`u \sim U[k, k+1)`, decoded :math:`\lfloor u \rfloor`), takes one coordinate
per column but imposes an arbitrary order and distances on the labels; it is not built. A column
whose training rows hold one value (a constant) is kept and decoded as that value.

Kinds are inferred from the cells (:func:`infer_schema`): a column with any cell that is not a
number is categorical; a column of numbers that are all whole is integer; the rest are numeric.
The recipe may declare kinds (``categorical: [...]``, ``integer: [...]``, ``numeric: [...]``).
Categories are kept sorted (as strings), so the encoding does not depend on row order.

Missing cells (empty, or one of :data:`MISSING_TOKENS`) follow an explicit policy: ``refuse``
(the default: one error naming the line and column) or ``impute`` (numbers: the training rows'
median, integers rounded; categories: the most frequent label of the training rows; logged).
The label column of a class-conditional table (``label``) holds one class per row; it is no
feature, and it is never imputed.

:meth:`TableSchema.to_dict` is plain JSON, stored in the run's checkpoint beside the standardiser.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "KINDS",
    "MAX_CATEGORIES",
    "MISSING_POLICIES",
    "MISSING_TOKENS",
    "Column",
    "TableSchema",
    "infer_schema",
]

logger = logging.getLogger(__name__)

#: Column kinds.
KINDS = ("numeric", "integer", "categorical")
#: What to do with missing cells.
MISSING_POLICIES = ("refuse", "impute")
#: Cells read as missing (after stripping spaces).
MISSING_TOKENS = frozenset({"", "NA", "N/A", "NaN", "nan", "null", "NULL"})
#: Most categories a column (or the label column) may have by default (``max_categories``).
MAX_CATEGORIES = 100
#: Fewest rows for an integer column counting 1, 2, 3, ... in file order to be refused as a row number.
COUNTER_MIN_ROWS = 10


@dataclass(frozen=True)
class Column:
    """One column: ``name``, ``kind`` (one of :data:`KINDS`), the sorted ``categories`` of a
    categorical column, the training rows' range ``[low, high]`` of a numeric or integer one, and
    the ``decimals`` a numeric column was written with (samples are rounded to them; ``None``: the
    file used exponents, values are kept as sampled)."""

    name: str
    kind: str
    categories: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    decimals: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"column {self.name!r}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.kind == "categorical" and not self.categories:
            raise ValueError(f"categorical column {self.name!r} needs its categories")
        if self.kind != "categorical" and (self.low is None or self.high is None or not self.low <= self.high):
            raise ValueError(f"{self.kind} column {self.name!r} needs its range low <= high, got "
                             f"[{self.low}, {self.high}]")

    @property
    def width(self) -> int:
        """Model coordinates of the column: ``K`` for ``K`` categories, else 1."""
        return len(self.categories) if self.kind == "categorical" else 1

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "categorical":
            return {"name": self.name, "kind": self.kind, "categories": list(self.categories)}
        return {"name": self.name, "kind": self.kind, "low": self.low, "high": self.high, "decimals": self.decimals}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Column:
        def number(key: str, kind: Any = float) -> Any:
            return None if d.get(key) is None else kind(d[key])

        return cls(str(d["name"]), str(d["kind"]), tuple(str(c) for c in d.get("categories", ())), number("low"),
                   number("high"), number("decimals", int))


@dataclass(frozen=True)
class TableSchema:
    """The feature ``columns`` (in file order), the optional ``label`` column (categorical: its
    categories are the class names, class ``k`` is ``label.categories[k]``) with the training rows'
    ``label_counts``, the file's column ``order`` and whether it had a ``header``."""

    columns: tuple[Column, ...]
    label: Column | None = None
    label_counts: tuple[int, ...] = ()
    order: tuple[str, ...] = ()
    header: bool = True
    _slices: dict[str, slice] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.columns:
            raise ValueError("a table schema needs at least one feature column")
        names = [c.name for c in self.columns] + ([self.label.name] if self.label is not None else [])
        if len(set(names)) != len(names):
            raise ValueError(f"column names must be distinct, got {names}")
        if not self.order:
            object.__setattr__(self, "order", tuple(names))
        if sorted(self.order) != sorted(names):
            raise ValueError(f"order {list(self.order)} must name the columns {names}")
        if self.label is not None and (self.label.kind != "categorical"
                                       or len(self.label_counts) != len(self.label.categories)):
            raise ValueError("the label column must be categorical with one count per class")
        slices, start = {}, 0
        for c in self.columns:
            slices[c.name] = slice(start, start + c.width)
            start += c.width
        object.__setattr__(self, "_slices", slices)

    @property
    def names(self) -> list[str]:
        """Feature column names, in encoding order."""
        return [c.name for c in self.columns]

    @property
    def width(self) -> int:
        """``D``, the model coordinates of a row."""
        return sum(c.width for c in self.columns)

    @property
    def kinds(self) -> dict[str, str]:
        """``{name: "numeric" | "categorical"}`` in column order (integers count as numeric; the label
        column, when there is one, is categorical): the ``kinds`` of :mod:`monge.metrics.tabular`."""
        kind = {c.name: "categorical" if c.kind == "categorical" else "numeric" for c in self.columns}
        if self.label is not None:
            kind[self.label.name] = "categorical"
        return {name: kind[name] for name in self.order}

    def scaled(self) -> np.ndarray:
        """``(D,)`` bools: the coordinates a standardiser may rescale (numeric and integer columns; a
        one-hot block stays in :math:`\\{0, 1\\}`)."""
        return np.concatenate([np.full(c.width, c.kind != "categorical") for c in self.columns])

    def encode(self, table: Mapping[str, np.ndarray], dtype: Any = np.float32) -> np.ndarray:
        """The feature columns of ``table`` as ``(N, D)`` coordinates (see the module docstring);
        an unknown category or a missing column raises ``ValueError`` naming it."""
        missing = [c.name for c in self.columns if c.name not in table]
        if missing:
            raise ValueError(f"the table lacks the column(s) {missing}; the schema has {self.names}")
        n = len(table[self.columns[0].name])
        out = np.zeros((n, self.width), dtype=np.float64)
        for c in self.columns:
            values, where = np.asarray(table[c.name]), self._slices[c.name]
            if values.shape != (n,):
                raise ValueError(f"column {c.name!r} has shape {values.shape}, the table {n} rows")
            if c.kind == "categorical":
                out[np.arange(n), where.start + _category_index(c, values)] = 1.0
            else:
                out[:, where.start] = values.astype(np.float64)
        return out.astype(dtype, copy=False)

    def decode(self, x: np.ndarray, labels: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The table of the rows ``x`` ``(N, D)`` (data units), in column order; ``labels`` ``(N,)``
        (class indices) fill the label column, which is left out without them."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.width:
            raise ValueError(f"rows must have shape (N, {self.width}) for this schema, got {x.shape}")
        out: dict[str, np.ndarray] = {}
        for c in self.columns:
            block = x[:, self._slices[c.name]]
            if c.kind == "categorical":
                out[c.name] = np.asarray(c.categories, dtype=object)[block.argmax(1)]
            elif c.kind == "integer":
                out[c.name] = np.clip(np.rint(block[:, 0]), c.low, c.high).astype(np.int64)
            elif c.low == c.high:
                out[c.name] = np.full(len(x), c.low)
            else:
                out[c.name] = block[:, 0].copy() if c.decimals is None else np.round(block[:, 0], c.decimals)
        if labels is not None and self.label is not None:
            labels = np.asarray(labels)
            if labels.shape != (len(x),):
                raise ValueError(f"{labels.shape} labels for {len(x)} rows")
            out[self.label.name] = np.asarray(self.label.categories, dtype=object)[labels.astype(np.int64)]
        return {name: out[name] for name in self.order if name in out}

    def class_index(self, value: str) -> int:
        """The class of the label ``value`` (a category of the label column), else ``ValueError``."""
        if self.label is None:
            raise ValueError("this table has no label column")
        if value not in self.label.categories:
            shown = ", ".join(self.label.categories[:20]) + (", ..." if len(self.label.categories) > 20 else "")
            raise ValueError(f"{value!r} is not a class of the label column {self.label.name!r}: {shown}")
        return self.label.categories.index(value)

    def draw_labels(self, label: str | None, n: int, seed: int = 0) -> np.ndarray:
        """``(n,)`` classes for ``n`` samples: all ``label`` (a class name), the classes in turn
        (``"all"``: sample ``i`` gets class ``i mod K``), or drawn with the training rows'
        frequencies (``None``; seeded by ``seed``), so a sampled table has its label column."""
        if self.label is None:
            raise ValueError("this table has no label column")
        k = len(self.label.categories)
        if label == "all":
            return np.arange(n, dtype=np.int64) % k
        if label is not None:
            return np.full(n, self.class_index(str(label)), dtype=np.int64)
        p = np.asarray(self.label_counts, dtype=np.float64)
        return np.random.default_rng(seed).choice(k, size=n, p=p / p.sum()).astype(np.int64)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (lists, strings, numbers)."""
        return {"columns": [c.to_dict() for c in self.columns], "order": list(self.order), "header": self.header,
                "label": None if self.label is None else self.label.to_dict(),
                "label_counts": list(self.label_counts)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TableSchema:
        """The schema of :meth:`to_dict`; ``ValueError`` when malformed."""
        try:
            label = None if d.get("label") is None else Column.from_dict(d["label"])
            return cls(tuple(Column.from_dict(c) for c in d["columns"]), label,
                       tuple(int(k) for k in d.get("label_counts", ())), tuple(str(n) for n in d.get("order", ())),
                       bool(d.get("header", True)))
        except (KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"malformed table schema ({type(err).__name__}: {err})") from None


def _category_index(column: Column, values: np.ndarray) -> np.ndarray:
    lookup = {c: k for k, c in enumerate(column.categories)}
    try:
        return np.fromiter((lookup[str(v)] for v in values), dtype=np.int64, count=len(values))
    except KeyError as err:
        raise ValueError(f"column {column.name!r}: {err.args[0]!r} is not one of its categories") from None


# ---------------------------------------------------------------------------------------------
# inference from the cells of a file


@dataclass
class _Cells:
    """One column's cells as read: stripped text, missing mask, numbers (NaN where not one)."""

    name: str
    text: np.ndarray
    missing: np.ndarray
    values: np.ndarray
    numeric: np.ndarray  # parsed as a finite or infinite number
    title: str  # "column 2 ('b')", for errors


def _read_cells(name: str, cells: Sequence[str], title: str) -> _Cells:
    text = np.asarray([c.strip() for c in cells], dtype=object)
    missing = np.fromiter((t in MISSING_TOKENS for t in text), dtype=bool, count=len(text))
    values = np.full(len(text), np.nan)
    numeric = np.zeros(len(text), dtype=bool)
    for i, t in enumerate(text):
        if not missing[i]:
            try:
                values[i] = float(t)
                numeric[i] = True
            except ValueError:
                pass
    return _Cells(name, text, missing, values, numeric, title)


def infer_schema(
    cells: Mapping[str, Sequence[str]],
    *,
    lines: Sequence[int],
    where: str = "table",
    label: str | None = None,
    categorical: Sequence[str] = (),
    integer: Sequence[str] = (),
    numeric: Sequence[str] = (),
    missing: str = "refuse",
    max_categories: int = MAX_CATEGORIES,
    train: np.ndarray | None = None,
    header: bool = True,
    positions: Mapping[str, int] | None = None,
) -> tuple[TableSchema, dict[str, np.ndarray], np.ndarray | None]:
    """``(schema, table, labels)`` of a file's ``cells`` (``{column: cells}``, in file order; row
    ``i`` is on line ``lines[i]``): the schema (kinds inferred unless declared), the feature
    columns typed and imputed (``missing: impute``), and the ``(N,)`` class indices of the
    ``label`` column (``None`` without one). ``positions`` (0-based column of each name in the
    file) and ``header`` word the errors: ``line 3, column 2 ('b')``.

    Categories come from all rows; ranges, medians and most frequent labels from the rows
    ``train`` (indices; default all). Refused, each with one ``ValueError`` naming the column and
    the fix: a missing cell (``missing: refuse``), a text cell in a column declared numeric or
    integer, a fractional value in an integer column, an infinite value, an identifier column
    (as many categories as rows, or integers counting 1, 2, 3, ... in file order over at least
    :data:`COUNTER_MIN_ROWS` rows: ``drop: [col]``), more than ``max_categories`` categories, a
    label column with a missing cell. Logged: columns read as categorical because they mix
    numbers and text, imputed cells, constant columns, categories seen once.
    """
    if missing not in MISSING_POLICIES:
        raise ValueError(f"missing must be one of {', '.join(MISSING_POLICIES)}, got {missing!r}")
    declared = _declared(cells, categorical=categorical, integer=integer, numeric=numeric, label=label)
    n = len(lines)
    train = np.arange(n) if train is None else np.asarray(train)
    columns, table, notes = [], {}, _Notes()
    positions = positions or {name: i for i, name in enumerate(cells)}
    titles = {name: f"column {positions[name] + 1}" + (f" ({name!r})" if header else "") for name in cells}
    for name in cells:
        if name == label:
            continue
        col = _read_cells(name, cells[name], titles[name])
        column, values = _infer_column(col, declared.get(name), lines, where, missing, max_categories, train, notes)
        columns.append(column)
        table[name] = values
    if not columns:
        raise ValueError(f"{where}: no feature column left besides the labels")
    label_column: Column | None = None
    counts: tuple[int, ...] = ()
    labels: np.ndarray | None = None
    if label is not None:
        label_cells = _read_cells(label, cells[label], titles[label])
        label_column, labels = _label_column(label_cells, declared.get(label), lines, where, max_categories)
        counts = tuple(int(c) for c in np.bincount(labels[train], minlength=label_column.width))
    notes.log(where)
    schema = TableSchema(tuple(columns), label_column, counts, tuple(cells), header)
    return schema, table, labels


def _declared(cells: Mapping[str, Sequence[str]], *, label: str | None, **lists: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for kind, names in lists.items():
        if isinstance(names, str) or not isinstance(names, (list, tuple)):
            raise ValueError(f"{kind} must be a list of column names, got {names!r}")
        for name in names:
            if name not in cells:
                raise ValueError(f"{kind}: {name!r} is not a column; the columns are {list(cells)}")
            if name in out:
                raise ValueError(f"column {name!r} is declared both {out[name]} and {kind}; give it one kind")
            out[name] = kind
    if label is not None and out.get(label) in ("numeric", "integer"):
        raise ValueError(f"the label column {label!r} holds classes; it cannot be declared {out[label]}")
    return out


@dataclass
class _Notes:
    """What inference decided that the user should hear about, logged once per table."""

    mixed: list[str] = field(default_factory=list)
    imputed: list[str] = field(default_factory=list)
    constant: list[str] = field(default_factory=list)
    rare: list[str] = field(default_factory=list)

    def log(self, where: str) -> None:
        for what, items in (
            ("columns mixing numbers and text, read as categorical (declare them numeric: [...] to refuse the "
             "text cells instead)", self.mixed),
            ("missing cells imputed (missing: impute; numbers: the training rows' median, categories: their most "
             "frequent label)", self.imputed),
            ("constant columns, kept and written as their one value", self.constant),
            ("categories seen in one row only, kept (the model sees one example of each)", self.rare),
        ):
            if items:
                logger.warning("%s: %s: %s", where, what, "; ".join(items))


def _cell(where: str, lines: Sequence[int], i: int, col: _Cells) -> str:
    return f"{where}, line {lines[i]}, {col.title}"


def _infer_column(col: _Cells, declared: str | None, lines: Sequence[int], where: str, missing: str,
                  max_categories: int, train: np.ndarray, notes: _Notes) -> tuple[Column, np.ndarray]:
    """One feature column's :class:`Column` and typed values (imputed), or one ``ValueError``."""
    name, present = col.name, ~col.missing
    if missing == "refuse" and col.missing.any():
        _impute(col, "", lines, where, missing, train, notes)  # raises, naming the first missing cell
    if not present.any():
        raise ValueError(f"{where}: column {name!r} has no value in any row; drop it (drop: [{_yaml(name)}])")
    text_cells = present & ~col.numeric
    kind = declared
    if kind in ("numeric", "integer") and text_cells.any():
        i = int(np.flatnonzero(text_cells)[0])
        raise ValueError(f"{_cell(where, lines, i, col)}: {col.text[i]!r} is not a number, but the column is "
                         f"declared {kind}; fix the cell, or take {name!r} out of {kind}: to read it as categorical")
    if kind is None:
        kind = "categorical" if text_cells.any() else "integer" if _whole(col.values[present]) else "numeric"
        if kind == "categorical" and (present & col.numeric).any():
            i = int(np.flatnonzero(text_cells)[0])
            notes.mixed.append(f"{name!r} (e.g. {col.text[i]!r} on line {lines[i]})")
    if kind != "categorical":
        bad = present & ~np.isfinite(col.values)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{_cell(where, lines, i, col)}: non-finite value {col.text[i]!r}; fill or drop such "
                             "rows first")
        if kind == "integer" and not _whole(col.values[present]):
            i = int(np.flatnonzero(present & (col.values != np.round(col.values)))[0])
            raise ValueError(f"{_cell(where, lines, i, col)}: {col.text[i]!r} is not a whole number, but the "
                             f"column is declared integer; take {name!r} out of integer: to read it as numeric")
    if col.missing.any():
        _impute(col, kind, lines, where, missing, train, notes)
    if kind == "categorical":
        return _categorical(col, lines, where, max_categories, notes)
    if declared is None and kind == "integer" and len(col.values) >= COUNTER_MIN_ROWS \
            and bool((np.diff(col.values) == 1).all()):
        raise ValueError(f"{where}: column {name!r} counts {col.text[0]}, {col.text[1]}, {col.text[2]}, ... row by "
                         f"row, a row number rather than data; drop it (drop: [{_yaml(name)}]), or declare it "
                         f"integer: [{_yaml(name)}] to keep it")
    values = col.values if kind == "numeric" else col.values.astype(np.int64)
    low, high = float(col.values[train].min()), float(col.values[train].max())
    if low == high:
        notes.constant.append(f"{name!r} = {col.text[int(train[0])]}")
    return Column(name, kind, low=low, high=high, decimals=_decimals(col.text) if kind == "numeric" else None), values


def _decimals(text: np.ndarray) -> int | None:
    """Most digits after the point among the cells (``None`` where one is written with an exponent)."""
    most = 0
    for t in text:
        if "e" in t or "E" in t:
            return None
        point = t.find(".")
        most = max(most, 0 if point < 0 else len(t) - point - 1)
    return most


def _yaml(name: str) -> str:
    """``name`` as a recipe writes it in a list: bare when plain, else quoted (``""`` for a blank header)."""
    return name if name and name.replace("_", "").replace("-", "").isalnum() else json.dumps(name)


def _whole(values: np.ndarray) -> bool:
    return bool(np.isfinite(values).all() and (values == np.round(values)).all() and (np.abs(values) < 2**53).all())


def _impute(col: _Cells, kind: str, lines: Sequence[int], where: str, missing: str, train: np.ndarray,
            notes: _Notes) -> None:
    """Fill ``col``'s missing cells in place (``missing: impute``), else refuse the first one."""
    i = int(np.flatnonzero(col.missing)[0])
    if missing == "refuse":
        raise ValueError(f"{_cell(where, lines, i, col)}: missing value ({col.missing.sum()} in the column); "
                         "fill or drop incomplete rows, drop the column, or set missing: impute (numbers: the "
                         "training rows' median, categories: their most frequent label)")
    seen = train[~col.missing[train]]
    if not len(seen):
        raise ValueError(f"{where}: column {col.name!r} has no value in the training rows to impute from; drop it "
                         f"(drop: [{_yaml(col.name)}])")
    if kind == "categorical":
        labels, counts = np.unique(col.text[seen].astype(str), return_counts=True)
        fill_text, fill = str(labels[counts.argmax()]), np.nan
    else:
        fill = float(np.median(col.values[seen]))
        fill = float(np.floor(fill + 0.5)) if kind == "integer" else fill
        fill_text = f"{fill:g}"
    col.text[col.missing] = fill_text
    col.values[col.missing] = fill
    col.numeric[col.missing] = kind != "categorical"
    notes.imputed.append(f"{col.name!r}: {int(col.missing.sum())} cell(s) = {fill_text}")
    col.missing[:] = False


def _categorical(col: _Cells, lines: Sequence[int], where: str, max_categories: int,
                 notes: _Notes) -> tuple[Column, np.ndarray]:
    text = col.text.astype(str)
    categories, counts = np.unique(text, return_counts=True)
    name, n = col.name, len(text)
    if n > 1 and len(categories) == n:
        raise ValueError(f"{where}: column {name!r} has a different value in every row ({n} rows), an identifier "
                         f"rather than a category; drop it (drop: [{_yaml(name)}])")
    if len(categories) > max_categories:
        raise ValueError(f"{where}: column {name!r} has {len(categories)} categories, more than max_categories="
                         f"{max_categories}; drop it (drop: [{_yaml(name)}]), declare it numeric if it holds numbers, "
                         "or raise max_categories")
    categories = categories.tolist()  # str, not numpy's str_
    if len(categories) == 1:
        notes.constant.append(f"{name!r} = {categories[0]!r}")
    elif (counts == 1).any() and (counts > 1).any():
        once = [c for c, k in zip(categories, counts, strict=True) if k == 1]
        notes.rare.append(f"{name!r}: " + ", ".join(repr(c) for c in once[:5]) + (", ..." if len(once) > 5 else ""))
    return Column(name, "categorical", tuple(str(c) for c in categories)), text.astype(object)


def _label_column(col: _Cells, declared: str | None, lines: Sequence[int], where: str,
                  max_categories: int) -> tuple[Column, np.ndarray]:
    """The label column as classes: whole non-negative numbers are class indices (``K = max + 1``),
    any other column (or one declared categorical) has its sorted labels as classes."""
    name = col.name
    if col.missing.any():
        i = int(np.flatnonzero(col.missing)[0])
        raise ValueError(f"{_cell(where, lines, i, col)}: the label column has a missing cell "
                         f"({int(col.missing.sum())} in all); every row needs its class: fill or drop those rows, or "
                         "choose another label column")
    if declared is None and col.numeric.all():
        if not _whole(col.values):
            i = int(np.flatnonzero(col.values != np.round(col.values))[0])
            raise ValueError(f"{_cell(where, lines, i, col)}: labels must be whole numbers (class indices), got "
                             f"{col.text[i]}; they are not truncated. Map them to classes 0..K-1 first, or declare "
                             f"categorical: [{name}] to take each value as a class")
        if col.values.min() < 0:
            raise ValueError(f"{where}: column {name!r}: labels must be non-negative class indices, got "
                             f"{col.values.min():g}; declare categorical: [{name}] to take each value as a class")
        k = int(col.values.max()) + 1
        if k > max_categories:
            raise ValueError(f"{where}: label column {name!r} has class {k - 1}, more than max_categories="
                             f"{max_categories} classes; raise max_categories or choose another label column")
        return Column(name, "categorical", tuple(str(c) for c in range(k))), col.values.astype(np.int64)
    column, text = _categorical(col, lines, where, max_categories, _Notes())
    return column, _category_index(column, text)
