"""Command line: ``monge train | sample | reflow | eval | demo | restore``."""

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
    # help texts are printed as written: square brackets stay (rich markup would swallow them)
)

PROGRESS_HELP = "Progress bars and status lines on stderr; by default only when stderr is a terminal."
_AUTO = "on a terminal"

#: errors reported as one line (exit code 2): bad input, and files that cannot be read or written
_USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError)


def _fail(err: BaseException, code: int = 2) -> None:
    if isinstance(err, OSError):
        from .outputs import describe_os_error

        err = describe_os_error(err)  # type: ignore[assignment]
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(code)


def _parse_nfe(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--nfe must be comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise ValueError(f"--nfe values must be integers >= 1, got {text!r}")
    from .limits import check_nfe

    check_nfe(max(values))
    return values


@app.command()
def train(
    config: Path = typer.Argument(..., help="YAML recipe, e.g. configs/8gaussians-moons-otcfm.yaml"),
    overrides: Optional[List[str]] = typer.Argument(None, help="key.sub=value overrides, e.g. train.steps=500"),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run's checkpoint.", show_default="off"),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Start an existing run again; the old one is moved to RUN.bak-<time>.",
        show_default="off"),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help=PROGRESS_HELP,
                                            show_default=_AUTO),
) -> None:
    """Train a model from a recipe; writes runs/NAME/{checkpoint.safetensors, log.csv, eval.md}.

    An existing run is refused unless --resume (continue it) or --overwrite (start again, keeping a
    backup). Ctrl-C stops at the next step boundary and saves a checkpoint there.

    Runs data-parallel unchanged under: torchrun --nproc_per_node=N -m monge train RECIPE.
    """
    if not config.is_file():
        _fail(FileNotFoundError(f"config file not found: {config}"))
    from .run import distributed
    from .config import load_config
    from .train import Trainer, TrainingError

    try:
        cfg = load_config(config, list(overrides or []))
        _quick_config(cfg)
        cfg.train.progress = cfg.train.progress and progress is not False
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
    nfe: int = typer.Option(8, help="Function evaluations (ignored by dopri5)."),
    sampler: str = typer.Option(
        "euler", help="ODE: euler | midpoint | heun | rk4 | dopri5; few-step: ddim | dpm_solver_pp | "
        "dpm_solver_pp_3m | unipc | unipc_bh2 | heun_edm | euler_maruyama; flow maps: mean_flow | shortcut "
        "(runs trained with those objectives)."),
    timesteps: Optional[str] = typer.Option(
        None, "--timesteps", "--schedule", help="Step grid: uniform | uniform_log_snr | karras | optimized (fitted "
        "to the model once and cached in the run directory) | optimized_decoupled (optimized grid plus fitted "
        "network evaluation times); --schedule is its old name.", show_default="the sampler's own steps"),
    expressway: Optional[float] = typer.Option(
        None, help="Start at this time from the noised data point of each noise's semi-discrete OT cell "
        "(the map is fitted once and cached in the run).", show_default="off"),
    n: int = typer.Option(1000, "-n", help="Number of samples."),
    seed: int = typer.Option(0, help="Seed of the noise."),
    output: Optional[Path] = typer.Option(
        None, "-o", "--output", help="File to write, exactly at this path (folders created): .npy, or .csv for "
        "tables.", show_default="RUN/samples.npy"),
    ema: bool = typer.Option(True, "--ema/--no-ema", help="Use the EMA weights."),
    grid: Optional[Path] = typer.Option(None, "--grid", help="Also save image samples as a PNG grid here.",
                                        show_default="no grid"),
    label: Optional[str] = typer.Option(
        None, "--class", help="Class-conditional models: the class of every sample, or 'all' (classes in turn).",
        show_default="unconditional"),
    guidance: float = typer.Option(1.0, help="Classifier-free guidance weight (with --class; 1: none)."),
    condition: Optional[str] = typer.Option(
        None, "--condition", help="Models with continuous conditions (cond_dim): comma-separated values (one "
        "condition for every sample), a .npy/.csv/.txt file (one sample per row) or 'held-out' (the conditions of "
        "-n fresh target points; saved beside the samples as *.conditions.npy).", show_default="none"),
) -> None:
    """Draw samples from a trained model and save them as a .npy array or a CSV table (and a PNG
    grid for images). Runs on standardised tables return samples in the data's own units."""
    _check_nfe_and_path(nfe, [checkpoint])
    from ._validation import MAX_SAMPLES
    from .run.checkpoint import run_dir_of
    from .generate import generate
    from .limits import check_nfe
    from .outputs import check_output_file, write_array
    from .run.load import load_model

    try:
        if n < 1 or n > MAX_SAMPLES:
            raise ValueError(f"-n must be in [1, {MAX_SAMPLES:,}], got {n}")
        if nfe < 1:
            raise ValueError(f"--nfe must be >= 1, got {nfe}")
        check_nfe(nfe)
        if grid is not None and grid.suffix.lower() != ".png":
            raise ValueError(f"--grid needs a .png path, got {grid}")
        output = output if output is not None else run_dir_of(checkpoint) / "samples.npy"
        check_output_file(output)
        if grid is not None:
            check_output_file(grid, "--grid")
        model, cfg = load_model(checkpoint, ema=ema)
        conds = None
        if condition is not None:
            from .generate import read_conditions

            if getattr(model, "cond_dim", None) is None:
                raise ValueError("--condition: this run's model takes no continuous condition (no model.cond_dim)")
            conds = read_conditions(condition, cfg, model.cond_dim, n, seed)
            n = conds.shape[0] if conds.dim() == 2 else n  # a file or held-out: one sample per condition
        _check_sampling_memory(model, cfg, n)
        out = generate(model, cfg, n, sampler=sampler, nfe=nfe, timesteps=timesteps, expressway=expressway,
                       run_dir=run_dir_of(checkpoint), seed=seed, label=label, guidance=guidance, conditions=conds)
        if grid is not None and out.x.dim() != 4:
            raise ValueError(f"--grid needs image data (N, C, H, W); samples have shape {tuple(out.x.shape[1:])}")
        write_array(output, out.x.cpu().numpy())
        how = sampler if timesteps is None else f"{sampler}, {timesteps} steps"
        if expressway is not None:
            how += f", expressway from t={expressway}"
        typer.echo(f"wrote {n} samples ({how}, {out.nfe} NFE) to {output}")
        if conds is not None and conds.dim() == 2:
            cpath = write_array(output.with_suffix(".conditions.npy"), conds.numpy())
            typer.echo(f"wrote their conditions to {cpath}")
        if grid is not None:
            from .imageio import save_image_grid

            save_image_grid(out.x[:64].clamp(-1, 1).cpu(), grid, nrow=8, scale=max(1, 64 // out.x.shape[-1]))
            typer.echo(f"wrote a grid of {min(n, 64)} images to {grid}")
    except _USER_ERRORS as err:
        _fail(err)


def _check_sampling_memory(model, cfg, n: int) -> None:
    """Refuse a sampling batch larger than the memory available, before sampling."""
    import torch

    from .limits import check_sampling_memory
    from .models import build_model

    shape = getattr(model, "shape", None)
    if shape is None:
        return
    with torch.device("meta"):
        meta = build_model(cfg.model.name, cfg.model.params, tuple(shape))
    check_sampling_memory(meta, n, tuple(shape), "sampling")


@app.command("reflow")
def reflow_cmd(
    checkpoint: Path = typer.Argument(..., help="checkpoint file or run directory of a trained flow"),
    n_pairs: int = typer.Option(10_000, "--n-pairs", help="(noise, sample) pairs to generate."),
    steps: Optional[int] = typer.Option(None, help="Training steps of the new run.", show_default="the original's"),
    out: Optional[Path] = typer.Option(None, "--out", help="New run directory.", show_default="RUN-reflow"),
    overwrite: bool = typer.Option(False, "--overwrite", show_default="off",
                                   help="Replace an existing run at --out; the old one is moved to OUT.bak-<time>."),
    distill: bool = typer.Option(False, "--distill", show_default="off",
                                 help="Also distill the reflowed model to one step (written to OUT/distill)."),
    sampler: str = typer.Option("dopri5", help="Sampler that generates the pairs."),
    nfe: int = typer.Option(128, help="Its NFE (fixed-step samplers; dopri5 adapts)."),
    seed: int = typer.Option(0, help="Seed of the noises."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help=PROGRESS_HELP,
                                            show_default=_AUTO),
) -> None:
    """Rectified-flow reflow: pair noise with the model's own samples and train a straighter flow on them."""
    _check_nfe_and_path(nfe, [checkpoint])
    from .run.checkpoint import CheckpointError
    from .limits import check_nfe
    from .reflow import reflow

    try:
        check_nfe(nfe)
        from .quick import MAX_PAIRS, quick_cap, quick_steps

        n_pairs, steps = quick_cap(n_pairs, MAX_PAIRS), None if steps is None else quick_steps(steps)
        run = reflow(checkpoint, n_pairs=n_pairs, steps=steps, out_dir=out, distill=distill, sampler=sampler,
                     nfe=nfe, seed=seed, progress=progress, overwrite=overwrite)
    except (*_USER_ERRORS, CheckpointError) as err:
        _fail(err)
    typer.echo(f"reflowed run: {run}")
    if (run / "eval.md").is_file():
        typer.echo((run / "eval.md").read_text())
    if distill:
        typer.echo(f"one-step distilled run: {run / 'distill'} (sample it with --sampler euler --nfe 1)")
        if (run / "distill" / "eval.md").is_file():
            typer.echo((run / "distill" / "eval.md").read_text())


def _expressway_of(checkpoint: Path, cfg) -> "Expressway | None":
    """The run's expressway when it holds a semi-discrete map (a ``semidiscrete_ot`` run, or any
    run sampled once with ``--expressway``)."""
    from .run.checkpoint import run_dir_of
    from .couplings.semidiscrete import load_run_map
    from .generate import expressway_of

    sd_map = load_run_map(run_dir_of(checkpoint))
    return None if sd_map is None else expressway_of(cfg, sd_map)


@app.command("fit-ot")
def fit_ot_cmd(
    run_or_recipe: Path = typer.Argument(..., help="run directory, or YAML recipe (fits into its run directory)"),
    overrides: Optional[List[str]] = typer.Argument(None, help="key.sub=value overrides of a recipe"),
    refit: bool = typer.Option(False, "--refit", help="Fit again even when the run has a cached map.",
                               show_default="off"),
    check_samples: int = typer.Option(0, "--check-samples", help="Fresh source samples of the cell-mass check.",
                                      show_default="as many as the fit's own check"),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help=PROGRESS_HELP,
                                            show_default=_AUTO),
) -> None:
    """Fit the semi-discrete OT map from the run's source onto its data and cache it in the run.

    The map is the one semidiscrete_ot trains with and --expressway samples from; it is fitted on
    every point of a finite data set (or the recipe's coupling.n_targets). Prints the targets, the
    time and the cell-mass error measured on fresh source samples. An interrupted fit resumes
    where it stopped.
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
        _quick_config(cfg)
        from .quick import quick_mode

        if quick_mode() and not check_samples:
            check_samples = 65_536
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
    from .objectives import check_sampler, is_flow_map

    check_sampler(cfg.objective.name, sampler)
    if is_flow_map(cfg.objective.name) and nll:
        raise ValueError(f"--nll integrates a velocity field; the {cfg.objective.name} run {cfg.name} is a flow map")
    return is_flow_map(cfg.objective.name)


def _sampler_options(cfg) -> dict:
    from .objectives import sampler_options

    return sampler_options(cfg.objective.name, cfg.objective.params)


@app.command("eval")
def eval_cmd(
    checkpoints: List[Path] = typer.Argument(..., help="one or more checkpoint files or run directories"),
    nfe: str = typer.Option("1,2,4,8", help="Comma-separated NFE budgets."),
    sampler: str = typer.Option("euler", help="Any sampler of monge sample (uniform steps)."),
    adaptive: bool = typer.Option(True, "--adaptive/--no-adaptive",
                                  help="Also run dopri5 (adaptive NFE; velocity runs: a flow map has no adaptive row)."),
    n: int = typer.Option(1000, "-n", help="Samples per evaluation."),
    seed: int = typer.Option(0, help="Seed of the noise and reference samples."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Also write the tables to this file.",
                                          show_default="print only"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a W2-vs-NFE PNG here, one curve per run.",
                                        show_default="no plot"),
    nll: bool = typer.Option(False, "--nll", show_default="off", help="Also score held-out data's negative "
                             "log-likelihood (bits/dim for images; dopri5, exact divergence up to 64 dimensions)."),
    nll_n: int = typer.Option(500, "--nll-n", help="Held-out points scored by --nll."),
    data_path: Optional[Path] = typer.Option(None, "--data-path", help="The target data's file or folder, when it "
                                             "moved since training (replaces data.target.path).",
                                             show_default="the path stored in the run"),
) -> None:
    """W2 / MMD / straightness (and mode statistics) versus NFE, as Markdown tables.

    Several checkpoints (e.g. one per coupling, same data) are evaluated on the same noise and
    reference samples and compared in one report. --nll adds a table of the negative
    log-likelihood of held-out data (fresh samples of a toy target; the test split of MNIST /
    CIFAR-10; a finite set without a held-out split is scored on its training images, as the
    table says). Runs whose log.csv holds coupling diagnostics get a table of them (means over
    the logged steps: pair cost against independent pairs, weights' ESS, noise drift, plan entropy).
    """
    try:
        _parse_nfe(nfe)
        _check_nfe_and_path(1, checkpoints)
    except _USER_ERRORS as err:
        _fail(err)
    from .evaluate import (evaluate_field, evaluate_nll, format_comparison, format_coupling_diagnostics, format_nll,
                           format_table, held_out_target, read_coupling_diagnostics, reference_data)
    from .outputs import check_output_file, write_text
    from .rundata import build_run_data
    from .paths import PATHS
    from .run.load import load_model

    results: dict[str, list] = {}
    nlls: dict[str, object] = {}
    diagnostics: dict[str, dict[str, float]] = {}
    try:
        from .quick import MAX_SAMPLES, quick_cap

        n, nll_n = quick_cap(n, MAX_SAMPLES), quick_cap(nll_n, MAX_SAMPLES)
        nfes = _parse_nfe(nfe)
        for checked in (output, plot):
            if checked is not None:
                check_output_file(checked)
        if not 2 <= n <= 20_000:
            raise ValueError(f"-n must be in [2, 20000] (exact W2 costs O(n^3) in it), got {n}")
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
            if data_path is not None:
                if "path" not in cfg.data.target.params:
                    raise ValueError(f"--data-path: data.target {cfg.data.target} is not read from a file")
                cfg.data.target.params["path"] = str(data_path)
            source_data, target_data = build_run_data(cfg, "monge eval")
            results[label] = evaluate_field(model, source_data, reference_data(target_data), nfes=nfes, sampler=sampler,
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
    try:
        if output is not None:
            write_text(output, report + "\n")
            typer.echo(f"wrote the tables to {output}")
        if plot is not None:
            from .plots import plot_metric_vs_nfe

            plot.parent.mkdir(parents=True, exist_ok=True)
            plot_metric_vs_nfe(results, plot, "w2")
            typer.echo(f"wrote the W2-vs-NFE plot to {plot}")
    except _USER_ERRORS as err:
        _fail(err)


@app.command()
def demo(
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Output directory.",
                                       show_default="toy: runs/demo, digits: runs/demo-digits"),
    data: str = typer.Option("toy", help="toy (2D source -> target) or digits (16x16 handwritten digits)."),
    steps: Optional[int] = typer.Option(None, help="Training steps per model.",
                                        show_default="toy 3000, digits 5000"),
    batch_size: Optional[int] = typer.Option(None, help="Training batch size.", show_default="toy 256, digits 128"),
    source: str = typer.Option("8gaussians", help="toy: source distribution."),
    target: str = typer.Option("moons", help="toy: target distribution."),
    model: str = typer.Option("mlp", help="digits: network, mlp or unet."),
    size: int = typer.Option(16, help="digits: image size, 8, 16 or 32."),
    n: int = typer.Option(1000, "-n", help="digits: samples scored per setting."),
    seed: int = typer.Option(0, help="Seed of every run and evaluation."),
    couplings: Optional[str] = typer.Option(
        None, help="Comma-separated couplings to compare.",
        show_default="toy independent,exact_ot; digits independent,exact_ot,wcfm,immiscible,semidiscrete_ot"),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help=PROGRESS_HELP,
                                            show_default=_AUTO),
    flow_maps: Optional[str] = typer.Option(
        None, "--flow-maps", help="Toy data: also train these flow maps (mean_flow,shortcut) with the last coupling, "
        "sampled in 1, 2, 4, 8 jumps.", show_default="none"),
) -> None:
    """Train one model per coupling on a 2D task (default I-CFM vs OT-CFM) or on digits; write a report."""
    from .couplings import COUPLINGS

    try:
        if data not in ("toy", "digits"):
            raise ValueError(f"--data must be 'toy' or 'digits', got {data!r}")
        digits = data == "digits"
        steps = steps if steps is not None else (5000 if digits else 3000)
        from .quick import quick_steps

        steps = quick_steps(steps)
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
            from .quick import MAX_FIT_ITER, MAX_SAMPLES, quick_cap, quick_mode

            result = run_demo(out, source=source, target=target, couplings=names, steps=steps,
                              batch_size=batch_size, seed=seed, progress=progress,
                              coupling_params={"semidiscrete_ot": {"max_iter": MAX_FIT_ITER}} if quick_mode() else None,
                              samples=quick_cap(2000, MAX_SAMPLES), flow_maps=_flow_maps(flow_maps))
    except _USER_ERRORS as err:
        _fail(err)
    typer.echo(result.report.read_text())
    typer.echo(f"report: {result.report}")
    for figure in sorted(result.report.parent.glob("*.png")):
        typer.echo(f"figure: {figure}")


def _check_nfe_and_path(nfe: int, checkpoints: List[Path]) -> None:
    """Checks that need no torch, run before the heavy imports so that a typo fails at once
    (a one-line error and exit code 2)."""
    from .locate import check_checkpoint_path

    try:
        if nfe < 1:
            raise ValueError(f"--nfe must be >= 1, got {nfe}")
        for checkpoint in checkpoints:
            check_checkpoint_path(checkpoint)
    except _USER_ERRORS as err:
        _fail(err)


def _quick_config(cfg) -> None:
    """In quick mode (``MONGE_QUICK=1``, :mod:`monge.quick`) cut the recipe's training steps and its
    semi-discrete OT fit, and say so on stderr."""
    from .quick import MAX_FIT_ITER, MAX_SAMPLES, QUICK_ENV, quick_mode, quick_steps

    if not quick_mode():
        return
    steps = cfg.train.steps
    cfg.train.steps = quick_steps(steps)
    cfg.train.eval_samples = min(cfg.train.eval_samples, MAX_SAMPLES)
    note = f"{QUICK_ENV}=1: {cfg.train.steps} of the recipe's {steps} steps, {cfg.train.eval_samples} samples per evaluation"
    if cfg.coupling.name == "semidiscrete_ot":
        cfg.coupling.params["max_iter"] = min(int(cfg.coupling.params.get("max_iter", MAX_FIT_ITER)), MAX_FIT_ITER)
        note += f", semi-discrete OT fit capped at {cfg.coupling.params['max_iter']} iterations"
    typer.echo(note + " (a quick try: results are not meaningful)", err=True)


@app.command("restore")
def restore_cmd(
    checkpoint: Path = typer.Argument(..., help="Checkpoint file or run directory of a trained flow."),
    operator: str = typer.Option(..., help="Measurement operator: inpaint | denoise | blur | downsample | project.",
                                 show_default="none, required"),
    input: Path = typer.Option(..., "--input", help=".npy measurement y = A x + sigma n: one, or a batch (N, ...).",
                               show_default="none, required"),
    mask: Optional[Path] = typer.Option(None, "--mask", help="Inpaint: .npy 0/1 mask (1 = observed).",
                                        show_default="the top half observed"),
    sigma: float = typer.Option(0.0, help="Measurement noise level sigma_y (0: noise-free)."),
    solver: str = typer.Option("pigdm", help="Posterior sampler: pigdm | mmps | dps | pnp_flow | d_flow."),
    nfe: int = typer.Option(100, help="Network evaluations per sample (D-Flow: its budget)."),
    n: int = typer.Option(8, "-n", help="Posterior samples per measurement."),
    seed: int = typer.Option(0, help="Seed of the solver's noise."),
    blur_std: float = typer.Option(1.0, "--blur-std", help="Blur: std of the Gaussian kernel in pixels."),
    factor: int = typer.Option(2, help="Downsample: pooling factor."),
    m: Optional[int] = typer.Option(None, "--m", help="Project: number of random measurements.",
                                    show_default="half the data dimension"),
    projection_seed: int = typer.Option(0, "--projection-seed", help="Project: seed of the random matrix."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help=".npy file of the samples.",
                                          show_default="RUN/restored.npy"),
    grid: Optional[Path] = typer.Option(None, "--grid", help="Image data: PNG grid (measurement, samples, truth).",
                                        show_default="no grid"),
    truth: Optional[Path] = typer.Option(None, "--truth", help=".npy ground truth, drawn last in each grid row.",
                                         show_default="none"),
    ema: bool = typer.Option(True, "--ema/--no-ema", help="Use the EMA weights."),
) -> None:
    """Posterior samples of a trained run given a linear measurement (monge.inverse solvers).

    Writes (n, *shape) samples for one measurement, (N, n, *shape) for a batch of N.
    """
    _check_nfe_and_path(nfe, [checkpoint])
    from .run.checkpoint import run_dir_of
    from .limits import check_nfe
    from .outputs import check_output_file, write_array
    from .restore import as_batch, build_operator, load_array, restore, save_restore_grid
    from .run.load import load_model

    try:
        check_nfe(nfe)
        output = output if output is not None else run_dir_of(checkpoint) / "restored.npy"
        if output.suffix != ".npy":
            raise ValueError(f"-o needs a .npy path, got {output}")
        check_output_file(output)
        if grid is not None:
            if grid.suffix.lower() != ".png":
                raise ValueError(f"--grid needs a .png path, got {grid}")
            check_output_file(grid, "--grid")
        inputs = [p.resolve() for p in (input, mask, truth) if p is not None]
        if output.resolve() in inputs:
            raise ValueError(f"-o {output} would overwrite an input file; choose another output path")
        y = load_array(input, "--input")
        mask_t = load_array(mask, "--mask") if mask is not None else None
        model, cfg = load_model(checkpoint, ema=ema)
        shape = getattr(model, "shape", None)
        if shape is None:  # a checkpoint that does not record its sample shape: read the data
            from .data.sources import build_data

            shape = build_data(cfg.data)[1].shape
        shape = tuple(shape)
        op = build_operator(operator, shape, mask=mask_t, blur_std=blur_std, factor=factor, m=m,
                            seed=projection_seed)
        y, batched = as_batch(y, op.measurement_shape, "--input", f"a {operator} measurement of this run's data {shape}")
        truth_t = None
        if truth is not None:
            truth_t, _ = as_batch(load_array(truth, "--truth"), shape, "--truth", "this run's data")
            if truth_t.shape[0] != y.shape[0]:
                raise ValueError(f"--truth holds {truth_t.shape[0]} items, --input {y.shape[0]}")
        if grid is not None and len(shape) != 3:
            raise ValueError(f"--grid needs image data (C, H, W); this run's data has shape {shape}")
        x = restore(model, cfg, op, y, sigma=sigma, solver=solver, nfe=nfe, n=n, seed=seed)
        write_array(output, (x if batched else x[0]).cpu().numpy())
        typer.echo(f"wrote {n} samples for each of {y.shape[0]} measurements ({solver}, {nfe} NFE) to {output}")
        if grid is not None:
            save_restore_grid(op, y, x, grid, truth_t)
            typer.echo(f"wrote a grid (measurement, samples{', truth' if truth_t is not None else ''}) to {grid}")
    except _USER_ERRORS as err:
        _fail(err)


def _flow_maps(text: str | None) -> tuple[str, ...]:
    """The ``--flow-maps`` objectives, checked."""
    from .objectives import flow_map_objectives

    names = tuple(n.strip() for n in (text or "").split(",") if n.strip())
    bad = [n for n in names if n not in flow_map_objectives()]
    if bad or len(set(names)) != len(names):
        raise ValueError(f"--flow-maps must list distinct flow-map objectives ({', '.join(flow_map_objectives())}), got {text!r}")
    return names


def main() -> None:  # pragma: no cover
    app(prog_name="monge")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
