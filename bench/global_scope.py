"""Training-step time of ``exact_ot`` with ``scope: global`` under 2 gloo processes, against per-rank pairing.

The bench launches itself under ``python -m torch.distributed.run --standalone --nproc_per_node=2``
(gloo on the CPU, ``OMP_NUM_THREADS=1`` in each process). Each process builds one
:class:`monge.train.Trainer` per coupling -- ``independent``, ``exact_ot`` with ``scope: local``
(each rank pairs its own batch of ``b``) and ``exact_ot`` with ``scope: global`` (every rank
gathers the ``2b`` noise and data points, solves the one ``2b x 2b`` assignment and keeps its
rows) -- and times ``Trainer.train_step`` (draw, coupling, linear path, MLP forward/backward in
DDP, loss all-reduce, AdamW with weight decay 0, i.e. Adam, EMA). The steps of the three trainers
are interleaved in a new random order each round, the same on both ranks. A step's time is the
slower rank's; ``pairing`` is the coupling call alone (gather included), ``gather`` the two
all-gathers inside it.

The trainers draw the same global batches (same seed), so at every step the three pairings are
of one global batch of ``2b`` points; the pair cost is
:math:`\\sum_i \\|z_i - x_1^i\\|^2` over that global batch, and the global one is checked against
POT's exact optimum (``ot.emd2``) of the gathered batch.

    python bench/global_scope.py                  # b = 128, 256, 512 per rank; 2-D and 64-D
    python bench/global_scope.py --quick          # b = 32, a few steps (smoke test)

Writes ``bench/results/global_scope.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"

#: (coupling, scope) rows of every case, in table order
METHODS: tuple[tuple[str, str], ...] = (("independent", "local"), ("exact_ot", "local"), ("exact_ot", "global"))
#: case name -> (source, target, dimension); ``mixture64`` is written to a .npy table by the launcher
CASES: dict[str, tuple[str, str, int]] = {
    "2D": ("gaussian", "8gaussians", 2),
    "64D": ("gaussian", "mixture64", 64),
}


@dataclass
class Settings:
    batches: tuple[int, ...] = (128, 256, 512)
    cases: tuple[str, ...] = ("2D", "64D")
    warmup: int = 5
    steps: int = 25
    check_steps: int = 5  # timed steps whose global pair cost is checked against POT
    hidden: int = 256
    depth: int = 3
    solver: str = "auto"
    seed: int = 0
    nproc: int = 2
    dump: str | None = None  # directory for the first timed global batch of each case (tests)
    mixture: str | None = None  # the 64-D table, set by the launcher
    out_json: str | None = None


QUICK = Settings(batches=(32,), warmup=1, steps=3, check_steps=1, hidden=32, depth=2)


# ---------------------------------------------------------------------------------------- worker
class TimedCoupling:
    """Forwards to a coupling and keeps the seconds of its last call (the Trainer calls
    ``coupling(x0, x1, generator=..., labels=...)`` once per step)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.seconds = inner, 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        out = self.inner(*args, **kwargs)
        self.seconds = time.perf_counter() - start
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class GatherClock:
    """Wraps :func:`monge.run.distributed.all_gather_rows` and sums the seconds of its calls."""

    def __init__(self) -> None:
        from monge.run import distributed

        self.module, self.original, self.seconds = distributed, distributed.all_gather_rows, 0.0
        distributed.all_gather_rows = self._timed

    def _timed(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        start = time.perf_counter()
        out = self.original(*args, **kwargs)
        self.seconds += time.perf_counter() - start
        return out

    def take(self) -> float:
        seconds, self.seconds = self.seconds, 0.0
        return seconds


def make_config(case: str, coupling: str, scope: str, b: int, s: Settings, out: Path):
    from monge.config import Config

    source, target, _ = CASES[case]
    data_target: Any = {"name": "array", "path": s.mixture} if target == "mixture64" else target
    spec: Any = "independent" if coupling == "independent" else {"name": coupling, "scope": scope,
                                                                  "solver": s.solver}
    return Config.from_dict({
        "name": f"{case}-{b}-{coupling}-{scope}", "output_dir": str(out),
        "data": {"source": source, "target": data_target}, "coupling": spec, "path": {"name": "linear"},
        "model": {"name": "mlp", "hidden": s.hidden, "depth": s.depth},
        "train": {"steps": 10**6, "batch_size": b, "lr": 1e-3, "seed": s.seed, "checkpoint_every": 0,
                  "log_every": 10**6, "progress": False},
    })


def pair_cost(pairs: Any) -> float:
    r"""Total squared distance :math:`\sum_i \|z_i - x_1^i\|^2` of the pairs over all ranks."""
    import torch.distributed as dist

    c = (pairs.x0.double() - pairs.x1.double()).flatten(1).square().sum().reshape(1)
    if dist.is_initialized():
        dist.all_reduce(c)
    return float(c)


def pot_optimum(x0: torch.Tensor, x1: torch.Tensor) -> float:
    r"""POT's exact optimum of the gathered batch: :math:`n \cdot` ``emd2`` with uniform weights."""
    import ot

    from monge.run import distributed

    g0, g1 = distributed.all_gather_rows(x0), distributed.all_gather_rows(x1)
    a, c = g0.double().flatten(1).numpy(), g1.double().flatten(1).numpy()
    return float(ot.emd2([], [], ot.dist(c, a), numItermax=10**7)) * len(a)


def run_case(case: str, b: int, s: Settings, out: Path, clock: GatherClock) -> dict[str, Any]:
    """Interleaved timed steps of the three trainers on one case; this rank's lists."""
    from monge.ot.exact import pick_method
    from monge.run import distributed
    from monge.train import Trainer

    trainers = []
    for coupling, scope in METHODS:
        trainer = Trainer(make_config(case, coupling, scope, b, s, out))
        trainer.prepare()  # the global scope's gather group (every rank, same order)
        trainer.coupling = TimedCoupling(trainer.coupling)
        trainers.append(trainer)
    order = torch.Generator().manual_seed(1000 + b)  # same order on every rank
    rec: dict[str, dict[str, list[float]]] = {f"{c}/{sc}": {"step": [], "pairing": [], "gather": [], "cost": []}
                                              for c, sc in METHODS}
    checks: list[tuple[float, float]] = []
    for r in range(s.warmup + s.steps):
        for i in torch.randperm(len(METHODS), generator=order).tolist():
            trainer, key = trainers[i], "/".join(METHODS[i])
            distributed.barrier()
            clock.take()
            start = time.perf_counter()
            trainer.train_step()
            seconds = time.perf_counter() - start
            gather = clock.take()
            x0, x1, pairs = trainer.batches.last
            cost = pair_cost(pairs)
            if r < s.warmup:
                continue
            for name, value in (("step", seconds), ("pairing", trainer.coupling.seconds), ("gather", gather),
                                ("cost", cost)):
                rec[key][name].append(value)
            if METHODS[i] == ("exact_ot", "global") and r - s.warmup < s.check_steps:
                checks.append((cost, pot_optimum(x0, x1)))
                if s.dump and r == s.warmup:
                    dump_batch(x0, x1, Path(s.dump) / f"{case}-{b}.pt")
    rec["exact_ot/global"]["bare_gather"] = bare_gathers(trainers[-1].coupling.inner, x0, x1, s.steps)
    n = b * distributed.info().world_size
    solvers = {"local": pick_method(torch.empty(b, b), s.solver), "global": pick_method(torch.empty(n, n), s.solver)}
    return {"case": case, "b": b, "rec": rec, "checks": checks, "solvers": solvers}


def bare_gathers(coupling: Any, x0: torch.Tensor, x1: torch.Tensor, repeats: int) -> list[float]:
    """Seconds of the global scope's two all-gathers alone (its group), each after a barrier."""
    from monge.run import distributed

    group, times = coupling._gather_group(), []
    for _ in range(repeats):
        distributed.barrier()
        start = time.perf_counter()
        distributed.all_gather_rows(x0, group), distributed.all_gather_rows(x1, group)
        times.append(time.perf_counter() - start)
    return times


def dump_batch(x0: torch.Tensor, x1: torch.Tensor, path: Path) -> None:
    """Rank 0 saves the gathered global batch (rank order) for an independent recomputation."""
    from monge.run import distributed

    g0, g1 = distributed.all_gather_rows(x0), distributed.all_gather_rows(x1)
    if distributed.is_main():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"x0": g0, "x1": g1, "world": distributed.info().world_size}, path)


def merge_ranks(per_rank: list[dict[str, Any]]) -> dict[str, Any]:
    """Per step, the slowest rank's times; the costs and checks are the same on every rank."""
    first = per_rank[0]
    rec = {}
    for key, lists in first["rec"].items():
        rec[key] = {name: [max(r["rec"][key][name][k] for r in per_rank) for k in range(len(values))]
                    for name, values in lists.items() if name != "cost"}
        rec[key]["cost"] = lists["cost"]
    return {**first, "rec": rec}


def worker(spec: Path) -> None:
    from monge.run import distributed

    torch.set_num_threads(1)
    s = Settings(**{k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(spec.read_text()).items()})
    info = distributed.setup()
    clock = GatherClock()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in s.cases:
            for b in s.batches:
                mine = run_case(case, b, s, Path(tmp), clock)
                results.append(merge_ranks(distributed.all_gather_objects(mine)))
                if info.rank == 0:
                    print(f"done {case} b={b}", flush=True)
    if info.rank == 0:
        Path(s.out_json).write_text(json.dumps({"world": info.world_size, "results": results}))
    distributed.teardown()


# -------------------------------------------------------------------------------------- launcher
def write_mixture(path: Path, n: int = 20_000, d: int = 64, k: int = 8, seed: int = 0) -> None:
    r"""``n`` points of :math:`\frac1k\sum_j \mathcal N(m_j, 0.5^2 I_d)`, :math:`m_j \sim \mathcal N(0, 4 I_d)`."""
    g = torch.Generator().manual_seed(seed)
    means = 2.0 * torch.randn(k, d, generator=g)
    x = means[torch.randint(k, (n,), generator=g)] + 0.5 * torch.randn(n, d, generator=g)
    np.save(path, x.numpy().astype(np.float32))


def launch(s: Settings, tmp: Path, timeout: float) -> dict[str, Any]:
    """Run the worker under ``torch.distributed.run`` with ``s.nproc`` gloo processes; its JSON."""
    import monge

    write_mixture(tmp / "mixture64.npy")
    s.mixture, s.out_json = str(tmp / "mixture64.npy"), str(tmp / "out.json")
    spec = tmp / "spec.json"
    spec.write_text(json.dumps(asdict(s)))
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    src = str(Path(monge.__file__).resolve().parents[1])
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={s.nproc}",
           str(Path(__file__).resolve()), "--worker", str(spec)]
    res = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"the {s.nproc}-process run failed (exit {res.returncode}):\n{res.stdout[-3000:]}\n"
                           f"{res.stderr[-3000:]}")
    return json.loads(Path(s.out_json).read_text())


@dataclass
class Row:
    case: str
    b: int
    coupling: str
    scope: str
    solver: str
    step_ms: float
    pairing_ms: float
    gather_ms: float
    cost: float  # mean total squared distance of the pairs over the global batch
    extra: dict[str, float] = field(default_factory=dict)


def summarise(result: dict[str, Any]) -> list[Row]:
    """Medians per coupling, and the ratios to independent, to the per-rank pairing, of the costs."""
    rows = []
    for coupling, scope in METHODS:
        r = result["rec"][f"{coupling}/{scope}"]
        solver = "-" if coupling == "independent" else result["solvers"][scope]
        rows.append(Row(result["case"], result["b"], coupling, scope, solver,
                        1e3 * statistics.median(r["step"]), 1e3 * statistics.median(r["pairing"]),
                        1e3 * statistics.median(r["gather"]), statistics.fmean(r["cost"])))
    ind, loc, glob = rows
    steps_g, steps_l = result["rec"]["exact_ot/global"]["cost"], result["rec"]["exact_ot/local"]["cost"]
    for row in rows:
        row.extra["x_independent"] = row.step_ms / ind.step_ms
        row.extra["cost_ratio"] = row.cost / loc.cost
    glob.extra["x_local"] = glob.step_ms / loc.step_ms
    glob.extra["pairing_x_local"] = glob.pairing_ms / loc.pairing_ms
    glob.extra["bare_gather_ms"] = 1e3 * statistics.median(result["rec"]["exact_ot/global"]["bare_gather"])
    glob.extra["worst_step_cost_ratio"] = max(g / lo for g, lo in zip(steps_g, steps_l, strict=True))
    checks = result["checks"]
    glob.extra["pot_rel_err"] = max(abs(c - ref) / ref for c, ref in checks) if checks else float("nan")
    return rows


def table(rows: list[Row]) -> list[str]:
    lines = ["| case | b/rank | coupling | scope | solver | ms/step | pairing ms | gather ms | x independent | "
             "global / local | pair cost / local |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        gl = f"{r.extra['x_local']:.2f} (pairing {r.extra['pairing_x_local']:.1f})" if "x_local" in r.extra else ""
        gather = f"{r.gather_ms:.2f}" if r.scope == "global" else ""
        lines.append(f"| {r.case} | {r.b} | {r.coupling} | {r.scope} | {r.solver} | {r.step_ms:.1f} | "
                     f"{r.pairing_ms:.2f} | {gather} | {r.extra['x_independent']:.2f} | {gl} | "
                     f"{r.extra['cost_ratio']:.4f} |")
    return lines


def report(rows: list[Row], s: Settings, cmd: str, minutes: float, world: int) -> str:
    glob = [r for r in rows if r.scope == "global"]
    worst = max(r.extra["worst_step_cost_ratio"] for r in glob)
    pot = max(r.extra["pot_rel_err"] for r in glob)
    lines = [
        "# Global-scope exact OT: step time with 2 gloo processes, against per-rank pairing",
        "",
        f"Command: `{cmd}` ({minutes:.1f} min; {time.strftime('%Y-%m-%d')}; torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores shared with other work; "
        f"{world} processes under `torch.distributed.run --standalone`, gloo, `OMP_NUM_THREADS=1` each).",
        "",
        f"Each step is monge's own `Trainer.train_step` (not a hand-written loop): the global batch drawn from "
        f"the shared generator, the coupling on this rank's slice, linear path, MLP {s.hidden}x{s.depth} "
        "(`monge.models`) wrapped in DDP, velocity flow-matching loss (all-reduced), AdamW with weight decay 0 "
        "(= Adam), EMA. The three trainers of a case run interleaved, a new random order each round, the same on "
        f"both ranks, with a barrier before each step; {s.warmup} warm-up rounds, then the median of {s.steps} "
        "timed steps, each step's time being its slower rank's. `pairing`: the coupling call (global: two "
        "all-gathers, the `2b x 2b` solve, the rows of this rank); `gather`: the all-gathers alone. `solver`: "
        f"what `solver: {s.solver}` picks at that size (SciPy below 512 points, POT's network simplex from 512). "
        "2D: N(0, I) -> 8gaussians; 64D: N(0, I) -> a mixture of 8 Gaussians (means ~ N(0, 4I), std 0.5), "
        "20 000 points read as an `array` table. `pair cost / local`: the mean over the timed steps of "
        "the total squared pair distance over the global batch of `2b` points, over the same for per-rank "
        "`exact_ot` (the trainers draw the same batches, so each step compares pairings of one batch).",
        "",
        *table(rows),
        "",
        f"Checks: at every timed step the global pairing's cost was at most the per-rank one (largest per-step "
        f"ratio {worst:.4f}); on the first {s.check_steps} timed steps of each case it equals POT's `emd2` "
        f"optimum of the gathered batch (largest relative difference {pot:.1e}).",
        "",
        *notes(rows, world),
    ]
    return "\n".join(lines) + "\n"


def notes(rows: list[Row], world: int) -> list[str]:
    """The Notes section: what the measured ratios say, computed from the rows."""
    glob = [r for r in rows if r.scope == "global"]
    loc = {(r.case, r.b): r for r in rows if r.coupling == "exact_ot" and r.scope == "local"}
    per_case = "; ".join(
        f"{r.case} b={r.b}: step x{r.extra['x_local']:.2f}, pairing x{r.extra['pairing_x_local']:.1f} "
        f"({loc[r.case, r.b].pairing_ms:.1f} -> {r.pairing_ms:.1f} ms, gather {r.gather_ms:.2f} ms), "
        f"pair cost x{r.extra['cost_ratio']:.3f}" for r in glob)
    gather_share = ", ".join(f"{r.gather_ms / r.pairing_ms:.0%} ({r.case} b={r.b}; the same gathers alone, "
                             f"after a barrier: {r.extra['bare_gather_ms']:.1f} ms)" for r in glob)
    return [
        "## Notes",
        "",
        f"- Global against per-rank pairing, same global batch: {per_case}.",
        f"- Per-rank pairing solves {world} problems of `b` points, one per process, side by side; global pairing "
        f"solves one problem of {world}b points, and every rank solves the same one (the solve is deterministic, "
        "so the ranks agree without a broadcast; the other ranks' share of the work is redundant). The "
        "assignment costs grow faster than linearly in the points (O(n^3) worst case for the exact solvers), so "
        "the global pairing costs each rank more than its per-rank solve: the `pairing` ratio above is that "
        f"price. Of it, the all-gathers took {gather_share}: four gloo collectives (shape and rows, for the noise "
        "and the data) whose time includes waiting for the other rank to reach them (each step starts after a "
        "barrier, so the difference to the gathers alone is the ranks' drift within the step on shared cores), "
        "not only the transfer of `2b` rows.",
        "- The gain is the pair cost: the global plan is optimal over the whole global batch, the per-rank "
        "plans only within each slice, so the global cost is never above the per-rank one; how much lower "
        "is the `pair cost / local` column (a larger batch pairs each point with a closer noise).",
        f"- The machine has {os.cpu_count()} cores, shared with other work, and runs {world} processes of one "
        "torch thread each: the ranks compete for the cores with each other and with other jobs, so absolute "
        "times are rough and the ratios within one case are the figures to read.",
    ]


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, Settings]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="b = 32, 3 timed steps, a small MLP (smoke test)")
    ap.add_argument("--batches", type=int, nargs="+", help="per-rank batch sizes (default 128 256 512)")
    ap.add_argument("--cases", nargs="+", choices=sorted(CASES), help="default: all")
    ap.add_argument("--steps", type=int, help="timed steps per coupling (default 25)")
    ap.add_argument("--warmup", type=int, help="warm-up rounds (default 5)")
    ap.add_argument("--solver", default="auto", help="exact_ot's solver (auto, scipy, emd, auction)")
    ap.add_argument("--dump", type=Path, help="save each case's first timed global batch here (tests)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds before the run is stopped")
    ap.add_argument("--out", type=Path, default=RESULTS / "global_scope.md")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    s = Settings(**asdict(QUICK)) if a.quick else Settings()
    for name in ("batches", "cases"):
        if getattr(a, name):
            setattr(s, name, tuple(getattr(a, name)))
    for name in ("steps", "warmup"):
        if getattr(a, name) is not None:
            if getattr(a, name) < 1:
                raise SystemExit(f"--{name} must be at least 1, got {getattr(a, name)}")
            setattr(s, name, getattr(a, name))
    s.solver, s.dump = a.solver, None if a.dump is None else str(a.dump)
    return a, s


def main(argv: list[str] | None = None) -> str | None:
    a, s = parse(argv)
    if a.worker is not None:
        worker(a.worker)
        return None
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        res = launch(s, Path(tmp), a.timeout)
    rows = [row for result in res["results"] for row in summarise(result)]
    cmd = "python bench/global_scope.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = report(rows, s, cmd.strip(), (time.perf_counter() - start) / 60, res["world"])
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(text)
    print(text)
    return text

if __name__ == "__main__":
    main()
