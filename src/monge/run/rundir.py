"""Who may write a run directory: no silent overwrite, one writer at a time.

A directory holding ``checkpoint.safetensors`` or ``log.csv`` is an *existing run*. Training into
it needs ``resume`` (continue it) or ``overwrite``: ``"backup"`` (``True``) moves its files to a
sibling ``RUN.bak-<timestamp>`` and says so; ``"replace"`` (used by ``monge demo``, whose runs
belong to it) deletes the run's own files (checkpoint, log, evaluations, config, cached fit) and
names them. Nothing is ever removed silently.

A writer holds ``RUN/monge.lock`` (JSON: pid, host, start time), created atomically. A second
writer is refused with the holder's PID and host. A lock whose PID no longer exists on this host
is stale (its process was killed): it is taken over with a notice. A lock from another host
cannot be checked and is reported with how to remove it.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

__all__ = [
    "LOCK_NAME",
    "RunExistsError",
    "RunLockedError",
    "RunLock",
    "is_existing_run",
    "claim_run_dir",
    "claim_for_ranks",
]

LOCK_NAME = "monge.lock"
#: files that make a directory an existing run
_RUN_MARKERS = ("checkpoint.safetensors", "log.csv")
#: a run's own files, removed by ``overwrite="replace"``
_RUN_FILES = ("checkpoint.safetensors", "log.csv", "eval.md", "eval.csv", "config.yaml")


class RunExistsError(ValueError):
    """Training would overwrite an existing run."""


class RunLockedError(ValueError):
    """Another process is writing the run directory."""


def _notice(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def is_existing_run(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a checkpoint or a training log."""
    run_dir = Path(run_dir)
    return any((run_dir / name).exists() for name in _RUN_MARKERS)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except (OSError, OverflowError, ValueError):
        return False
    return True


class RunLock:
    """An exclusive, stale-aware lock file in a run directory (``with RunLock(dir): ...``)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.held = False

    def _holder(self) -> dict | None:
        try:
            info = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}
        return info if isinstance(info, dict) else {}

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(3):
            tmp = self.path.with_name(f".{LOCK_NAME}.{os.getpid()}.tmp")
            try:
                tmp.write_text(json.dumps(me))  # a failed write (disk full) leaves no file behind
                os.link(tmp, self.path)  # atomic, fails if a lock exists; the lock is complete when seen
                self.held = True
                return self
            except FileExistsError:
                pass
            finally:
                tmp.unlink(missing_ok=True)
            holder = self._holder()
            if holder is None:  # released in between: try again
                continue
            pid, host = holder.get("pid"), holder.get("host")
            if not isinstance(pid, int) or isinstance(pid, bool):
                raise RunLockedError(f"{self.path.parent} has an unreadable lock file {self.path}; if no other "
                                     "monge process writes this run, delete the file and retry")
            if host == me["host"] and pid != os.getpid() and not _pid_alive(pid):
                _notice(f"taking over a stale lock of process {pid} (no longer running) on {self.path.parent}")
                self.path.unlink(missing_ok=True)
                continue
            where = "this host" if host == me["host"] else f"host {host}"
            extra = "" if host == me["host"] else (
                f"; if that process has ended, delete {self.path} and retry")
            raise RunLockedError(
                f"run {self.path.parent} is being written by process {pid} on {where} (since "
                f"{holder.get('started', '?')}); wait for it to finish or stop it{extra}")
        raise RunLockedError(f"could not lock {self.path.parent}: its lock file keeps changing")

    def release(self) -> None:
        if self.held:
            holder = self._holder()
            if holder and holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _backup(run_dir: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    backup = run_dir.with_name(f"{run_dir.name}.bak-{stamp}")
    n = 1
    while backup.exists():
        n += 1
        backup = run_dir.with_name(f"{run_dir.name}.bak-{stamp}-{n}")
    backup.mkdir()
    for entry in sorted(run_dir.iterdir()):
        if entry.name != LOCK_NAME:
            os.replace(entry, backup / entry.name)
    return backup


def claim_run_dir(run_dir: str | Path, resume: bool = False, overwrite: bool | str = False,
                  extra_files: tuple[str, ...] = ()) -> None:
    """Refuse to start a fresh run over an existing one unless ``overwrite`` (see the module doc).

    Call with the run's lock held. ``extra_files``: more of the run's own files that
    ``overwrite="replace"`` removes (e.g. a coupling's cached fit).
    """
    run_dir = Path(run_dir)
    if resume or not is_existing_run(run_dir):
        return
    if overwrite is True or overwrite == "backup":
        backup = _backup(run_dir)
        _notice(f"--overwrite: the previous run in {run_dir} was moved to {backup}")
    elif overwrite == "replace":
        removed = []
        for name in (*_RUN_FILES, *extra_files):
            if (run_dir / name).is_file():
                (run_dir / name).unlink()
                removed.append(name)
        _notice(f"replacing the previous run in {run_dir} (removed {', '.join(removed)})")
    elif overwrite:
        raise ValueError(f"overwrite must be False, True, 'backup' or 'replace', got {overwrite!r}")
    else:
        raise RunExistsError(
            f"{run_dir} already holds a run (checkpoint or log.csv); continue it with --resume "
            "(Trainer.fit(resume=True)), start it again with --overwrite (the old run is moved to a "
            "backup), or choose another name")


def claim_for_ranks(run_dir: Path, info: Any, resume: bool, overwrite: bool | str,
                    extra: tuple[str, ...] = ()) -> RunLock | None:
    """Rank 0 locks ``run_dir`` and checks it may be written (:func:`claim_run_dir`); distributed,
    every rank gets rank 0's verdict, so all raise the same error. Returns rank 0's lock."""
    from . import distributed

    lock, error = None, None
    if info.rank == 0:
        try:
            lock = RunLock(run_dir).acquire()
            claim_run_dir(run_dir, resume, overwrite, extra)
        except (RunExistsError, RunLockedError, ValueError, OSError) as err:
            if lock is not None:
                lock.release()
            error = err
    if info.enabled:
        verdicts = distributed.all_gather_objects(None if error is None else (type(error).__name__, str(error)))
        if error is None and verdicts[0] is not None:
            kind, message = verdicts[0]
            cls = {"RunExistsError": RunExistsError, "RunLockedError": RunLockedError}.get(kind, ValueError)
            error = cls(message)
    if error is not None:
        raise error
    return lock
