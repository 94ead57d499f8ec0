"""What a run keeps of its data, so that a checkpoint samples without it.

A checkpoint stores the sample shape (``state["data_shape"]``), for a CSV table its schema
(``state["table_schema"]``: column names, kinds, categories, ranges; JSON) and, for tables read with
``standardize: true``, the column statistics (tensors ``data.target.mean`` / ``data.target.std``,
and ``data.source.*`` for a standardised source table). Sampling draws from the source alone (a
bare ``gaussian`` takes the stored shape) and maps samples back to data units, so a run whose data
folder moved still samples. Commands that do need the data name the stored path and how to point
at the new one when it cannot be read.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from .config import Config, DataConfig
from .data.schema import TableSchema
from .data.sources import DataSource, GaussianSource, build_data, build_source, data_paths
from .data.tabular import Standardizer

__all__ = [
    "build_run_data",
    "check_same_data",
    "data_fingerprint",
    "data_state",
    "data_tensors",
    "is_standardized",
    "sampling_source",
    "stored_schema",
    "stored_shape",
    "stored_standardizer",
    "tensor_digest",
]


def data_tensors(source: DataSource, target: DataSource) -> dict[str, Tensor]:
    """Checkpoint tensors of the sides' standardisers (none for unstandardised data)."""
    out: dict[str, Tensor] = {}
    for side, data in (("source", source), ("target", target)):
        scaler = getattr(data, "standardizer", None)
        if scaler is not None:
            out.update(scaler.to_tensors(f"data.{side}."))
    return out


#: The checkpoint state's key of the target table's schema.
TABLE_SCHEMA = "table_schema"


def data_state(target: DataSource) -> dict[str, Any]:
    """Checkpoint state of the target data: a CSV table's schema (:class:`~monge.data.schema.TableSchema`)."""
    schema = getattr(target, "schema", None)
    return {} if schema is None else {TABLE_SCHEMA: schema.to_dict()}


def stored_schema(state: Mapping[str, Any], path: str | Path) -> TableSchema | None:
    """The table schema a checkpoint stores (``None`` for other data, or a run written before
    schemas were stored); raises ``ValueError`` when it is malformed."""
    raw = state.get(TABLE_SCHEMA)
    if raw is None:
        return None
    try:
        if not isinstance(raw, Mapping):
            raise ValueError(f"expected a mapping, got {type(raw).__name__}")
        return TableSchema.from_dict(raw)
    except ValueError as err:
        raise ValueError(f"checkpoint {path}: bad state.{TABLE_SCHEMA} ({err})") from None


def is_standardized(config: Config, side: str = "target") -> bool:
    """Whether the run's ``data.<side>`` is a table read with ``standardize: true``."""
    return bool(getattr(config.data, side).params.get("standardize", False))


def stored_standardizer(tensors: Mapping[str, Tensor], config: Config, path: str | Path,
                        side: str = "target") -> Standardizer | None:
    """The checkpoint's standardiser of ``data.<side>`` (``None`` when the side is not standardised);
    raises ``ValueError`` when the config asks for one and the checkpoint lacks it or holds a bad one."""
    try:
        scaler = Standardizer.from_tensors(dict(tensors), f"data.{side}.")
    except ValueError as err:
        raise ValueError(f"checkpoint {path}: bad standardisation statistics of data.{side} ({err})") from None
    if is_standardized(config, side) and scaler is None:
        raise ValueError(f"checkpoint {path}: data.{side} is standardised but the checkpoint holds no "
                         f"data.{side}.mean / std; it cannot map samples back to data units")
    return scaler




#: How a command that needs the data points at its new location (the default: ``monge eval``).
EVAL_FIX = "point at its new place with --data-path NEW"


def build_run_data(config: Config, what: str, fix: str = EVAL_FIX) -> tuple[DataSource, DataSource]:
    """:func:`~monge.data.sources.build_data` of a stored run; when the data cannot be read, the
    error names the stored paths and ``fix``, how to point at the new location. ``what``: the command."""
    try:
        return build_data(config.data)
    except (ValueError, OSError) as err:
        paths = data_paths(config.data)
        if not paths:
            raise
        raise ValueError(f"{what} needs the run's data, which cannot be read: {err}. The run stores "
                         f"{'; '.join(paths)}; if the data moved, {fix}") from None


def stored_shape(state: Mapping[str, Any], config: Config, path: str | Path) -> tuple[int, ...]:
    """The sample shape a checkpoint stores; older checkpoints (without it) read the data."""
    shape = state.get("data_shape")
    if shape is None:
        return build_run_data(config, f"checkpoint {path} (written before runs stored their data shape)",
                              "move it back to the stored path")[0].shape
    if not isinstance(shape, list) or not shape or len(shape) > 8 or \
            any(isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= 2**31 for d in shape):
        raise ValueError(f"checkpoint {path}: state.data_shape must be a list of positive integers, got {shape!r}")
    return tuple(shape)


def sampling_source(data: DataConfig, shape: tuple[int, ...] | None) -> DataSource:
    """The source (t=0) to sample from, built without the target: a bare ``gaussian`` takes
    ``shape`` (the run's sample shape). ``shape=None`` builds both sides."""
    if shape is None:
        return build_data(data)[0]
    source = build_source(data.source)
    if isinstance(source, GaussianSource) and not source.shape_given:
        source = GaussianSource(list(shape))
    if tuple(source.shape) != tuple(shape):
        raise ValueError(f"data.source {data.source} has sample shape {source.shape}, the model {tuple(shape)}")
    return source


def data_fingerprint(source: DataSource, target: DataSource) -> dict[str, list]:
    """``{side: [shape, sum, sum of squares, sha256]}`` of the sides held in memory (data sets,
    tables; not samplers; sums in float64, the digest of the tensor's bytes): every resume checks
    that the run finds the data it trained on (moved or not, edited in place or not)."""
    import torch

    out: dict[str, list] = {}
    for side, data in (("source", source), ("target", target)):
        x = getattr(data, "data", None)
        if torch.is_tensor(x):
            x64 = x.to(torch.float64)
            out[side] = [list(x.shape), float(x64.sum()), float(x64.square().sum()), tensor_digest(x)]
    return out


def tensor_digest(x: Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes (hex)."""
    import hashlib

    import torch

    h = hashlib.sha256(f"{x.dtype}{tuple(x.shape)}".encode())
    h.update(x.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()





def check_same_data(stored: Any, current: dict[str, list], path: str | Path) -> None:
    """Raise ``ValueError`` when a side's stored fingerprint differs from the data read now."""
    import math

    if not isinstance(stored, dict):
        return  # written before runs kept a fingerprint
    for side, now in current.items():
        then = stored.get(side)
        if not isinstance(then, list) or len(then) not in (3, 4):
            continue
        same = then[0] == now[0] and all(math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
                                         for a, b in zip(then[1:3], now[1:3], strict=True))
        if len(then) == 4 and len(now) == 4:  # older checkpoints keep the sums only
            same = same and then[3] == now[3]
        if not same:
            raise ValueError(f"checkpoint {path}: the data now at data.{side}.path is not the data the run trained on "
                             f"(shape {then[0]} -> {now[0]}, or other values: edited or replaced since); a resumed "
                             "run trains on the same data. Restore the original data, or start a new run (another "
                             "name, or --overwrite)")
