"""Files the commands write: exactly at the path given, atomically, never half-written.

Every output is written to a temporary file in the same folder and renamed over the target
(:func:`atomic_write_bytes`; the one place monge writes a file), so a full disk or a killed process leaves the
previous file intact and no empty file behind. Missing parent folders are created. An output
path that is an existing folder, or a file a run directory owns (:func:`check_output_file`), is
refused with a message, and no suffix is ever appended.
"""

from __future__ import annotations

import errno
import io
import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = [
    "atomic_write_bytes",
    "check_name_length",
    "check_output_file",
    "check_output_files",
    "describe_os_error",
    "write_array",
    "write_bytes",
    "write_text",
]

#: Longest file or folder name most file systems accept (bytes of UTF-8).
MAX_NAME_BYTES = 255


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename + directory fsync)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:120]}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            if hasattr(os, "fchmod"):  # as an ordinary new file (mkstemp makes it private)
                os.fchmod(fh.fileno(), 0o666 & ~_umask())
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_name_length(name: str, what: str) -> None:
    """Raise ``ValueError`` when ``name`` is longer than a file system accepts."""
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise ValueError(f"{what} is {len(name)} characters; file names are at most {MAX_NAME_BYTES} bytes, "
                         "choose a shorter one")


def check_output_file(path: str | Path, what: str = "-o", instead: str | Path | None = None) -> Path:
    """``path`` as an output file: not an existing folder, no part of it too long, no parent that is a
    file, and not a file a run directory owns (its checkpoint, log, recipe, maps, caches:
    :func:`monge.run.rundir.check_not_run_file`, whose error suggests ``instead``)."""
    from .run.rundir import check_not_run_file

    path = Path(path)
    for part in path.parts:
        check_name_length(part, f"a part of {what} {str(path)[:40]}...")
    if path.is_dir():
        raise ValueError(f"{what} {path} is a folder; give a file path inside it, e.g. {path / 'samples.npy'}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{what} {path}: {parent} is a file, not a folder")
            break
    check_not_run_file(path, what, instead)
    return path


def check_output_files(outputs: dict[str, str | Path | None]) -> None:
    """:func:`check_output_file` on each given path of ``{option: path}`` (``None``: not asked for)."""
    for what, path in outputs.items():
        if path is not None:
            check_output_file(path, what)


def write_array(path: str | Path, x: np.ndarray) -> Path:
    """Save ``x`` at exactly ``path`` (atomically): CSV text when it ends in ``.csv`` (2-D
    arrays), else the ``.npy`` format (whatever the suffix)."""
    path = check_output_file(path)
    buf = io.BytesIO()
    if path.suffix.lower() == ".csv":
        if x.ndim != 2:
            raise ValueError(f"-o {path}: a CSV holds (N, D) rows; samples have shape {x.shape}, use .npy")
        np.savetxt(buf, x, delimiter=",", fmt="%.7g")
    else:
        np.save(buf, x, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` at ``path`` atomically (an image rendered to memory, for example)."""
    path = check_output_file(path)
    atomic_write_bytes(path, data)
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` at ``path`` atomically (UTF-8)."""
    return write_bytes(path, text.encode("utf-8"))


def describe_os_error(err: OSError) -> str:
    """One line for an ``OSError``: the file, what failed and what to do."""
    where = f" {err.filename}" if err.filename else ""
    what = err.strerror or str(err)
    hint = {
        errno.ENOSPC: "free some disk space (the previous files are intact)",
        errno.EDQUOT: "free some disk quota (the previous files are intact)",
        errno.EACCES: "check the folder's permissions or choose another output folder",
        errno.EPERM: "check the folder's permissions or choose another output folder",
        errno.EROFS: "the file system is read-only; choose another output folder",
        errno.ENAMETOOLONG: "choose a shorter name",
        errno.EISDIR: "give a file path, not a folder",
        errno.ENOTDIR: "a part of the path is a file, not a folder",
    }.get(err.errno or 0, "")
    return f"cannot access{where}: {what}" + (f"; {hint}" if hint else "")
