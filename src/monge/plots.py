"""Figures for reports (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from torch import Tensor  # noqa: E402

from .evaluate import EvalRow  # noqa: E402

__all__ = ["plot_metric_vs_nfe", "plot_samples", "plot_trajectories"]


def plot_metric_vs_nfe(
    results: Mapping[str, Sequence[EvalRow]], path: str | Path, metric: str = "w2"
) -> Path:
    """One curve per method of ``metric`` against NFE (log2 x-axis); adaptive runs as stars."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for i, (label, rows) in enumerate(results.items()):
        color = f"C{i}"
        fixed = [r for r in rows if r.sampler != "dopri5"]
        ax.plot([r.nfe for r in fixed], [getattr(r, metric) for r in fixed], "o-", color=color,
                label=f"{label} ({fixed[0].sampler})" if fixed else label)
        for r in rows:
            if r.sampler == "dopri5":
                ax.plot([r.nfe], [getattr(r, metric)], "*", ms=12, color=color,
                        label=f"{label} (dopri5)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("NFE (function evaluations)")
    ax.set_ylabel({"w2": "W2 to target", "mmd": "MMD²"}.get(metric, metric))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_samples(
    panels: Mapping[str, Mapping[str, Tensor]],
    target: Tensor,
    path: str | Path,
    notes: Mapping[str, str] | None = None,
) -> Path:
    """Grid of 2D scatter plots: one row per method, one column per sampling budget, plus the target.

    Every method must have the same column keys; ``notes[method]`` is appended to its last title.
    """
    rows = list(panels)
    cols = list(next(iter(panels.values())))
    fig, axes = plt.subplots(len(rows), len(cols) + 1, figsize=(2.2 * (len(cols) + 1), 2.2 * len(rows)),
                             squeeze=False)
    lim = float(target.abs().max()) * 1.3
    for i, method in enumerate(rows):
        for j, col in enumerate(cols):
            x = panels[method][col].cpu()
            ax = axes[i][j]
            ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.5)
            title = f"{method}\n{col}" if j == 0 else col
            if notes and method in notes and j == len(cols) - 1:
                title += f"\n({notes[method]})"
            ax.set_title(title, fontsize=8)
        axes[i][-1].scatter(target[:, 0].cpu(), target[:, 1].cpu(), s=1, alpha=0.5, color="k")
        axes[i][-1].set_title("target", fontsize=8)
    for ax in axes.flat:
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_aspect("equal")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_trajectories(trajectories: Mapping[str, Tensor], path: str | Path) -> Path:
    """Trajectories ``(n_times, batch, 2)`` per method: start (black), paths (grey), end (blue)."""
    fig, axes = plt.subplots(1, len(trajectories), figsize=(4 * len(trajectories), 4), squeeze=False)
    for ax, (label, traj) in zip(axes[0], trajectories.items()):
        traj = traj.cpu()
        ax.plot(traj[:, :, 0], traj[:, :, 1], color="0.6", lw=0.5, alpha=0.6)
        ax.scatter(traj[0, :, 0], traj[0, :, 1], s=3, color="k", label="source")
        ax.scatter(traj[-1, :, 0], traj[-1, :, 1], s=3, color="C0", label="sample")
        ax.set_title(label)
        ax.set_aspect("equal")
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
