"""``monge demo``: independent (I-CFM) versus minibatch-OT (OT-CFM) couplings on a 2D task.

Both runs share the network, optimiser, batch, steps and seed; only the coupling differs. The
report shows that OT pairing gives straighter paths and better few-step samples, and scores each
model's negative log-likelihood of fresh target samples (exact divergence, dopri5) when the
source has a closed-form density. ``flow_maps`` (``monge demo --flow-maps mean_flow,shortcut``)
adds flow maps trained from scratch with the last coupling (:mod:`monge.flow_map`), sampled in jumps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from .config import Config
from .data.sources import build_source
from .evaluate import EvalRow, NLLResult, evaluate_nll, format_comparison, format_nll, format_table
from .plots import plot_metric_vs_nfe, plot_samples, plot_trajectories
from .samplers import sample
from .train import Trainer

__all__ = ["DemoResult", "run_demo", "demo_config"]

LABELS = {"independent": "I-CFM (independent)", "exact_ot": "OT-CFM (exact_ot)"}


@dataclass
class DemoResult:
    report: Path
    rows: dict[str, list[EvalRow]]
    nll: dict[str, NLLResult] | None = None


#: Fresh target points whose likelihood the demo scores per coupling (exact divergence in 2D).
NLL_POINTS = 500
#: Tolerance of the demo's likelihood solve (looser than the default 1e-5: cheap, and plenty to
#: rank couplings).
NLL_TOL = 1e-4


#: Time-embedding scale of the demo's flow maps (smooth in t for MeanFlow's JVP).
FLOW_MAP_TIME_SCALE = 10.0


def demo_config(coupling: str, out: Path, source: str, target: str, steps: int, batch_size: int,
                seed: int, objective: str = "velocity") -> Config:
    if objective != "velocity":  # a flow map: same width, a second time input, its own sampler
        config = demo_config(coupling, out, source, target, steps, batch_size, seed)
        raw = config.to_dict()
        raw["name"] = f"{objective}-{coupling}"
        raw["objective"] = {"name": objective}
        raw["model"].update(second_time=True, time_scale=FLOW_MAP_TIME_SCALE)
        raw["sample"].update(sampler=objective, adaptive=False)
        return Config.from_dict(raw)
    return Config.from_dict(
        {
            "name": coupling,
            "output_dir": str(out),
            "data": {"source": source, "target": target},
            "coupling": coupling,
            "path": {"name": "linear", "sigma": 0.0},
            "model": {"name": "mlp", "hidden": 256, "depth": 3},
            "train": {"steps": steps, "batch_size": batch_size, "lr": 1e-3, "seed": seed,
                      "checkpoint_every": 0, "eval_samples": 2000},
            "sample": {"sampler": "euler", "nfe": [1, 2, 4, 8], "adaptive": True},
        }
    )


def run_demo(
    out: str | Path = "runs/demo",
    source: str = "8gaussians",
    target: str = "moons",
    couplings: Sequence[str] = ("independent", "exact_ot"),
    steps: int = 3000,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = True,
    flow_maps: Sequence[str] = (),
) -> DemoResult:
    """Train one model per coupling, evaluate at NFE 1, 2, 4, 8 and adaptive, write a report.

    ``flow_maps`` (e.g. ``("mean_flow", "shortcut")``) adds one flow map per objective, trained from
    scratch with the last coupling (:mod:`monge.flow_map`), sampled in 1, 2, 4, 8 jumps."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[EvalRow]] = {}
    panels: dict[str, dict[str, torch.Tensor]] = {}
    trajectories: dict[str, torch.Tensor] = {}
    seconds: dict[str, float] = {}
    src, tgt = build_source(source), build_source(target)
    nll: dict[str, NLLResult] | None = _nll_if_possible(src)
    g = torch.Generator().manual_seed(seed + 999)
    x0 = src.sample(2000, generator=g)
    reference = tgt.sample(2000, generator=g)
    runs = [(name, "velocity") for name in couplings] + [(couplings[-1], o) for o in flow_maps]
    notes: dict[str, str] = {}
    for name, objective in runs:
        config = demo_config(name, out, source, target, steps, batch_size, seed, objective)
        config.train.progress = progress
        trainer = Trainer(config)
        t0 = time.perf_counter()
        result = trainer.fit(overwrite="replace")  # the demo owns its runs: a rerun replaces them, saying so
        label = LABELS.get(name, name) if objective == "velocity" else f"{objective} ({name})"
        seconds[label if objective != "velocity" else name] = time.perf_counter() - t0
        rows[label] = result.eval_rows
        model = trainer.ema.model
        if objective != "velocity":  # a flow map: its jumps; no adaptive solver, no likelihood
            panels[label] = {f"NFE {k}": sample(model, x0, objective, nfe=k).x for k in (1, 2, 4, 8)}
            panels[label]["adaptive"] = sample(model, x0, objective, nfe=16).x
            notes[label] = f"{objective}, 16 jumps"
            trajectories[label] = sample(model, x0[:256], objective, nfe=16, return_trajectory=True).trajectory
            continue
        panels[label] = {f"NFE {k}": sample(model, x0, "euler", nfe=k).x for k in (1, 2, 4, 8)}
        adaptive = sample(model, x0, "dopri5")
        panels[label]["adaptive"] = adaptive.x
        notes[label] = f"dopri5, {adaptive.nfe} NFE"
        trajectories[label] = sample(model, x0[:256], "rk4", nfe=64, return_trajectory=True).trajectory
        if nll is not None:
            nll[label] = evaluate_nll(model, src, tgt, n=NLL_POINTS, seed=seed + 4242, rtol=NLL_TOL, atol=NLL_TOL)

    plot_metric_vs_nfe(rows, out / "w2_vs_nfe.png", "w2")
    plot_samples(panels, reference, out / "samples.png", notes)
    plot_trajectories(trajectories, out / "trajectories.png")
    report = out / "report.md"
    text = _report(rows, seconds, source, target, steps, batch_size, nll)
    if flow_maps:
        text = text.replace("Only the coupling differs.", "Only the coupling differs, and for the flow maps ("
                            + ", ".join(flow_maps) + ") the objective: the same MLP with a second time input "
                            f"(second_time, time_scale {FLOW_MAP_TIME_SCALE:g}), sampled in jumps by its own "
                            "sampler (no adaptive row, no likelihood).", 1)
    report.write_text(text)
    return DemoResult(report, rows, nll)


def _nll_if_possible(src) -> dict[str, NLLResult] | None:
    """An empty table to fill when the source has a closed-form log-density, else ``None``."""
    try:
        src.log_prob(src.sample(1))
    except ValueError:
        return None
    return {}


def _report(rows: dict[str, list[EvalRow]], seconds: dict[str, float], source: str, target: str,
            steps: int, batch_size: int, nll: dict[str, NLLResult] | None = None) -> str:
    parts = [
        f"# monge demo: {source} -> {target}",
        "",
        f"Same MLP (3x256), AdamW lr 1e-3, batch {batch_size}, {steps} steps, linear path, EMA weights. "
        "Only the coupling differs. W2: exact Wasserstein-2 between 2000 samples and 2000 fresh "
        "target samples; straightness: mean of ∫‖(x₁−x₀) − ẋₜ‖² dt along the sampler's trajectory "
        "(0 = straight lines; trivially 0 for one step, so read it on the adaptive row); mode "
        "mixture: share of samples farther than 3 std from every mode, when the target is a mixture.",
        "",
        "Training time: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()),
        "",
    ]
    for label, r in rows.items():
        parts += [format_table(r, label), ""]
    if len(rows) >= 2:
        parts += [format_comparison(rows, "w2"), ""]
        if any(r.mode_mixture is not None for r in next(iter(rows.values()))):
            parts += [format_comparison(rows, "mode_mixture"), ""]
    if nll:
        parts += [format_nll(nll, f"Negative log-likelihood of {NLL_POINTS} fresh {target} points"), ""]
    elif nll is None:
        parts += [f"No likelihood: the source {source} has no closed-form density.", ""]
    parts += ["![W2 vs NFE](w2_vs_nfe.png)", "", "![samples](samples.png)", "",
              "![trajectories](trajectories.png)", ""]
    return "\n".join(parts)
