"""Figures for reports (matplotlib, no display needed)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from torch import Tensor  # noqa: E402

from .evaluate import EvalRow  # noqa: E402
from .outputs import write_bytes  # noqa: E402

__all__ = ["metric_curves", "plot_metric_vs_nfe", "plot_samples", "plot_trajectories"]


def _save(fig: plt.Figure, path: str | Path, dpi: int) -> Path:
    """Render ``fig`` in memory (format from the suffix, PNG by default), close it and write the
    file atomically: an interrupted save leaves the previous figure intact."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format=Path(path).suffix.lstrip(".").lower() or "png", dpi=dpi)
    finally:
        plt.close(fig)
    return write_bytes(path, buf.getvalue())


def metric_curves(rows: Sequence[EvalRow], metric: str = "w2") -> list[tuple[str, list[int], list[float]]]:
    """``(sampler, nfes, values)`` per fixed-step sampler of ``rows`` (dopri5 excluded): one curve each,
    so the expressway rows never join the plain ones."""
    samplers = dict.fromkeys(r.sampler for r in rows if r.sampler != "dopri5")
    return [(s, [r.nfe for r in rows if r.sampler == s], [getattr(r, metric) for r in rows if r.sampler == s])
            for s in samplers]


def plot_metric_vs_nfe(
    results: Mapping[str, Sequence[EvalRow]], path: str | Path, metric: str = "w2", *, title: str | None = None,
    floor: float | None = None,
) -> Path:
    """One curve per method and sampler of ``metric`` against NFE (log2 x-axis; expressway rows
    dashed, never joined to the plain rows); adaptive runs as stars; ``floor``: a grey line (the
    metric's noise floor)."""
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for i, (label, rows) in enumerate(results.items()):
        color = f"C{i}"
        for sampler, nfes, values in metric_curves(rows, metric):
            dashed = sampler.startswith("expressway")
            ax.plot(nfes, values, "s--" if dashed else "o-", color=color, label=f"{label} ({sampler})",
                    alpha=0.8 if dashed else 1.0)
        for r in rows:
            if r.sampler == "dopri5":
                ax.plot([r.nfe], [getattr(r, metric)], "*", ms=12, color=color,
                        label=f"{label} (dopri5)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("NFE (function evaluations)")
    ax.set_ylabel({"w2": "W2 to target (lower is better)", "mmd": "MMD²"}.get(metric, metric))
    if floor is not None:
        ax.axhline(floor, color="0.5", lw=1, ls=":", label=f"noise floor ({floor:.3f})")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path, dpi=120)


def plot_samples(
    panels: Mapping[str, Mapping[str, Tensor]],
    target: Tensor,
    path: str | Path,
    notes: Mapping[str, str] | None = None,
    title: str | None = None,
) -> Path:
    """Grid of 2D scatter plots: one row per method, one column per sampling budget, plus the target.

    Every method has the same number of panels (its own titles, e.g. ``"euler, 1 NFE"`` or
    ``"mean_flow, 1 NFE"``); ``notes[method]`` is appended to its last title.
    """
    rows = list(panels)
    cols = list(next(iter(panels.values())))
    if any(len(panels[m]) != len(cols) for m in rows):
        raise ValueError(f"every method needs {len(cols)} panels, got {[len(panels[m]) for m in rows]}")
    fig, axes = plt.subplots(len(rows), len(cols) + 1, figsize=(2.2 * (len(cols) + 1), 2.2 * len(rows)),
                             squeeze=False)
    lim = float(target.abs().max()) * 1.3
    for i, method in enumerate(rows):
        for j, col in enumerate(panels[method]):
            x = panels[method][col].cpu()
            ax = axes[i][j]
            ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.5)
            panel = f"{method}\n{col}" if j == 0 else col
            if notes and method in notes and j == len(cols) - 1:
                panel += f"\n({notes[method]})"
            ax.set_title(panel, fontsize=8)
        axes[i][-1].scatter(target[:, 0].cpu(), target[:, 1].cpu(), s=1, alpha=0.5, color="k")
        axes[i][-1].set_title("target (reference)", fontsize=8)
    for ax in axes.flat:
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_aspect("equal")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path, dpi=110)


def plot_trajectories(trajectories: Mapping[str, Tensor], path: str | Path, target: Tensor | None = None,
                      title: str | None = None) -> Path:
    """Trajectories ``(n_times, batch, 2)`` per method: start (black), paths (grey), end (blue), over
    ``target`` points (light grey) when given."""
    fig, axes = plt.subplots(1, len(trajectories), figsize=(4 * len(trajectories), 4.3), squeeze=False)
    for ax, (label, traj) in zip(axes[0], trajectories.items(), strict=True):
        traj = traj.cpu()
        if target is not None:
            ax.scatter(target[:, 0].cpu(), target[:, 1].cpu(), s=2, color="0.85", label="target", zorder=0)
        ax.plot(traj[:, :, 0], traj[:, :, 1], color="0.6", lw=0.5, alpha=0.6)
        ax.scatter(traj[0, :, 0], traj[0, :, 1], s=3, color="k", label="source")
        ax.scatter(traj[-1, :, 0], traj[-1, :, 1], s=3, color="C0", label="sample")
        ax.set_title(label)
        ax.set_aspect("equal")
        ax.legend(fontsize=7, loc="upper right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path, dpi=110)
