"""Training-step time of every coupling relative to ``independent``, side by side in one run.

One step = draw ``x0`` (8gaussians) and ``x1`` (moons), couple, sample the path, forward and
backward through the MLP (hidden 256, depth 3), AdamW step. Couplings are interleaved step by
step (round robin, in a new random order each round) at each batch size, so machine load hits
all of them alike; the table holds
medians and the ratio to ``independent``. The mean squared pair distance (weighted for W-CFM)
of the coupled batches is reported beside the time.

A second table times the solver couplings with their OT solves running ahead of training in
``W`` worker threads (:class:`monge.pairing.PairingPipeline`, ``train.pairing_workers``). There
the solves overlap the steps, so steps are not interleaved one by one: blocks of consecutive
steps of ``independent`` and of the pipelined coupling alternate, and the table holds the median
over blocks of the mean step time (a step's share of wall time in steady state).

    python bench/couplings.py                      # writes bench/results/couplings.md
    python bench/couplings.py --batches 256 1024 --repeats 5
    python bench/couplings.py --threads 2 --pairing-workers 1 14 --device cuda
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import torch
from torch import Tensor

from monge.couplings import COUPLINGS, ReflowPairs, SolverCoupling
from monge.data.sources import ToySource
from monge.models import build_model
from monge.objectives import regression_loss
from monge.pairing import PairingPipeline
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
#: solver couplings timed with their solves in worker threads; entropic is not offered with
#: ``train.pairing_workers`` (its row shows why), and is timed only up to this batch size
PIPELINED = ("exact_ot", "immiscible", "entropic")
ENTROPIC_PIPELINED_MAX_B = 1024


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
    """Percentile bootstrap interval of ``median(times) / median(base)``.

    Lists of equal length hold one step of each per round and are resampled by round (paired),
    so slow phases of the machine, which hit both alike, do not widen the interval."""
    a, b = torch.tensor(times, dtype=torch.float64), torch.tensor(base, dtype=torch.float64)
    ia = torch.randint(len(a), (resamples, len(a)), generator=generator)
    ib = ia if len(a) == len(b) else torch.randint(len(b), (resamples, len(b)), generator=generator)
    ratios = a[ia].median(1).values / b[ib].median(1).values
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    lo, hi = torch.quantile(ratios, q).tolist()
    return lo, hi


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Step:
    """One training step of a fresh MLP (hidden 256, depth 3) on ``device``."""

    def __init__(self, device: torch.device) -> None:
        self.model = build_model("mlp", {"hidden": 256, "depth": 3}, (2,)).to(device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.path, self.objective = PATHS.build("linear"), regression_loss

    def __call__(self, pairs, t: Tensor, g: torch.Generator) -> None:
        ps = self.path.sample(pairs.x0, pairs.x1, t, generator=g)
        loss = self.objective(self.model(ps.x_t, ps.t), ps.target, pairs.weights)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


def pipelined_ratios(name: str, coupling: SolverCoupling, workers: int, b: int, source: ToySource,
                     target: ToySource, device: torch.device, blocks: int, block_steps: int) -> tuple[float, float]:
    """Median over ``blocks`` of the mean step time: (independent, ``name`` with ``workers`` threads)."""
    g = torch.Generator().manual_seed(b)

    def draw():
        return (source.sample(b, g, device), target.sample(b, g, device), torch.rand(b, generator=g).to(device))

    independent = COUPLINGS.build("independent")
    step = Step(device)
    base, piped = [], []
    for _block in range(blocks + 1):  # block 0: warm-up, not kept
        sync(device)
        start = time.perf_counter()
        for _ in range(block_steps):
            x0, x1, t = draw()
            step(independent(x0, x1, generator=g), t, g)
        sync(device)
        base.append((time.perf_counter() - start) / block_steps)
        # a fresh pipeline per block, run 2W steps before timing: no solve banked while the
        # independent block ran counts, and the queue is in its steady state when timing starts
        with PairingPipeline(draw, coupling.solve, g, workers) as pipe:
            for k in range(2 * workers + block_steps):
                if k == 2 * workers:
                    sync(device)
                    start = time.perf_counter()
                (x0, x1, t), solution = pipe.next()
                step(coupling.pair_solved(x0, x1, solution, g), t, g)
            sync(device)
            piped.append((time.perf_counter() - start) / block_steps)
    return statistics.median(base[1:]), statistics.median(piped[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[256, 512, 1024, 4096])
    ap.add_argument("--repeats", type=int, default=0, help="steps per solver coupling (default: by batch size)")
    ap.add_argument("--light-repeats", type=int, default=0,
                    help="steps per coupling without a solver (default: by batch size)")
    ap.add_argument("--pairing-workers", type=int, nargs="*", default=[1],
                    help="worker-thread counts for the pipelined table (none: skip it)")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "couplings.md")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    source, target = ToySource("8gaussians"), ToySource("moons")
    couplings, prep = {}, {}
    for name, params in COUPLINGS_BENCHED:
        couplings[name], prep[name] = build(name, params, source, target)
    lines = [
        "# Training-step time per coupling, relative to `independent`",
        "",
        f"8gaussians -> moons, MLP 256x3, AdamW; torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads, device {device_name(device)}. Median "
        "seconds per step (coupling + path + forward/backward + "
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
        heavy_reps = args.repeats or {128: 20, 256: 15, 512: 11, 1024: 7}.get(b, 3)
        light_reps = args.light_repeats or {128: 800, 256: 600, 512: 400, 1024: 240}.get(b, 40)
        step = Step(device)
        g = torch.Generator().manual_seed(b)
        times: dict[str, list[float]] = {n: [] for n in couplings}
        costs: dict[str, list[float]] = {n: [] for n in couplings}
        order_gen = torch.Generator().manual_seed(1000 + b)
        names = list(couplings)
        for r in range(max(heavy_reps, light_reps) + 1):  # first round: warm-up, not timed
            # a new random order each round: no coupling always runs after the same one (a step
            # after a solver's large matrices finds colder caches)
            for i in torch.randperm(len(names), generator=order_gen).tolist():
                name, c = names[i], couplings[names[i]]
                if r > (light_reps if name in LIGHT else heavy_reps):
                    continue
                if r > 1 and times[name] and times[name][-1] > SLOW_S:
                    continue
                x0, x1 = source.sample(b, g, device), target.sample(b, g, device)
                t = torch.rand(b, generator=g).to(device)
                sync(device)
                t_start = time.perf_counter()
                pairs = c(x0, x1, generator=g)
                step(pairs, t, g)
                sync(device)
                dt = time.perf_counter() - t_start
                if r > 0 or dt > SLOW_S:
                    times[name].append(dt)
                w = pairs.weights if pairs.weights is not None else torch.ones(b, device=device)
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
        "`independent` with a 95% bootstrap interval (2000 resamples of the rounds, each holding one "
        "step of every coupling).",
        "",
        "| coupling | " + " | ".join(f"B={b}" for b in args.batches) + " |",
        "|---|" + "---|" * len(args.batches),
    ]
    for name in LIGHT:
        if name != "independent":
            lines.append(f"| {name} | " + " | ".join(intervals[name]) + " |")
    if args.pairing_workers:
        lines += pipelined_table(args, couplings, source, target, device)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


def pipelined_table(args, couplings, source, target, device) -> list[str]:
    lines = [
        "",
        "Solver couplings with the solves in worker threads (`train.pairing_workers = W`): median over "
        "blocks of the mean step time, `x` = ratio to `independent` timed in the blocks between "
        "(exact_ot at every W, the others at the largest W). Training runs on the cores the workers "
        "leave (`threads` = cores - W torch threads, at least 1), `independent` included. `entropic` "
        "is not offered with `train.pairing_workers`; its row shows why.",
        "",
        "| coupling | W | threads | " + " | ".join(f"B={b}: s/step | x" for b in args.batches) + " |",
        "|---|---|---|" + "---|---|" * len(args.batches),
    ]
    rows = [("exact_ot", w) for w in args.pairing_workers]
    rows += [(n, max(args.pairing_workers)) for n in PIPELINED if n != "exact_ot"]
    default_threads = torch.get_num_threads()
    for name, w in rows:
        threads = max(1, (os.cpu_count() or 1) - w)
        torch.set_num_threads(threads)
        cells = []
        for b in args.batches:
            if name == "entropic" and b > ENTROPIC_PIPELINED_MAX_B:
                cells += ["-", "-"]
                continue
            blocks, block_steps = (5, 40) if b <= 1024 else (2, 4)
            base, piped = pipelined_ratios(name, couplings[name], w, b, source, target, device, blocks, block_steps)
            cells += [f"{piped:.4f}", f"{piped / base:.2f}"]
            print(f"B={b} {name} W={w}: {piped / base:.2f}x", flush=True)
        lines.append(f"| {name} | {w} | {threads} | " + " | ".join(cells) + " |")
    torch.set_num_threads(default_threads)
    return lines


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


if __name__ == "__main__":
    main()
