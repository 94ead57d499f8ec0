"""Ctrl-C during training: finish the step, save, stop (a second Ctrl-C stops at once); elsewhere
(a map fit, a final evaluation, sampling), :func:`interrupt_note` says what was saved and how to
continue."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["route_sigint", "interrupt_note", "save_on_interrupt", "NOTHING_WRITTEN"]

#: The note of a command interrupted before it wrote anything.
NOTHING_WRITTEN = "interrupted; nothing was written (existing files are unchanged): run the command again"


@contextmanager
def interrupt_note(note: str, *, replace: bool = False) -> Iterator[None]:
    """Give a Ctrl-C inside the block the one line that says what was saved and how to continue:
    it leaves as ``KeyboardInterrupt(note)``. A note set further in (a narrower block, the trainer's)
    is kept, unless ``replace`` (a command whose continuation differs from the trainer's)."""
    try:
        yield
    except KeyboardInterrupt as err:
        if err.args and not replace:
            raise
        raise KeyboardInterrupt(note) from None


def route_sigint(trainer: Any) -> Callable[[], None]:
    """Route SIGINT to ``trainer.interrupted`` while a step runs (``trainer.phase`` not ``None``);
    between steps, or on a second Ctrl-C, raise ``KeyboardInterrupt`` as usual. Only from the
    main thread and over the default handler; returns the undo."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return lambda: None

    def on_sigint(signum, frame):
        if trainer.phase is None or trainer.interrupted:
            raise KeyboardInterrupt
        trainer.interrupted = True
        if trainer.dist.rank == 0:
            print(f"\nCtrl-C: stopping after step {trainer.step + 1} (press again to stop at once)",
                  file=sys.stderr, flush=True)

    signal.signal(signal.SIGINT, on_sigint)

    def restore() -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)

    return restore


def save_on_interrupt(trainer: Any) -> str:
    """After Ctrl-C: save at the step boundary, unless an optimiser/EMA update was torn; returns the
    note of what was saved and how to continue (the CLI prints it)."""
    torn = trainer.phase is not None  # interrupted inside an optimiser/EMA update
    synced = trainer.dist.enabled and trainer._stop_all and not torn
    trainer.batches.stop_pipeline()
    if torn and not trainer.checkpoint_path.is_file():
        return (f"interrupted in the middle of step {trainer.step + 1}'s update, before a first checkpoint: the same "
                "command starts the run again")
    if torn:
        return (f"interrupted in the middle of step {trainer.step + 1}'s update; the checkpoint was not updated "
                f"(the last one in {trainer.run_dir} stays valid): the same command with --resume continues")
    trainer.save(gather=synced)
    return (f"interrupted at step {trainer.step}; checkpoint saved to {trainer.checkpoint_path}: the same command "
            "with --resume continues")
