"""A run's own files: no command writes an output over them; a run stopped before its first
checkpoint starts again without --overwrite."""

import hashlib
import json
import socket

import pytest
from typer.testing import CliRunner

from monge.cli import app
from monge.run.checkpoint import CHECKPOINT_NAME, CheckpointError
from monge.run.rundir import (
    DEMO_MARKER,
    LOCK_NAME,
    RunExistsError,
    RunFileError,
    check_not_run_file,
    claim_demo_dir,
    run_file_role,
)
from monge.train import Trainer

runner = CliRunner()


def _digest(folder):
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from monge.config import Config

    folder = tmp_path_factory.mktemp("runfiles")
    cfg = Config.from_dict({
        "name": "own", "output_dir": str(folder / "runs"), "data": {"source": "gaussian", "target": "moons"},
        "model": {"name": "mlp", "hidden": 8, "depth": 1},
        "train": {"steps": 3, "batch_size": 8, "eval_samples": 20, "progress": False, "checkpoint_every": 0},
        "sample": {"nfe": [1], "adaptive": False}})
    Trainer(cfg).fit()
    (cfg.run_dir.parent / "link-to-ckpt.npy").symlink_to(cfg.run_dir / CHECKPOINT_NAME)
    return cfg.run_dir


def test_the_names_of_every_run_file_are_covered(tmp_path):
    """The file names the modules write into a run directory are all recognised as the run's own."""
    from monge.couplings.maps import CLASS_MAPS_FILE, FIT_STATE_FILE, MAP_FILE, FitStates
    from monge.couplings.reflow import PAIRS_NAME
    from monge.generate import TIMESTEPS_FILE
    from monge.latent import _cache_path

    (tmp_path / "config.yaml").write_text("name: x\n")
    names = [CHECKPOINT_NAME, "log.csv", "eval.md", "eval.csv", "nll.csv", "config.yaml", LOCK_NAME, MAP_FILE,
             CLASS_MAPS_FILE, FIT_STATE_FILE, FitStates(tmp_path).path("class3").name, TIMESTEPS_FILE, PAIRS_NAME,
             f".{CHECKPOINT_NAME}.abc123.tmp", _cache_path(tmp_path, "fp", (3, 8, 8)).name]
    for name in names:
        assert run_file_role(tmp_path / name) is not None, name
    assert run_file_role(tmp_path / "samples.npy") is None
    assert run_file_role(tmp_path.parent / "elsewhere" / "config.yaml") is None  # not a run directory


@pytest.mark.parametrize("args", [
    ["sample", "{run}", "-n", "5", "-o", "{run}/checkpoint.safetensors"],
    ["sample", "{run}", "-n", "5", "-o", "{run}/log.csv"],
    ["sample", "{run}", "-n", "5", "-o", "{run}/semidiscrete.safetensors"],  # a cache that does not exist yet
    ["sample", "{run}", "-n", "5", "-o", "{run}/nll.csv"],
    ["eval", "{run}", "-n", "20", "--nfe", "1", "--no-adaptive", "-o", "{run}/config.yaml"],
    ["eval", "{run}", "-n", "20", "--nfe", "1", "--no-adaptive", "--csv", "{run}/eval.csv"],
    ["eval", "{run}", "-n", "20", "--nfe", "1", "--no-adaptive", "--plot", "{run}/timesteps.safetensors"],
    ["restore", "{run}", "--operator", "denoise", "--input", "{run}/y.npy", "-o", "{run}/../link-to-ckpt.npy"],
    ["reflow", "{run}", "--n-pairs", "8", "--out", "{run}/log.csv"],
])
def test_outputs_onto_a_runs_own_files_are_refused(trained, args):
    before = _digest(trained)
    res = runner.invoke(app, [a.format(run=trained) for a in args])
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.output
    assert "which monge writes itself; write elsewhere, e.g." in lines[0]
    assert _digest(trained) == before


def test_outputs_named_like_run_files_outside_a_run_are_written(tmp_path):
    """A user's folder with ``-o eval.md`` in it is no run: ``--csv eval.csv`` beside it is written."""
    from monge.outputs import check_output_file, write_text

    write_text(tmp_path / "eval.md", "table\n")
    assert check_output_file(tmp_path / "eval.csv") == tmp_path / "eval.csv"
    (tmp_path / "log.csv").write_text("step\n")  # now it holds a training log: a run (or what one left)
    with pytest.raises(RunFileError, match="its evaluations"):
        check_output_file(tmp_path / "eval.csv")


def test_a_link_to_a_run_file_is_refused_and_the_suggestion_is_safe(trained, tmp_path):
    link = tmp_path / "samples.npy"
    link.symlink_to(trained / CHECKPOINT_NAME)
    with pytest.raises(RunFileError, match=f"its checkpoint.*e.g. -o {trained / 'samples.npy'}"):
        check_not_run_file(link, "-o", trained / "samples.npy")
    with pytest.raises(RunFileError, match="eval-output.md"):  # no suggestion given: one beside it
        check_not_run_file(trained / "eval.md")


# -- a run killed before its first checkpoint ------------------------------------------------------

def _killed_before_first_checkpoint(tiny_config):
    cfg = tiny_config(name="early", train__steps=4, train__checkpoint_every=0, train__log_every=1)
    cfg.run_dir.mkdir(parents=True)
    (cfg.run_dir / "config.yaml").write_text(cfg.to_yaml())
    (cfg.run_dir / "log.csv").write_text("step,loss\n1,0.5\n2,0.4\n")
    dead_pid = 2**22 + 12345  # above any pid_max: no such process
    (cfg.run_dir / LOCK_NAME).write_text(json.dumps({"pid": dead_pid, "host": socket.gethostname()}))
    return cfg


def test_a_run_killed_before_its_first_checkpoint_starts_again_without_overwrite(tiny_config, capsys):
    cfg = _killed_before_first_checkpoint(tiny_config)
    result = Trainer(cfg).fit()
    assert result.step == 4
    err = capsys.readouterr().err
    assert "stopped before its first checkpoint" in err and "removed log.csv" in err
    assert len((cfg.run_dir / "log.csv").read_text().splitlines()) == 5  # the new log, from step 1


def test_resume_without_a_checkpoint_names_the_command_that_starts_it(tiny_config):
    cfg = _killed_before_first_checkpoint(tiny_config)
    with pytest.raises(CheckpointError, match="no checkpoint yet.*stopped before its first one.*without --resume"):
        Trainer(cfg).fit(resume=True)
    assert (cfg.run_dir / "log.csv").read_text().startswith("step,loss\n1,0.5")  # nothing removed


def test_a_run_with_a_checkpoint_still_needs_resume_or_overwrite(tiny_config):
    cfg = tiny_config(name="kept", train__steps=2)
    Trainer(cfg).fit()
    with pytest.raises(RunExistsError, match="already holds a run"):
        Trainer(cfg).fit()


# -- the demo replaces only its own runs -------------------------------------------------------------

def test_the_demo_does_not_replace_runs_it_did_not_write(trained, tmp_path):
    before = _digest(trained)
    with pytest.raises(RunExistsError, match=r"holds runs the demo did not write \(own\)"):
        claim_demo_dir(trained.parent, ["independent", "own"])
    assert _digest(trained) == before and not (trained.parent / DEMO_MARKER).exists()
    mine = claim_demo_dir(tmp_path / "demo", ["independent"])
    (mine / "independent").mkdir()
    (mine / "independent" / "log.csv").write_text("step\n")
    assert claim_demo_dir(mine, ["independent"]) == mine  # a rerun replaces its own runs
