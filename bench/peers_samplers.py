"""monge's diffusion samplers vs diffusers' schedulers on the Gaussian-mixture oracle.

The model is the exact noise predictor :math:`\\mathbb E[\\varepsilon \\mid x_t]` of the
8-Gaussians mixture under the discrete DDPM schedule of diffusers (linear betas, T = 1000), so
both libraries sample the same function: diffusers' ``DDIMScheduler``,
``DPMSolverMultistepScheduler`` (2M, 3M) and ``UniPCMultistepScheduler`` (bh1, bh2) at their
default ``set_timesteps(n)`` grids, and monge's ``ddim`` / ``dpm_solver_pp`` / ``unipc`` on
:class:`monge.paths.DiscreteVPSchedule` at the same times, from the same noise. Reported per
sampler and NFE: the largest difference between the two libraries' samples, W2 to fresh data
(both), the path error (RMS distance to a many-step DPM-Solver++ 3M reference from the same noise),
the sampling time of each (solver overhead, measured with a free model), and what monge's optimized grid
(``monge.samplers.optimized``, fitted
on other noise) reaches at the same NFE, which diffusers has no counterpart for.

    python bench/peers_samplers.py            # writes bench/results/peers_samplers.md
    python bench/peers_samplers.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import ot
import torch

from monge.data import GaussianMixture
from monge.paths import DiscreteVPSchedule
from monge.samplers import optimized, sample

F64 = torch.float64
#: (label, diffusers class, its options, monge sampler, monge options, final sigma)
CASES = [
    ("DDIM", "DDIMScheduler", {"clip_sample": False}, "ddim", {}, "zero"),
    ("DPM-Solver++ 2M", "DPMSolverMultistepScheduler", {"solver_order": 2}, "dpm_solver_pp", {"order": 2}, "zero"),
    ("DPM-Solver++ 3M", "DPMSolverMultistepScheduler", {"solver_order": 3}, "dpm_solver_pp", {"order": 3}, "zero"),
    ("UniPC bh2", "UniPCMultistepScheduler", {"solver_order": 2, "solver_type": "bh2"}, "unipc",
     {"order": 2, "variant": "bh2"}, "zero"),
    # diffusers' bh1 gives NaN on a final step into sigma = 0: both stop at the smallest sigma
    ("UniPC bh1", "UniPCMultistepScheduler", {"solver_order": 2, "solver_type": "bh1",
                                             "final_sigmas_type": "sigma_min"}, "unipc",
     {"order": 2, "variant": "bh1"}, "sigma_min"),
]


def _flow_t(k: int, T: int = 1000) -> float:
    return 1.0 - (k + 1) / T


def _w2(a: torch.Tensor, b: torch.Tensor) -> float:
    m = ot.dist(a.double().numpy(), b.double().numpy())
    n = a.shape[0]
    return float(np.sqrt(ot.emd2(np.full(n, 1 / n), np.full(n, 1 / n), m, numItermax=10**7)))


def _timed(fn, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def run(nfes: list[int], n: int, repeats: int, fit_noise: int, fit_steps: int = 64,
        cases: list[tuple] | None = None) -> tuple[list[dict], dict]:
    import diffusers

    gmm = GaussianMixture.eight_gaussians()
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(n, 2, generator=g, dtype=F64)
    other = torch.randn(fit_noise, 2, generator=g, dtype=F64)
    data = gmm.sample(n, generator=torch.Generator().manual_seed(1)).double()
    data2 = gmm.sample(n, generator=torch.Generator().manual_seed(2)).double()
    rows = []
    info = {"floor": _w2(data, data2), "diffusers": diffusers.__version__}
    sched0 = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    ours = DiscreteVPSchedule(sched0.alphas_cumprod)
    model = lambda x, t: gmm.noise_mean(x, t, ours)  # noqa: E731
    cheap = lambda x, t: 0.5 * x  # noqa: E731  (timing: the solvers' own work, not the oracle's)
    ref_ts = torch.linspace(_flow_t(999), 1.0, 4 * fit_steps + 1, dtype=F64)
    reference = sample(model, noise, sampler="dpm_solver_pp", timesteps=ref_ts, schedule=ours, prediction="noise",
                       order=3).x
    info["reference_w2"] = _w2(reference, data)
    info["reference_steps"] = ref_ts.numel() - 1
    for label, cls, kw, name, opts, final in cases or CASES:
        for nfe in nfes:
            sched = getattr(diffusers, cls)(num_train_timesteps=1000, beta_schedule="linear", **kw)
            sched.set_timesteps(nfe)
            steps = [int(k) for k in sched.timesteps.tolist()]
            last = 1.0 if final == "zero" else _flow_t(0)
            ts = torch.tensor([_flow_t(k) for k in steps] + [last], dtype=F64)

            def run_diffusers(net, sched=sched, steps=steps, nfe=nfe):
                sched.set_timesteps(nfe)  # resets the multistep history
                s = noise.clone()
                for k in steps:
                    t = torch.full((n,), _flow_t(k), dtype=F64)
                    s = sched.step(net(s, t), k, s).prev_sample
                return s

            def run_monge(net, ts=ts, name=name, opts=opts):
                return sample(net, noise, sampler=name, timesteps=ts, schedule=ours, prediction="noise", **opts).x

            x_d, x_m = run_diffusers(model), run_monge(model)
            t_d, _ = _timed(lambda: run_diffusers(cheap), repeats)
            t_m, _ = _timed(lambda: run_monge(cheap), repeats)
            grid = optimized(model, ours, nfe, name, other, prediction="noise", t0=float(ts[0]),
                             t1=float(ts[-1]), sampler_options=opts, reference_steps=fit_steps,
                             refine_sweeps=2 if fit_steps >= 64 else 1)
            x_o = sample(model, noise, sampler=name, timesteps=grid, schedule=ours, prediction="noise", **opts).x
            rows.append({
                "sampler": label, "nfe": nfe,
                "max_diff": float((x_d - x_m).abs().max()),
                "w2_diffusers": _w2(x_d, data), "w2_monge": _w2(x_m, data), "w2_optimized": _w2(x_o, data),
                "path_diffusers": float((x_d - reference).square().sum(1).mean().sqrt()),
                "path_monge": float((x_m - reference).square().sum(1).mean().sqrt()),
                "path_optimized": float((x_o - reference).square().sum(1).mean().sqrt()),
                "time_diffusers": t_d, "time_monge": t_m,
            })
            print(rows[-1], flush=True)
    return rows, info


def report(rows: list[dict], info: dict, n: int, command: str, total: float) -> str:
    lines = [
        "# Diffusion samplers vs diffusers' schedulers on the Gaussian-mixture oracle",
        "",
        f"Command: `{command}` ({total:.0f} s).",
        "",
        f"Machine: {platform.machine()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"diffusers {info['diffusers']}, float64. Model: the exact noise predictor of the 8-Gaussians "
        "mixture under diffusers' linear-beta DDPM schedule (T = 1000), used by both libraries; monge "
        "samples it on `DiscreteVPSchedule(scheduler.alphas_cumprod)` at diffusers' own timesteps "
        f"(`set_timesteps(NFE)`, default spacing). {n} samples from one noise batch. `max |diff|`: "
        "largest coordinate difference between the two libraries' samples. W2: exact, to "
        f"{n} fresh data points (two-sample floor {info['floor']:.3f}; the reference "
        f"itself: {info['reference_w2']:.3f}). Path: RMS distance to the 1000-step DPM-Solver++ reference "
        "(DPM-Solver++ 3M, 256 uniform steps). Time: best of the repeats of the whole sampling "
        "loop with a model that costs nothing (`eps = x / 2`), i.e. each library's own work per call. `optimized`: "
        "monge's fitted grid for the same sampler and NFE "
        "(`monge.samplers.optimized`, fitted on other noise).",
        "",
        "| sampler | NFE | max \\|diff\\| | W2 diffusers | W2 monge | W2 monge optimized | path diffusers "
        "| path monge | path monge optimized | time diffusers | time monge | monge / diffusers time |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['sampler']} | {r['nfe']} | {r['max_diff']:.1e} | {r['w2_diffusers']:.3f} | "
            f"{r['w2_monge']:.3f} | {r['w2_optimized']:.3f} | {r['path_diffusers']:.3f} | "
            f"{r['path_monge']:.3f} | {r['path_optimized']:.3f} | {r['time_diffusers'] * 1e3:.1f} ms | "
            f"{r['time_monge'] * 1e3:.1f} ms | {r['time_monge'] / r['time_diffusers']:.2f} |"
        )
    worst = max(r["max_diff"] for r in rows)
    ratios = [r["time_monge"] / r["time_diffusers"] for r in rows]
    better = sum(r["path_optimized"] < r["path_monge"] for r in rows)
    lines += [
        "",
        f"- Same samples: the largest difference over all rows is {worst:.1e} (float64).",
        f"- Time, monge / diffusers: median {statistics.median(ratios):.2f} "
        f"(range {min(ratios):.2f}-{max(ratios):.2f}).",
        f"- monge's optimized grid lowers the path error in {better} of {len(rows)} settings.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nfes", type=int, nargs="+", default=[5, 10, 20])
    p.add_argument("--n", type=int, default=2000, help="samples")
    p.add_argument("--repeats", type=int, default=20, help="timing repeats (best is kept)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="smoke run: NFE 5, 200 samples, 1 repeat")
    p.add_argument("--out", type=Path, default=Path("bench/results/peers_samplers.md"))
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    nfes, n, repeats, fit_noise, fit_steps = (a.nfes, a.n, a.repeats, 256, 64) if not a.quick else ([5], 200, 3, 32, 16)
    t0 = time.perf_counter()
    rows, info = run(nfes, n, repeats, fit_noise, fit_steps)
    cmd = "python " + " ".join(["bench/peers_samplers.py", *(argv if argv is not None else sys.argv[1:])])
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(report(rows, info, n, cmd, time.perf_counter() - t0))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
