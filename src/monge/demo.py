"""``monge demo``: independent (I-CFM) versus minibatch-OT (OT-CFM) couplings on a 2D task.

Both runs share the network, optimiser, batch, steps and seed; only the coupling differs. The
report shows that OT pairing gives straighter paths and better few-step samples, and scores each
model's negative log-likelihood of fresh target samples (exact divergence, dopri5) when the
source has a closed-form density. ``flow_maps`` (``monge demo --flow-maps mean_flow,shortcut``)
adds flow maps trained from scratch with the last coupling (:mod:`monge.objectives`), sampled in jumps.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import Config
from .data.sources import build_source
from .demo_report import MMD_NOTE, conclusion, explanations, w2_noise_floor
from .evaluate import EvalRow, NLLResult, evaluate_nll, format_comparison, format_nll, format_table
from .plots import plot_metric_vs_nfe, plot_samples, plot_trajectories
from .progress import item_status
from .run.rundir import claim_demo_dir
from .run.signals import interrupt_note
from .samplers import sample
from .train import Trainer

__all__ = ["DemoResult", "demo_config", "run_demo", "demo"]

LABELS = {"independent": "I-CFM (independent)", "exact_ot": "OT-CFM (exact_ot)"}


@dataclass
class DemoResult:
    report: Path
    rows: dict[str, list[EvalRow]]
    nll: dict[str, NLLResult] | None = None
    #: dopri5's NFE in each run's sample panel (the same noise as the table's adaptive row)
    panel_nfe: dict[str, int] | None = None


#: Fresh target points whose likelihood the demo scores per coupling (exact divergence in 2D).
NLL_POINTS = 500
#: Tolerance of the demo's likelihood solve (looser than the default 1e-5: cheap, and plenty to
#: rank couplings).
NLL_TOL = 1e-4


#: Time-embedding scale of the demo's flow maps (smooth in t for MeanFlow's JVP).
FLOW_MAP_TIME_SCALE = 10.0


def demo_config(coupling: str, out: Path, source: str, target: str, steps: int, batch_size: int,
                seed: int, coupling_params: Mapping[str, Any] | None = None, samples: int = 2000,
                objective: str = "velocity") -> Config:
    """The demo's recipe for one coupling (``coupling_params``: extra parameters of the coupling);
    ``objective`` other than ``velocity``: a flow map of the same width with a second time input,
    sampled by its own sampler."""
    if objective != "velocity":
        raw = demo_config(coupling, out, source, target, steps, batch_size, seed, coupling_params, samples).to_dict()
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
            "coupling": {"name": coupling, **(coupling_params or {})},
            "path": {"name": "linear", "sigma": 0.0},
            "model": {"name": "mlp", "hidden": 256, "depth": 3},
            "train": {"steps": steps, "batch_size": batch_size, "lr": 1e-3, "seed": seed,
                      "checkpoint_every": 0, "eval_samples": samples},
            "sample": {"sampler": "euler", "nfe": [1, 2, 4, 8], "adaptive": True},
        }
    )


@interrupt_note("interrupted; the demo's report was not written: the same command starts the demo again")
def run_demo(
    out: str | Path = "runs/demo",
    source: str = "8gaussians",
    target: str = "moons",
    couplings: Sequence[str] = ("independent", "exact_ot"),
    steps: int = 3000,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool | None = True,
    coupling_params: Mapping[str, Mapping[str, Any]] | None = None,
    samples: int = 2000,
    flow_maps: Sequence[str] = (),
) -> DemoResult:
    """Train one model per coupling, evaluate at NFE 1, 2, 4, 8 and adaptive, write a report.

    ``coupling_params[name]`` adds parameters to coupling ``name`` (e.g. ``{"semidiscrete_ot":
    {"max_iter": 200}}``); ``samples``: points per evaluation, per panel and of the reference
    (likelihood: at most :data:`NLL_POINTS`). ``flow_maps`` (e.g. ``("mean_flow", "shortcut")``)
    adds one flow map per objective, trained from scratch with the last coupling
    (:mod:`monge.objectives`), sampled in 1, 2, 4, 8 and 16 jumps."""
    runs = [(name, "velocity") for name in couplings] + [(couplings[-1], o) for o in flow_maps]
    out = claim_demo_dir(out, [name if objective == "velocity" else f"{objective}-{name}" for name, objective in runs])
    rows: dict[str, list[EvalRow]] = {}
    panels: dict[str, dict[str, torch.Tensor]] = {}
    trajectories: dict[str, torch.Tensor] = {}
    seconds: dict[str, float] = {}
    adaptive_nfe: dict[str, int] = {}
    src, tgt = build_source(source), build_source(target)
    nll: dict[str, NLLResult] | None = _nll_if_possible(src)
    # the noise and reference of the trainer's evaluation (evaluate_field, seed + 12345): the panels
    # show the very samples the table scores, at the same NFE
    g = torch.Generator().manual_seed(seed + 12345)
    x0 = src.sample(samples, generator=g)
    reference = tgt.sample(samples, generator=g)
    floor = w2_noise_floor(tgt, samples, seed=seed + 777)
    loop_start = time.perf_counter()
    notes: dict[str, str] = {}
    for k, (name, objective) in enumerate(runs, 1):
        what = name if objective == "velocity" else f"{objective} with {name}"
        item_status(k, len(runs), f"model ({what}, {steps} steps)", time.perf_counter() - loop_start,
                    progress=progress, prefix="demo")
        config = demo_config(name, out, source, target, steps, batch_size, seed, (coupling_params or {}).get(name),
                             samples, objective)
        config.train.progress = progress is not False
        trainer = Trainer(config)
        t0 = time.perf_counter()
        with interrupt_note(f"interrupted while training the demo's model {what}; the runs finished so far are kept in "
                            f"{out}: the same command starts the demo again (replacing its own runs)", replace=True):
            result = trainer.fit(overwrite="replace")  # the demo owns its runs: a rerun replaces them, saying so
        label = LABELS.get(name, name) if objective == "velocity" else f"{objective} ({name})"
        seconds[name if objective == "velocity" else label] = time.perf_counter() - t0
        rows[label] = result.eval_rows
        model = trainer.ema.model
        if objective != "velocity":  # a flow map: its jumps; no adaptive solver, no likelihood
            panels[label] = {
                f"{objective}, {k} NFE": sample(model, x0, sampler=objective, nfe=k).x for k in (1, 2, 4, 8)
            }
            panels[label][f"{objective}, 16 NFE"] = sample(model, x0, sampler=objective, nfe=16).x
            notes[label] = f"{objective}, 16 jumps"
            trajectories[label] = sample(model, x0[:256], sampler=objective, nfe=16,
                                         return_trajectory=True).trajectory_and_times()[0]
            continue
        call: dict[str, Any] = {"return_trajectory": True, "schedule": getattr(trainer.path, "schedule", None),
                "generator": torch.Generator().manual_seed(seed + 12345 + 2)}
        panels[label] = {f"euler, {k} NFE": sample(model, x0, sampler="euler", nfe=k, **call).x for k in (1, 2, 4, 8)}
        adaptive = sample(model, x0, sampler="dopri5", **call)
        panels[label]["dopri5 (adaptive)"] = adaptive.x
        adaptive_nfe[label] = adaptive.nfe
        notes[label] = f"{adaptive.nfe} NFE"
        trajectories[label] = sample(model, x0[:256], sampler="rk4", nfe=64,
                                     return_trajectory=True).trajectory_and_times()[0]
        if nll is not None:
            nll[label] = evaluate_nll(
                model, src, tgt, n=min(NLL_POINTS, samples), seed=seed + 4242, rtol=NLL_TOL, atol=NLL_TOL
            )

    plot_metric_vs_nfe(rows, out / "w2_vs_nfe.png", "w2", title=f"{source} -> {target}: W2 to the target vs NFE",
                       floor=floor[0])
    plot_samples(panels, reference, out / "samples.png", notes,
                 title=f"{source} -> {target}: {samples} samples per panel (same noise in every panel)")
    plot_trajectories(trajectories, out / "trajectories.png", target=reference[:1000],
                      title="Paths of 256 noises (RK4, 64 steps): straight paths need few steps")
    report = out / "report.md"
    text = _report(rows, seconds, source, target, steps, batch_size, nll, samples, floor)
    if flow_maps:
        text = text.replace("Only the coupling differs.", "Only the coupling differs, and for the flow maps ("
                            + ", ".join(flow_maps) + ") the objective: the same MLP with a second time input "
                            f"(second_time, time_scale {FLOW_MAP_TIME_SCALE:g}), sampled in jumps by its own "
                            "sampler (no adaptive row, no likelihood).", 1)
    report.write_text(text)
    return DemoResult(report, rows, nll, adaptive_nfe)


def _nll_if_possible(src) -> dict[str, NLLResult] | None:
    """An empty table to fill when the source has a closed-form log-density, else ``None``."""
    try:
        src.log_prob(src.sample(1))
    except ValueError:
        return None
    return {}


def _report(rows: dict[str, list[EvalRow]], seconds: dict[str, float], source: str, target: str,
            steps: int, batch_size: int, nll: dict[str, NLLResult] | None = None, samples: int = 2000,
            floor: tuple[float, float] | None = None) -> str:
    parts = [
        f"# monge demo: {source} -> {target}",
        "",
        *([conclusion(rows, floor), ""] if floor is not None and len(rows) >= 2 else []),
        (f"Same MLP (3x256), AdamW lr 1e-3, batch {batch_size}, {steps} steps, linear path, EMA weights. "
         f"Only the coupling differs. W2: exact Wasserstein-2 between {samples} samples and {samples} fresh "
         "target samples; straightness: mean of ∫‖(x₁−x₀) − ẋₜ‖² dt along the sampler's trajectory "
         "(0 = straight lines; trivially 0 for one step, so read it on the adaptive row); mode "
         "mixture: share of samples farther than 3 std from every mode, when the target is a mixture."),
        "",
        MMD_NOTE,
        "",
        *([(f"W2 noise floor at {samples} points: {floor[0]:.3f} ± {floor[1]:.3f} (two independent target "
            "samples; the lowest W2 any model can show here)"), ""] if floor is not None else []),
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
        parts += [format_nll(nll, f"Negative log-likelihood of {min(NLL_POINTS, samples)} fresh {target} points"), ""]
    elif nll is None:
        parts += [f"No likelihood: the source {source} has no closed-form density.", ""]
    notes = explanations(rows, floor) if floor is not None else []
    if notes:
        parts += ["**Rows that look wrong**", "", *notes, ""]
    parts += ["**Figures**", "",
              ("W2 against NFE, one line per run and sampler (expressway rows dashed; stars: dopri5 at its "
               "adaptive NFE; grey: the noise floor):"), "", "![W2 vs NFE](w2_vs_nfe.png)", "",
              ("Samples (rows: runs; columns: Euler at 1, 2, 4, 8 NFE, dopri5 at the NFE of the table's "
               "adaptive row, and the target): the panels are the table's samples."), "", "![samples](samples.png)", "",
              ("Paths from noise (black) to samples (blue) over the target (light grey): OT pairing gives "
               "nearly straight paths, independent pairing curved ones."), "",
              "![trajectories](trajectories.png)", ""]
    return "\n".join(parts)


#: Couplings each demo compares by default.
DEFAULT_COUPLINGS = {"toy": "independent,exact_ot", "digits": "independent,exact_ot,wcfm,immiscible,semidiscrete_ot"}


def demo(
    data: str = "toy",
    out: str | Path | None = None,
    *,
    steps: int | None = None,
    batch_size: int | None = None,
    couplings: str | None = None,
    flow_maps: str | None = None,
    source: str = "8gaussians",
    target: str = "moons",
    model: str = "mlp",
    size: int = 16,
    n: int = 1000,
    seed: int = 0,
    progress: bool | None = None,
    command: str | None = None,
    latent: str | None = None,
):
    """``monge demo``: the toy demo (:func:`run_demo`, ``source`` -> ``target``) or the digits demo
    (:func:`monge.demo_images.run_image_demo`, ``model``, ``size``, ``n``, ``latent``), with the command line's
    defaults and text arguments checked (comma-separated ``couplings`` and ``flow_maps``). Quick mode
    (:mod:`monge.quick`) cuts the steps, samples and semi-discrete fit."""
    from .couplings import COUPLINGS
    from .quick import MAX_EVAL_SAMPLES, MAX_FIT_ITER, quick_cap, quick_mode, quick_steps

    if data not in ("toy", "digits"):
        raise ValueError(f"--data must be 'toy' or 'digits', got {data!r}")
    digits = data == "digits"
    steps = quick_steps(steps if steps is not None else (5000 if digits else 3000))
    batch_size = batch_size if batch_size is not None else (128 if digits else 256)
    if steps < 1 or batch_size < 2:
        raise ValueError("--steps must be >= 1 and --batch-size >= 2")
    couplings = DEFAULT_COUPLINGS[data] if couplings is None else couplings
    names = [c.strip() for c in couplings.split(",") if c.strip()]
    for name in names:
        COUPLINGS.get(name)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"--couplings must list distinct coupling names, got {couplings!r}")
    if latent is not None and not digits:
        raise ValueError(f"--latent applies to the digits demo (--data digits), got --data {data}")
    if digits and flow_maps:
        raise ValueError("--flow-maps applies to the toy demo; train digits flow maps with "
                         "configs/digits-mean_flow.yaml or configs/digits-shortcut.yaml")
    if digits:
        from .demo_images import run_image_demo

        return run_image_demo(out if out is not None else Path("runs/demo-digits"), couplings=names, size=size,
                              steps=steps, batch_size=batch_size, model=model, seed=seed, n=n, progress=progress,
                              command=command, latent=latent)
    return run_demo(out if out is not None else Path("runs/demo"), source=source, target=target, couplings=names,
                    steps=steps, batch_size=batch_size, seed=seed, progress=progress,
                    coupling_params={"semidiscrete_ot": {"max_iter": MAX_FIT_ITER}} if quick_mode() else None,
                    samples=quick_cap(2000, MAX_EVAL_SAMPLES), flow_maps=_flow_maps(flow_maps))


def _flow_maps(text: str | None) -> tuple[str, ...]:
    """The ``--flow-maps`` objectives, checked."""
    from .objectives import flow_map_objectives

    names = tuple(n.strip() for n in (text or "").split(",") if n.strip())
    bad = [n for n in names if n not in flow_map_objectives()]
    if bad or len(set(names)) != len(names):
        raise ValueError(f"--flow-maps must list distinct flow-map objectives ({', '.join(flow_map_objectives())}), "
                         f"got {text!r}")
    return names
