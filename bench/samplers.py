"""Few-step samplers: W2 to the data vs NFE, on the analytic oracle and on a trained 2D model.

For every sampler (ODE and diffusion) and step schedule (uniform-t, uniform log-SNR, Karras,
and the schedule fitted by ``monge.samplers.optimized`` for that sampler and NFE), sample the
8-Gaussians mixture on the linear (rectified-flow) path with

- ``oracle``: the mixture's exact velocity (:class:`monge.data.GaussianMixture`);
- ``trained``: an MLP velocity model trained here by :class:`monge.train.Trainer` (independent
  pairs, linear path, target = the same mixture, so the W2 figures of both parts compare),

and report

- W2: exact Wasserstein-2 (POT) between the samples and fresh data, next to the noise floor
  (W2 between two data samples of the same size);
- path error: RMS distance to the model's own high-accuracy flow map from the same noise
  (adaptive Dormand-Prince, tight tolerance): the sampler's discretisation error alone. For the
  oracle it upper-bounds the W2 between the sampler's law and the data.

The optimized grids are fitted on the model being sampled (the oracle, or the trained network)
from noises other than the evaluation noise. Writes ``bench/results/samplers.md``,
``samplers.png`` (oracle) and ``samplers_trained.png``.

Usage: ``python bench/samplers.py [--sections oracle trained] [--n 1000] [--steps 3000] [--quick]``.
Running one section keeps the other section's text already in ``samplers.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import ot
import torch
from torch import Tensor
from torchdiffeq import odeint

from monge.data import GaussianMixture
from monge.paths import SCHEDULES, Schedule
from monge.samplers import EvalTimeWarp, make_timesteps, optimized, optimized_decoupled, sample, steps_for_nfe

__all__ = ["SAMPLERS", "NFES", "GRIDS", "FITTED", "SECTIONS", "Settings", "QUICK", "Section", "Row", "w2",
           "oracle_section", "trained_section", "evaluate", "format_section", "goal_lines", "plot",
           "write_report", "run", "main"]

F64 = torch.float64
SAMPLERS = ("euler", "heun", "ddim", "heun_edm", "dpm_solver_pp_2m", "dpm_solver_pp_3m", "unipc_bh1", "unipc_bh2")
NFES = (3, 5, 8, 10, 20)
GRIDS = ("uniform", "uniform_log_snr", "karras", "optimized", "decoupled")
FITTED = ("optimized", "decoupled")  # grids fitted to the model; the others are fixed
SECTIONS = ("oracle", "trained")
RESULTS = Path(__file__).parent / "results"
FLOOR_DRAWS = 5


@dataclass(frozen=True)
class Settings:
    n: int = 1000  # samples per evaluation
    n_fit: int = 128  # noises the optimized grids are fitted on
    schedule: str = "linear"
    samplers: tuple[str, ...] = SAMPLERS
    nfes: tuple[int, ...] = NFES
    grids: tuple[str, ...] = GRIDS
    reference_steps: int = 24
    refine_sweeps: int = 2
    refine_tol: float = 0.01  # pattern-search resolution of the optimized grids
    eval_refine_tol: float = 0.005  # pattern-search resolution of the decoupled evaluation times
    decoupled_max_nfe: int = 10  # decoupled fits above this NFE take minutes each; the goal is at NFE 5
    ref_tol: float = 1e-9  # rtol = atol of the dopri5 reference flow map
    # trained model
    steps: int = 3000
    batch_size: int = 256
    lr: float = 1e-3
    hidden: int = 256
    depth: int = 3
    seed: int = 0
    quick: bool = False


#: A few-second configuration for the smoke test.
QUICK = Settings(
    n=128,
    n_fit=32,
    samplers=("euler", "dpm_solver_pp_2m"),
    nfes=(3, 5, 8),
    reference_steps=8,
    refine_sweeps=1,
    refine_tol=0.1,
    eval_refine_tol=0.1,
    ref_tol=1e-6,
    steps=40,
    batch_size=64,
    hidden=32,
    depth=2,
    quick=True,
)


@dataclass
class Section:
    key: str
    title: str
    model: Callable[[Tensor, Tensor], Tensor]
    schedule: Schedule
    x0: Tensor  # evaluation noise
    fit_noise: Tensor  # noise the optimized grids are fitted on
    data: Tensor  # fresh data for W2
    floor: tuple[float, float]  # W2 between two data samples, and its sd over FLOOR_DRAWS draws
    ref: Tensor  # high-accuracy flow map of ``model`` from ``x0``
    ref_w2: float
    about: str  # one paragraph describing the model
    network: torch.nn.Module | None = None
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    sampler: str
    grid: str
    nfe: int
    used_nfe: int
    w2: float
    path_err: float
    fit_s: float


def w2(a: Tensor, b: Tensor) -> float:
    """Exact W2 between two equal-weight point clouds (POT network simplex)."""
    return math.sqrt(ot.emd2([], [], ot.dist(a.double(), b.double()).numpy(), numItermax=10**7))


def _flow_map(model, x0: Tensor, tol: float = 1e-9) -> Tensor:
    with torch.no_grad():
        return odeint(lambda t, y: model(y, t.expand(y.shape[0])), x0, torch.tensor([0.0, 1.0], dtype=x0.dtype),
                      rtol=tol, atol=tol, method="dopri5")[-1]


def _common(s: Settings, gmm: GaussianMixture, sched: Schedule):
    x0 = gmm.marginal(0.0, sched).sample(s.n, torch.Generator().manual_seed(s.seed), dtype=F64)
    fit_noise = gmm.marginal(0.0, sched).sample(s.n_fit, torch.Generator().manual_seed(s.seed + 1), dtype=F64)
    data = gmm.sample(s.n, torch.Generator().manual_seed(s.seed + 2), dtype=F64)
    draws = [w2(gmm.sample(s.n, torch.Generator().manual_seed(s.seed + 3 + k), dtype=F64), data)
             for k in range(FLOOR_DRAWS)]
    spread = float(torch.tensor(draws, dtype=F64).std()) if len(draws) > 1 else 0.0
    return x0, fit_noise, data, (draws[0], spread)


def oracle_section(s: Settings) -> Section:
    """The 8-Gaussians mixture's exact velocity on the ``s.schedule`` path."""
    gmm = GaussianMixture.eight_gaussians()
    sched = SCHEDULES.build(s.schedule)
    model = lambda y, t: gmm.velocity(y, t, sched)  # noqa: E731
    x0, fit_noise, data, floor = _common(s, gmm, sched)
    ref = _flow_map(model, x0, s.ref_tol)
    about = (f"8-Gaussians mixture (radius 2.83, std 0.354), exact velocity on the `{s.schedule}` path. "
             "Path error: RMS distance to the exact flow map from the same noise.")
    return Section("oracle", "Gaussian-mixture oracle (exact velocity)", model, sched, x0, fit_noise, data, floor,
                   ref, w2(ref, data), about)


def trained_section(s: Settings, log: Callable[[str], None] = print) -> Section:
    """An MLP velocity model trained by :class:`monge.train.Trainer` on N(0, I) -> 8gaussians (independent
    pairs, linear path, sigma 0), sampled in float64 from its EMA weights."""
    from monge.config import Component, Config, DataConfig, TrainConfig
    from monge.train import Trainer

    if s.schedule != "linear":
        raise ValueError("the trained section trains on the linear path; use --schedule linear")
    gmm = GaussianMixture.eight_gaussians()
    sched = SCHEDULES.build("linear")
    with tempfile.TemporaryDirectory() as tmp:
        config = Config(
            name="samplers-8gaussians", output_dir=tmp,
            data=DataConfig(Component("gaussian"), Component("8gaussians")),
            coupling=Component("independent"), path=Component("linear", {"sigma": 0.0}),
            model=Component("mlp", {"hidden": s.hidden, "depth": s.depth}),
            train=TrainConfig(steps=s.steps, batch_size=s.batch_size, lr=s.lr, seed=s.seed, progress=False),
        )
        config.validate()
        trainer = Trainer(config)
        trainer.prepare()
        tic = time.perf_counter()
        losses = []
        while trainer.step < s.steps:
            losses.append(trainer.train_step())
        train_s = time.perf_counter() - tic
    net = trainer.ema.model.double().eval().requires_grad_(False)
    log(f"trained {s.steps} steps in {train_s:.0f} s (mean loss over the last 10%: "
        f"{sum(losses[-max(1, len(losses) // 10):]) / max(1, len(losses) // 10):.3f})")
    x0, fit_noise, data, floor = _common(s, gmm, sched)
    ref = _flow_map(net, x0, s.ref_tol)
    tail = losses[-max(1, len(losses) // 10):]
    info = {"train_s": train_s, "loss": sum(tail) / len(tail)}
    about = (f"MLP velocity model ({s.depth} hidden layers of {s.hidden}, SiLU, sinusoidal time embedding) trained "
             f"by `monge.train.Trainer`: N(0, I) -> 8gaussians (the oracle's mixture), independent pairs, linear "
             f"path (sigma 0), {s.steps} AdamW steps of batch {s.batch_size}, lr {s.lr:g}, seed {s.seed} "
             f"({train_s:.0f} s; final loss {info['loss']:.3f}); sampled from its EMA weights (0.999) in float64. "
             "Path error: RMS distance to the *network's own* flow map from the same noise (dopri5, "
             f"rtol = atol = {s.ref_tol:g}), i.e. the sampler's discretisation error; W2 also contains the model's "
             "error.")
    return Section("trained", "Trained 2D model (MLP, 8-Gaussians)", net, sched, x0, fit_noise, data, floor, ref,
                   w2(ref, data), about, network=net, info=info)


def evaluate(sec: Section, s: Settings, log: Callable[[str], None] = print) -> list[Row]:
    """Every sampler x schedule x NFE on ``sec``: W2 to fresh data and path error."""
    rows = []
    start = time.time()
    for sampler in s.samplers:
        for nfe in s.nfes:
            try:
                n_steps = steps_for_nfe(sampler, nfe)
            except ValueError:
                continue
            for grid in s.grids:
                fit_s, model = 0.0, sec.model
                kw = dict(reference_steps=max(s.reference_steps, n_steps), refine_sweeps=s.refine_sweeps,
                          refine_tol=s.refine_tol)
                if grid == "optimized":
                    tic = time.time()
                    ts = optimized(sec.model, sec.schedule, nfe, sampler, sec.fit_noise, **kw)
                    fit_s = time.time() - tic
                elif grid == "decoupled":
                    if nfe > s.decoupled_max_nfe:
                        continue
                    tic = time.time()
                    ts, ev = optimized_decoupled(sec.model, sec.schedule, nfe, sampler, sec.fit_noise,
                                                 eval_refine_tol=s.eval_refine_tol, **kw)
                    fit_s = time.time() - tic
                    model = EvalTimeWarp(sec.model, ts, ev)
                else:
                    ts = make_timesteps(grid, n_steps, sec.schedule)
                out = sample(model, sec.x0, sampler=sampler, timesteps=ts, schedule=sec.schedule)
                err = float((out.x - sec.ref).pow(2).sum(1).mean().sqrt())
                rows.append(Row(sampler, grid, nfe, out.nfe, w2(out.x, sec.data), err, fit_s))
            log(f"[{sec.key}] {sampler} nfe={nfe} done ({time.time() - start:.0f} s)")
    return rows


# ------------------------------------------------------------------------------------------------ report
def _by(rows: list[Row]) -> dict[tuple[str, str, int], Row]:
    return {(r.sampler, r.grid, r.nfe): r for r in rows}


def goal_lines(rows: list[Row], s: Settings, floor: tuple[float, float]) -> list[str]:
    """Goal check: each fitted schedule (``optimized``; ``decoupled``) at NFE 5 vs the best fixed schedule at
    NFE 8, per sampler for W2 and path error, and the overall reading (best fitted NFE-5 setting of any sampler
    vs best fixed NFE-8 setting of any sampler and schedule)."""
    by = _by(rows)
    fixed_grids = [g for g in s.grids if g not in FITTED]
    lines = ["| sampler | fitted schedule | NFE 5: W2 / path | best fixed NFE 8 by W2 (schedule) | W2 beaten? "
             "| best fixed NFE 8 by path (schedule) | path error beaten? |", "|---|---|---|---|---|---|---|"]
    for sm in s.samplers:
        fixed = [by[(sm, g, 8)] for g in fixed_grids if (sm, g, 8) in by]
        if not fixed:
            continue
        bw = min(fixed, key=lambda r: r.w2)
        bp = min(fixed, key=lambda r: r.path_err)
        for f in FITTED:
            if (sm, f, 5) not in by:
                continue
            o = by[(sm, f, 5)]
            lines.append(f"| {sm} | {f} | {o.w2:.3f} / {o.path_err:.3f} | {bw.w2:.3f} ({bw.grid}) | "
                         f"{'yes' if o.w2 < bw.w2 else 'no'} | {bp.path_err:.3f} ({bp.grid}) | "
                         f"{'yes' if o.path_err < bp.path_err else 'no'} |")
    fix8 = [r for r in rows if r.grid not in FITTED and r.nfe == 8]
    for f in FITTED:
        fit5 = [r for r in rows if r.grid == f and r.nfe == 5]
        if not (fit5 and fix8):
            continue
        ow, op = min(fit5, key=lambda r: r.w2), min(fit5, key=lambda r: r.path_err)
        fw, fp = min(fix8, key=lambda r: r.w2), min(fix8, key=lambda r: r.path_err)
        lines += [
            "",
            f"**Overall, `{f}`** (best `{f}` setting at NFE 5, any sampler, vs best fixed setting at NFE 8, any "
            f"sampler and schedule): W2 {ow.w2:.3f} ({ow.sampler}) vs {fw.w2:.3f} ({fw.sampler}, {fw.grid}) -> "
            f"**{'met' if ow.w2 < fw.w2 else 'not met'}**; path error {op.path_err:.3f} ({op.sampler}) vs "
            f"{fp.path_err:.3f} ({fp.sampler}, {fp.grid}) -> **{'met' if op.path_err < fp.path_err else 'not met'}**.",
        ]
    lines += ["", f"W2 sampling-noise floor (two data samples of {s.n}): {floor[0]:.3f} (sd {floor[1]:.3f} over "
              f"{FLOOR_DRAWS} draws); W2 differences within about one sd are sampling noise. The path error has no "
              "such floor (same noise for sampler and reference)."]
    return lines


def format_section(sec: Section, rows: list[Row], s: Settings, total_s: float, png: str) -> str:
    by = _by(rows)
    lines = [
        f"<!-- section:{sec.key} -->",
        f"## {sec.title}",
        "",
        f"{sec.about} {s.n} samples from fixed noise. W2: exact Wasserstein-2 to {s.n} fresh data points "
        f"(noise floor, two data samples: **{sec.floor[0]:.4f}** ± {sec.floor[1]:.4f}; the high-accuracy flow map "
        "itself: "
        f"{sec.ref_w2:.4f}). `optimized`: grid fitted on this model by `monge.samplers.optimized` "
        f"(BOSS DP over {s.reference_steps}+{s.reference_steps} candidate times, {s.refine_sweeps} coarse "
        f"refinement sweeps, pattern search to {s.refine_tol:g} of the neighbours' gap) on {s.n_fit} other noises; "
        "`decoupled`: grid and network evaluation times fitted together by `monge.samplers.optimized_decoupled` "
        f"(LD3's decoupled timesteps: evaluation times searched to {s.eval_refine_tol:g} of the widest neighbouring "
        "step from the optimized and the uniform grid, the better kept, then joint sweeps of grid and evaluation "
        f"times; same noises; NFE <= {s.decoupled_max_nfe}), sampled through `EvalTimeWarp`. "
        "NFE is the count of model evaluations made (in brackets where "
        f"the sampler used fewer than the budget). Section run {total_s:.0f} s on 1 CPU thread.",
        "",
        f"### {sec.key}: W2 to data / path error (lower is better)",
        "",
    ]
    lines += ["| sampler | schedule | " + " | ".join(f"NFE {n}" for n in s.nfes) + " |",
              "|" + "---|" * (2 + len(s.nfes))]
    for sm in s.samplers:
        for g in s.grids:
            cells = []
            for n in s.nfes:
                r = by.get((sm, g, n))
                if r is None:
                    cells.append("–")
                    continue
                mark = "" if r.used_nfe == n else f" ({r.used_nfe})"
                cells.append(f"{r.w2:.3f} / {r.path_err:.3f}{mark}")
            lines.append(f"| {sm} | {g} | " + " | ".join(cells) + " |")
    lines += ["", f"![W2 vs NFE, {sec.key}]({png})", "",
              f"### {sec.key}: goal check, fitted schedules at NFE 5 vs the best fixed schedule at NFE 8", ""]
    lines += goal_lines(rows, s, sec.floor)
    for f in FITTED:
        fit_times = sorted(r.fit_s for r in rows if r.grid == f)
        if fit_times:
            lines += ["", f"Fitting one `{f}` schedule took {fit_times[0]:.1f}-{fit_times[-1]:.1f} s "
                          f"(median {fit_times[len(fit_times) // 2]:.1f} s)."]
    lines.append(f"<!-- end:{sec.key} -->")
    return "\n".join(lines)


def plot(sec: Section, rows: list[Row], s: Settings, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = _by(rows)
    cols = min(4, len(s.samplers))
    nrows = math.ceil(len(s.samplers) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3.5 * nrows), sharey=True, squeeze=False)
    for ax in axes.flat[len(s.samplers):]:
        ax.set_visible(False)
    for ax, sm in zip(axes.flat, s.samplers, strict=False):
        for g in s.grids:
            pts = [(n, by[(sm, g, n)].w2) for n in s.nfes if (sm, g, n) in by]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=g)
        ax.axhline(sec.floor[0], color="gray", ls="--", lw=1, label="noise floor")
        ax.set_title(sm)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(list(s.nfes), [str(n) for n in s.nfes])
        ax.set_xlabel("NFE")
    for r in range(nrows):
        axes[r, 0].set_ylabel("W2 to data")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"Samplers: {sec.title} ({s.schedule} path)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


_BLOCK = re.compile(r"<!-- section:(\w+) -->.*?<!-- end:\1 -->", re.S)


def write_report(parts: dict[str, str], out: Path, command: str) -> Path:
    """Write ``samplers.md`` with the sections in ``parts``; sections not run now keep their text from the
    existing file."""
    path = out / "samplers.md"
    old = {m.group(1): m.group(0) for m in _BLOCK.finditer(path.read_text())} if path.is_file() else {}
    blocks = [parts.get(k, old.get(k)) for k in SECTIONS]
    head = [
        "# Few-step samplers on the Gaussian-mixture oracle and on a trained 2D model",
        "",
        "Issue goal: the optimized schedule at NFE 5 beats the best fixed schedule at NFE 8. Each part below "
        "reports W2 to data and the path error for every sampler, schedule and NFE, then the goal check for "
        f"both metrics. Command: `{command}`.",
        "",
    ]
    path.write_text("\n".join(head) + "\n\n".join(b for b in blocks if b) + "\n")
    return path


def run(sections: list[str], s: Settings, out: Path = RESULTS, log: Callable[[str], None] = print,
        command: str = "python bench/samplers.py") -> dict[str, tuple[Section, list[Row]]]:
    """Run the named sections, write the report and plots into ``out``; returns ``{key: (section, rows)}``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results, parts = {}, {}
    for key in sections:
        if key not in SECTIONS:
            raise ValueError(f"unknown section {key!r}; valid: {', '.join(SECTIONS)}")
        tic = time.time()
        sec = oracle_section(s) if key == "oracle" else trained_section(s, log)
        rows = evaluate(sec, s, log)
        png = "samplers.png" if key == "oracle" else "samplers_trained.png"
        plot(sec, rows, s, out / png)
        parts[key] = format_section(sec, rows, s, time.time() - tic, png)
        results[key] = (sec, rows)
    write_report(parts, out, command)
    return results


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    ap.add_argument("--n", type=int, default=Settings.n, help="samples per evaluation")
    ap.add_argument("--steps", type=int, default=Settings.steps, help="training steps of the trained model")
    ap.add_argument("--schedule", default=Settings.schedule)
    ap.add_argument("--quick", action="store_true", help="tiny run (smoke test)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    base = QUICK if args.quick else Settings()
    s = dataclasses.replace(base, schedule=args.schedule,
                            n=args.n if args.n != Settings.n or not args.quick else base.n,
                            steps=args.steps if args.steps != Settings.steps or not args.quick else base.steps)
    argv = sys.argv[1:] if argv is None else argv
    cmd = " ".join(["python bench/samplers.py", *argv])
    run(args.sections, s, Path(args.out), command=cmd)
    print((Path(args.out) / "samplers.md").read_text())


if __name__ == "__main__":
    main()
