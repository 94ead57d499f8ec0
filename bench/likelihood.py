"""Likelihood benchmark: monge's ``log_likelihood`` against closed forms and against flow_matching.

Usage::

    pip install flow_matching        # benchmark peer only (CC-BY-NC): nothing of it is copied
    python bench/likelihood.py --quick    # about two minutes on 2 CPU cores
    python bench/likelihood.py            # longer training, more points

1. **Oracle.** A 2D, 3-component Gaussian mixture (unequal weights and stds) on the linear path:
   its exact marginal velocity (:meth:`monge.data.gmm.GaussianMixture.field`) integrated by
   :func:`monge.flow_likelihood.log_likelihood` against the mixture's closed-form log-density, by
   tolerance (dopri5) and by NFE (fixed-step rk4 / midpoint / euler); the same field and points
   through flow_matching's ``ODESolver.compute_likelihood`` (dopri5, exact divergence) at the
   same tolerances.
2. **Trained 2D flow.** One MLP (3 x 256) trained by :class:`monge.train.Trainer` on
   ``gaussian -> moons`` (linear path, independent coupling); the NLL of fresh target points
   from monge and from flow_matching on the *same network and points*: exact divergence with
   dopri5 (rtol = atol = 1e-5), Hutchinson with one Rademacher probe (dopri5), and the same
   fixed-step solve (midpoint, 64 NFE) where both make identical steps. Times are interleaved
   (monge, flow_matching, monge, ...) and the median of the repeats is reported.

Writes ``bench/results/likelihood.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

import monge
from monge.config import Config
from monge.data.gmm import GaussianMixture
from monge.data.sources import build_source
from monge.flow_likelihood import log_likelihood
from monge.paths import LinearSchedule
from monge.train import Trainer


def oracle() -> GaussianMixture:
    means = torch.tensor([[2.0, 0.0], [-1.0, 1.5], [0.0, -2.0]])
    return GaussianMixture(means, torch.tensor([0.3, 0.5, 0.4]), torch.tensor([0.5, 0.3, 0.2]))


def fm_solver(field: Callable[[Tensor, Tensor], Tensor]):
    """flow_matching's ODESolver on a monge field ``field(x, t)`` with ``t`` of shape ``(batch,)``."""
    from flow_matching.solver import ODESolver
    from flow_matching.utils import ModelWrapper

    class Wrapped(ModelWrapper):
        def __init__(self) -> None:
            super().__init__(torch.nn.Identity())

        def forward(self, x: Tensor, t: Tensor, **extras) -> Tensor:
            return field(x, torch.as_tensor(t, dtype=x.dtype).reshape(-1).expand(x.shape[0]))

    return ODESolver(velocity_model=Wrapped())


def fm_log_likelihood(field, x: Tensor, log_p0, *, method: str = "dopri5", tol: float = 1e-5,
                      step_size: float | None = None, exact: bool = True) -> tuple[Tensor, int]:
    calls = [0]

    def counted(y, t):
        calls[0] += 1
        return field(y, t)

    grid = torch.tensor([1.0, 0.0], dtype=x.dtype)
    _, lp = fm_solver(counted).compute_likelihood(x, log_p0, step_size=step_size, method=method, atol=tol,
                                                  rtol=tol, time_grid=grid, exact_divergence=exact)
    return lp.detach(), calls[0]


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def part_oracle(n: int, lines: list[str]) -> dict:
    gmm = oracle()
    field = gmm.field(LinearSchedule())
    x = gmm.sample(n, generator=torch.Generator().manual_seed(0))
    truth = gmm.log_prob(x.double())
    lines += ["## 1. Oracle: exact GMM field against the closed-form mixture density", "",
              f"{n} points of the mixture (float32), linear path, source N(0, I). Error = "
              "|log p_model(x) − log p_true(x)| in nats.", "",
              "| solver | tolerance / NFE | NFE | max error | mean error | seconds |", "|---|---|---:|---:|---:|---:|"]
    summary = {}
    for tol in (1e-3, 1e-4, 1e-5, 1e-6):
        out, sec = timed(lambda tol=tol: log_likelihood(field, x, rtol=tol, atol=tol))
        err = (out.log_prob.double() - truth).abs()
        summary[("monge", tol)] = float(err.max())
        lines.append(f"| monge dopri5 | tol {tol:g} | {out.nfe} | {float(err.max()):.2e} | {float(err.mean()):.2e} | "
                     f"{sec:.2f} |")
    for tol in (1e-4, 1e-5):
        try:
            (lp, nfe), sec = timed(lambda tol=tol: fm_log_likelihood(field, x, _std_normal, tol=tol))
        except ImportError:
            lines.append("| flow_matching dopri5 | not installed | | | | |")
            break
        err = (lp.double() - truth).abs()
        summary[("fm", tol)] = float(err.max())
        lines.append(f"| flow_matching dopri5 (exact div.) | tol {tol:g} | {nfe} | {float(err.max()):.2e} | "
                     f"{float(err.mean()):.2e} | {sec:.2f} |")
    for sampler in ("euler", "midpoint", "rk4"):
        for nfe in (16, 64, 256):
            out, sec = timed(lambda sampler=sampler, nfe=nfe: log_likelihood(field, x, sampler=sampler, nfe=nfe))
            err = (out.log_prob.double() - truth).abs()
            lines.append(f"| monge {sampler} | NFE {nfe} | {out.nfe} | {float(err.max()):.2e} | "
                         f"{float(err.mean()):.2e} | {sec:.2f} |")
    lines.append("")
    return summary


def _std_normal(z: Tensor) -> Tensor:
    return -0.5 * z.flatten(1).pow(2).sum(1) - 0.5 * z[0].numel() * math.log(2 * math.pi)


def train_model(target, steps: int, out: Path) -> torch.nn.Module:
    """EMA model of the independent coupling on ``gaussian -> target`` (MLP 3 x 256)."""
    name = target if isinstance(target, str) else target["name"]
    cfg = Config.from_dict({
        "name": f"nll-{name}", "output_dir": str(out), "data": {"source": "gaussian", "target": target},
        "coupling": "independent", "path": {"name": "linear"}, "model": {"name": "mlp", "hidden": 256, "depth": 3},
        "train": {"steps": steps, "batch_size": 256, "lr": 1e-3, "seed": 0, "checkpoint_every": 0,
                  "eval_samples": 200, "progress": False},
        "sample": {"nfe": [4], "adaptive": False},
    })
    trainer = Trainer(cfg)
    trainer.fit(overwrite="replace")
    return trainer.ema.model.eval()


def part_trained(steps: int, n: int, repeats: int, out_dir: Path, lines: list[str], target="moons",
                 heading: str = "2. Trained 2D flow", about: str = "gaussian → moons", points: str = "fresh moons "
                                                                                                     "points") -> dict:
    net = train_model(target, steps, out_dir)
    x = build_source(target).sample(n, generator=torch.Generator().manual_seed(1))
    shape = tuple(x.shape[1:])
    x = x.flatten(1)  # flow_matching's exact divergence takes (batch, dim): both solvers see flat points

    def model(y: Tensor, t: Tensor) -> Tensor:
        return net(y.reshape(-1, *shape), t).reshape(y.shape[0], -1)

    cases = [
        ("exact divergence, dopri5 1e-5",
         lambda: log_likelihood(model, x),
         lambda: fm_log_likelihood(model, x, _std_normal, exact=True)),
        ("Hutchinson (1 Rademacher probe), dopri5 1e-5",
         lambda: log_likelihood(model, x, divergence="hutchinson", generator=torch.Generator().manual_seed(2)),
         lambda: (torch.manual_seed(2), fm_log_likelihood(model, x, _std_normal, exact=False))[1]),
        ("exact divergence, midpoint 64 NFE (identical steps)",
         lambda: log_likelihood(model, x, sampler="midpoint", nfe=64),
         lambda: fm_log_likelihood(model, x, _std_normal, method="midpoint", step_size=1 / 32, exact=True)),
        ("Hutchinson (1 probe), midpoint 64 NFE (identical steps; different probes)",
         lambda: log_likelihood(model, x, sampler="midpoint", nfe=64, divergence="hutchinson",
                                generator=torch.Generator().manual_seed(2)),
         lambda: (torch.manual_seed(2), fm_log_likelihood(model, x, _std_normal, method="midpoint",
                                                          step_size=1 / 32, exact=False))[1]),
    ]
    lines += [f"## {heading}: monge against flow_matching on the same network and points", "",
              f"MLP 3 x 256 trained {steps} steps on {about} (linear path, independent coupling, EMA "
              f"weights); {n} {points}; source N(0, I). Mean NLL in nats ± its standard error over "
              "points; for Hutchinson also the mean per-point standard error of monge's 16-probe run. "
              f"Seconds: median of {repeats} interleaved repeats.", "",
              "| solve | monge NLL | flow_matching NLL | mean abs diff | monge NFE | fm NFE | monge s | fm s | "
              "fm / monge (time) | fm / monge (ms per NFE) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    summary = {}
    for name, ours, theirs in cases:
        t_ours, t_theirs = [], []
        for _ in range(repeats):
            r, s = timed(ours)
            t_ours.append(s)
            (lp, nfe), s = timed(theirs)
            t_theirs.append(s)
        mo, mf = statistics.median(t_ours), statistics.median(t_theirs)
        nll_o, nll_f = -r.log_prob.double(), -lp.double()
        se = float(nll_o.std() / math.sqrt(n))
        diff = float((nll_o - nll_f).abs().mean())
        summary[name] = (float(nll_o.mean()), float(nll_f.mean()), mo, mf)
        lines.append(f"| {name} | {float(nll_o.mean()):.4f} ± {se:.4f} | {float(nll_f.mean()):.4f} | {diff:.2e} | "
                     f"{r.nfe} | {nfe} | {mo:.2f} | {mf:.2f} | {mf / mo:.2f} | {(mf / nfe) / (mo / r.nfe):.2f} |")
    h = log_likelihood(model, x, divergence="hutchinson", probes=16, generator=torch.Generator().manual_seed(3))
    exact = summary[cases[0][0]][0]
    lines += ["", f"Hutchinson with 16 probes (monge): mean NLL {float(-h.log_prob.mean()):.4f}, mean per-point "
              f"standard error {float(h.std_error.mean()):.4f} (standard error of the mean over points "
              f"{float(h.std_error.pow(2).mean().sqrt() / math.sqrt(n)):.4f}); exact {exact:.4f}.", ""]
    return summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short training, fewer points and repeats")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "likelihood.md")
    ap.add_argument("--runs", type=Path, default=Path("runs/bench-likelihood"))
    args = ap.parse_args(argv)
    steps, n_oracle, n, repeats = (1000, 200, 300, 3) if args.quick else (3000, 500, 1000, 5)
    torch.manual_seed(0)
    cmd = "python bench/likelihood.py" + (" --quick" if args.quick else "")
    lines = ["# Likelihood: monge.flow_likelihood against closed forms and flow_matching", "",
             f"Command: `{cmd}`. monge {getattr(monge, '__version__', '?')}, torch {torch.__version__}, "
             f"{platform.machine()}, {torch.get_num_threads()} threads, CPU. Timings on a shared 2-core machine: "
             "compare ratios within a table, not absolute seconds.", ""]
    start = time.perf_counter()
    oracle_summary = part_oracle(n_oracle, lines)
    trained = part_trained(steps, n, repeats, args.runs, lines)
    part_trained(steps, n // 3, repeats, args.runs, lines, target={"name": "digits", "size": 8},
                 heading="3. Trained digits flow (64-D)", about="gaussian → 8x8 digits scaled to [-1, 1]",
                 points="training digits (the data set has no held-out split here)")
    lines += [f"Total {time.perf_counter() - start:.0f} s.", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"oracle max error at default tol: {oracle_summary.get(('monge', 1e-5))}", file=sys.stderr)
    del trained


if __name__ == "__main__":
    main()
