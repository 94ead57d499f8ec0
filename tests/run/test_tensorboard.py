"""TensorBoard logs of a run (``train.tensorboard: true``): event files in ``RUN/tb`` with the CSV's
scalars, the gradient norm, the coupling diagnostics, the evaluation rows and a sample figure."""

import csv

import pytest

from monge.config import ConfigError
from monge.couplings.diagnostics import DIAGNOSTICS
from monge.run.logs import TENSORBOARD_DIR, TensorBoardLog
from monge.train import Trainer

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def _read(log_dir):
    acc = event_accumulator.EventAccumulator(str(log_dir), size_guidance={event_accumulator.SCALARS: 0,
                                                                          event_accumulator.IMAGES: 0})
    acc.Reload()
    return acc


def test_a_run_writes_the_csv_scalars_diagnostics_and_evaluations(tiny_config):
    cfg = tiny_config(train__tensorboard=True, train__eval_every=20)
    result = Trainer(cfg).fit()
    acc = _read(cfg.run_dir / TENSORBOARD_DIR)
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/seconds", "train/grad_norm"} <= tags
    assert {f"coupling/{k}" for k in DIAGNOSTICS} & tags  # exact_ot reports its pairing diagnostics
    assert {"eval/w2/euler_nfe1", "eval/w2/euler_nfe2", "eval/mmd/euler_nfe2"} <= tags
    rows = list(csv.DictReader((cfg.run_dir / "log.csv").open()))
    logged = acc.Scalars("train/loss")
    assert [e.step for e in logged] == [int(r["step"]) for r in rows]
    assert [e.value for e in logged] == pytest.approx([float(r["loss"]) for r in rows], rel=1e-5)
    assert all(e.value > 0 for e in acc.Scalars("train/grad_norm"))
    w2 = acc.Scalars("eval/w2/euler_nfe2")
    assert [e.step for e in w2] == [20, 40]  # eval_every=20, and the final evaluation
    final = next(r for r in result.eval_rows if r.nfe == 2)
    assert w2[-1].value == pytest.approx(final.w2, rel=1e-5)
    assert [e.step for e in acc.Images("eval/samples")] == [20, 40]


def test_csv_stays_the_default(tiny_config):
    cfg = tiny_config()
    Trainer(cfg).fit()
    assert (cfg.run_dir / "log.csv").is_file() and not (cfg.run_dir / TENSORBOARD_DIR).exists()


def test_resume_appends_and_a_fresh_run_replaces(tiny_config):
    Trainer(tiny_config(train__tensorboard=True, train__steps=20)).fit()
    cfg = tiny_config(train__tensorboard=True, train__steps=40)
    Trainer(cfg).fit(resume=True)
    assert [e.step for e in _read(cfg.run_dir / TENSORBOARD_DIR).Scalars("train/loss")] == [10, 20, 30, 40]
    Trainer(cfg).fit(overwrite="replace")
    assert [e.step for e in _read(cfg.run_dir / TENSORBOARD_DIR).Scalars("train/loss")] == [10, 20, 30, 40]


def test_a_disabled_log_writes_nothing(tmp_path):
    log = TensorBoardLog(tmp_path / "tb", enabled=False)
    log.scalars(1, {"loss": 1.0}, "train")
    log.close()
    assert not (tmp_path / "tb").exists()


def test_missing_package_names_the_extra(tiny_config, monkeypatch):
    real = __import__("importlib.util").util.find_spec
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'monge\[tensorboard\]'"):
        Trainer(tiny_config(train__tensorboard=True))


def test_an_image_run_logs_a_grid_of_samples(tiny_config):
    digits = {"source": "gaussian", "target": {"name": "digits", "size": 8}}
    cfg = tiny_config(train__tensorboard=True, train__steps=10, data=digits, coupling="independent")
    Trainer(cfg).fit()
    image = _read(cfg.run_dir / TENSORBOARD_DIR).Images("eval/samples")[-1]
    assert image.step == 10 and image.width > 100 and image.height > 100


def test_the_command_line_flag(recipe):
    from typer.testing import CliRunner

    from monge.cli import app

    res = CliRunner().invoke(app, ["train", str(recipe), "train.steps=10", "--no-progress", "--tensorboard"])
    assert res.exit_code == 0, res.output
    tb = recipe.parent / "runs" / "tiny" / TENSORBOARD_DIR
    assert "train/loss" in _read(tb).Tags()["scalars"]
