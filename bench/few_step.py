"""One- and few-step generators trained from scratch, at equal training wall time.

Methods (same MLP width and depth, data, batch, learning rate, seed; EMA weights sampled):

- ``velocity + exact_ot``: OT-CFM, sampled with Euler at 1, 2, 4 NFE and adaptively (dopri5);
- ``mean_flow`` and ``shortcut`` (:mod:`monge.objectives`), each with ``independent`` pairs and with
  ``exact_ot`` (the best OT coupling of ``bench/couplings_quality.py`` on 2D tasks), sampled with
  their own samplers at 1, 2, 4 NFE (one network evaluation per jump).

Budget: equal training **wall time**. Every method first measures its seconds per step (the 10th
percentile of ``--rounds`` x ``--calibrate`` single timed steps in interleaved rounds, same process:
load from other jobs only adds time), then trains ``velocity steps * t_velocity / t_method``
steps, so a method whose step costs more (MeanFlow's JVP, the shortcut's extra half steps, the OT
solve of ``exact_ot``) trains fewer steps. Network evaluations per sample and step are reported
beside it: velocity 1 forward; mean_flow 1 forward-mode JVP (primal and tangent, about two forward
passes); shortcut 1 forward plus 2 no-grad forwards on its consistency share (1/4 of the batch).
Every method also does one backward pass per step.

Score: exact W2 between ``--n-eval`` samples and as many fresh target samples, mean and standard
deviation over ``--eval-seeds`` draws of noise and reference; the noise floor is the W2 between two
fresh target samples of that size. Goal: the best 1-NFE flow map within 1.2x of the velocity
model's adaptive W2.

    python bench/few_step.py                 # 8gaussians -> moons, 2500 velocity steps (about 9 minutes unloaded)
    python bench/few_step.py --quick         # smoke run (seconds)
    python bench/few_step.py --reflow        # + 1-RF -> 2-RF -> one-step distillation at the same budget

Writes ``bench/results/few_step.md`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import csv
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from monge.config import Config
from monge.data.sources import build_source
from monge.metrics import wasserstein2
from monge.samplers import sample
from monge.train import Trainer

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = (("velocity", "exact_ot"), ("mean_flow", "independent"), ("mean_flow", "exact_ot"),
           ("shortcut", "independent"), ("shortcut", "exact_ot"))
#: network evaluations per sample and training step (besides one backward pass)
EVALS = {"velocity": "1 forward", "mean_flow": "1 JVP (primal + tangent)",
         "shortcut": "1 forward + 2 x 1/4 no-grad forwards",
         "reflow": "1 forward per stage, 3 stages, + dopri5 pairs"}


@dataclass
class Settings:
    source: str = "8gaussians"
    target: str = "moons"
    steps: int = 2500  # of the velocity model; the others get the same wall time
    calibrate: int = 20
    rounds: int = 3
    batch_size: int = 256
    hidden: int = 256
    depth: int = 3
    lr: float = 1e-3
    time_scale: float = 10.0
    seed: int = 0
    n_eval: int = 2000
    eval_seeds: int = 3
    nfes: tuple[int, ...] = (1, 2, 4)
    reflow: bool = False  # also 1-RF -> 2-RF -> one-step distillation at the same total wall time
    reflow_pairs: int = 10_000


def label(objective: str, coupling: str) -> str:
    return f"{objective} + {coupling}"


def make_config(objective: str, coupling: str, steps: int, s: Settings, out: Path) -> Config:
    flow_map = objective != "velocity"
    model = {"name": "mlp", "hidden": s.hidden, "depth": s.depth}
    if flow_map:
        model.update(second_time=True, time_scale=s.time_scale)
    return Config.from_dict({
        "name": f"{objective}-{coupling}", "output_dir": str(out),
        "data": {"source": s.source, "target": s.target}, "coupling": coupling, "objective": objective,
        "path": {"name": "linear"}, "model": model,
        "train": {"steps": steps, "batch_size": s.batch_size, "lr": s.lr, "seed": s.seed, "checkpoint_every": 0,
                  "log_every": steps, "eval_samples": 100, "progress": False},
        "sample": {"sampler": objective if flow_map else "euler", "nfe": [1], "adaptive": False},
    })


def train(objective: str, coupling: str, steps: int, s: Settings, out: Path,
          log_every: int | None = None) -> tuple[torch.nn.Module, list[float]]:
    """The EMA model after ``steps`` steps and the loop's elapsed seconds at each log row."""
    config = make_config(objective, coupling, steps, s, out)
    config.train.log_every = log_every or steps
    trainer = Trainer(config)
    trainer.fit(overwrite="replace")
    with (trainer.run_dir / "log.csv").open(newline="") as fh:
        seconds = [float(row["seconds"]) for row in csv.DictReader(fh)]
    return trainer.ema.model, seconds


def step_times(objective: str, coupling: str, s: Settings, out: Path) -> list[float]:
    """Seconds of ``s.calibrate`` single training steps (``Trainer.train_step``: pairing, loss, backward,
    AdamW, EMA), each timed on its own after as many warm-up steps."""
    trainer = Trainer(make_config(objective, coupling, 10**6, s, out))
    times = []
    for k in range(2 * s.calibrate):
        start = time.perf_counter()
        trainer.train_step()
        if k >= s.calibrate:
            times.append(time.perf_counter() - start)
    return times


def evaluate(model, objective: str, s: Settings, nfes: tuple[int, ...] | None = None,
             adaptive: bool = True) -> dict[str, list[float] | list[int]]:
    """W2 per NFE (and dopri5 for a velocity model, unless ``adaptive=False``) over the evaluation seeds."""
    tgt = build_source(s.target)
    src = build_source(s.source, like=tgt)
    out: dict[str, list] = {}
    sampler = "euler" if objective == "velocity" else objective
    for seed in range(s.eval_seeds):
        g = torch.Generator().manual_seed(10_000 + seed)
        x0, ref = src.sample(s.n_eval, generator=g), tgt.sample(s.n_eval, generator=g)
        for k in s.nfes if nfes is None else nfes:
            out.setdefault(str(k), []).append(wasserstein2(sample(model, x0, sampler=sampler, nfe=k).x, ref))
        if objective == "velocity" and adaptive:
            res = sample(model, x0, sampler="dopri5")
            out.setdefault("adaptive", []).append(wasserstein2(res.x, ref))
            out.setdefault("adaptive_nfe", []).append(res.nfe)
    return out


def noise_floor(s: Settings) -> list[float]:
    tgt = build_source(s.target)
    vals = []
    for seed in range(s.eval_seeds):
        g = torch.Generator().manual_seed(20_000 + seed)
        vals.append(wasserstein2(tgt.sample(s.n_eval, generator=g), tgt.sample(s.n_eval, generator=g)))
    return vals


def reflow_distill(s: Settings, budget: float, per_step: float, out: Path, log=print) -> dict[str, dict]:
    """Rectified flow at the same total wall time: 1-RF (velocity, independent pairs), 2-RF on
    ``s.reflow_pairs`` dopri5 pairs of it, one-step distillation on pairs of the 2-RF
    (:func:`monge.rectify.reflow`); each training stage gets a third of the budget in steps, and the
    pair generation comes on top (its time is in the reported total)."""
    from monge.rectify import reflow
    from monge.run.load import load_model

    steps = max(1, round(budget / 3 / per_step))
    start = time.perf_counter()
    trainer = Trainer(make_config("velocity", "independent", steps, s, out))
    trainer.fit(overwrite="replace")
    run_dir = reflow(trainer.checkpoint_path, n_pairs=s.reflow_pairs, steps=steps, out_dir=out / "reflow",
                     distill=True, distill_steps=steps, seed=s.seed, overwrite=True)
    seconds = time.perf_counter() - start
    rf2, _ = load_model(run_dir)
    student, _ = load_model(run_dir / "distill")
    rows = {}
    for lab, model, nfes in (("2-RF (reflow of 1-RF, Euler)", rf2, s.nfes), ("2-RF + distill (1 step)", student, (1,))):
        scores = evaluate(model, "velocity", s, nfes=nfes, adaptive=False)
        rows[lab] = {"objective": "reflow", "coupling": "independent", "steps": 3 * steps, "seconds": seconds,
                     "ms_per_step": 1000 * per_step, "scores": scores}
        log(f"{lab}: 3 x {steps} steps, {seconds:.1f} s in all; " + ", ".join(
            f"{k} {statistics.mean(v):.4f}" for k, v in scores.items()))
    return rows


def run(s: Settings, log=print) -> dict:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        methods = (*METHODS, ("velocity", "independent")) if s.reflow else METHODS
        times: dict[str, list[float]] = {}
        for _ in range(s.rounds):  # calibration, interleaved rounds of single timed steps
            for objective, coupling in methods:
                times.setdefault(label(objective, coupling), []).extend(step_times(objective, coupling, s, out))
        # a low quantile of single steps: other jobs on a shared machine only ever add time to a step
        per_step = {lab: statistics.quantiles(v, n=10)[0] if len(v) >= 10 else min(v) for lab, v in times.items()}
        base = per_step[label(*METHODS[0])]
        budget = base * s.steps
        results = {}
        for objective, coupling in METHODS:
            lab = label(objective, coupling)
            steps = max(1, round(budget / per_step[lab]))
            model, elapsed = train(objective, coupling, steps, s, out)
            seconds = elapsed[-1]
            scores = evaluate(model, objective, s)
            results[lab] = {"objective": objective, "coupling": coupling, "steps": steps, "seconds": seconds,
                            "ms_per_step": 1000 * per_step[lab], "scores": scores}
            log(f"{lab}: {steps} steps in {seconds:.1f} s; " + ", ".join(
                f"{k} {statistics.mean(v):.4f}" for k, v in scores.items() if k != "adaptive_nfe"))
        if s.reflow:
            results.update(reflow_distill(s, budget, per_step[label("velocity", "independent")], out, log))
    return {"settings": s, "budget_seconds": budget, "results": results, "floor": noise_floor(s)}


def _cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def format_report(res: dict, command: str) -> str:
    s: Settings = res["settings"]
    results = res["results"]
    vel = results[label(*METHODS[0])]["scores"]
    adaptive = statistics.mean(vel["adaptive"])
    floor = statistics.mean(res["floor"])
    lines = [
        "# Few-step generators trained from scratch (mean_flow, shortcut) vs OT-CFM",
        "",
        f"Command: `{command}`  ",
        f"Machine: {platform.machine()}, torch {torch.__version__}, one thread (shared CPU; times are noisy).",
        "",
        (f"Task {s.source} -> {s.target}; MLP {s.depth}x{s.hidden} (flow maps: second_time, time_scale "
        f"{s.time_scale:g}), batch {s.batch_size}, AdamW lr {s.lr:g}, seed {s.seed}, EMA weights, linear path. "
        f"Equal training wall time: {res['budget_seconds']:.0f} s ({s.steps} velocity steps); each method's "
        f"seconds per step (`ms/step`) measured in the same process as the 10th percentile of "
        f"{s.rounds} x {s.calibrate} single timed steps in interleaved rounds (after warm-up steps): other jobs on "
        "the shared machine only add time to a step, so a low quantile estimates its own cost; `train s` is the "
        "loop's actual time under the machine's load. "
        f"W2: exact, {s.n_eval} samples against {s.n_eval} fresh target samples, mean ± sd over "
        f"{s.eval_seeds} draws. Noise floor (W2 between two fresh target samples): {_cell(res['floor'])}."),
        "",
        "| method | evaluations per sample and step | ms/step | steps | train s | "
        + " | ".join(f"W2 @{k}" for k in s.nfes) + " | W2 adaptive (NFE) |",
        "|---|---|---:|---:|---:|" + "---:|" * len(s.nfes) + "---:|",
    ]
    for lab, r in results.items():
        sc = r["scores"]
        ad = "" if "adaptive" not in sc else f"{_cell(sc['adaptive'])} ({round(statistics.mean(sc['adaptive_nfe']))})"
        lines.append(f"| {lab} | {EVALS[r['objective']]} | {r['ms_per_step']:.1f} | {r['steps']} | {r['seconds']:.0f} "
                     "| "
                     + " | ".join(_cell(sc[str(k)]) if str(k) in sc else "" for k in s.nfes) + f" | {ad} |")
    from monge.data.images import ImageDataset

    if isinstance(build_source(s.target), ImageDataset):
        lines += ["", (f"{s.target} is a finite image set: its \"fresh\" samples are draws with replacement from "
                       "its images, so two draws share images and the noise floor is lower than for a fresh law.")]
    flow_maps = {lab: statistics.mean(r["scores"]["1"]) for lab, r in results.items()
                 if r["objective"] in ("mean_flow", "shortcut")}
    best = min(flow_maps, key=flow_maps.get)
    ratio = flow_maps[best] / adaptive
    verdict = "met" if ratio <= 1.2 else "missed"
    lines += [
        "",
        (f"**Goal (best 1-NFE flow map within 1.2x of the velocity model's adaptive W2): {verdict}.** "
        f"Best 1-NFE: {best}, W2 {flow_maps[best]:.4f} = {ratio:.2f}x the adaptive W2 {adaptive:.4f} of "
        f"velocity + exact_ot ({round(statistics.mean(vel['adaptive_nfe']))} NFE); its own 1-step Euler: "
        f"{statistics.mean(vel['1']):.4f}. Both lie above the noise floor {floor:.4f}, so read the ratio of the "
        f"excess over it too: {(flow_maps[best] - floor) / max(adaptive - floor, 1e-12):.2f}x."),
        "",
    ]
    distilled = results.get("2-RF + distill (1 step)")
    if distilled is None:
        lines += ["Not compared in this run: 2-rectified flow + one-step distillation (`--reflow`).", ""]
    else:
        d1 = statistics.mean(distilled["scores"]["1"])
        lines += [(f"**Against reflow + distillation** (1-RF with independent pairs, 2-RF and the distillation get "
                   f"a third of the training budget each in steps; the two generations of {s.reflow_pairs} dopri5 "
                   f"pairs come on top, so the pipeline took {distilled['seconds']:.0f} s in all against "
                   f"{res['budget_seconds']:.0f} s of training budget, "
                   f"{distilled['seconds'] / res['budget_seconds']:.1f}x, "
                   f"under the machine's load): the distilled one-step model has W2 {d1:.4f}; the best 1-NFE flow map "
                   f"{flow_maps[best]:.4f} is {'better' if flow_maps[best] < d1 else 'not better'}."), ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=Settings.steps, help="velocity steps (sets the wall-time budget)")
    p.add_argument("--calibrate", type=int, default=Settings.calibrate)
    p.add_argument("--rounds", type=int, default=Settings.rounds)
    p.add_argument("--source", default=Settings.source)
    p.add_argument("--target", default=Settings.target)
    p.add_argument("--n-eval", type=int, default=Settings.n_eval)
    p.add_argument("--eval-seeds", type=int, default=Settings.eval_seeds)
    p.add_argument("--reflow", action="store_true", help="also 1-RF -> 2-RF -> distillation at the same budget")
    p.add_argument("--quick", action="store_true", help="smoke run: a few steps, small evaluation")
    p.add_argument("--out", type=Path, default=RESULTS / "few_step.md")
    a = p.parse_args()
    s = Settings(source=a.source, target=a.target, steps=a.steps, calibrate=a.calibrate, rounds=a.rounds,
                 n_eval=a.n_eval, eval_seeds=a.eval_seeds, reflow=a.reflow)
    if a.quick:
        s = Settings(source=a.source, target=a.target, steps=6, calibrate=3, rounds=1, hidden=32, depth=2,
                     batch_size=64, n_eval=64, eval_seeds=2, reflow=a.reflow, reflow_pairs=256)
    start = time.perf_counter()
    res = run(s)
    command = "python " + " ".join(["bench/few_step.py", *sys.argv[1:]])
    text = format_report(res, command) + f"Total run time: {time.perf_counter() - start:.0f} s.\n"
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
