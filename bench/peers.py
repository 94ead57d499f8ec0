"""Side-by-side flow-matching benchmark: monge's couplings against TorchCFM and Meta's flow_matching.

Usage::

    pip install -e .[bench]          # torchcfm (see BENCHMARKS.md for --no-deps), flow_matching
    python bench/peers.py --quick    # smoke run, about a minute
    python bench/peers.py            # full run (steps 1000, batch 256, three 2D tasks)
    python bench/peers.py --methods independent,exact_ot,torchcfm_otcfm --tasks 25gaussians

Every method trains the same network (``monge.models.MLP``, 3 x 256, SiLU, sinusoidal time
embedding) with the same optimiser (AdamW, lr 1e-3, no weight decay, gradient clipping at 1),
batch size, number of steps and seed, on the *same stream* of ``(x0, x1, t)`` batches (drawn as
:class:`monge.train.Trainer` draws them). Only the coupling / path code differs:

- monge methods train through :class:`monge.train.Trainer` (its ``train_step``; EMA is kept by
  the trainer but not used: every method is evaluated on its raw weights);
- TorchCFM (Tong et al. 2023) ``ConditionalFlowMatcher`` (I-CFM) and
  ``ExactOptimalTransportConditionalFlowMatcher`` (OT-CFM), ``sigma = 0``, in a plain loop;
- Meta's flow_matching (Lipman et al. 2024) ``AffineProbPath(CondOTScheduler())``, plain loop,
  sampled with its own ``ODESolver``.

Evaluation: Euler at NFE 1, 2, 4, 8 and adaptive dopri5 (atol = rtol = 1e-5) from the same
noise; exact W2 (:func:`monge.metrics.wasserstein2`) against fresh target samples, and the
mode-mixture rate (:func:`monge.metrics.mode_stats` with :func:`monge.data.toy_modes`) when the
target is a Gaussian mixture. Writes ``bench/results/peers.md``, ``peers.json`` and
``peers_w2_vs_nfe.png``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import monge
from monge.config import Config
from monge.couplings import COUPLINGS
from monge.data import toy_modes
from monge.data.sources import build_source
from monge.metrics import mode_stats, wasserstein2
from monge.models import MLP
from monge.samplers import sample

__all__ = [
    "TASKS",
    "MONGE_METHODS",
    "PEER_METHODS",
    "Settings",
    "Trained",
    "available",
    "train_method",
    "evaluate",
    "run",
    "format_report",
    "plot_w2",
    "exact_ot_step_times",
    "main",
]

#: task name -> (source, target) data-source names
TASKS: dict[str, tuple[str, str]] = {
    "8gaussians-moons": ("8gaussians", "moons"),
    "checkerboard": ("gaussian", "checkerboard"),
    "25gaussians": ("gaussian", "25gaussians"),
}
#: monge methods: coupling name (``reflow`` = 2-rectified flow from the ``independent`` model)
MONGE_METHODS = ("independent", "exact_ot", "wcfm", "knn_immiscible", "semidiscrete_ot", "reflow")
#: peer methods -> (library, label)
PEER_METHODS = {
    "torchcfm_icfm": ("torchcfm", "TorchCFM I-CFM"),
    "torchcfm_otcfm": ("torchcfm", "TorchCFM OT-CFM"),
    "fm_condot": ("flow_matching", "flow_matching CondOT"),
}
DEFAULT_METHODS = ("torchcfm_icfm", "torchcfm_otcfm", "fm_condot") + MONGE_METHODS


@dataclass
class Settings:
    """Shared training / evaluation settings (identical for every method)."""

    steps: int = 1000
    batch_size: int = 256
    lr: float = 1e-3
    grad_clip: float = 1.0
    hidden: int = 256
    depth: int = 3
    seed: int = 0
    n_eval: int = 1000
    nfes: tuple[int, ...] = (1, 2, 4, 8)
    reflow_pairs: int = 10_000
    threads: int = 1
    adaptive: bool = True


@dataclass
class Trained:
    """A trained velocity field and how long it took."""

    method: str
    library: str
    model: nn.Module
    seconds_per_step: float
    prepare_seconds: float = 0.0
    note: str = ""
    #: sampler(model, x0, nfe or None) -> (x1, nfe used); None for adaptive
    sampler: Callable[[nn.Module, Tensor, int | None], tuple[Tensor, int]] | None = None


# ------------------------------------------------------------------------------ availability
def available(method: str) -> tuple[bool, str]:
    """Whether ``method`` can run here, and why not."""
    if method in PEER_METHODS:
        lib = PEER_METHODS[method][0]
        try:
            if lib == "torchcfm":
                import torchcfm.conditional_flow_matching  # noqa: F401
            else:
                import flow_matching.path  # noqa: F401
                import flow_matching.solver  # noqa: F401
        except Exception as exc:  # optional peer
            return False, f"{lib} not importable here ({type(exc).__name__}: {exc})"
        return True, ""
    if method in MONGE_METHODS:
        name = method
        if name not in COUPLINGS:
            return False, f"coupling {name!r} not in monge.couplings.COUPLINGS yet"
        if method == "reflow" and "independent" not in COUPLINGS:
            return False, "reflow needs the independent coupling"
        return True, ""
    return False, f"unknown method {method!r}"


# ------------------------------------------------------------------------------------- data
def _batches(task: str, s: Settings):
    """The (x0, x1, t) stream every method trains on (same draws as Trainer._draw_batch)."""
    src, tgt = (build_source(n) for n in TASKS[task])
    g = torch.Generator().manual_seed(s.seed + 1)
    while True:
        x0 = src.sample(s.batch_size, generator=g)
        x1 = tgt.sample(s.batch_size, generator=g)
        t = torch.rand(s.batch_size, generator=g)
        yield x0, x1, t


def _new_model(s: Settings) -> nn.Module:
    torch.manual_seed(s.seed)
    return MLP(2, hidden=s.hidden, depth=s.depth)


def _plain_loop(
    model: nn.Module, s: Settings, task: str, loss_fn: Callable[[nn.Module, Tensor, Tensor, Tensor], Tensor]
) -> float:
    """Train with AdamW + grad clipping; returns seconds per step."""
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=0.0)
    stream = _batches(task, s)
    model.train()
    start = time.perf_counter()
    for _ in range(s.steps):
        x0, x1, t = next(stream)
        loss = loss_fn(model, x0, x1, t)
        if not math.isfinite(float(loss.detach())):
            raise RuntimeError(f"loss became {float(loss)}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
        opt.step()
    return (time.perf_counter() - start) / s.steps


# --------------------------------------------------------------------------------- training
def _monge_config(coupling: dict[str, Any] | str, task: str, s: Settings, out: Path) -> Config:
    source, target = TASKS[task]
    return Config.from_dict(
        {
            "name": f"{task}-{coupling if isinstance(coupling, str) else coupling['name']}",
            "output_dir": str(out),
            "data": {"source": source, "target": target},
            "coupling": coupling,
            "path": {"name": "linear", "sigma": 0.0},
            "model": {"name": "mlp", "hidden": s.hidden, "depth": s.depth},
            "train": {"steps": s.steps, "batch_size": s.batch_size, "lr": s.lr, "seed": s.seed,
                      "grad_clip": s.grad_clip, "weight_decay": 0.0, "checkpoint_every": 0,
                      "progress": False},
        }
    )


def _train_monge(coupling: dict[str, Any] | str, task: str, s: Settings, out: Path,
                 init: nn.Module | None = None) -> tuple[nn.Module, float, float]:
    from monge.train import Trainer

    trainer = Trainer(_monge_config(coupling, task, s, out), model=init)
    trainer.run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    trainer.prepare()
    prep = time.perf_counter() - t0
    start = time.perf_counter()
    for _ in range(s.steps):
        trainer.train_step()
    per_step = (time.perf_counter() - start) / s.steps
    return trainer.model, per_step, prep


def train_method(method: str, task: str, s: Settings, work: Path,
                 cache: dict[tuple[str, str], Trained] | None = None) -> Trained:
    """Train ``method`` on ``task`` with settings ``s`` (``work``: scratch run directories)."""
    cache = {} if cache is None else cache
    if method in MONGE_METHODS and method != "reflow":
        model, per_step, prep = _train_monge(method, task, s, work)
        return Trained(method, "monge", model, per_step, prep)
    if method == "reflow":
        from monge.couplings.reflow import save_pairs
        from monge.rectify import generate_pairs

        base = cache.get((task, "independent")) or train_method("independent", task, s, work, cache)
        cache[(task, "independent")] = base
        t0 = time.perf_counter()
        src = build_source(TASKS[task][0])
        # RK4 with 64 evaluations: a tight, fixed-cost solve (dopri5 at 1e-5 takes thousands of
        # evaluations on an undertrained field)
        z0, z1 = generate_pairs(base.model, src, s.reflow_pairs, sampler="rk4", nfe=64,
                                generator=torch.Generator().manual_seed(s.seed + 7))
        pairs = save_pairs(work / f"{task}-reflow-pairs.safetensors", z0, z1)
        gen = time.perf_counter() - t0
        init = copy.deepcopy(base.model).train().requires_grad_(True)
        model, per_step, _ = _train_monge({"name": "reflow", "pairs": str(pairs)}, task, s, work, init=init)
        note = (f"2-rectified flow: the independent model + {s.reflow_pairs} RK4-64 pairs + "
                f"{s.steps} more steps (twice the training of the others)")
        return Trained(method, "monge", model, per_step, base.seconds_per_step * s.steps + gen, note)
    if method in ("torchcfm_icfm", "torchcfm_otcfm"):
        from torchcfm.conditional_flow_matching import (
            ConditionalFlowMatcher,
            ExactOptimalTransportConditionalFlowMatcher,
        )

        np.random.seed(s.seed)  # TorchCFM's OT sampler draws pairs with the global numpy RNG
        fm = (ConditionalFlowMatcher if method == "torchcfm_icfm" else ExactOptimalTransportConditionalFlowMatcher)(
            sigma=0.0
        )

        def loss_cfm(model: nn.Module, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
            t, xt, ut = fm.sample_location_and_conditional_flow(x0, x1, t=t)
            return (model(xt, t) - ut).square().mean()

        model = _new_model(s)
        per_step = _plain_loop(model, s, task, loss_cfm)
        return Trained(method, "torchcfm", model, per_step,
                       note="no sampler in TorchCFM: sampled with monge's Euler / dopri5 (torchdiffeq)")
    if method == "fm_condot":
        from flow_matching.path import AffineProbPath
        from flow_matching.path.scheduler import CondOTScheduler

        path = AffineProbPath(scheduler=CondOTScheduler())

        def loss_fm(model: nn.Module, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
            ps = path.sample(t=t, x_0=x0, x_1=x1)
            return (model(ps.x_t, ps.t) - ps.dx_t).square().mean()

        model = _new_model(s)
        per_step = _plain_loop(model, s, task, loss_fm)
        return Trained(method, "flow_matching", model, per_step, sampler=_fm_sampler,
                       note="sampled with flow_matching's ODESolver (euler / dopri5)")
    raise ValueError(f"unknown method {method!r}; valid: {', '.join(DEFAULT_METHODS)}")


def _fm_sampler(model: nn.Module, x0: Tensor, nfe: int | None) -> tuple[Tensor, int]:
    from flow_matching.solver import ODESolver
    from flow_matching.utils import ModelWrapper

    calls = [0]

    class Wrapped(ModelWrapper):
        def forward(self, x: Tensor, t: Tensor, **extras: Any) -> Tensor:
            calls[0] += 1
            return self.model(x, t.expand(x.shape[0]) if t.dim() == 0 else t)

    solver = ODESolver(velocity_model=Wrapped(model))
    grid = torch.tensor([0.0, 1.0], dtype=x0.dtype)
    with torch.no_grad():
        if nfe is None:
            x = solver.sample(x_init=x0, step_size=None, method="dopri5", atol=1e-5, rtol=1e-5, time_grid=grid)
        else:
            x = solver.sample(x_init=x0, step_size=1.0 / nfe, method="euler", time_grid=grid)
    return x, calls[0]


def _monge_sampler(model: nn.Module, x0: Tensor, nfe: int | None) -> tuple[Tensor, int]:
    out = sample(model, x0, sampler="dopri5") if nfe is None else sample(model, x0, sampler="euler", nfe=nfe)
    return out.x, out.nfe


# ------------------------------------------------------------------------------- evaluation
def evaluate(trained: Trained, task: str, s: Settings) -> list[dict[str, Any]]:
    """W2, mode mixture and sampling time at each NFE and adaptive, from fixed noise."""
    src, tgt = (build_source(n) for n in TASKS[task])
    g = torch.Generator().manual_seed(s.seed + 12345)
    x0 = src.sample(s.n_eval, generator=g)
    ref = tgt.sample(s.n_eval, generator=g)
    modes = toy_modes(TASKS[task][1])
    sampler = trained.sampler or _monge_sampler
    trained.model.eval()
    rows = []
    for nfe in [*s.nfes, *([None] if s.adaptive else [])]:
        t0 = time.perf_counter()
        x1, used = sampler(trained.model, x0, nfe)
        secs = time.perf_counter() - t0
        row = {"nfe": used, "adaptive": nfe is None, "sample_seconds": secs,
               "w2": wasserstein2(x1, ref) if torch.isfinite(x1).all() else float("nan"),
               "mixture": None}
        if modes is not None:
            centres, std = modes
            row["mixture"] = mode_stats(x1, centres, std).mixture
        rows.append(row)
    return rows


def run(methods: list[str], tasks: list[str], s: Settings, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train and evaluate every (task, method); skipped ones carry the reason."""
    results: dict[str, Any] = {"settings": asdict(s), "tasks": {}}
    cache: dict[tuple[str, str], Trained] = {}
    with tempfile.TemporaryDirectory(prefix="monge-peers-") as tmp:
        work = Path(tmp)
        for task in tasks:
            entries = []
            for method in methods:
                ok, why = available(method)
                label = PEER_METHODS[method][1] if method in PEER_METHODS else f"monge {method}"
                lib = PEER_METHODS[method][0] if method in PEER_METHODS else "monge"
                if not ok:
                    entries.append({"method": method, "label": label, "library": lib, "skipped": why})
                    log(f"[{task}] {method}: skipped ({why})")
                    continue
                t0 = time.perf_counter()
                trained = cache.get((task, method)) or train_method(method, task, s, work, cache)
                cache[(task, method)] = trained
                rows = evaluate(trained, task, s)
                entries.append({"method": method, "label": label, "library": lib,
                                "ms_per_step": 1e3 * trained.seconds_per_step,
                                "prepare_seconds": trained.prepare_seconds, "note": trained.note,
                                "rows": rows})
                w2s = ", ".join(f"{r['w2']:.3f}" for r in rows)
                log(f"[{task}] {method}: {1e3 * trained.seconds_per_step:.1f} ms/step, W2 {w2s} "
                    f"({time.perf_counter() - t0:.0f} s)")
            results["tasks"][task] = entries
    return results


# ------------------------------------------------------------------------- exact-OT step time
def exact_ot_step_times(batch: int = 1024, steps: int = 15, s: Settings | None = None) -> dict[str, Any]:
    """Median seconds per full training step (pairing + forward/backward + AdamW) at ``batch``:
    monge ``exact_ot`` through ``Trainer.train_step`` vs TorchCFM's OT-CFM matcher in the plain
    loop, and each library's pairing call alone (interleaved on each batch), on the same
    8gaussians -> moons batches."""
    from monge.couplings import COUPLINGS as C

    s = Settings(**{**asdict(s or Settings()), "batch_size": batch, "steps": steps})
    out: dict[str, Any] = {"batch": batch, "steps": steps}
    stream = _batches("8gaussians-moons", s)
    data = [next(stream) for _ in range(steps)]
    coupling = C.build("exact_ot")
    ok, why = available("torchcfm_otcfm")
    fm = None
    if ok:
        from torchcfm.conditional_flow_matching import ExactOptimalTransportConditionalFlowMatcher

        np.random.seed(s.seed)
        fm = ExactOptimalTransportConditionalFlowMatcher(sigma=0.0)
    mine, theirs = [], []
    for x0, x1, _ in data:  # the two pairing calls back to back on each batch: load hits both alike
        t0 = time.perf_counter()
        coupling(x0, x1)
        mine.append(time.perf_counter() - t0)
        if fm is not None:
            t0 = time.perf_counter()
            fm.ot_sampler.sample_plan(x0, x1)
            theirs.append(time.perf_counter() - t0)
    out["monge_pairing"] = statistics.median(mine)
    with tempfile.TemporaryDirectory() as tmp:
        _, per_step, _ = _train_monge("exact_ot", "8gaussians-moons", s, Path(tmp))
    out["monge_step"] = per_step
    if fm is None:
        out["torchcfm"] = why
        return out
    out["torchcfm_pairing"] = statistics.median(theirs)

    def loss_cfm(model: nn.Module, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        t, xt, ut = fm.sample_location_and_conditional_flow(x0, x1, t=t)
        return (model(xt, t) - ut).square().mean()

    out["torchcfm_step"] = _plain_loop(_new_model(s), s, "8gaussians-moons", loss_cfm)
    return out


# ---------------------------------------------------------------------------------- reports
def _fmt(v: float | None, spec: str = ".3f") -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def format_report(results: dict[str, Any], step_times: dict[str, Any] | None, command: str,
                  plot_name: str | None = None) -> str:
    """Markdown section: settings, per-task W2 / mixture / timing tables, goals."""
    s = results["settings"]
    nfes = s["nfes"]
    lines = [
        "# Flow matching side by side: monge vs TorchCFM vs flow_matching",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs (shared), torch {torch.__version__} "
        f"({s['threads']} thread), monge {getattr(monge, '__version__', '?')}{_peer_versions()}, "
        f"{time.strftime('%Y-%m-%d')}.",
        "",
        f"Same for every method: `monge.models.MLP` ({s['depth']} x {s['hidden']}, SiLU, sinusoidal "
        f"time embedding), AdamW lr {s['lr']:g}, no weight decay, gradient clipping {s['grad_clip']:g}, "
        f"batch {s['batch_size']}, {s['steps']} steps, seed {s['seed']}, identical (x0, x1, t) batches, "
        "linear path with sigma = 0. Peers: TorchCFM `ConditionalFlowMatcher` (I-CFM) and "
        "`ExactOptimalTransportConditionalFlowMatcher` (OT-CFM), sigma = 0; flow_matching "
        "`AffineProbPath(CondOTScheduler())` sampled with its `ODESolver`. No EMA for anyone (monge's trainer keeps "
        "one; the raw weights are "
        f"evaluated). Evaluation: {s['n_eval']} samples from the same noise, Euler at NFE "
        f"{', '.join(map(str, nfes))} and adaptive dopri5 (atol = rtol = 1e-5; NFE in parentheses); "
        f"exact W2 to {s['n_eval']} fresh target samples; mode mixture = share of samples farther than "
        "3 std from every mode (Gaussian-mixture targets only).",
        "",
    ]
    for task, entries in results["tasks"].items():
        src, tgt = TASKS[task]
        lines += [f"## {src} -> {tgt}", ""]
        head = (
            "| method | "
            + " | ".join(f"W2 @{k}" for k in nfes)
            + " | W2 adaptive (NFE) | train ms/step | prepare s | sample s @8 | sample s adaptive |"
        )
        lines += [head, "|---|" + "---:|" * (len(nfes) + 5)]
        has_modes = False
        for e in entries:
            if "skipped" in e:
                lines.append(f"| {e['label']} | skipped: {e['skipped']} |" + " |" * (len(nfes) + 4))
                continue
            fixed = [r for r in e["rows"] if not r["adaptive"]]
            ad = next((r for r in e["rows"] if r["adaptive"]), None)
            at8 = next((r for r in fixed if r["nfe"] == 8), None)
            has_modes |= fixed[0]["mixture"] is not None
            ad_w2 = f"{_fmt(ad['w2'])} ({ad['nfe']})" if ad else "–"
            lines.append(
                f"| {e['label']} | " + " | ".join(_fmt(r["w2"]) for r in fixed)
                + f" | {ad_w2} | {e['ms_per_step']:.1f} | {e['prepare_seconds']:.1f} | "
                + f"{_fmt(at8['sample_seconds'] if at8 else None, '.4f')} | "
                + f"{_fmt(ad['sample_seconds'] if ad else None)} |"
            )
        if has_modes:
            lines += ["", "Mode mixture (share of samples between modes; lower is better):", "",
                      "| method | " + " | ".join(f"@{k}" for k in nfes) + (" | adaptive |" if s["adaptive"] else " |"),
                      "|---|" + "---:|" * (len(nfes) + int(s["adaptive"]))]
            for e in entries:
                if "skipped" in e:
                    continue
                lines.append(f"| {e['label']} | " + " | ".join(_fmt(r["mixture"]) for r in e["rows"]) + " |")
        notes = [f"{e['label']}: {e['note']}" for e in entries if e.get("note")]
        if notes:
            lines += [""] + [f"- {n}" for n in notes]
        lines.append("")
    if plot_name:
        lines += [f"![W2 vs NFE]({plot_name})", ""]
    if step_times:
        lines += _step_time_section(step_times)
    lines += _goals(results, step_times)
    return "\n".join(lines) + "\n"


def _peer_versions() -> str:
    out = []
    for mod in ("torchcfm", "flow_matching"):
        try:
            m = __import__(mod)
            out.append(f"{mod} {getattr(m, '__version__', '?')}")
        except Exception:
            out.append(f"{mod} not installed")
    return ", " + ", ".join(out)


def _step_time_section(st: dict[str, Any]) -> list[str]:
    lines = [f"## Exact-OT training step at batch {st['batch']} (8gaussians -> moons, median / mean of {st['steps']} "
             "steps)", "",
             "| | monge `exact_ot` | TorchCFM OT-CFM | TorchCFM / monge |", "|---|---:|---:|---:|"]
    if "torchcfm_step" in st:
        lines.append(f"| pairing call only | {st['monge_pairing']:.3f} s | {st['torchcfm_pairing']:.3f} s | "
                     f"{st['torchcfm_pairing'] / st['monge_pairing']:.2f}x |")
        lines.append(f"| full training step | {st['monge_step']:.3f} s | {st['torchcfm_step']:.3f} s | "
                     f"{st['torchcfm_step'] / st['monge_step']:.2f}x |")
    else:
        lines.append(f"| full training step | {st['monge_step']:.3f} s | {st.get('torchcfm', 'n/a')} | |")
    lines += ["", "monge pairs by an exact assignment (every sample used once); TorchCFM solves `ot.emd` "
              "and re-draws the batch from the plan with replacement (duplicates and drops).", ""]
    return lines


def _goals(results: dict[str, Any], st: dict[str, Any] | None) -> list[str]:
    lines = ["## Goals", "", "| goal | figure | met |", "|---|---|---|"]
    for task, entries in results["tasks"].items():
        ran = [e for e in entries if "skipped" not in e]
        ref = next((e for e in ran if e["method"] == "torchcfm_otcfm"), None)
        mine = [e for e in ran if e["library"] == "monge"]
        if ref is None or not mine:
            lines.append(f"| {task}: monge best @2 NFE <= TorchCFM OT-CFM @8 NFE | not measured (method missing) | – |")
            continue
        def at(e: dict[str, Any], k: int) -> float:
            return next((r["w2"] for r in e["rows"] if r["nfe"] == k and not r["adaptive"]), math.inf)

        best = min(mine, key=lambda e: at(e, 2))
        b, r8 = at(best, 2), at(ref, 8)
        lines.append(f"| {task}: monge best @2 NFE <= TorchCFM OT-CFM @8 NFE | {best['method']} {b:.3f} vs "
                     f"{r8:.3f} | {'yes' if b <= r8 else 'NO'} |")
    if st and "torchcfm_step" in st:
        ratio = st["torchcfm_step"] / st["monge_step"]
        lines.append(f"| exact-OT step at batch {st['batch']} >= 3x faster than TorchCFM | {ratio:.2f}x "
                     f"({st['monge_step']:.3f} s vs {st['torchcfm_step']:.3f} s) | {'yes' if ratio >= 3 else 'NO'} |")
    lines.append("")
    return lines


def plot_w2(results: dict[str, Any], path: str | Path) -> Path:
    """One panel per task, one W2-vs-NFE curve per method (adaptive runs as stars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(results["tasks"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for i, e in enumerate(e for e in results["tasks"][task] if "skipped" not in e):
            fixed = [r for r in e["rows"] if not r["adaptive"]]
            style = "o-" if e["library"] == "monge" else "s--"
            ax.plot([r["nfe"] for r in fixed], [r["w2"] for r in fixed], style, color=f"C{i % 10}", label=e["method"])
            for r in e["rows"]:
                if r["adaptive"]:
                    ax.plot([r["nfe"]], [r["w2"]], "*", ms=11, color=f"C{i % 10}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title("{} -> {}".format(*TASKS[task]))
        ax.set_xlabel("NFE (Euler; stars: dopri5)")
        ax.set_ylabel("W2 to target")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help="comma-separated; monge: " + ", ".join(MONGE_METHODS) + "; peers: " + ", ".join(PEER_METHODS))
    p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated from " + ", ".join(TASKS))
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--n-eval", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--step-batch", type=int, default=1024, help="batch of the exact-OT step-time section (0: skip)")
    p.add_argument("--quick", action="store_true", help="smoke run: 100 steps, 300 eval samples")
    p.add_argument("--out", default="bench/results/peers.md")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    tasks = [t.strip() for t in a.tasks.split(",") if t.strip()]
    for t in tasks:
        if t not in TASKS:
            p.error(f"unknown task {t!r}; valid: {', '.join(TASKS)}")
    for m in methods:
        if m not in MONGE_METHODS and m not in PEER_METHODS:
            p.error(f"unknown method {m!r}; valid: {', '.join(DEFAULT_METHODS)}")
    s = Settings(steps=a.steps or (100 if a.quick else 1000), batch_size=a.batch_size,
                 n_eval=a.n_eval or (300 if a.quick else 1000), seed=a.seed, threads=a.threads,
                 reflow_pairs=2000 if a.quick else 10_000)
    t0 = time.perf_counter()
    results = run(methods, tasks, s)
    step_times = None
    if a.step_batch:
        step_times = exact_ot_step_times(a.step_batch, 3 if a.quick else 15, s)
        print(step_times)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    png = out.with_name(out.stem + "_w2_vs_nfe.png")
    plot_w2(results, png)
    results["step_times"] = step_times
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    cmd = "python " + " ".join(
        [sys.argv[0].replace(os.getcwd() + "/", ""), *(argv if argv is not None else sys.argv[1:])]
    )
    text = format_report(results, step_times, cmd, png.name)
    text += f"\nTotal benchmark time: {time.perf_counter() - t0:.0f} s.\n"
    out.write_text(text)
    print(f"wrote {out}, {png}, {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
