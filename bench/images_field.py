r"""Where a coupling's image model loses at high NFE: its samples, and its fit to its coupling's field.

For the trained velocity cells of a ``bench/images.py`` run folder (pass the settings it was run
with; nothing is trained here):

1. **Samples** from the seed's evaluation noise, Euler at ``--sample-nfes`` and dopri5 at rtol = atol =
   1e-4 and 1e-5: classifier Fréchet to the held-out split, high-frequency energy
   :math:`\tfrac12\,\overline{(\Delta_h x)^2 + (\Delta_w x)^2}` (mean squared difference of
   neighbouring pixels) and the share of each class (the classifier's argmax).
2. **Fit per time**: :func:`monge.metrics.field_error` of the EMA network against the exact field
   :math:`v^*(x, t) = (\mathbb E[y \mid x_t = x] - x)/(1 - t)` of its own coupling on the training
   set (independent pairing, or the cell's semi-discrete map), at the times :data:`TIMES`, on ``--points``
   points :math:`x_t` drawn from the coupling and on the network's own Euler trajectory (``--traj-nfe``
   steps) from the evaluation noise. Errors are RMS per pixel of the clean image each field implies,
   over the points the coupling's paths reach (hard cells leave gaps; the share reached is shown).
   The exact field memorises the training set, so only the comparison across couplings at one
   time means something.

    python bench/images_field.py --datasets textures --methods independent sd_entropic --seeds 0 \
        --pixel-steps 3000 --segments 6 --out-dir RUNS --out bench/results/images_field.md

Pixel space (``--spaces`` is ignored), the noise-free linear path, velocity cells only; ``exact_ot``
cells get samples but no field error (minibatch pairs have no exact field on the whole set).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import images as B  # noqa: E402  (the image bench: settings, data, cells)

from monge.couplings.maps import load_run_map  # noqa: E402
from monge.metrics import field_error  # noqa: E402
from monge.metrics.frechet import classifier_frechet_distance  # noqa: E402
from monge.samplers import sample  # noqa: E402

TIMES = (0.02, 0.1, 0.25, 0.5, 0.75, 0.9, 0.97)
#: the cells whose coupling has an exact field on the training set (minibatch OT has none)
FIELDS = ("independent", "sd_hard", "sd_entropic")


def hf_energy(x: torch.Tensor) -> float:
    """Mean squared difference of vertically and horizontally neighbouring pixels, averaged."""
    return float(((x[..., 1:, :] - x[..., :-1, :]).square().mean() + (x[..., 1:] - x[..., :-1]).square().mean()) / 2)


def sample_row(ctx: B.DataContext, name: str, x: torch.Tensor) -> str:
    probs = ctx.classifier(x).softmax(-1)
    share = torch.bincount(probs.argmax(-1), minlength=probs.shape[1]).float() / len(x)
    return (
        f"| {name} | {classifier_frechet_distance(x, ctx.test.data, ctx.classifier):.2f} | {hf_energy(x):.4f} | "
        + " / ".join(f"{float(v):.2f}" for v in share)
        + " |"
    )


def load_cell(ctx: B.DataContext, method: str, seed: int, s: B.Settings, out: Path):
    trainer, _ = B.cell_trainer(ctx, "pixel", method, seed, s, out)
    trainer.load()
    sd_map = load_run_map(trainer.run_dir) if method in ("sd_hard", "sd_entropic") else None
    return trainer.ema.model.eval(), sd_map


def coupled_points(target: torch.Tensor, sd_map, n: int, t: float, seed: int) -> torch.Tensor:
    """``n`` points ``x_t = (1 - t) x0 + t y`` of pairs drawn from the coupling (fixed per ``t``)."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn((n, *target.shape[1:]), generator=g)
    if sd_map is None:
        y = target[torch.randint(0, len(target), (n,), generator=g)]
    else:
        y = sd_map.sample_cells(x0, generator=g)[1]
    return (1 - t) * x0 + t * y


def trajectory(net, noise: torch.Tensor, nfe: int, times: tuple[float, ...]) -> dict[float, torch.Tensor]:
    """The network's Euler path (``nfe`` uniform steps) from ``noise``, at each of ``times``: the path is
    piecewise linear, so its point at ``t`` interpolates the two states around it."""
    with torch.no_grad():
        states, grid = sample(net, noise, sampler="euler", nfe=nfe, return_trajectory=True).trajectory_and_times()
    out = {}
    for t in times:
        k = min(int(torch.searchsorted(grid, torch.tensor(t, dtype=grid.dtype), right=True)) - 1, nfe - 1)
        w = (t - float(grid[k])) / float(grid[k + 1] - grid[k])
        out[t] = states[k] + w * (states[k + 1] - states[k])
    return out


@dataclass(frozen=True)
class Options:
    points: int = 500  # points per time of the field error
    traj_nfe: int = 160  # Euler steps of the network's own trajectory
    sample_nfes: tuple[int, ...] = (10, 20, 40, 80, 160)


def cell_rows(
    ctx: B.DataContext, method: str, seed: int, s: B.Settings, out: Path, noise: torch.Tensor, a: Options
) -> tuple[list[str], list[str]]:
    """The sample rows and the field-error rows of one cell."""
    net, sd_map = load_cell(ctx, method, seed, s, out)
    samples = []
    with torch.no_grad():
        for nfe in a.sample_nfes:
            samples.append(
                sample_row(ctx, f"{method}, Euler {nfe}", sample(net, noise, sampler="euler", nfe=nfe).x.clamp(-1, 1))
            )
        for tol in (1e-4, 1e-5):
            res = sample(net, noise, sampler="dopri5", atol=tol, rtol=tol)
            samples.append(sample_row(ctx, f"{method}, dopri5 {tol:g} ({res.nfe} NFE)", res.x.clamp(-1, 1)))
    if method not in FIELDS:  # minibatch OT: no exact field of the finite set to compare with
        return samples, [f"| {method} | " + " | ".join("–" for _ in TIMES) + " |"]
    target, own = ctx.train.data, trajectory(net, noise[: a.points], a.traj_nfe, TIMES)
    fits = []
    for where in ("coupling", "own trajectory"):
        cells = []
        for t in TIMES:
            x = coupled_points(target, sd_map, a.points, t, seed) if where == "coupling" else own[t]
            fit = field_error(net, x, t, target, sd_map)
            gaps = "" if fit.reached == 1 else f", {100 * fit.reached:.0f}% reached"
            cells.append(f"{fit.error:.3f} ({fit.scale:.3f}{gaps})")
        fits.append(f"| {method}, {where} | " + " | ".join(cells) + " |")
    return samples, fits


def run(s: B.Settings, out_dir: Path, o: Options = Options(), log=print) -> str:
    """The report (markdown body) of the cells of ``out_dir`` trained with settings ``s``."""
    path = B.path_config(s.path)
    if path["name"] != "linear" or path.get("sigma", 0.0) != 0.0:
        raise SystemExit(f"images_field.py: the exact field is the noise-free linear path's; got --path {s.path}")
    if "flow_map" in s.methods:
        raise SystemExit("images_field.py: velocity cells only; drop flow_map from --methods")
    lines = []
    for name in s.datasets:
        ctx = B.load_data(name, s, out_dir / "cache")
        for seed in s.seeds:
            noise = B.eval_noise(tuple(ctx.train.data.shape[1:]), s.n_eval, seed)
            samples = ["| cell, sampler | Fréchet | HF energy | class shares |", "|---|---:|---:|---|",
                       sample_row(ctx, "held-out images", ctx.test.data)]
            fits = ["| cell | " + " | ".join(f"t = {t:g}" for t in TIMES) + " |", "|---|" + "---:|" * len(TIMES)]
            for method in s.methods:
                samples_part, fits_part = cell_rows(ctx, method, seed, s, out_dir, noise, o)
                samples += samples_part
                fits += fits_part
                log(f"{name} seed {seed} {method}: done")
            lines += [f"## {name}, seed {seed}", "", "**Samples**", "", *samples, "",
                      "**Field error per time**: RMS per pixel of the implied clean image, against the exact field "
                      "of the cell's own coupling (in brackets: the exact field's own size, (1 - t)|v*|)", "",
                      *fits, ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    p = B.parser()
    p.description = __doc__.split("\n\n")[0]
    p.add_argument("--points", type=int, default=Options.points, help="points per time of the field error")
    p.add_argument("--traj-nfe", type=int, default=Options.traj_nfe, help="Euler steps of the network's own trajectory")
    p.add_argument("--sample-nfes", type=int, nargs="+", default=list(Options.sample_nfes))
    a = p.parse_args(argv)
    s = B.settings_from(a)
    start = time.process_time()
    body = run(s, a.out_dir or Path("runs") / "bench-images", Options(a.points, a.traj_nfe, tuple(a.sample_nfes)))
    command = "python " + " ".join(["bench/images_field.py", *(sys.argv[1:] if argv is None else argv)])
    text = (f"# Samples and field fit of image cells (`bench/images_field.py`)\n\nCommand: `{command}` "
            f"({time.process_time() - start:.0f} CPU s)\n\n{body}")
    out = a.out or B.RESULTS / "images_field.md"
    out.write_text(text)
    print(f"wrote {out}")
    return text


if __name__ == "__main__":
    main()
