"""Training-step cost of the global (semi-discrete) OT coupling against ``independent``.

A ``semidiscrete_ot`` step is one chunked max-inner-product search of the batch's noise among all
N training points, then the usual step (path, MLP forward/backward, AdamW). Its cost does not
depend on how well the heights are fitted, so the map here has the N targets and the scaled
Voronoi heights (no fit). Steps are interleaved with ``independent`` steps (a new random order
each round) and the table holds medians, the ratio to ``independent``, and the search alone.
With ``--pairing-workers W`` the searches of upcoming batches also run in ``W`` threads
(:class:`monge.pairing.PairingPipeline`), in blocks alternating with blocks of ``independent``.

    python bench/semidiscrete_pairing.py                           # N = 1e4, 1e5; d = 2, 64
    python bench/semidiscrete_pairing.py --targets 10000 --dims 2 --pairing-workers 1

Writes ``bench/results/semidiscrete_pairing.md``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from monge.couplings import COUPLINGS, SemiDiscreteOT
from monge.models import build_model
from monge.objectives import regression_loss
from monge.ot.semidiscrete import SemiDiscreteMap
from monge.pairing import PairingPipeline
from monge.paths import PATHS

RESULTS = Path(__file__).resolve().parent / "results"


class Step:
    """One training step of a fresh MLP (hidden 256, depth 3)."""

    def __init__(self, d: int) -> None:
        self.model = build_model("mlp", {"hidden": 256, "depth": 3}, (d,))
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.path, self.objective = PATHS.build("linear"), regression_loss

    def __call__(self, pairs, t, g) -> None:
        ps = self.path.sample(pairs.x0, pairs.x1, t, generator=g)
        loss = self.objective(self.model(ps.x_t, ps.t), ps.target, pairs.weights)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


def coupling_for(n: int, d: int) -> SemiDiscreteOT:
    g = torch.Generator().manual_seed(n + d)
    y = torch.randn(n, d, generator=g) * 0.5 + torch.randn(16, d, generator=g)[torch.randint(16, (n,), generator=g)]
    c = SemiDiscreteOT()
    c.set_map(SemiDiscreteMap(y, -0.5 * (y - y.mean(0)).square().sum(1)))
    return c


def interleaved(n: int, d: int, b: int, rounds: int) -> dict[str, float]:
    """Median seconds of an independent step, a semidiscrete step and the search alone."""
    sd, ind = coupling_for(n, d), COUPLINGS.build("independent")
    step = Step(d)
    g, order = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    times: dict[str, list[float]] = {"independent": [], "semidiscrete_ot": [], "search": []}
    for r in range(rounds + 1):
        for k in torch.randperm(2, generator=order).tolist():
            x0, x1, t = torch.randn(b, d, generator=g), torch.randn(b, d, generator=g), torch.rand(b, generator=g)
            start = time.perf_counter()
            if k == 0:
                step(ind(x0, x1, generator=g), t, g)
            else:
                cells = sd.solve(x0, x1)
                mid = time.perf_counter()
                step(sd.pair_solved(x0, x1, cells, g), t, g)
            end = time.perf_counter()
            if r:
                times["independent" if k == 0 else "semidiscrete_ot"].append(end - start)
                if k == 1:
                    times["search"].append(mid - start)
    return {k: statistics.median(v) for k, v in times.items()}


def pipelined(n: int, d: int, b: int, workers: int, blocks: int, block_steps: int) -> tuple[float, float]:
    """Median over blocks of the mean step time: (independent, semidiscrete with ``workers`` threads)."""
    sd, ind = coupling_for(n, d), COUPLINGS.build("independent")
    step = Step(d)
    g = torch.Generator().manual_seed(2)

    def draw():
        return torch.randn(b, d, generator=g), torch.randn(b, d, generator=g), torch.rand(b, generator=g)

    base, piped = [], []
    for _ in range(blocks + 1):  # the first block warms up
        start = time.perf_counter()
        for _ in range(block_steps):
            x0, x1, t = draw()
            step(ind(x0, x1, generator=g), t, g)
        base.append((time.perf_counter() - start) / block_steps)
        with PairingPipeline(draw, sd.solve, g, workers) as pipe:
            for k in range(2 * workers + block_steps):
                if k == 2 * workers:
                    start = time.perf_counter()
                (x0, x1, t), cells = pipe.next()
                step(sd.pair_solved(x0, x1, cells, g), t, g)
        piped.append((time.perf_counter() - start) / block_steps)
    return statistics.median(base[1:]), statistics.median(piped[1:])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--dims", type=int, nargs="+", default=[2, 64])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--pairing-workers", type=int, nargs="*", default=[1])
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS / "semidiscrete_pairing.md")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    start = time.perf_counter()
    head = ["| N | d | independent s/step | semidiscrete_ot s/step | x | search s | search share |"]
    rows, piped_rows = [], []
    for n in a.targets:
        for d in a.dims:
            m = interleaved(n, d, a.batch, a.rounds)
            ratio = m["semidiscrete_ot"] / m["independent"]
            rows.append(f"| {n} | {d} | {m['independent']:.4f} | {m['semidiscrete_ot']:.4f} | {ratio:.2f} | "
                        f"{m['search']:.4f} | {m['search'] / m['semidiscrete_ot']:.0%} |")
            print(rows[-1], flush=True)
            for w in a.pairing_workers:
                bi, bp = pipelined(n, d, a.batch, w, blocks=5, block_steps=max(5, a.rounds // 3))
                piped_rows.append(f"| {n} | {d} | {w} | {bi:.4f} | {bp:.4f} | {bp / bi:.2f} |")
                print(piped_rows[-1], flush=True)
    cmd = "python bench/semidiscrete_pairing.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = [
        "# Global OT pairing (semidiscrete_ot): training-step cost against independent",
        "",
        f"Command: `{cmd}` ({(time.perf_counter() - start) / 60:.1f} min; torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads). Batch {a.batch}, "
        "MLP 256x3, AdamW; medians of interleaved steps; `search`: the cell search of the batch among all N "
        "targets alone.",
        "",
        *head, "|---|---|---|---|---|---|---|", *rows,
    ]
    if piped_rows:
        lines += ["", "With the searches in `W` pairing worker threads (mean step time, median over blocks):", "",
                  "| N | d | W | independent s/step | semidiscrete_ot s/step | x |", "|---|---|---|---|---|---|",
                  *piped_rows]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
