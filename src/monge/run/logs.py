"""The CSV logs of a run directory: ``log.csv`` (one row per logged step) and evaluation tables."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

__all__ = ["CsvLog", "append_csv"]


def append_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    """Append ``rows`` to a CSV log (with ``header`` when new); a new file whose write fails (disk
    full) is removed, so no empty file is left behind."""
    new = not path.exists()
    try:
        with path.open("a", newline="") as fh:
            writer = csv.writer(fh)
            if new:
                writer.writerow(header)
            writer.writerows(rows)
    except OSError:
        if new:
            path.unlink(missing_ok=True)
        raise


class CsvLog:
    """Append-only CSV, flushed per row; a no-op when not ``enabled`` (off rank 0)."""

    def __init__(self, path: Path, header: list[str], append: bool, enabled: bool = True) -> None:
        self._fh = None
        if not enabled:
            return
        exists = path.exists() and append
        #: positions of the written columns: a resumed log keeps its own header (older runs have
        #: fewer columns), so only the columns it names are written
        self._keep: list[int] | None = None
        if exists:
            with path.open(newline="") as fh:
                old = next(csv.reader(fh), None)
            if old and old != header:
                self._keep = [header.index(c) for c in old if c in header]
        self._fh = path.open("a" if append else "w", newline="")
        self._writer = csv.writer(self._fh)
        if not exists:
            try:
                self._writer.writerow(header)
                self._fh.flush()
            except OSError:  # disk full: leave no empty log (it would mark the folder as a run)
                try:
                    self._fh.close()
                except OSError:
                    pass
                self._fh = None
                if not append:
                    path.unlink(missing_ok=True)
                raise

    def write(self, row: list[Any]) -> None:
        if self._fh is not None:
            self._writer.writerow(row if self._keep is None else [row[i] for i in self._keep])
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
