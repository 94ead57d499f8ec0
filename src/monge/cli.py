"""Command line: ``monge train | sample | reflow | eval | demo``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

if TYPE_CHECKING:  # pragma: no cover
    from .samplers.expressway import Expressway

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="OT-aware flow matching: train, sample and evaluate few-step generative models.",
)

_USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError)


def _fail(err: BaseException, code: int = 2) -> None:
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(code)


def _parse_nfe(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--nfe must be comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise ValueError(f"--nfe values must be integers >= 1, got {text!r}")
    return values


@app.command()
def train(
    config: Path = typer.Argument(..., help="YAML recipe, e.g. configs/8gaussians-moons-otcfm.yaml"),
    overrides: Optional[List[str]] = typer.Argument(None, help="key.sub=value overrides"),
    resume: bool = typer.Option(False, "--resume", help="continue from the run's checkpoint"),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="start an existing run again; the old one is moved to RUN.bak-<time>"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train a model from a recipe; writes runs/NAME/{checkpoint.safetensors, log.csv, eval.md}.

    An existing run is refused unless --resume (continue it) or --overwrite (start again, keeping a
    backup). Ctrl-C stops at the next step boundary and saves a checkpoint there.

    Runs data-parallel unchanged under ``torchrun --nproc_per_node=N -m monge train ...``.
    """
    from . import distributed
    from .config import load_config
    from .train import Trainer, TrainingError

    try:
        cfg = load_config(config, list(overrides or []))
        cfg.train.progress = cfg.train.progress and progress
        if resume and overwrite:
            raise ValueError("--resume and --overwrite exclude each other")
        result = Trainer(cfg).fit(resume=resume, overwrite=overwrite)
    except TrainingError as err:
        _fail(err, 1)
    except _USER_ERRORS as err:
        _fail(err)
    except KeyboardInterrupt:
        raise typer.Exit(130)
    finally:
        main = distributed.is_main()
        distributed.teardown()
    if not main:
        return
    typer.echo(f"trained {result.trained} steps (now at step {result.step} of {cfg.train.steps}) in "
               f"{result.seconds:.1f} s, final loss {result.loss:.4f}")
    typer.echo(f"checkpoint: {result.run_dir / 'checkpoint.safetensors'}")
    typer.echo((result.run_dir / "eval.md").read_text())


@app.command("sample")
def sample_cmd(
    checkpoint: Path = typer.Argument(..., help="checkpoint file or run directory"),
    nfe: int = typer.Option(8, help="function evaluations (ignored by dopri5)"),
    sampler: str = typer.Option(
        "euler", help="ODE: euler | midpoint | heun | rk4 | dopri5; few-step: ddim | dpm_solver_pp | "
        "dpm_solver_pp_3m | unipc | unipc_bh2 | heun_edm | euler_maruyama; flow maps: mean_flow | shortcut "
        "(runs trained with those objectives)"),
    timesteps: Optional[str] = typer.Option(
        None, "--timesteps", "--schedule", help="step grid: uniform | uniform_log_snr | karras | optimized (fitted "
        "to the model once and cached in the run directory) | optimized_decoupled (optimized grid plus fitted "
        "network evaluation times); --schedule is its old name"),
    expressway: Optional[float] = typer.Option(
        None, help="semidiscrete_ot runs: start at this time from the noised target of each noise's OT cell"),
    n: int = typer.Option(1000, "-n", help="number of samples"),
    seed: int = typer.Option(0),
    output: Path = typer.Option(Path("samples.npy"), "-o", "--output", help=".npy file to write"),
    ema: bool = typer.Option(True, "--ema/--no-ema", help="use the EMA weights"),
    grid: Optional[Path] = typer.Option(None, "--grid", help="also save image samples as a PNG grid"),
    label: Optional[str] = typer.Option(
        None, "--class", help="class-conditional models: the class of every sample, or 'all' (classes in turn)"),
    guidance: float = typer.Option(1.0, help="classifier-free guidance weight (with --class; 1: none)"),
) -> None:
    """Draw samples from a trained model and save them as a .npy array (and a PNG grid for images)."""
    import numpy as np

    from .checkpoint import run_dir_of
    from .generate import generate
    from .train import load_model

    try:
        if n < 1:
            raise ValueError(f"-n must be >= 1, got {n}")
        if nfe < 1:
            raise ValueError(f"--nfe must be >= 1, got {nfe}")
        if grid is not None and grid.suffix.lower() != ".png":
            raise ValueError(f"--grid needs a .png path, got {grid}")
        model, cfg = load_model(checkpoint, ema=ema)
        out = generate(model, cfg, n, sampler=sampler, nfe=nfe, timesteps=timesteps, expressway=expressway,
                       run_dir=run_dir_of(checkpoint), seed=seed, label=label, guidance=guidance)
        if grid is not None and out.x.dim() != 4:
            raise ValueError(f"--grid needs image data (N, C, H, W); samples have shape {tuple(out.x.shape[1:])}")
    except _USER_ERRORS as err:
        _fail(err)
    output.parent.mkdir(parents=True, exist_ok=True)
    np.save(output, out.x.cpu().numpy())
    how = sampler if timesteps is None else f"{sampler}, {timesteps} steps"
    if expressway is not None:
        how += f", expressway from t={expressway}"
    typer.echo(f"wrote {n} samples ({how}, {out.nfe} NFE) to {output}")
    if grid is not None:
        from .imageio import save_image_grid

        save_image_grid(out.x[:64].clamp(-1, 1).cpu(), grid, nrow=8, scale=max(1, 64 // out.x.shape[-1]))
        typer.echo(f"wrote a grid of {min(n, 64)} images to {grid}")


@app.command("reflow")
def reflow_cmd(
    checkpoint: Path = typer.Argument(..., help="checkpoint file or run directory of a trained flow"),
    n_pairs: int = typer.Option(10_000, "--n-pairs", help="(noise, sample) pairs to generate"),
    steps: Optional[int] = typer.Option(None, help="training steps of the new run (default: the original's)"),
    out: Optional[Path] = typer.Option(None, "--out", help="new run directory (default: RUN-reflow)"),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="replace an existing run at --out; the old one is moved to OUT.bak-<time>"),
    distill: bool = typer.Option(False, "--distill", help="also distill the reflowed model to one step"),
    sampler: str = typer.Option("dopri5", help="sampler that generates the pairs"),
    nfe: int = typer.Option(128, help="its NFE (fixed-step samplers)"),
    seed: int = typer.Option(0),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Rectified-flow reflow: pair noise with the model's own samples and train a straighter flow on them."""
    from .checkpoint import CheckpointError
    from .reflow import reflow

    try:
        run = reflow(checkpoint, n_pairs=n_pairs, steps=steps, out_dir=out, distill=distill, sampler=sampler,
                     nfe=nfe, seed=seed, progress=progress, overwrite=overwrite)
    except (*_USER_ERRORS, CheckpointError) as err:
        _fail(err)
    typer.echo(f"reflowed run: {run}")
    if (run / "eval.md").is_file():
        typer.echo((run / "eval.md").read_text())
    if distill:
        typer.echo(f"one-step distilled run: {run / 'distill'} (sample it with --sampler euler --nfe 1)")


def _expressway_of(checkpoint: Path, cfg) -> "Expressway | None":
    """The run's expressway when it holds a semi-discrete map (a ``semidiscrete_ot`` run, or any
    run sampled once with ``--expressway``)."""
    from .checkpoint import run_dir_of
    from .couplings.semidiscrete import load_run_map
    from .generate import expressway_of

    sd_map = load_run_map(run_dir_of(checkpoint))
    return None if sd_map is None else expressway_of(cfg, sd_map)


@app.command("fit-ot")
def fit_ot_cmd(
    run_or_recipe: Path = typer.Argument(..., help="run directory, or YAML recipe (fits into its run directory)"),
    overrides: Optional[List[str]] = typer.Argument(None, help="key.sub=value overrides of a recipe"),
    refit: bool = typer.Option(False, "--refit", help="fit again even when the run has a cached map"),
    check_samples: int = typer.Option(0, "--check-samples",
                                      help="fresh source samples of the cell-mass check [default: as the fit's]"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Fit the semi-discrete OT map from the run's source onto its data and cache it in the run.

    The map is the one ``semidiscrete_ot`` trains with and ``--expressway`` samples from; it is
    fitted on every point of a finite data set (or the recipe's ``coupling.n_targets``). Prints
    the targets, the time and the cell-mass error measured on fresh source samples
    (:func:`monge.ot.semidiscrete.marginal_error`). An interrupted fit resumes where it stopped.
    """
    import time

    import torch

    from .config import load_config
    from .couplings.semidiscrete import MAP_FILE, ot_source
    from .data.sources import build_data
    from .generate import semidiscrete_map
    from .ot.semidiscrete import marginal_error

    try:
        if run_or_recipe.is_dir():
            if overrides:
                raise ValueError("overrides apply to a recipe; a run directory keeps its config.yaml")
            if not (run_or_recipe / "config.yaml").is_file():
                raise ValueError(f"{run_or_recipe} holds no config.yaml (not a run directory); give the recipe")
            cfg, run_dir = load_config(run_or_recipe / "config.yaml"), run_or_recipe
        else:
            cfg = load_config(run_or_recipe, list(overrides or []))
            run_dir = cfg.run_dir
        cached = (run_dir / MAP_FILE).is_file() and not refit
        start = time.perf_counter()
        sd_map = semidiscrete_map(cfg, run_dir, refit=refit, progress=progress)
        seconds = time.perf_counter() - start
        err = marginal_error(sd_map, n_samples=check_samples or None, source=ot_source(build_data(cfg.data)[0]),
                             generator=torch.Generator().manual_seed(cfg.train.seed + 7))
    except _USER_ERRORS as err:
        _fail(err)
    how = "loaded" if cached else f"fitted in {seconds:.1f} s"
    typer.echo(f"semi-discrete map: {sd_map.n_targets} targets of shape {sd_map.shape}, epsilon {sd_map.epsilon:g}, "
               f"{how}: {run_dir / MAP_FILE}")
    typer.echo(f"cell-mass error on {err.n_samples} fresh source samples: RMS relative {err.rms:.3f} "
               f"(chi2 {err.chi2:.2e} +- {err.chi2_std:.1e}), mean relative {err.mean_rel:.3f} (noise floor "
               f"{err.mean_rel_noise:.3f}), max {err.max_rel:.3f}, {err.empty} empty cells")


def _check_kind(cfg, sampler: str, nll: bool) -> bool:
    """Refuse a sampler of the wrong kind for the run; whether it is a flow map (no dopri5 row, no NLL)."""
    from .flow_map import check_sampler, is_flow_map

    check_sampler(cfg.objective.name, sampler)
    if is_flow_map(cfg.objective.name) and nll:
        raise ValueError(f"--nll integrates a velocity field; the {cfg.objective.name} run {cfg.name} is a flow map")
    return is_flow_map(cfg.objective.name)


def _sampler_options(cfg) -> dict:
    from .flow_map import sampler_options

    return sampler_options(cfg.objective.name, cfg.objective.params)


@app.command("eval")
def eval_cmd(
    checkpoints: List[Path] = typer.Argument(..., help="one or more checkpoint files or run directories"),
    nfe: str = typer.Option("1,2,4,8", help="comma-separated NFE budgets"),
    sampler: str = typer.Option("euler", help="any sampler of `monge sample` (uniform steps)"),
    adaptive: bool = typer.Option(True, "--adaptive/--no-adaptive",
                                  help="also run dopri5 (velocity runs; a flow map has no adaptive row)"),
    n: int = typer.Option(1000, "-n", help="samples per evaluation"),
    seed: int = typer.Option(0),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="also write the tables here"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="write a W2-vs-NFE PNG, one curve per run"),
    nll: bool = typer.Option(False, "--nll", help="also score held-out data's negative log-likelihood "
                             "(bits/dim for images; dopri5, exact divergence up to 64 dimensions)"),
    nll_n: int = typer.Option(500, "--nll-n", help="held-out points scored by --nll"),
) -> None:
    """W2 / MMD / straightness (and mode statistics) versus NFE, as Markdown tables.

    Several checkpoints (e.g. one per coupling, same data) are evaluated on the same noise and
    reference samples and compared in one report. ``--nll`` adds a table of the negative
    log-likelihood of held-out data (fresh samples of a toy target; the test split of MNIST /
    CIFAR-10; a finite set without a held-out split is scored on its training images, as the
    table says). Runs whose ``log.csv`` holds coupling diagnostics get a table of them (means over
    the logged steps: pair cost against independent pairs, weights' ESS, noise drift).
    """
    from .data.sources import build_data
    from .evaluate import (evaluate_field, evaluate_nll, format_comparison, format_coupling_diagnostics, format_nll,
                           format_table, held_out_target, read_coupling_diagnostics)
    from .paths import PATHS
    from .train import load_model

    results: dict[str, list] = {}
    nlls: dict[str, object] = {}
    diagnostics: dict[str, dict[str, float]] = {}
    try:
        nfes = _parse_nfe(nfe)
        if n < 2:
            raise ValueError(f"-n must be >= 2, got {n}")
        if nll and nll_n < 2:
            raise ValueError(f"--nll-n must be >= 2, got {nll_n}")
        tasks = set()
        for checkpoint in checkpoints:
            model, cfg = load_model(checkpoint)
            flow_map_run = _check_kind(cfg, sampler, nll)
            tasks.add((str(cfg.data.source), str(cfg.data.target)))
            if len(tasks) > 1:
                raise ValueError(f"checkpoints compare different tasks {sorted(tasks)}; evaluate them separately")
            label = cfg.name if cfg.name not in results else f"{cfg.name} ({checkpoint})"
            source_data, target_data = build_data(cfg.data)
            results[label] = evaluate_field(model, source_data, target_data, nfes=nfes, sampler=sampler,
                                            adaptive=adaptive and not flow_map_run, n=n, seed=seed,
                                            expressway=_expressway_of(checkpoint, cfg),
                                            schedule=getattr(PATHS.build(cfg.path.name, **cfg.path.params),
                                                             "schedule", None),
                                            options=_sampler_options(cfg))
            if nll:
                held, what, _ = held_out_target(cfg.data.target, target_data)
                nlls[label] = evaluate_nll(model, source_data, held, n=nll_n, seed=seed, description=what)
            diag = read_coupling_diagnostics(checkpoint if Path(checkpoint).is_dir() else Path(checkpoint).parent)
            if diag is not None:
                diagnostics[label] = diag
    except _USER_ERRORS as err:
        _fail(err)
    source, target = tasks.pop()
    parts = [format_table(rows, f"{label}: {source} -> {target}") for label, rows in results.items()]
    if len(results) > 1:
        parts.append(format_comparison(results))
    if nlls:
        parts.append(format_nll(nlls, f"Negative log-likelihood: {source} -> {target}"))
    if diagnostics:
        parts.append(format_coupling_diagnostics(diagnostics))
    report = "\n\n".join(parts)
    typer.echo(report)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(report + "\n")
    if plot is not None:
        from .plots import plot_metric_vs_nfe

        plot.parent.mkdir(parents=True, exist_ok=True)
        plot_metric_vs_nfe(results, plot, "w2")


@app.command()
def demo(
    out: Optional[Path] = typer.Option(None, "-o", "--out",
                                       help="output directory [default: runs/demo, runs/demo-digits]"),
    data: str = typer.Option("toy", help="toy (2D source -> target) or digits (16x16 handwritten digits)"),
    steps: Optional[int] = typer.Option(None, help="training steps per model [default: toy 3000, digits 5000]"),
    batch_size: Optional[int] = typer.Option(None, help="[default: toy 256, digits 128]"),
    source: str = typer.Option("8gaussians", help="toy: source distribution"),
    target: str = typer.Option("moons", help="toy: target distribution"),
    model: str = typer.Option("mlp", help="digits: network, mlp or unet"),
    size: int = typer.Option(16, help="digits: image size, 8, 16 or 32"),
    n: int = typer.Option(1000, "-n", help="digits: samples scored per setting"),
    seed: int = typer.Option(0),
    couplings: Optional[str] = typer.Option(
        None, help="comma-separated couplings to compare [default: toy independent,exact_ot; digits "
                   "independent,exact_ot,wcfm,immiscible,semidiscrete_ot]"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    flow_maps: Optional[str] = typer.Option(
        None, "--flow-maps", help="toy: also train these flow maps (mean_flow,shortcut) with the last coupling, "
        "sampled in 1, 2, 4, 8 jumps"),
) -> None:
    """Train one model per coupling on a 2D task (default I-CFM vs OT-CFM) or on digits; write a report."""
    from .couplings import COUPLINGS

    try:
        if data not in ("toy", "digits"):
            raise ValueError(f"--data must be 'toy' or 'digits', got {data!r}")
        digits = data == "digits"
        steps = steps if steps is not None else (5000 if digits else 3000)
        batch_size = batch_size if batch_size is not None else (128 if digits else 256)
        if steps < 1 or batch_size < 2:
            raise ValueError("--steps must be >= 1 and --batch-size >= 2")
        if couplings is None:
            couplings = ("independent,exact_ot,wcfm,immiscible,semidiscrete_ot" if digits
                         else "independent,exact_ot")
        names = [c.strip() for c in couplings.split(",") if c.strip()]
        for name in names:
            COUPLINGS.get(name)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"--couplings must list distinct coupling names, got {couplings!r}")
        if digits and flow_maps:
            raise ValueError("--flow-maps applies to the toy demo; train digits flow maps with "
                             "configs/digits-mean_flow.yaml or configs/digits-shortcut.yaml")
        if digits:
            import shlex

            from .demo_images import run_image_demo

            out = out if out is not None else Path("runs/demo-digits")
            command = "monge " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["demo"] \
                else None
            result = run_image_demo(out, couplings=names, size=size, steps=steps, batch_size=batch_size,
                                    model=model, seed=seed, n=n, progress=progress, command=command)
        else:
            from .demo import run_demo

            out = out if out is not None else Path("runs/demo")
            result = run_demo(out, source=source, target=target, couplings=names, steps=steps,
                              batch_size=batch_size, seed=seed, progress=progress, flow_maps=_flow_maps(flow_maps))
    except _USER_ERRORS as err:
        _fail(err)
    typer.echo(result.report.read_text())
    typer.echo(f"report: {result.report}")


def _flow_maps(text: str | None) -> tuple[str, ...]:
    """The ``--flow-maps`` objectives, checked."""
    from .flow_map import SAMPLER_OF

    names = tuple(n.strip() for n in (text or "").split(",") if n.strip())
    bad = [n for n in names if n not in SAMPLER_OF]
    if bad or len(set(names)) != len(names):
        raise ValueError(f"--flow-maps must list distinct flow-map objectives ({', '.join(SAMPLER_OF)}), got {text!r}")
    return names


def main() -> None:  # pragma: no cover
    app(prog_name="monge")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
