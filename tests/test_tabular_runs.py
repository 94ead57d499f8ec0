"""A run on a table: standardised training, samples in data units, held-out evaluation, moved data."""

import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from monge.cli import app
from monge.config import Config
from monge.generate import generate
from monge.run.checkpoint import load_checkpoint
from monge.run.load import load_model
from monge.train import Trainer

runner = CliRunner()


def _table(path, n=300, seed=0):
    """Two correlated columns in large, different units, plus a class column."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    rows = np.c_[1000 + 50 * a, -3 + 0.01 * (a + 0.3 * rng.normal(size=n)), (a > 0).astype(int)]
    np.savetxt(path, rows, delimiter=",", header="price,rate,cls", comments="", fmt="%.6f")
    return rows


def _config(tmp_path, data_file, **target):
    return Config.from_dict({
        "name": "table", "output_dir": str(tmp_path / "runs"),
        "data": {"source": "gaussian", "target": {"name": "csv", "path": str(data_file), "label_column": "cls",
                                                  "standardize": True, "holdout": 0.2, **target}},
        "coupling": "exact_ot", "model": {"name": "mlp", "hidden": 32, "depth": 2},
        "train": {"steps": 150, "batch_size": 64, "lr": 3e-3, "eval_samples": 60, "progress": False,
                  "checkpoint_every": 0},
        "sample": {"nfe": [8], "adaptive": False}})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("table")
    data_file = tmp / "data" / "table.csv"
    data_file.parent.mkdir()
    rows = _table(data_file)
    cfg = _config(tmp, data_file)
    trainer = Trainer(cfg)
    trainer.fit()
    return tmp, data_file, rows, trainer


def test_statistics_are_stored_and_match_the_training_rows(trained):
    _tmp, _, rows, trainer = trained
    tensors, _, state = load_checkpoint(trainer.checkpoint_path)
    assert state["data_shape"] == [2]
    held = len(trainer.target.held_out)
    assert held == 60 and len(trainer.target) == 240
    perm = torch.randperm(300, generator=torch.Generator().manual_seed(0))  # the split (holdout_seed 0)
    train_rows = rows[np.sort(perm[60:].numpy()), :2]
    np.testing.assert_allclose(tensors["data.target.mean"].numpy(), train_rows.mean(0), rtol=1e-6)
    np.testing.assert_allclose(tensors["data.target.std"].numpy(), train_rows.std(0), rtol=1e-5)


def test_samples_come_back_in_data_units(trained):
    tmp, _, _, trainer = trained
    model, cfg = load_model(trainer.checkpoint_path)
    z = generate(model, cfg, 2000, nfe=8, data_units=False).x
    x = generate(model, cfg, 2000, nfe=8).x
    assert torch.allclose(x, z * model.standardizer.std + model.standardizer.mean)
    assert abs(float(z[:, 0].mean())) < 0.3 and abs(float(z[:, 0].std()) - 1) < 0.3  # model space: ~N(0, 1)
    assert abs(float(x[:, 0].mean()) - 1000) < 15 and abs(float(x[:, 0].std()) - 50) < 15  # data units
    assert abs(float(x[:, 1].mean()) + 3) < 0.01
    corr = np.corrcoef(x.numpy().T)[0, 1]
    assert corr > 0.7  # the dependence between the columns is learnt, not just the marginals
    out = tmp / "s.csv"
    res = runner.invoke(app, ["sample", str(trainer.run_dir), "-n", "300", "--nfe", "8", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert out.read_text().splitlines()[0] == "price,rate"  # the table's header (the label column is no feature)
    cli = np.loadtxt(out, delimiter=",", skiprows=1)
    assert cli.shape == (300, 2) and abs(cli[:, 0].mean() - 1000) < 20


def test_the_trainers_model_samples_in_data_units(trained):
    _, _, _, trainer = trained
    x = generate(trainer.ema.model, trainer.config, 500, nfe=8).x
    z = generate(trainer.ema.model, trainer.config, 500, nfe=8, data_units=False).x
    assert torch.allclose(x, trainer.target.standardizer.inverse(z))
    assert abs(float(x[:, 0].mean()) - 1000) < 20


def test_generate_without_the_statistics_is_refused(trained):
    _, _, _, trainer = trained
    model, cfg = load_model(trainer.checkpoint_path)
    del model.standardizer
    with pytest.raises(ValueError, match="standardised data"):
        generate(model, cfg, 10)


def test_eval_scores_the_held_out_rows(trained):
    _, _, _, trainer = trained
    res = runner.invoke(app, ["eval", str(trainer.run_dir), "--nfe", "4", "-n", "100", "--no-adaptive", "--nll",
                              "--nll-n", "20"])
    assert res.exit_code == 0, res.output
    assert "60 held-out rows of table" in res.output


def test_a_run_whose_data_moved_still_samples(trained, tmp_path):
    _, data_file, _, trainer = trained
    run = tmp_path / "copy"
    shutil.copytree(trainer.run_dir, run)
    moved = tmp_path / "elsewhere.csv"
    shutil.move(data_file, moved)
    try:
        res = runner.invoke(app, ["sample", str(run), "-n", "50", "--nfe", "4", "-o", str(tmp_path / "s.npy")])
        assert res.exit_code == 0, res.output
        assert np.load(tmp_path / "s.npy").shape == (50, 2)
        # eval needs the data: the stored path and how to point at the new one
        res = runner.invoke(app, ["eval", str(run), "--nfe", "2", "-n", "50", "--no-adaptive"])
        assert res.exit_code == 2
        assert str(data_file) in res.output and "--data-path" in res.output and "Traceback" not in res.output
        res = runner.invoke(app, ["eval", str(run), "--nfe", "2", "-n", "50", "--no-adaptive", "--data-path",
                                  str(moved)])
        assert res.exit_code == 0, res.output
    finally:
        shutil.move(moved, data_file)


def test_vector_data_refuses_the_unet(tmp_path):
    data_file = tmp_path / "t.csv"
    _table(data_file, n=20)
    raw = _config(tmp_path, data_file).to_dict()
    raw["model"] = {"name": "unet"}
    with pytest.raises(ValueError, match=r"UNet shape must be \(C, H, W\).*got \(2,\); use the MLP for vectors"):
        Config.from_dict(raw)


def test_training_evaluation_compares_with_the_held_out_rows(trained, monkeypatch):
    import monge.run.evaluation as train_module

    _, _, _, trainer = trained
    seen = {}
    monkeypatch.setattr(train_module, "evaluate_field", lambda model, source, target, **k: seen.setdefault("t", target))
    trainer.evaluate()
    assert seen["t"] is trainer.target.held_out
