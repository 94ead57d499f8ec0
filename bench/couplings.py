"""Training-step time of every coupling relative to ``independent``, side by side in one run.

One step = draw ``x0`` (8gaussians) and ``x1`` (moons), couple, sample the path, forward and
backward through the MLP (hidden 256, depth 3), AdamW step. Couplings are interleaved step by
step (round robin) at each batch size, so machine load hits all of them alike; the table holds
medians and the ratio to ``independent``. The mean squared pair distance (weighted for W-CFM)
of the coupled batches is reported beside the time.

    python bench/couplings.py                      # writes bench/results/couplings.md
    python bench/couplings.py --batches 256 1024 --repeats 5
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import warnings
from pathlib import Path

import torch

from monge.couplings import COUPLINGS, ReflowPairs
from monge.data.sources import ToySource
from monge.models import build_model
from monge.objectives import VelocityObjective
from monge.paths import PATHS

COUPLINGS_BENCHED = [
    ("independent", {}),
    ("exact_ot", {}),
    ("entropic", {}),
    ("schrodinger_bridge", {"sigma": 0.5}),
    ("wcfm", {}),
    ("immiscible", {}),
    ("knn_immiscible", {"k": 4}),
    ("semidiscrete_ot", {"n_targets": 256, "tol": 0.1, "lr": 0.01, "max_iter": 300}),
    ("reflow", {}),
]
#: O(Bd) couplings (no OT solver): timed with many more steps, to resolve a few per cent
LIGHT = ("independent", "wcfm", "knn_immiscible", "semidiscrete_ot", "reflow")
#: a step slower than this is not repeated at that batch size
SLOW_S = 15.0


def build(name: str, params: dict, source: ToySource, target: ToySource):
    if name == "reflow":
        g = torch.Generator().manual_seed(99)
        return ReflowPairs.from_tensors(source.sample(20_000, g), target.sample(20_000, g)), 0.0
    c = COUPLINGS.build(name, **params)
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c.prepare(source, target, torch.Generator().manual_seed(7))
    return c, time.perf_counter() - t


def ratio_interval(times: list[float], base: list[float], generator: torch.Generator,
                   resamples: int = 2000, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``median(times) / median(base)`` (both resampled)."""
    a, b = torch.tensor(times, dtype=torch.float64), torch.tensor(base, dtype=torch.float64)
    ia = torch.randint(len(a), (resamples, len(a)), generator=generator)
    ib = torch.randint(len(b), (resamples, len(b)), generator=generator)
    ratios = a[ia].median(1).values / b[ib].median(1).values
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    lo, hi = torch.quantile(ratios, q).tolist()
    return lo, hi


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[256, 512, 1024, 4096])
    ap.add_argument("--repeats", type=int, default=0, help="steps per solver coupling (default: by batch size)")
    ap.add_argument("--light-repeats", type=int, default=0,
                    help="steps per coupling without a solver (default: by batch size)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "couplings.md")
    args = ap.parse_args()
    torch.manual_seed(0)
    source, target = ToySource("8gaussians"), ToySource("moons")
    path, objective = PATHS.build("linear"), VelocityObjective()
    couplings, prep = {}, {}
    for name, params in COUPLINGS_BENCHED:
        couplings[name], prep[name] = build(name, params, source, target)
    lines = [
        "# Training-step time per coupling, relative to `independent`",
        "",
        f"8gaussians -> moons, MLP 256x3, AdamW; torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads. Median seconds per step (coupling + path + forward/backward + "
        "optimiser step), couplings interleaved; `x` = ratio to independent; `cost` = mean squared pair "
        "distance of the coupled batch (Gibbs-weighted for wcfm).",
        "",
        f"One-off preparation: semidiscrete_ot fit {prep['semidiscrete_ot']:.1f} s (256 targets, 300 steps max).",
        "",
        "| coupling | " + " | ".join(f"B={b}: s/step | x | cost" for b in args.batches) + " |",
        "|---|" + "---|---|---|" * len(args.batches),
    ]
    results: dict[str, list[str]] = {name: [] for name in couplings}
    intervals: dict[str, list[str]] = {name: [] for name in LIGHT}
    for b in args.batches:
        heavy_reps = args.repeats or {256: 15, 512: 11, 1024: 7}.get(b, 3)
        light_reps = args.light_repeats or {256: 300, 512: 200, 1024: 120}.get(b, 30)
        model = build_model("mlp", {"hidden": 256, "depth": 3}, (2,))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        g = torch.Generator().manual_seed(b)
        times: dict[str, list[float]] = {n: [] for n in couplings}
        costs: dict[str, list[float]] = {n: [] for n in couplings}
        for r in range(max(heavy_reps, light_reps) + 1):  # first round: warm-up, not timed
            for name, c in couplings.items():
                if r > (light_reps if name in LIGHT else heavy_reps):
                    continue
                if r > 1 and times[name] and times[name][-1] > SLOW_S:
                    continue
                x0, x1 = source.sample(b, g), target.sample(b, g)
                t_start = time.perf_counter()
                pairs = c(x0, x1, generator=g)
                ps = path.sample(pairs.x0, pairs.x1, torch.rand(b, generator=g), generator=g)
                loss = objective(model(ps.x_t, ps.t), ps.target, pairs.weights)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                dt = time.perf_counter() - t_start
                if r > 0 or dt > SLOW_S:
                    times[name].append(dt)
                w = pairs.weights if pairs.weights is not None else torch.ones(b)
                costs[name].append(float((w * (pairs.x0 - pairs.x1).square().sum(1)).mean() / w.mean()))
        base = statistics.median(times["independent"])
        for name in couplings:
            med = statistics.median(times[name])
            results[name] += [f"{med:.4f}", f"{med / base:.2f}", f"{statistics.mean(costs[name]):.2f}"]
            if name in LIGHT:
                lo, hi = ratio_interval(times[name], times["independent"], torch.Generator().manual_seed(b))
                intervals[name].append(f"{med / base:.3f} [{lo:.3f}, {hi:.3f}] (n={len(times[name])})")
        print(f"B={b}: " + ", ".join(f"{n} {statistics.median(times[n]) / base:.2f}x" for n in couplings), flush=True)
    for name, cells in results.items():
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Couplings without a solver, many more interleaved steps: ratio of median step times to "
        "`independent` with a 95% bootstrap interval (2000 resamples of both sets of steps).",
        "",
        "| coupling | " + " | ".join(f"B={b}" for b in args.batches) + " |",
        "|---|" + "---|" * len(args.batches),
    ]
    for name in LIGHT:
        if name != "independent":
            lines.append(f"| {name} | " + " | ".join(intervals[name]) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
