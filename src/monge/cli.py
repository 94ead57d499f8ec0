"""Command line: ``monge train | sample | reflow | fit-ot | eval | demo | restore``.

Each command parses its options, makes one library call and prints what it did; errors of input
and files are one line on stderr and exit code 2, Ctrl-C one line (what was saved) and code 130."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer

from .run.signals import NOTHING_WRITTEN
from .samplers import GRIDS, SAMPLERS

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="OT-aware flow matching: train, sample and evaluate few-step generative models.",
    # help texts are printed as written: square brackets stay (rich markup would swallow them)
)

PROGRESS_HELP = "Progress bars and status lines on stderr; by default only when stderr is a terminal."
_AUTO = "on a terminal"

#: one line each: bad input, files that cannot be read or written (exit 2); Ctrl-C, the library's note (130)
_USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, KeyboardInterrupt)


def _fail(err: BaseException, code: int = 2) -> None:
    if isinstance(err, KeyboardInterrupt):  # the note says what was saved and how to continue
        typer.echo(err.args[0] if err.args else NOTHING_WRITTEN, err=True)
        raise typer.Exit(130)
    if isinstance(err, OSError):
        from .outputs import describe_os_error

        err = describe_os_error(err)  # type: ignore[assignment]  # echoed below as its one-line description (a str)
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(code)


def _precheck(nfe: int | str, checkpoints: list[Path]) -> list[int]:
    """The NFE budgets and the checkpoint paths, checked before the heavy imports so that a typo fails
    at once (a one-line error and exit code 2)."""
    from .limits import parse_nfe
    from .locate import check_checkpoint_path

    try:
        nfes = parse_nfe(nfe)
        for checkpoint in checkpoints:
            check_checkpoint_path(checkpoint)
    except _USER_ERRORS as err:
        _fail(err)
    return nfes


def _sampler_help() -> str:
    """The sampler names of :data:`monge.samplers.SAMPLERS` by kind."""
    what = {"ode": "ODE", "diffusion": "few-step", "flow_map": "flow maps (runs trained with those objectives)"}
    return "; ".join(f"{what[kind]}: {' | '.join(names)}" for kind, names in SAMPLERS.kinds().items())


@app.command()
def train(
    config: Path = typer.Argument(..., help="YAML recipe, e.g. configs/8gaussians-moons-otcfm.yaml"),
    overrides: list[str] | None = typer.Argument(None, help="key.sub=value overrides, e.g. train.steps=500"),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run's checkpoint.", show_default="off"),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Start an existing run again; the old one is moved to RUN.bak-<time>.",
        show_default="off"),
    progress: bool | None = typer.Option(None, "--progress/--no-progress", help=PROGRESS_HELP,
                                            show_default=_AUTO),
    tensorboard: bool = typer.Option(False, "--tensorboard", show_default="off",
                                     help="Also write TensorBoard logs to RUN/tb (train.tensorboard=true; "
                                          "the tensorboard extra)."),
) -> None:
    """Train a model from a recipe; writes runs/NAME/{checkpoint.safetensors, log.csv, eval.md}.

    An existing run is refused unless --resume (continue it) or --overwrite (start again, keeping a
    backup). Ctrl-C stops at the next step boundary and saves a checkpoint there.

    Runs data-parallel unchanged under: torchrun --nproc_per_node=N -m monge train RECIPE.
    """
    if not config.is_file():
        _fail(FileNotFoundError(f"config file not found: {config}"))
    from .config import load_config
    from .run import distributed
    from .train import Trainer, TrainingError

    try:
        cfg = load_config(config, list(overrides or []))
        _quick_config(cfg)
        cfg.train.progress = cfg.train.progress and progress is not False
        cfg.train.tensorboard = cfg.train.tensorboard or tensorboard
        result = Trainer(cfg).fit(resume=resume, overwrite=overwrite)  # refuses --resume with --overwrite
    except TrainingError as err:
        _fail(err, 1)
    except _USER_ERRORS as err:
        _fail(err)
    finally:
        main = distributed.is_main()
        distributed.teardown(synchronize=sys.exc_info()[0] is None)  # a barrier only after success
    if not main:
        return
    typer.echo(f"trained {result.trained} steps (now at step {result.step} of {cfg.train.steps}) in "
               f"{result.seconds:.1f} s, final loss {result.loss:.4f}")
    typer.echo(f"checkpoint: {result.run_dir / 'checkpoint.safetensors'}")
    typer.echo((result.run_dir / "eval.md").read_text())


@app.command("sample")
def sample_cmd(
    checkpoint: Path = typer.Argument(..., help="checkpoint file or run directory"),
    nfe: int = typer.Option(8, help="Function evaluations (ignored by dopri5)."),
    sampler: str = typer.Option("euler", help=f"{_sampler_help()}."),
    timesteps: str | None = typer.Option(
        None, "--timesteps", help=f"Step grid: {' | '.join(GRIDS.names())} | optimized (fitted to the model once and "
                                  "cached in "
        "the run directory) | optimized_decoupled (optimized grid plus fitted network evaluation times).",
        show_default="the sampler's own steps"),
    expressway: float | None = typer.Option(
        None, help="Start at this time from the noised data point of each noise's semi-discrete OT cell "
        "(the map is fitted once and cached in the run).", show_default="off"),
    n: int = typer.Option(1000, "-n", help="Number of samples."),
    seed: int = typer.Option(0, help="Seed of the noise."),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="File to write, exactly at this path (folders created): .npy, or .csv for "
        "tables.", show_default="RUN/samples.npy"),
    ema: bool = typer.Option(True, "--ema/--no-ema", help="Use the EMA weights."),
    grid: Path | None = typer.Option(None, "--grid", help="Also save image samples as a PNG grid here.",
                                        show_default="no grid"),
    label: str | None = typer.Option(
        None, "--class", help="Class-conditional models: the class of every sample (a table's label as written in "
        "its file), or 'all' (classes in turn).", show_default="unconditional (a table: drawn as in its rows)"),
    guidance: float = typer.Option(1.0, help="Classifier-free guidance weight (with --class; 1: none)."),
    condition: str | None = typer.Option(
        None, "--condition", help="Models with continuous conditions (cond_dim): comma-separated values (one "
        "condition for every sample), a .npy/.csv/.txt file (one sample per row) or 'held-out' (the conditions of "
        "-n fresh target points; saved beside the samples as *.conditions.npy).", show_default="none"),
) -> None:
    """Draw samples from a trained model and save them as a .npy array or a CSV table (and a PNG
    grid for images). A CSV table run writes a table like its file (header, kinds, labels)."""
    _precheck(nfe, [checkpoint])
    from .generate import sample_checkpoint

    try:
        out = sample_checkpoint(checkpoint, n=n, output=output, grid=grid, ema=ema, condition=condition, seed=seed,
                                sampler=sampler, nfe=nfe, timesteps=timesteps, expressway=expressway, label=label,
                                guidance=guidance)
    except _USER_ERRORS as err:
        _fail(err)
    typer.echo(f"wrote {out.n} samples ({out.sampling}, {out.nfe} NFE) to {out.output}")
    if out.conditions is not None:
        typer.echo(f"wrote their conditions to {out.conditions}")
    if out.grid is not None:
        typer.echo(f"wrote a grid of {out.n_grid} images to {out.grid}")


@app.command("reflow")
def reflow_cmd(
    checkpoint: Path = typer.Argument(..., help="checkpoint file or run directory of a trained flow"),
    n_pairs: int = typer.Option(10_000, "--n-pairs", help="(noise, sample) pairs to generate."),
    steps: int | None = typer.Option(None, help="Training steps of the new run.", show_default="the original's"),
    out: Path | None = typer.Option(None, "--out", help="New run directory.", show_default="RUN-reflow"),
    overwrite: bool = typer.Option(False, "--overwrite", show_default="off",
                                   help="Replace an existing run at --out; the old one is moved to OUT.bak-<time>."),
    distill: bool = typer.Option(False, "--distill", show_default="off",
                                 help="Also distill the reflowed model to one step (written to OUT/distill)."),
    sampler: str = typer.Option("dopri5", help="Sampler that generates the pairs."),
    nfe: int = typer.Option(128, help="Its NFE (fixed-step samplers; dopri5 adapts)."),
    seed: int = typer.Option(0, help="Seed of the noises."),
    progress: bool | None = typer.Option(None, "--progress/--no-progress", help=PROGRESS_HELP,
                                            show_default=_AUTO),
) -> None:
    """Rectified-flow reflow: pair noise with the model's own samples and train a straighter flow on them."""
    _precheck(nfe, [checkpoint])
    from .quick import MAX_PAIRS, quick_cap, quick_steps
    from .rectify import reflow
    from .run.checkpoint import CheckpointError

    try:
        n_pairs, steps = quick_cap(n_pairs, MAX_PAIRS), None if steps is None else quick_steps(steps)
        run = reflow(checkpoint, n_pairs=n_pairs, steps=steps, out_dir=out, distill=distill, sampler=sampler,
                     nfe=nfe, seed=seed, progress=progress, overwrite=overwrite)
    except _USER_ERRORS + (CheckpointError,) as err:
        _fail(err)
    typer.echo(f"reflowed run: {run}")
    if (run / "eval.md").is_file():
        typer.echo((run / "eval.md").read_text())
    if distill:
        typer.echo(f"one-step distilled run: {run / 'distill'} (sample it with --sampler euler --nfe 1)")
        if (run / "distill" / "eval.md").is_file():
            typer.echo((run / "distill" / "eval.md").read_text())


@app.command("fit-ot")
def fit_ot_cmd(
    run_or_recipe: Path = typer.Argument(..., help="run directory, or YAML recipe (fits into its run directory)"),
    overrides: list[str] | None = typer.Argument(None, help="key.sub=value overrides of a recipe"),
    refit: bool = typer.Option(False, "--refit", help="Fit again even when the run has a cached map.",
                               show_default="off"),
    check_samples: int = typer.Option(0, "--check-samples", help="Fresh source samples of the cell-mass check.",
                                      show_default="as many as the fit's own check"),
    progress: bool | None = typer.Option(None, "--progress/--no-progress", help=PROGRESS_HELP,
                                            show_default=_AUTO),
) -> None:
    """Fit the semi-discrete OT map from the run's source onto its data and cache it in the run.

    The map is the one semidiscrete_ot trains with and --expressway samples from; it is fitted on
    every point of a finite data set (or the recipe's coupling.n_targets). Prints the targets, the
    time and the cell-mass error measured on fresh source samples. An interrupted fit resumes
    where it stopped.
    """
    from .config import load_config
    from .couplings.maps import fit_run_map

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
        _quick_config(cfg)
        report = fit_run_map(cfg, run_dir, refit=refit, check_samples=check_samples or None, progress=progress)
    except _USER_ERRORS as err:
        _fail(err)
    sd_map, check = report.map, report.check
    how = "loaded" if report.loaded else f"fitted in {report.seconds:.1f} s"
    typer.echo(f"semi-discrete map: {sd_map.n_targets} targets of shape {sd_map.shape}, epsilon {sd_map.epsilon:g}, "
               f"{how}: {report.path}")
    typer.echo(f"cell-mass error on {check.n_samples} fresh source samples: RMS relative {check.rms:.3f} "
               f"(chi2 {check.chi2:.2e} +- {check.chi2_std:.1e}), mean relative {check.mean_rel:.3f} (noise floor "
               f"{check.mean_rel_noise:.3f}), max {check.max_rel:.3f}, {check.empty} empty cells{report.note}")


@app.command("eval")
def eval_cmd(
    checkpoints: list[Path] = typer.Argument(..., help="one or more checkpoint files or run directories"),
    nfe: str = typer.Option("1,2,4,8", help="Comma-separated NFE budgets."),
    sampler: str = typer.Option("euler", help="Any sampler of monge sample (uniform steps)."),
    adaptive: bool = typer.Option(True, "--adaptive/--no-adaptive",
                                  help="Also run dopri5 (adaptive NFE; velocity runs only, not flow maps)."),
    n: int = typer.Option(1000, "-n", help="Samples per evaluation."),
    seed: int = typer.Option(0, help="Seed of the noise and reference samples."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Also write the tables to this file.",
                                          show_default="print only"),
    plot: Path | None = typer.Option(None, "--plot", help="Write a W2-vs-NFE PNG here, one curve per run.",
                                        show_default="no plot"),
    nll: bool = typer.Option(False, "--nll", show_default="off", help="Also score held-out data's negative "
                             "log-likelihood (bits/dim for images; dopri5, exact divergence up to 64 dimensions)."),
    nll_n: int = typer.Option(500, "--nll-n", help="Held-out points scored by --nll."),
    data_path: Path | None = typer.Option(None, "--data-path", help="The target data's file or folder, when it "
                                             "moved since training (replaces data.target.path).",
                                             show_default="the path stored in the run"),
    novelty: bool = typer.Option(True, "--novelty/--no-novelty", show_default="on where the data have a held-out "
                                 "split", help="Is a sample new? Each row's distance to the nearest training point "
                                 "against held-out points' (pixels, and classifier features for labelled images)."),
    csv_out: Path | None = typer.Option(None, "--csv", help="Also write one CSV line per run and row (novelty "
                                           "columns included).", show_default="no CSV"),
) -> None:
    """W2 / MMD / straightness (and mode statistics) versus NFE, as Markdown tables.

    Several checkpoints (e.g. one per coupling, same data) are evaluated on the same noise and
    reference samples and compared in one report. --nll adds a table of the negative
    log-likelihood of held-out data (fresh samples of a toy target; the test split of MNIST /
    CIFAR-10; a finite set without a held-out split is scored on its training images, as the
    table says). Runs whose log.csv holds coupling diagnostics get a table of them (means over
    the logged steps: pair cost against independent pairs, weights' ESS, noise drift, plan entropy).
    Where the data have a held-out split (a table's holdout, digits with holdout, faces, textures, the
    test split of MNIST / CIFAR-10) each row also says whether its samples are new: the ratio of
    their nearest-training-point distance to held-out points', the share of near-copies (closer than
    the 1st percentile of held-out points) beside the held-out share, duplicates, and for labelled
    images the same in classifier features with the Fréchet distance to the train split beside the
    held-out one; elsewhere the report says that novelty was not measured.
    """
    nfes = _precheck(nfe, checkpoints)
    from .generate import evaluate_checkpoints
    from .outputs import check_output_files
    from .quick import MAX_EVAL_SAMPLES, quick_cap

    try:
        check_output_files({"-o": output, "--plot": plot, "--csv": csv_out})
        result = evaluate_checkpoints(checkpoints, nfes=nfes, sampler=sampler, adaptive=adaptive,
                                      n=quick_cap(n, MAX_EVAL_SAMPLES), seed=seed, nll=nll,
                                      nll_n=quick_cap(nll_n, MAX_EVAL_SAMPLES), data_path=data_path, novelty=novelty)
    except _USER_ERRORS as err:
        _fail(err)
    typer.echo(result.report)
    try:
        for what, path in result.save(output, plot, csv_out):
            typer.echo(f"wrote {what} to {path}")
    except _USER_ERRORS as err:
        _fail(err)


@app.command()
def demo(
    out: Path | None = typer.Option(None, "-o", "--out", help="Output directory.",
                                       show_default="toy: runs/demo, digits: runs/demo-digits"),
    data: str = typer.Option("toy", help="toy (2D source -> target) or digits (16x16 handwritten digits)."),
    steps: int | None = typer.Option(None, help="Training steps per model.", show_default="toy 3000, digits 5000"),
    batch_size: int | None = typer.Option(None, help="Training batch size.", show_default="toy 256, digits 128"),
    source: str = typer.Option("8gaussians", help="toy: source distribution."),
    target: str = typer.Option("moons", help="toy: target distribution."),
    model: str = typer.Option("mlp", help="digits: network, mlp or unet."),
    size: int = typer.Option(16, help="digits: image size, 8, 16 or 32."),
    n: int = typer.Option(1000, "-n", help="digits: samples scored per setting."),
    latent: str | None = typer.Option(None, help="digits: train on the latents of this autoencoder run (RUN)."),
    seed: int = typer.Option(0, help="Seed of every run and evaluation."),
    couplings: str | None = typer.Option(
        None, help="Comma-separated couplings to compare.",
        show_default="toy independent,exact_ot; digits independent,exact_ot,wcfm,immiscible,semidiscrete_ot"),
    progress: bool | None = typer.Option(None, "--progress/--no-progress", help=PROGRESS_HELP,
                                            show_default=_AUTO),
    flow_maps: str | None = typer.Option(
        None, "--flow-maps", help="Toy data: also train these flow maps (mean_flow,shortcut) with the last coupling, "
        "sampled in 1, 2, 4, 8 jumps.", show_default="none"),
) -> None:
    """Train one model per coupling on a 2D task (default I-CFM vs OT-CFM) or on digits; write a report."""
    from .demo import demo as run

    command = "monge " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["demo"] else None
    try:
        result = run(data, out, steps=steps, batch_size=batch_size, couplings=couplings, flow_maps=flow_maps,
                     source=source, target=target, model=model, size=size, n=n, seed=seed, progress=progress,
                     command=command, latent=latent)
    except _USER_ERRORS as err:
        _fail(err)
    typer.echo(result.report.read_text())
    typer.echo(f"report: {result.report}")
    for figure in sorted(result.report.parent.glob("*.png")):
        typer.echo(f"figure: {figure}")


def _quick_config(cfg) -> None:
    """Quick mode (``MONGE_QUICK=1``): cut the recipe (:func:`monge.quick.quick_config`), say so on stderr."""
    from .quick import quick_config

    if (note := quick_config(cfg)) is not None:
        typer.echo(note, err=True)


@app.command("restore")
def restore_cmd(
    checkpoint: Path = typer.Argument(..., help="Checkpoint file or run directory of a trained flow."),
    operator: str = typer.Option(..., help="Measurement operator: inpaint | denoise | blur | downsample | project.",
                                 show_default="none, required"),
    input: Path = typer.Option(..., "--input", help=".npy measurement y = A x + sigma n: one, or a batch (N, ...).",
                               show_default="none, required"),
    mask: Path | None = typer.Option(None, "--mask", help="Inpaint: .npy 0/1 mask (1 = observed).",
                                        show_default="the top half observed"),
    sigma: float = typer.Option(0.0, help="Measurement noise level sigma_y (0: noise-free)."),
    solver: str = typer.Option("pigdm", help="Posterior sampler: pigdm | mmps | dps | pnp_flow | d_flow."),
    nfe: int = typer.Option(100, help="Network evaluations per sample (D-Flow: its budget)."),
    n: int = typer.Option(8, "-n", help="Posterior samples per measurement."),
    seed: int = typer.Option(0, help="Seed of the solver's noise."),
    blur_std: float = typer.Option(1.0, "--blur-std", help="Blur: std of the Gaussian kernel in pixels."),
    factor: int = typer.Option(2, help="Downsample: pooling factor."),
    m: int | None = typer.Option(None, "--m", help="Project: number of random measurements.",
                                    show_default="half the data dimension"),
    projection_seed: int = typer.Option(0, "--projection-seed", help="Project: seed of the random matrix."),
    output: Path | None = typer.Option(None, "-o", "--output", help=".npy file of the samples.",
                                          show_default="RUN/restored.npy"),
    grid: Path | None = typer.Option(None, "--grid", help="Image data: PNG grid (measurement, samples, truth).",
                                        show_default="no grid"),
    truth: Path | None = typer.Option(None, "--truth", help=".npy ground truth, drawn last in each grid row.",
                                         show_default="none"),
    ema: bool = typer.Option(True, "--ema/--no-ema", help="Use the EMA weights."),
) -> None:
    """Posterior samples of a trained run given a linear measurement (monge.inverse solvers).

    Writes (n, *shape) samples for one measurement, (N, n, *shape) for a batch of N.
    """
    _precheck(nfe, [checkpoint])
    from .restore import restore_checkpoint

    try:
        out = restore_checkpoint(checkpoint, operator=operator, input=input, mask=mask, truth=truth, output=output,
                                 grid=grid, ema=ema, blur_std=blur_std, factor=factor, m=m,
                                 projection_seed=projection_seed, sigma=sigma, solver=solver, nfe=nfe, n=n, seed=seed)
    except _USER_ERRORS as err:
        _fail(err)
    typer.echo(f"wrote {out.n} samples for each of {out.measurements} measurements ({solver}, {nfe} NFE) to "
               f"{out.output}")
    if out.grid is not None:
        typer.echo(f"wrote a grid (measurement, samples{', truth' if out.with_truth else ''}) to {out.grid}")


def main() -> None:  # pragma: no cover
    app(prog_name="monge")


if __name__ == "__main__":  # pragma: no cover
    main()
