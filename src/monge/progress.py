"""Progress of long steps on stderr: a tqdm bar (count, rate, time left) or a one-line status.

``progress`` is tri-state everywhere: ``None`` shows it when stderr is a terminal (never in logs
or pipes), ``True`` always, ``False`` never. :func:`progress_bar` and :func:`status` read
``sys.stderr`` when called, so a test can swap in a stream whose ``isatty()`` is true.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

__all__ = ["item_status", "progress_bar", "progress_enabled", "status", "training_bar"]


def progress_enabled(progress: bool | None, stream: TextIO | None = None) -> bool:
    """``progress`` if given, else whether ``stream`` (default ``sys.stderr``) is a terminal."""
    if progress is not None:
        return bool(progress)
    stream = sys.stderr if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)())


def progress_bar(total: int, desc: str, *, progress: bool | None = None, initial: int = 0, unit: str = "it",
                 leave: bool = False) -> Any:
    """A tqdm bar on stderr (disabled, but still usable, when :func:`progress_enabled` is false)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                leave=leave, disable=not progress_enabled(progress))


def training_bar(total: int, initial: int, enabled: bool, desc: str) -> Any:
    """The training bar (steps): when ``enabled``, shown if stderr is a terminal."""
    return progress_bar(total, desc, progress=None if enabled else False, initial=initial, unit="step")


@contextmanager
def status(message: str, *, progress: bool | None = None, estimate: float | None = None) -> Iterator[None]:
    """One line on stderr around a step that has no count to show: ``message ... (about E s)`` at
    the start, ``message: done in T s`` at the end."""
    stream = sys.stderr
    enabled = progress_enabled(progress, stream)
    if enabled:
        hint = f" (about {estimate:.0f} s)" if estimate is not None else ""
        stream.write(f"{message} ...{hint}\n")
        stream.flush()
    start = time.perf_counter()
    yield
    if enabled:
        stream.write(f"{message}: done in {time.perf_counter() - start:.1f} s\n")
        stream.flush()


def item_status(k: int, total: int, what: str, elapsed: float, *, progress: bool | None = None,
                prefix: str = "") -> None:
    """One line on stderr before item ``k`` of ``total`` (1-based): ``prefix: what k of total``, and
    from the ``elapsed`` seconds of the ``k - 1`` items done, the time left at that pace."""
    if not progress_enabled(progress):
        return
    left = ""
    if k > 1:
        per = elapsed / (k - 1)
        left = f", about {per * (total - k + 1) / 60:.1f} min left at {per:.0f} s each"
    head = f"{prefix}: " if prefix else ""
    noun, _, rest = what.partition(" ")
    sys.stderr.write(f"{head}{noun} {k} of {total} {rest}{left}\n".replace("  ", " "))
    sys.stderr.flush()
