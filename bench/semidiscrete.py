"""Semi-discrete solver benchmark: (a) monge vs OTT-JAX 0.6.0, time to reach a chi-squared error,
both potentials scored by monge's independent estimator; (b) cell-search GFLOP/s vs torch.mm.

    python bench/semidiscrete.py [--quick] [--cases clustered:10000:2,...] [--budget SECONDS]
                                 [--out bench/results/semidiscrete.md]

Needs the optional peer: pip install -e '.[bench-ott]' (jax, ott-jax==0.6.0).

Method. Each solver runs for a wall-clock budget; snapshots of its (averaged) potential are taken
along the run with their elapsed time (monge: from a ``callback``, the time includes its own
periodic independent checks; OTT: its ``SemidiscreteSolver.step`` jitted in chunks of steps,
compile time excluded and reported apart, no error checks). After the runs, every snapshot is
scored by ``monge.ot.marginal_error`` at the target epsilon on the same fresh draws (common
random numbers), and the time to reach each chi-squared level is read off the two curves.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

# one thread for both libraries (set before jax is imported): on a shared machine, spinning
# OpenMP / Eigen workers of two-thread runs measured the other tenants more than the solvers
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import torch

from monge.ot.semidiscrete import cell_search, fit_semidiscrete, marginal_error


def clustered(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """25 clusters (std 0.1) on a grid in the first two coordinates (d = 2) or random centres (d > 2)."""
    g = torch.Generator().manual_seed(seed)
    if d == 2:
        t = torch.arange(-2.0, 3.0)
        c = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    else:
        c = 2 * torch.randn(25, d, generator=g) / math.sqrt(d) * math.sqrt(2)
    return c[torch.randint(0, 25, (n,), generator=g)] + 0.1 * torch.randn(n, d, generator=g)


def uniform(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


#: The clock of the curves: process CPU time (both solvers single-threaded), robust to other
#: tenants of a shared machine; wall-clock is reported next to it.
clock = time.process_time


def search_throughput(n: int, d: int, m: int, reps: int = 3) -> tuple[float, float, float]:
    """GFLOP/s (CPU time) of cell_search (2 m n d flops) and of torch.mm on the same x, y,
    interleaved in the same run (best of ``reps``): mm in 256-row slabs of the full width (the
    memory of the old search) and mm blocked exactly like the search (its rows x cols blocks into
    one reused buffer, the best case of a cache-blocked mm)."""
    from monge.ot._sd_kernels import _block_sizes

    g = torch.Generator().manual_seed(0)
    y, h, x = torch.randn(n, d, generator=g), torch.randn(n, generator=g), torch.randn(m, d, generator=g)
    flops = 2.0 * m * n * d
    rows, cols = _block_sizes(m, n, d, 2**24)
    buf = torch.empty(rows, cols)

    def mm_slab():
        for r0 in range(0, m, 256):
            torch.mm(x[r0:r0 + 256], y.T)

    def mm_blocked():
        for r0 in range(0, m, rows):
            xb = x[r0:r0 + rows]
            for c0 in range(0, n, cols):
                yc = y[c0:c0 + cols]
                torch.mm(xb, yc.T, out=buf[:xb.shape[0], :yc.shape[0]])

    fns = {"search": lambda: cell_search(x, y, h), "slab": mm_slab, "blocked": mm_blocked}
    best = {k: math.inf for k in fns}
    cell_search(x[:64], y, h)
    for _ in range(reps):
        for k, f in fns.items():
            t = clock()
            f()
            best[k] = min(best[k], clock() - t)
    return tuple(flops / best[k] / 1e9 for k in ("search", "slab", "blocked"))


class _Budget(Exception):
    pass


def monge_curve(y: torch.Tensor, eps: float, budget: float, n_snaps: int, **opts) -> tuple[list, object]:
    """(seconds, step, heights) snapshots of a monge fit stopped after ``budget`` CPU seconds
    (by its callback, so the fit's own end-of-fit report is not timed; its periodic checks are).
    Returns (snapshots, (steps, batch_size), wall seconds)."""
    snaps: list = []
    t0 = [0.0]
    box = {"next": 1.0, "bs": None}

    def cb(state, err):
        el = clock() - t0[0]
        if el >= box["next"] or el >= budget:
            snaps.append((el, state.step, state.average.clone()))
            box["next"] = el * (budget / max(el, 1e-3)) ** (1.0 / max(1, n_snaps - len(snaps)))
        if el >= budget:
            raise _Budget

    box["next"] = budget / 2 ** (n_snaps - 1) / 4
    t0[0] = clock()
    w0 = time.perf_counter()
    bs = opts.pop("batch_size", None)
    try:
        res = fit_semidiscrete(y, epsilon=eps, max_iter=10**9, callback=cb, batch_size=bs,
                               generator=torch.Generator().manual_seed(1), **opts)
        snaps.append((clock() - t0[0], res.n_iter, res.heights.clone()))
    except _Budget:
        pass
    from monge.ot.semidiscrete import _default_batch
    return snaps, (snaps[-1][1], bs or _default_batch(y.shape[0])), time.perf_counter() - w0


def ott_curve(y: torch.Tensor, eps: float, budget: float, n_snaps: int, batch: int, lr: float,
              chunk: int) -> tuple[list, float]:
    """(seconds, step, heights) snapshots of OTT's SemidiscreteSolver steps (Adam(lr), EMA 0.99,
    constant epsilon as its default scheduler), jitted in chunks of ``chunk`` steps."""
    import jax
    import jax.numpy as jnp
    import jax.random as jr
    import numpy as np
    import optax
    from ott.geometry.semidiscrete_pointcloud import SemidiscretePointCloud
    from ott.problems.linear.semidiscrete_linear_problem import SemidiscreteLinearProblem
    from ott.solvers.linear.semidiscrete import SemidiscreteSolver, SemidiscreteState

    n = y.shape[0]
    sampler = lambda rng, shape, dtype=jnp.float32: jax.random.normal(rng, shape, dtype=dtype)  # noqa: E731
    yj = jnp.asarray(y.numpy())
    prob = SemidiscreteLinearProblem(SemidiscretePointCloud(sampler, yj, epsilon=2 * eps))
    total = 10**6
    solver = SemidiscreteSolver(num_iterations=total, batch_size=batch, optimizer=optax.adam(lr),
                                error_eval_every=total, potential_ema=0.99)
    rng = jr.key(0)

    def init():
        g0 = jnp.zeros(n, dtype=jnp.float32)
        return SemidiscreteState(it=jnp.array(0), epsilon=jnp.nan, g=g0, g_ema=g0, opt_state=solver.optimizer.init(g0),
                                 losses=jnp.zeros((1,), jnp.float32), grad_norms=jnp.zeros((1,), jnp.float32),
                                 errors=jnp.zeros((1,), jnp.float32))

    @jax.jit
    def run_chunk(state):
        def body(i, st):
            st = solver.step(jr.fold_in(rng, st.it), st, prob)
            # keep the logs (sized for num_iterations in OTT's own loop) out of the timing
            return SemidiscreteState(it=st.it, epsilon=st.epsilon, g=st.g, g_ema=st.g_ema, opt_state=st.opt_state,
                                     losses=st.losses[:1], grad_norms=st.grad_norms[:1], errors=st.errors[:1])
        return jax.lax.fori_loop(0, chunk, body, state)

    t = time.perf_counter()
    run_chunk(init()).g_ema.block_until_ready()
    compile_s = time.perf_counter() - t
    state = init()
    snaps = []
    t0 = clock()
    w0 = time.perf_counter()
    nxt = budget / 2 ** (n_snaps - 1) / 4
    while True:
        state = run_chunk(state)
        state.g_ema.block_until_ready()
        el = clock() - t0
        if el >= nxt or el >= budget:
            g = torch.from_numpy(np.array(state.g_ema)).to(y.dtype)
            h = (g - y.square().sum(1)) / 2 + eps * math.log(1.0 / n)
            snaps.append((el, int(state.it), h - h.mean()))
            nxt = el * (budget / max(el, 1e-3)) ** (1.0 / max(1, n_snaps - len(snaps)))
        if el >= budget:
            break
    return snaps, compile_s, time.perf_counter() - w0


def score(snaps: list, y: torch.Tensor, eps: float, m: int) -> list:
    out = []
    for el, step, h in snaps:
        e = marginal_error(h, y, eps=eps, n_samples=m, generator=torch.Generator().manual_seed(5))
        out.append((el, step, e.chi2, e.chi2_std))
    return out


def time_to(curve: list, level: float) -> float | None:
    for el, _, chi2, _ in curve:
        if chi2 <= level:
            return el
    return None


def compare(name: str, y: torch.Tensor, eps: float, budget: float, lines: list[str], n_snaps: int,
            score_m: int, ott_lrs: tuple, ott_batch: int | None, dump: str | None = None, **monge_opts) -> None:
    n, d = y.shape
    snaps, res, wm = monge_curve(y, eps, budget, n_snaps, **monge_opts)
    cm = score(snaps, y, eps, score_m)
    curves = {f"monge (batch {res[1]})": cm}
    extra = [f"monge: wall {wm:.1f} s, CPU budget {budget:g} s (stopped by its callback; the fit's final report not "
             "timed)"]
    try:
        for lr in ott_lrs:
            bs = ott_batch or res[1]
            so, comp, wo = ott_curve(y, eps, budget, n_snaps, bs, lr, chunk=max(1, min(100, 2**22 // (bs * n) or 1)))
            curves[f"OTT adam({lr:g}) batch {bs}"] = score(so, y, eps, score_m)
            extra.append(f"OTT adam({lr:g}): jit compile {comp:.1f} s (excluded), wall {wo:.1f} s")
    except ImportError as exc:
        extra.append(f"OTT not installed ({exc})")
    head = f"### {name}, N = {n}, d = {d}, eps = {eps:g} (OTT eps {2 * eps:g}), CPU budget {budget:g} s each, " \
           f"scored on {score_m} fresh draws"
    lines += [head, "", "| solver | steps | CPU s | chi2 (+- std) at end | best chi2 |", "|---|---|---|---|---|"]
    for k, c in curves.items():
        el, st, chi2, sd = c[-1]
        lines.append(f"| {k} | {st} | {el:.1f} | {chi2:.4f} +- {sd:.4f} | {min(x[2] for x in c):.4f} |")
    ott_keys = [k for k in curves if k.startswith("OTT")]
    levels = [1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001]
    lines += ["", "CPU seconds to reach chi2 <= level (-: not within the budget); ratio = best OTT / monge:", "",
              "| chi2 level | rms | monge s | " + " | ".join(f"{k} s" for k in ott_keys) + " | ratio |",
              "|---|---|---|" + "---|" * len(ott_keys) + "---|"]
    for lv in levels:
        tm = time_to(cm, lv)
        to = [time_to(curves[k], lv) for k in ott_keys]
        best = min((t for t in to if t is not None), default=None)
        if tm is None and best is None:
            continue
        ratio = (f"{best / tm:.2f}" if tm is not None and best is not None else
                 (">budget/monge" if tm is not None else "<1 (OTT only)"))
        fmt = lambda t: "-" if t is None else f"{t:.1f}"  # noqa: E731
        lines.append(
            f"| {lv:g} | {math.sqrt(lv):.3f} | {fmt(tm)} | " + " | ".join(fmt(t) for t in to) + f" | {ratio} |"
        )
    # equal error at the level the slower-converging side reaches: the time each solver needs to
    # reach the best chi2 of the other (the levels above may all be out of one side's reach)
    best_ott = min((min(x[2] for x in curves[k]), k) for k in ott_keys) if ott_keys else None
    if best_ott is not None:
        lv, key = max(best_ott[0], min(x[2] for x in cm)), best_ott[1]
        tm, to = time_to(cm, lv), time_to(curves[key], lv)
        if tm is not None and to is not None:
            lines.append(f"| {lv:.4g} (the worse of the two bests) | {math.sqrt(max(lv, 0)):.3f} | {tm:.1f} | "
                         + " | ".join(f"{to:.1f}" if k == key else "" for k in ott_keys) + f" | {to / tm:.2f} |")
    lines += [""] + [f"- {e}" for e in extra] + [""]
    if dump is not None:
        import json
        with open(dump, "a") as fh:
            fh.write(json.dumps({"case": name, "n": n, "d": d, "eps": eps, "curves": curves}) + "\n")
    print("\n".join(lines[-(len(levels) + 16):]), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--cases", default=None, help="comma list of set:N:d (set = clustered|gaussian)")
    ap.add_argument("--budget", type=float, default=None, help="seconds per solver per case")
    ap.add_argument("--no-search", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tol", type=float, default=1e-9,
                    help="monge's tol (1e-9: never stops; its screens/checks then all use eval_samples)")
    ap.add_argument("--score-draws", type=float, default=None, help="scoring draws per target (default 20, 5 above "
                                                                    "N=10^4)")
    ap.add_argument("--snaps", type=int, default=None)
    ap.add_argument("--ott-lrs", default="0.01,0.03")
    ap.add_argument("--out", default="bench/results/semidiscrete.md")
    ap.add_argument("--dump", default=None, help="append every scored curve (seconds, step, chi2, std) as JSON lines")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lines = ["# Semi-discrete solver", "", f"Command: `python bench/{' '.join(['semidiscrete.py'] + sys.argv[1:])}` "
             f"(torch {torch.__version__}, {torch.get_num_threads()} thread(s) for torch and XLA, CPU time).", ""]
    if not args.no_search:
        n_s, m_s = (20_000, 2048) if args.quick else (100_000, 4096)
        s, slab, blk = search_throughput(n_s, 64, m_s)
        lines += ["## Cell search throughput", "", "GFLOP/s on CPU time, best of 3, interleaved in one run; "
                  "ratio = search / the faster torch.mm.", "",
                  "| N | d | queries | cell_search | torch.mm 256-row slabs | torch.mm blocked like the search | ratio "
                  "|",
                  "|---|---|---|---|---|---|---|",
                  f"| {n_s} | 64 | {m_s} | {s:.1f} | {slab:.1f} | {blk:.1f} | {s / max(slab, blk):.0%} |", ""]
        print(lines[-2], flush=True)
    lines += ["## monge vs OTT-JAX 0.6.0, time to equal chi-squared", "", __doc__.split("Method. ")[1].strip(), ""]
    if args.cases:
        cases = [(c.split(":")[0], int(c.split(":")[1]), int(c.split(":")[2])) for c in args.cases.split(",")]
    else:
        cases = [("clustered", 1000, 2), ("gaussian", 1000, 2)] if args.quick else [
            ("clustered", 10_000, 2), ("gaussian", 10_000, 2), ("clustered", 10_000, 64), ("gaussian", 10_000, 64)]
    lrs = tuple(float(v) for v in args.ott_lrs.split(","))
    for name, n, d in cases:
        y = (clustered if name == "clustered" else uniform)(n, d)
        budget = args.budget or (20.0 if args.quick else 120.0)
        m = int((args.score_draws or (20 if n <= 10_000 else 5)) * n)
        compare(name, y, 0.01 if d == 2 else 0.05, budget, lines, n_snaps=args.snaps or (12 if n <= 10_000 else 4),
                score_m=m, ott_lrs=lrs, ott_batch=None, dump=args.dump, tol=args.tol)
        open(args.out, "w").write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
