"""Finding a run's checkpoint from the path a user typed (no torch: it runs before heavy imports)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["CHECKPOINT_NAME", "check_checkpoint_path", "missing_checkpoint", "runs_under"]

CHECKPOINT_NAME = "checkpoint.safetensors"


def runs_under(directory: str | Path, depth: int = 2) -> list[Path]:
    """Run directories (holding a checkpoint) below ``directory``, at most ``depth`` levels down, sorted."""
    directory = Path(directory)
    found: list[Path] = []
    for level in range(1, depth + 1):
        found += [p.parent for p in directory.glob("/".join(["*"] * level) + "/" + CHECKPOINT_NAME)]
    return sorted(found)


def missing_checkpoint(path: str | Path) -> str | None:
    """``None`` when ``path`` is a checkpoint file or a run directory holding one, else what is wrong:
    a directory of runs (a demo's output) names the runs inside it."""
    path = Path(path)
    if path.is_file() or (path.is_dir() and (path / CHECKPOINT_NAME).is_file()):
        return None
    if path.is_dir():
        runs = runs_under(path)
        if runs:
            names = ", ".join(str(r) for r in runs[:8]) + (", ..." if len(runs) > 8 else "")
            return (
                f"checkpoint not found: {path} is not a run but holds {len(runs)} run{'s' if len(runs) > 1 else ''} "
                f"({names}); "
                f"give one of them, e.g. {runs[0]}"
            )
        return f"checkpoint not found: {path} holds no {CHECKPOINT_NAME} (train a run there with `monge train`)"
    return f"checkpoint not found: {path}"


def check_checkpoint_path(path: str | Path) -> None:
    """Raise ``FileNotFoundError`` with :func:`missing_checkpoint`'s message unless ``path`` leads to a checkpoint."""
    problem = missing_checkpoint(path)
    if problem is not None:
        raise FileNotFoundError(problem)
