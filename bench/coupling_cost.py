"""Training-step cost of the light couplings against ``independent`` at d = 2, 64 and 256 (one thread),
and the noise marginal that ``knn_immiscible`` keeps, against N(0, I), by k and d.

**Step time.** One step = couple a batch (``x0 ~ N(0, I_d)``, ``x1`` from an 8-component Gaussian
mixture of unit scale), sample the linear path, MLP (hidden 512, depth 3) forward and backward,
AdamW step. Couplings are interleaved step by step (a new random order each round), so machine
load hits all alike; the table holds the median step time, the ratio of medians to
``independent`` and its 95% bootstrap interval (rounds resampled, paired). ``wcfm`` is timed
three ways: the default (marginal correction by kernel-domain scaling), ``sinkhorn_domain=log``
(the log-domain Sinkhorn correction, the code path before) and ``marginal_correction=false``
(plain Gibbs weights). For the corrected rows the mean Sinkhorn iterations and the largest L1
marginal error of the plan are shown beside the time.

**knn_immiscible's kept noise.** For data standardised per coordinate (Gaussian data at d = 2, 8
and 256, scikit-learn's breast-cancer table, 30-D, and digits, 64-D) the kept noise of
``knn_immiscible`` at several ``k``, with and without ``rescale``, is compared with N(0, I): its mean second moment
``E||z||^2 / d`` (1 for N(0, I)), the W2 distance of the Gaussian fit
:math:`\\|m\\|^2 + \\operatorname{tr}(\\Sigma + I - 2\\Sigma^{1/2})` beside the same statistic of a
fresh N(0, I) sample of the same size (the floor), and the pair-cost reduction it buys
(``1 - E||x1 - z'||^2 / E||x1 - z||^2``).

    python bench/coupling_cost.py            # writes bench/results/coupling_cost.md (~5 CPU-minutes)
    python bench/coupling_cost.py --quick    # under a minute, prints only
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import Tensor

from monge.couplings import COUPLINGS, WCFM, KNNImmiscible
from monge.data import GaussianMixture
from monge.models import build_model
from monge.objectives import VelocityObjective
from monge.paths import PATHS

#: (row label, registry name, parameters)
TIMED = [
    ("independent", "independent", {}),
    ("wcfm", "wcfm", {}),
    ("wcfm:sinkhorn_domain=log (before)", "wcfm", {"sinkhorn_domain": "log"}),
    ("wcfm:marginal_correction=false", "wcfm", {"marginal_correction": False}),
    ("knn_immiscible", "knn_immiscible", {}),
    ("knn_immiscible:rescale=false", "knn_immiscible", {"rescale": False}),
    ("exact_ot", "exact_ot", {}),
]
#: (k, rescale) columns of the kept-noise table; k = 1 is a fresh N(0, I) sample (the floor)
KNN_VARIANTS = ((1, False), (2, False), (4, False), (16, False), (4, True), (16, True))


def mixture(d: int) -> GaussianMixture:
    """8 components with N(0, I / 2) means and std 0.7 per coordinate: about unit scale in any d."""
    g = torch.Generator().manual_seed(d)
    return GaussianMixture(torch.randn(8, d, generator=g, dtype=torch.float64) * math.sqrt(0.5), 0.7)


class Step:
    """One training step of a fresh MLP (hidden 512, depth 3) in dimension ``d``."""

    def __init__(self, d: int) -> None:
        torch.manual_seed(d)
        self.model = build_model("mlp", {"hidden": 512, "depth": 3}, (d,))
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.path, self.objective = PATHS.build("linear"), VelocityObjective()

    def __call__(self, pairs, t: Tensor, g: torch.Generator) -> None:
        loss, _ = self.objective.loss(self.model, pairs, t, self.path, generator=g)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


def ratio_interval(
    times: list[float], base: list[float], g: torch.Generator, resamples: int = 2000
) -> tuple[float, float]:
    """95% percentile bootstrap interval of ``median(times) / median(base)``, rounds resampled (paired)."""
    a, b = torch.tensor(times, dtype=torch.float64), torch.tensor(base, dtype=torch.float64)
    idx = torch.randint(len(a), (resamples, len(a)), generator=g)
    ratios = a[idx].median(1).values / b[idx].median(1).values
    lo, hi = torch.quantile(ratios, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return lo, hi


def time_steps(d: int, batch: int, rounds: int) -> list[dict]:
    """Interleaved step times of every coupling in :data:`TIMED` at dimension ``d``."""
    data, step = mixture(d), Step(d)
    couplings = [(label, COUPLINGS.build(name, **params)) for label, name, params in TIMED]
    g, order_gen = torch.Generator().manual_seed(d), torch.Generator().manual_seed(1000 + d)
    times: dict[str, list[float]] = {label: [] for label, _ in couplings}
    iters: dict[str, list[float]] = {label: [] for label, _ in couplings}
    errors: dict[str, list[float]] = {label: [] for label, _ in couplings}
    for r in range(rounds + 1):  # round 0: warm-up, not kept
        for i in torch.randperm(len(couplings), generator=order_gen).tolist():
            label, c = couplings[i]
            x0 = torch.randn(batch, d, generator=g)
            x1 = data.sample(batch, generator=g).float()
            t = torch.rand(batch, generator=g)
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pairs = c(x0, x1, generator=g)
            step(pairs, t, g)
            if r:
                times[label].append(time.perf_counter() - start)
                if isinstance(c, WCFM) and c.marginal_correction:
                    iters[label].append(c.last_iterations)
                    errors[label].append(c.last_marginal_error)
    base = times["independent"]
    boot = torch.Generator().manual_seed(7)
    rows = []
    for label, _ in couplings:
        med = statistics.median(times[label])
        lo, hi = ratio_interval(times[label], base, boot)
        rows.append({"coupling": label, "s": med, "x": med / statistics.median(base), "lo": lo, "hi": hi,
                     "iters": statistics.mean(iters[label]) if iters[label] else None,
                     "err": max(errors[label]) if errors[label] else None})
    return rows


def gaussian_w2(z: Tensor) -> float:
    r"""W2 between :math:`\mathcal N(\hat m, \hat\Sigma)` of the sample ``z`` and :math:`\mathcal N(0, I)`."""
    z = z.double()
    m = z.mean(0)
    cov = torch.cov(z.T).reshape(z.shape[1], z.shape[1])
    ev = torch.linalg.eigvalsh(cov).clamp_min(0.0)
    return float(m.square().sum() + (ev + 1 - 2 * ev.sqrt()).sum()) ** 0.5


def knn_data(quick: bool) -> dict[str, Tensor]:
    """Standardised data sets by name (the scikit-learn ones ship with the package: nothing is downloaded)."""
    from sklearn.datasets import load_breast_cancer, load_digits

    def standardise(x) -> Tensor:
        x = torch.as_tensor(x, dtype=torch.float64)
        s = x.std(0)
        return ((x - x.mean(0)) / torch.where(s > 0, s, torch.ones_like(s))).float()

    g = torch.Generator().manual_seed(3)
    sets = {"gaussian 2-D": torch.randn(20_000, 2, generator=g), "gaussian 8-D": torch.randn(20_000, 8, generator=g),
            "breast cancer 30-D": standardise(load_breast_cancer().data),
            "digits 64-D": standardise(load_digits().data)}
    if not quick:
        sets["gaussian 256-D"] = torch.randn(20_000, 256, generator=g)
    return sets


def knn_marginal(data: Tensor, k: int, rescale: bool, n: int, batch: int, g: torch.Generator) -> dict[str, float]:
    """Kept-noise statistics of ``knn_immiscible(k, rescale)`` over ``n`` pairs drawn in batches of ``batch``."""
    kept, own, x1s = [], [], []
    coupling = KNNImmiscible(k, rescale=rescale)
    for _ in range(n // batch):
        x1 = data[torch.randint(len(data), (batch,), generator=g)]
        x0 = torch.randn(batch, data.shape[1], generator=g)
        kept.append(coupling(x0, x1, generator=g).x0)
        own.append(x0)
        x1s.append(x1)
    z, z_own, x1 = torch.cat(kept), torch.cat(own), torch.cat(x1s)
    d = data.shape[1]
    return {"second": float(z.square().sum(1).mean()) / d, "w2": gaussian_w2(z),
            "gain": 1 - float((x1 - z).square().sum(1).mean() / (x1 - z_own).square().sum(1).mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dims", type=int, nargs="+", default=[2, 64, 256])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=0, help="timed rounds per dimension (default 60, --quick 8)")
    ap.add_argument("--quick", action="store_true", help="few rounds, fewer kept-noise samples; prints only")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "coupling_cost.md")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rounds = args.rounds or (8 if args.quick else 60)
    started = time.perf_counter()
    lines = [
        "# Step cost of the light couplings; knn_immiscible's kept noise",
        "",
        f"Command: `python bench/coupling_cost.py{' --quick' if args.quick else ''}"
        f"{' --rounds ' + str(args.rounds) if args.rounds else ''}`; torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, 1 torch thread.",
        "",
        f"## Training-step time (batch {args.batch}, MLP 512x3, AdamW, {rounds} interleaved rounds)",
        "",
        "`x` = median step time over `independent`'s, with its 95% bootstrap interval; `iters` = mean "
        "Sinkhorn iterations of the correction, `L1 err` = largest marginal error of the corrected plan (tol 1e-4).",
        "",
    ]
    for d in args.dims:
        rows = time_steps(d, args.batch, rounds)
        lines += [
            f"### d = {d}",
            "",
            "| coupling | ms/step | x | 95% interval | iters | L1 err |",
            "|---|---|---|---|---|---|",
        ]
        for r in rows:
            extra = f"{r['iters']:.1f} | {r['err']:.1e}" if r["iters"] is not None else " | "
            lines.append(
                f"| {r['coupling']} | {1e3 * r['s']:.2f} | {r['x']:.3f} | [{r['lo']:.3f}, {r['hi']:.3f}] | {extra} |"
            )
        lines.append("")
        print("\n".join(lines[-len(rows) - 4 :]), flush=True)
    n, batch = (2048, 256) if args.quick else (8192, 256)
    lines += [
        f"## knn_immiscible: kept noise against N(0, I) ({n} pairs, batches of {batch}, data standardised)",
        "",
        "Each cell: `E|z|^2/d`, the mean second moment of the kept noise (1 for N(0, I)); `W2 fit`, the W2 of "
        "its Gaussian fit to N(0, I) (`floor`: the same for a fresh N(0, I) sample of this size, k = 1); `gain`, "
        "the pair-cost reduction 1 - E|x1 - z'|^2 / E|x1 - z|^2. `rescale`: the default since this run "
        "(kept batch scaled to the drawn noise's mean squared norm).",
        "",
        "| data | " + " | ".join(f"k={k}{' rescale' if r else ''}" for k, r in KNN_VARIANTS) + " |",
        "|---|" + "---|" * len(KNN_VARIANTS),
    ]
    for name, data in knn_data(args.quick).items():
        g = torch.Generator().manual_seed(11)
        cells = []
        for k, rescale in KNN_VARIANTS:
            s = knn_marginal(data, k, rescale, n, batch, g)
            cells.append(f"{s['second']:.3f}, {s['w2']:.3f}{' (floor)' if k == 1 else ''}, {s['gain']:.1%}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    lines += ["", f"Total {time.perf_counter() - started:.0f} s."]
    if not args.quick:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
        print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
