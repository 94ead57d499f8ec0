"""Ctrl-C during training: finish the step, save, stop (a second Ctrl-C stops at once)."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any, Callable

__all__ = ["route_sigint", "save_on_interrupt"]


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
    return lambda: signal.signal(signal.SIGINT, signal.default_int_handler)


def save_on_interrupt(trainer: Any) -> None:
    """After Ctrl-C: save at the step boundary and say so, unless an optimiser/EMA update was torn
    (then the last checkpoint stays, and the message says that instead)."""
    torn = trainer.phase is not None  # interrupted inside an optimiser/EMA update
    synced = trainer.dist.enabled and trainer._stop_all and not torn
    trainer.batches.stop_pipeline()
    main = trainer.dist.rank == 0
    if torn:
        if main:
            print(f"\ninterrupted in the middle of step {trainer.step + 1}'s update; the checkpoint was not "
                  f"updated (the last one in {trainer.run_dir} stays valid)", file=sys.stderr)
    else:
        trainer.save(gather=synced)
        if main:
            print(f"\ninterrupted at step {trainer.step}; checkpoint saved to {trainer.checkpoint_path}",
                  file=sys.stderr)
