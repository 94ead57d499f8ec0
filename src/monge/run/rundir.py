"""Who may write a run directory: no silent overwrite, one writer at a time.

A directory holding ``checkpoint.safetensors`` or ``log.csv`` is an *existing run*. One without a
checkpoint (killed before its first one) has nothing to resume: training into it starts it again,
naming the partial files it replaces (the state of an unfinished map fit is kept and resumed).
Training into a run with a checkpoint needs ``resume`` (continue it) or ``overwrite``:
``"backup"`` (``True``) moves its files to a
sibling ``RUN.bak-<timestamp>`` and says so; ``"replace"`` (used by ``monge demo``, whose runs
belong to it) deletes the run's own files (checkpoint, log, evaluations, config, cached fit) and
names them. Nothing is ever removed silently.

A writer holds ``RUN/monge.lock`` (JSON: pid, host, start time), created atomically. A second
writer is refused with the holder's PID and host. A lock whose PID no longer exists on this host
is stale (its process was killed): it is taken over with a notice. A lock from another host
cannot be checked and is reported with how to remove it.

A run's own files (:data:`RUN_FILES`: checkpoint, log, recipe, evaluations, fitted maps and fit
states, step grids, latent caches) are written only by the code that owns them: an output path
of a command (``-o``, ``--grid``, ``--csv``, ...) that names one of them is refused by
:func:`check_not_run_file`, naming the file and a safe path instead.
"""

from __future__ import annotations

import fnmatch
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

__all__ = [
    "LOCK_NAME",
    "RUN_FILES",
    "RunExistsError",
    "RunFileError",
    "RunLockedError",
    "RunLock",
    "is_existing_run",
    "is_run_dir",
    "run_file_role",
    "check_not_run_file",
    "partial_run_files",
    "no_checkpoint_message",
    "DEMO_MARKER",
    "claim_demo_dir",
    "claim_run_dir",
    "claim_for_ranks",
]

LOCK_NAME = "monge.lock"
#: files that make a directory an existing run
_RUN_MARKERS = ("checkpoint.safetensors", "log.csv")
#: a run's own files, removed by ``overwrite="replace"`` (caches fitted to the old run included)
_RUN_FILES = ("checkpoint.safetensors", "log.csv", "eval.md", "eval.csv", "nll.csv", "config.yaml",
              "timesteps.safetensors")
#: What a run directory holds that monge writes itself, by file-name pattern: no command writes an
#: output over one of them. The names are those of ``run/checkpoint.py`` (``CHECKPOINT_NAME``),
#: ``run/logs.py``, ``run/evaluation.py``, ``couplings/maps.py`` (``MAP_FILE``, ``CLASS_MAPS_FILE``,
#: ``FIT_STATE_FILE``), ``generate.py`` (``TIMESTEPS_FILE``), ``couplings/reflow.py`` (``PAIRS_NAME``)
#: and ``latent.py``; ``tests/test_rundir_files.py`` checks that they stay covered.
RUN_FILES: dict[str, str] = {
    "checkpoint.safetensors": "its checkpoint",
    ".checkpoint.safetensors.*.tmp": "a checkpoint being written",
    "log.csv": "its training log",
    "config.yaml": "its recipe",
    "eval.md": "its latest evaluation",
    "eval.csv": "its evaluations",
    "nll.csv": "its likelihood evaluations",
    LOCK_NAME: "its lock",
    "semidiscrete.safetensors": "its semi-discrete map",
    "semidiscrete_classes.safetensors": "its per-class semi-discrete maps",
    "semidiscrete_fit*.safetensors": "the state of its unfinished map fit",
    "timesteps.safetensors": "its fitted step grids",
    "latents-*.safetensors": "its cache of encoded data",
    "reflow_pairs.safetensors": "its reflow pairs",
}


#: The file that marks a folder's runs as the demo's own (a rerun of the demo replaces them).
DEMO_MARKER = ".monge-demo"


class RunFileError(ValueError):
    """An output path names a file a run directory owns."""


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


#: Files that only a run (or a fit into a run directory) leaves: they make a folder a run directory;
#: an evaluation or a cache alone does not (a user's own ``-o eval.md`` beside other outputs).
_RUN_DIR_MARKERS = ("checkpoint.safetensors", ".checkpoint.safetensors.*.tmp", "log.csv", "config.yaml", LOCK_NAME,
                    "semidiscrete*.safetensors")


def is_run_dir(folder: str | Path) -> bool:
    """Whether ``folder`` is a run directory: it holds a checkpoint, a training log, a run's recipe
    (``config.yaml``), a lock or a fitted map (a run, or what one left behind)."""
    folder = Path(folder)
    try:
        names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
    except OSError:
        return False
    return any(fnmatch.fnmatchcase(name, pattern) for name in names for pattern in _RUN_DIR_MARKERS)


def run_file_role(path: str | Path) -> str | None:
    """What ``path`` is to the run directory it sits in (``"its checkpoint"``, ...), or ``None`` when
    it is no run's own file (its folder is not a run directory, or the name is not a run file)."""
    path = Path(path)
    role = next((what for pattern, what in RUN_FILES.items() if fnmatch.fnmatchcase(path.name, pattern)), None)
    return role if role is not None and is_run_dir(path.parent) else None


def check_not_run_file(path: str | Path, what: str = "-o", instead: str | Path | None = None) -> None:
    """Raise :class:`RunFileError` when the output ``path`` (or the file it links to) is a file a run
    directory owns (:data:`RUN_FILES`); the message names the file and ``instead``, a safe path."""
    path = Path(path)
    for candidate in dict.fromkeys((path, path.resolve())):
        role = run_file_role(candidate)
        if role is not None:
            safe = instead if instead is not None and run_file_role(instead) is None else _beside(candidate)
            raise RunFileError(f"{what} {path} would overwrite {role} ({candidate.name} of the run in "
                               f"{candidate.parent}), which monge writes itself; write elsewhere, e.g. "
                               f"{what} {safe}")


def _beside(path: Path) -> Path:
    """A name next to the run file ``path`` that no run owns: ``eval.md`` -> ``eval-output.md``."""
    stem, suffix = path.name.lstrip(".").split(".")[0], path.suffix
    return path.parent / f"{stem}-output{'.npy' if suffix in ('.safetensors', '.tmp', '.lock') else suffix}"


def partial_run_files(run_dir: str | Path) -> list[str]:
    """The files of a run that stopped before its first checkpoint (a log, evaluations, a recipe);
    empty when ``run_dir`` holds a checkpoint or no such file."""
    run_dir = Path(run_dir)
    if (run_dir / _RUN_MARKERS[0]).exists():
        return []
    return [name for name in _RUN_FILES if (run_dir / name).is_file()]


def no_checkpoint_message(run_dir: str | Path) -> str:
    """Why ``--resume`` cannot continue ``run_dir`` (it holds no checkpoint) and the one command that
    starts it."""
    run_dir = Path(run_dir)
    partial = partial_run_files(run_dir)
    if partial:
        return (f"--resume: {run_dir} has no checkpoint yet (the run stopped before its first one; it left "
                f"{', '.join(partial)}); start it again with the same command without --resume")
    return (f"--resume: no checkpoint at {run_dir / _RUN_MARKERS[0]} (no run was trained there yet); train it "
            "with the same command without --resume")


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

    def acquire(self) -> RunLock:
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

    def __enter__(self) -> RunLock:
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
    partial = partial_run_files(run_dir)
    if partial and not overwrite:  # stopped before its first checkpoint: nothing to resume, start again
        for name in partial:
            (run_dir / name).unlink()
        _notice(f"{run_dir} holds a run stopped before its first checkpoint (nothing to resume); starting it "
                f"again (removed {', '.join(partial)})")
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


def claim_demo_dir(out: str | Path, names: list[str] | tuple[str, ...]) -> Path:
    """Check that the demo may write its runs ``out/<name>`` and replace them on a rerun: ``out`` is
    the demo's (it holds :data:`DEMO_MARKER`) or none of those runs exists yet; then mark it.
    Raises :class:`RunExistsError` naming the runs the demo did not write."""
    out = Path(out)
    check_not_run_file(out, "-o")
    if (out / DEMO_MARKER).is_file():
        return out
    theirs = [name for name in names if is_run_dir(out / name)]
    if theirs:
        raise RunExistsError(f"-o {out} holds runs the demo did not write ({', '.join(theirs)}), which a demo "
                             "replaces; choose another -o (e.g. a new folder)")
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARKER).write_text("runs written by `monge demo`; a rerun of the demo replaces them\n")
    return out


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
