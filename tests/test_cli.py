import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from monge.cli import app

runner = CliRunner()


def test_train_sample_eval_end_to_end(recipe, tmp_path):
    res = runner.invoke(app, ["train", str(recipe), "train.steps=20", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "trained 20 steps" in res.output
    run = tmp_path / "runs" / "tiny"

    res = runner.invoke(app, ["train", str(recipe), "--resume", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "trained 10 steps (now at step 30 of 30)" in res.output  # steps of this invocation
    assert "train.steps: 20 -> 30" in res.output  # the changed setting is reported

    out = tmp_path / "s.npy"
    res = runner.invoke(app, ["sample", str(run), "--nfe", "4", "--sampler", "heun", "-n", "50", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert np.load(out).shape == (50, 2) and np.isfinite(np.load(out)).all()

    table = tmp_path / "eval.md"
    res = runner.invoke(app, ["eval", str(run), "--nfe", "1,2", "-n", "100", "--no-adaptive", "-o", str(table)])
    assert res.exit_code == 0, res.output
    assert "| euler | 2 |" in res.output and table.read_text().startswith("**tiny")


@pytest.mark.parametrize(
    "args,msg",
    [
        (["train", "missing.yaml"], "config file not found"),
        (["train", "{recipe}", "coupling.name=ot"], "valid choices"),
        (["train", "{recipe}", "train.steps=abc"], "expected an integer"),
        (["sample", "{tmp}/nothing", "-o", "{tmp}/x.npy"], "checkpoint not found"),
        (["eval", "{tmp}/nothing"], "checkpoint not found"),
    ],
)
def test_clear_errors(recipe, tmp_path, args, msg):
    args = [a.format(recipe=recipe, tmp=tmp_path) for a in args]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert msg in res.output and "Traceback" not in res.output


def test_sample_bad_nfe_and_sampler(recipe, tmp_path):
    assert runner.invoke(app, ["train", str(recipe), "--no-progress"]).exit_code == 0
    run = str(tmp_path / "runs" / "tiny")
    res = runner.invoke(app, ["sample", run, "--nfe", "0", "-o", str(tmp_path / "x.npy")])
    assert res.exit_code == 2 and "nfe" in res.output
    res = runner.invoke(app, ["sample", run, "--sampler", "rk5", "-o", str(tmp_path / "x.npy")])
    assert res.exit_code == 2 and "rk4" in res.output
    res = runner.invoke(app, ["eval", run, "--nfe", "1,x"])
    assert res.exit_code == 2 and "comma-separated" in res.output


def test_corrupt_checkpoint_is_reported(tmp_path):
    bad = tmp_path / "checkpoint.safetensors"
    bad.write_bytes(b"\x00" * 64)
    res = runner.invoke(app, ["sample", str(bad), "-o", str(tmp_path / "x.npy")])
    assert res.exit_code == 2 and "safetensors" in res.output


def test_demo_writes_report(tmp_path):
    out = tmp_path / "demo"
    res = runner.invoke(app, ["demo", "-o", str(out), "--steps", "30", "--batch-size", "64", "--no-progress",
                              "--source", "gaussian", "--target", "8gaussians"])
    assert res.exit_code == 0, res.output
    report = (out / "report.md").read_text()
    assert "OT-CFM (exact_ot)" in report and "I-CFM (independent)" in report
    assert "**Mode mixture by NFE**" in report  # 8gaussians is a mixture with known modes
    assert "Negative log-likelihood of 500 fresh 8gaussians points" in report  # gaussian source: closed form
    for png in ("w2_vs_nfe.png", "samples.png", "trajectories.png"):
        assert (out / png).stat().st_size > 1000


def test_eval_compares_several_checkpoints(recipe, tmp_path):
    for coupling in ("exact_ot", "independent"):
        args = ["train", str(recipe), f"name={coupling}", f"coupling.name={coupling}", "--no-progress"]
        assert runner.invoke(app, args).exit_code == 0
    runs = [str(tmp_path / "runs" / c) for c in ("exact_ot", "independent")]
    png = tmp_path / "cmp.png"
    res = runner.invoke(app, ["eval", *runs, "--nfe", "1,2", "-n", "100", "--plot", str(png)])
    assert res.exit_code == 0, res.output
    assert "**W2 by NFE**" in res.output and "| exact_ot | independent |" in res.output
    assert png.stat().st_size > 1000
    # the coupling diagnostics of the training logs: OT shortens the pairs, independent does not
    assert "Coupling diagnostics" in res.output
    row = {line.split("|")[1].strip(): line.split("|")[2:] for line in res.output.splitlines()
           if line.startswith("| exact_ot |") or line.startswith("| independent |")}
    assert float(row["exact_ot"][0]) < 0.9 and float(row["independent"][0]) == 1.0
    assert "plan_entropy" in res.output  # a permutation: 0; the independent plan: 1
    assert float(row["exact_ot"][4]) == 0.0 and float(row["independent"][4]) == 1.0


def test_eval_refuses_runs_of_different_tasks(recipe, tmp_path):
    assert runner.invoke(app, ["train", str(recipe), "--no-progress"]).exit_code == 0
    args = ["train", str(recipe), "name=other", "data.target=circles", "--no-progress"]
    assert runner.invoke(app, args).exit_code == 0
    res = runner.invoke(app, ["eval", str(tmp_path / "runs" / "tiny"), str(tmp_path / "runs" / "other")])
    assert res.exit_code == 2 and "different tasks" in res.output


def test_demo_unknown_coupling(tmp_path):
    res = runner.invoke(app, ["demo", "-o", str(tmp_path), "--couplings", "independent,nope"])
    assert res.exit_code == 2 and "valid choices" in res.output


def test_image_recipe_trains_and_samples_a_png_grid(tmp_path, train_tiny_digits):
    """digits (8x8) through the MLP: train, sample to .npy and a PNG grid; --grid on 2D data fails."""
    train_tiny_digits(tmp_path)
    out, png = tmp_path / "s.npy", tmp_path / "grid.png"
    res = runner.invoke(app, ["sample", str(tmp_path / "runs" / "dig"), "-n", "12", "-o", str(out), "--grid", str(png)])
    assert res.exit_code == 0, res.output
    assert np.load(out).shape == (12, 1, 8, 8)
    from PIL import Image

    assert Image.open(png).size[0] > 8
    res = runner.invoke(
        app, ["sample", str(tmp_path / "runs" / "dig"), "-o", str(out), "--grid", str(tmp_path / "g.jpg")]
    )
    assert res.exit_code == 2 and ".png" in res.output


def test_class_conditional_unet_trains_and_samples_each_class(tmp_path):
    """A U-Net with num_classes on digits: train with label dropout, sample one class, all classes
    with guidance; a label for an unconditional run, or guidance without a label, is refused."""
    path = tmp_path / "cond.yaml"
    path.write_text(yaml.safe_dump({
        "name": "cond", "output_dir": str(tmp_path / "runs"),
        "data": {"source": "gaussian", "target": {"name": "digits", "size": 8}},
        "model": {"name": "unet", "channels": [8, 16], "num_classes": 10},
        "train": {"steps": 3, "batch_size": 8, "eval_samples": 20, "checkpoint_every": 0},
        "sample": {"nfe": [1], "adaptive": False},
    }))
    res = runner.invoke(app, ["train", str(path), "--no-progress"])
    assert res.exit_code == 0, res.output
    run, out = str(tmp_path / "runs" / "cond"), tmp_path / "s.npy"
    res = runner.invoke(app, ["sample", run, "-n", "4", "--nfe", "2", "--class", "3", "-o", str(out)])
    assert res.exit_code == 0, res.output
    three = np.load(out)
    res = runner.invoke(
        app, ["sample", run, "-n", "20", "--nfe", "2", "--class", "all", "--guidance", "2", "-o", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert np.load(out).shape == (20, 1, 8, 8) and three.shape == (4, 1, 8, 8)
    res = runner.invoke(app, ["sample", run, "--guidance", "2", "-o", str(out)])
    assert res.exit_code == 2 and "needs a class label" in res.output
    for weight in ("inf", "1e30", "nan"):  # refused before sampling: no NaN or huge samples written
        res = runner.invoke(app, ["sample", run, "--class", "3", "--guidance", weight, "-o", str(tmp_path / "g.npy")])
        assert res.exit_code == 2 and "--guidance must be a finite weight" in res.output, res.output
    assert not (tmp_path / "g.npy").exists()
    res = runner.invoke(app, ["sample", run, "--class", "ten", "-o", str(out)])
    assert res.exit_code == 2 and "'all'" in res.output


def _semidiscrete_recipe(tmp_path, nfe):
    path = tmp_path / "sd.yaml"
    path.write_text(yaml.safe_dump({
        "name": "sd", "output_dir": str(tmp_path / "runs"),
        "data": {"source": "gaussian", "target": "8gaussians"},
        "coupling": {"name": "semidiscrete_ot", "n_targets": 16, "tol": 0.3, "max_iter": 300},
        "model": {"name": "mlp", "hidden": 32, "depth": 2},
        "train": {"steps": 10, "batch_size": 32, "eval_samples": 50, "checkpoint_every": 0},
        "sample": {"nfe": nfe, "adaptive": False},
    }))
    return path


def test_sample_with_step_schedules_and_the_expressway(tmp_path):
    path = _semidiscrete_recipe(tmp_path, [1])
    assert runner.invoke(app, ["train", str(path), "--no-progress"]).exit_code == 0
    run, out = tmp_path / "runs" / "sd", tmp_path / "s.npy"
    for extra, expect in ((["--sampler", "dpm_solver_pp", "--timesteps", "karras"], "dpm_solver_pp, karras steps"),
                          (["--sampler", "euler", "--timesteps", "optimized"], "optimized steps"),
                          (["--sampler", "euler", "--timesteps", "optimized_decoupled"], "optimized_decoupled steps"),
                          (["--expressway", "0.5", "--nfe", "2"], "expressway from t=0.5, 2 NFE")):
        res = runner.invoke(app, ["sample", str(run), "-n", "20", "--nfe", "4", "-o", str(out), *extra])
        assert res.exit_code == 0, res.output
        assert expect in res.output and np.isfinite(np.load(out)).all()
    assert (run / "timesteps.safetensors").is_file()
    res = runner.invoke(app, ["sample", str(run), "--timesteps", "nope", "-o", str(out)])
    assert res.exit_code == 2 and "valid choices" in res.output


def test_reflow_command_runs_end_to_end(recipe, tmp_path):
    assert runner.invoke(app, ["train", str(recipe), "--no-progress"]).exit_code == 0
    res = runner.invoke(app, ["reflow", str(tmp_path / "runs" / "tiny"), "--n-pairs", "64", "--steps", "5",
                              "--sampler", "rk4", "--nfe", "8", "--no-progress"])
    assert res.exit_code == 0, res.output
    new = tmp_path / "runs" / "tiny-reflow"
    assert "reflowed run" in res.output and (new / "checkpoint.safetensors").is_file()
    assert (new / "reflow_pairs.safetensors").is_file()
    res = runner.invoke(app, ["reflow", str(tmp_path / "nothing")])
    assert res.exit_code == 2 and "checkpoint not found" in res.output


def test_eval_of_a_semidiscrete_run_adds_expressway_rows(tmp_path):
    path = _semidiscrete_recipe(tmp_path, [1, 2])
    res = runner.invoke(app, ["train", str(path), "--no-progress"])
    assert res.exit_code == 0 and "| expressway@0.5+euler | 2 |" in res.output, res.output
    res = runner.invoke(app, ["eval", str(tmp_path / "runs" / "sd"), "--nfe", "2", "-n", "50", "--no-adaptive"])
    assert res.exit_code == 0 and "| expressway@0.5+euler | 2 |" in res.output, res.output


def test_fit_ot_fits_caches_and_reports(recipe, tmp_path):
    res = runner.invoke(app, ["fit-ot", str(recipe), "coupling=semidiscrete_ot", "coupling.n_targets=24",
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    run = tmp_path / "runs" / "tiny"
    assert (
        "24 targets of shape (2,), epsilon 0, fitted in" in res.output and (run / "semidiscrete.safetensors").is_file()
    )
    assert "fresh source samples: RMS relative" in res.output and "empty cells" in res.output
    before = (run / "semidiscrete.safetensors").read_bytes()
    res = runner.invoke(app, ["fit-ot", str(recipe), "coupling=semidiscrete_ot", "coupling.n_targets=24"])
    assert res.exit_code == 0 and "loaded" in res.output
    assert (run / "semidiscrete.safetensors").read_bytes() == before
    res = runner.invoke(app, ["fit-ot", str(recipe), "coupling=semidiscrete_ot", "coupling.n_targets=30"])
    assert res.exit_code == 2 and "24 targets of shape (2,), but the data gives 30" in res.output
    res = runner.invoke(app, ["fit-ot", str(recipe), "coupling=semidiscrete_ot", "coupling.n_targets=30", "--refit"])
    assert res.exit_code == 0 and "30 targets" in res.output, res.output
    res = runner.invoke(app, ["fit-ot", str(tmp_path)])
    assert res.exit_code == 2 and "holds no config.yaml" in res.output


def test_train_refuses_an_existing_run_and_overwrite_keeps_a_backup(recipe, tmp_path):
    run = tmp_path / "runs" / "tiny"
    res = runner.invoke(app, ["train", str(recipe), "train.steps=20", "--no-progress"])
    assert res.exit_code == 0, res.output
    before = (run / "checkpoint.safetensors").read_bytes()

    res = runner.invoke(app, ["train", str(recipe), "train.steps=3", "--no-progress"])
    assert res.exit_code == 2 and "already holds a run" in res.output and "--overwrite" in res.output
    assert (run / "checkpoint.safetensors").read_bytes() == before

    res = runner.invoke(app, ["train", str(recipe), "--resume", "--overwrite", "--no-progress"])
    assert res.exit_code == 2 and "exclude each other" in res.output

    res = runner.invoke(app, ["train", str(recipe), "train.steps=3", "--overwrite", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "trained 3 steps" in res.output and "was moved to" in res.output
    (backup,) = (tmp_path / "runs").glob("tiny.bak-*")
    assert (backup / "checkpoint.safetensors").read_bytes() == before


def test_resume_with_a_changed_coupling_is_refused(recipe, tmp_path):
    assert runner.invoke(app, ["train", str(recipe), "train.steps=10", "--no-progress"]).exit_code == 0
    res = runner.invoke(app, ["train", str(recipe), "--resume", "coupling=independent", "--no-progress"])
    assert res.exit_code == 2
    assert "cannot change on resume" in res.output and "coupling=" in res.output


def test_reflow_refuses_to_write_over_its_source(recipe, tmp_path):
    run = tmp_path / "runs" / "tiny"
    assert runner.invoke(app, ["train", str(recipe), "train.steps=10", "--no-progress"]).exit_code == 0
    before = (run / "checkpoint.safetensors").read_bytes()
    for out in (run, run / "checkpoint.safetensors"):
        res = runner.invoke(app, ["reflow", str(out), "--out", str(run), "--n-pairs", "20", "--no-progress"])
        assert res.exit_code == 2 and "would replace its source run" in res.output
    assert (run / "checkpoint.safetensors").read_bytes() == before
    assert not (run / "reflow_pairs.safetensors").exists()
    other = tmp_path / "runs" / "other"
    other.mkdir()
    (other / "log.csv").write_text("step,loss\n")
    (other / "checkpoint.safetensors").write_bytes(b"a run with a checkpoint")
    res = runner.invoke(app, ["reflow", str(run), "--out", str(other), "--n-pairs", "20", "--no-progress"])
    assert res.exit_code == 2 and "already holds a run" in res.output
    assert (other / "log.csv").read_text() == "step,loss\n"


def test_sample_and_eval_with_continuous_conditions(tmp_path):
    path = tmp_path / "cont.yaml"
    path.write_text(yaml.safe_dump({
        "name": "cont", "output_dir": str(tmp_path / "runs"),
        "data": {"source": "8gaussians", "target": {"name": "conditional_toy", "set": "moons", "condition": "x"}},
        "coupling": {"name": "conditional_ot", "condition": "continuous", "weight": 5.0},
        "model": {"name": "mlp", "hidden": 16, "depth": 1, "cond_dim": 1},
        "train": {"steps": 10, "batch_size": 32, "eval_samples": 50, "checkpoint_every": 10},
        "sample": {"nfe": [1], "adaptive": False},
    }))
    assert runner.invoke(app, ["train", str(path), "--no-progress"]).exit_code == 0
    run = str(tmp_path / "runs" / "cont")
    out = tmp_path / "s.npy"
    res = runner.invoke(app, ["sample", run, "--condition", "0.5", "-n", "50", "--nfe", "1", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert np.load(out).shape == (50, 2)
    res = runner.invoke(app, ["sample", run, "--condition", "held-out", "-n", "30", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert np.load(out).shape == (30, 2) and np.load(tmp_path / "s.conditions.npy").shape == (30, 1)
    assert "wrote their conditions to" in res.output
    csv = tmp_path / "c.csv"
    csv.write_text("\n".join(str(v) for v in np.linspace(-2, 2, 7)))
    res = runner.invoke(app, ["sample", run, "--condition", str(csv), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert np.load(out).shape == (7, 2) and "wrote 7 samples" in res.output
    for args, msg in [([], "--condition"), (["--condition", "1,2"], "1 value"), (["--condition", "nan"], "NaN"),
                      (["--condition", "abc"], "comma-separated"),
                      (["--condition", "1", "--class", "0"], "not a class"),
                      (["--condition", str(tmp_path / "none.npy")], "not found")]:
        res = runner.invoke(app, ["sample", run, *args, "-o", str(out)])
        assert res.exit_code != 0 and msg in res.output, (args, res.output)
    res = runner.invoke(app, ["eval", run, "--nfe", "1", "-n", "50", "--no-adaptive"])
    assert res.exit_code == 0, res.output
    assert "**cont: 8gaussians" in res.output


def test_outputs_go_to_the_run_and_every_path_is_printed(recipe, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(app, ["train", str(recipe), "train.steps=5", "--no-progress"]).exit_code == 0
    run = tmp_path / "runs" / "tiny"
    res = runner.invoke(app, ["sample", str(run), "-n", "20"])
    assert res.exit_code == 0, res.output
    assert np.load(run / "samples.npy").shape == (20, 2) and f"to {run / 'samples.npy'}" in res.output
    plot = tmp_path / "runs" / "w2.png"
    res = runner.invoke(app, ["eval", str(run), "--nfe", "1", "-n", "50", "--no-adaptive", "--plot", str(plot)])
    assert res.exit_code == 0, res.output
    assert plot.is_file() and f"wrote the W2-vs-NFE plot to {plot}" in res.output
    res = runner.invoke(app, ["sample", str(tmp_path / "runs")])  # a directory of runs, not a run
    assert res.exit_code == 2 and "holds 1 run (" in res.output and str(run) in res.output
