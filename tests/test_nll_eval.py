"""``monge eval --nll``, ``sample.nll`` in training, held-out data and source densities."""

from __future__ import annotations

import math

import pytest
import torch
import yaml
from typer.testing import CliRunner

from monge.cli import app
from monge.config import Config, ConfigError
from monge.data.digits import load_digits
from monge.data.sources import build_source
from monge.evaluate import evaluate_nll, format_nll, held_out_target

runner = CliRunner()


def _recipe(tmp_path, **sample):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({
        "name": "tiny",
        "output_dir": str(tmp_path / "runs"),
        "data": {"source": "gaussian", "target": "moons"},
        "model": {"name": "mlp", "hidden": 32, "depth": 2},
        "train": {"steps": 20, "batch_size": 32, "eval_samples": 20, "checkpoint_every": 0},
        "sample": {"nfe": [2], "adaptive": False, **sample},
    }))
    return path


def test_train_logs_nll_and_eval_reports_it(tmp_path):
    res = runner.invoke(app, ["train", str(_recipe(tmp_path, nll=True)), "--no-progress"])
    assert res.exit_code == 0, res.output
    run = tmp_path / "runs" / "tiny"
    assert "Negative log-likelihood" in (run / "eval.md").read_text()
    assert (run / "nll.csv").read_text().startswith("step,nll,")
    res = runner.invoke(app, ["eval", str(run), "--nfe", "1", "-n", "50", "--no-adaptive", "--nll", "--nll-n", "20"])
    assert res.exit_code == 0, res.output
    assert "NLL (nats)" in res.output and "fresh target samples" in res.output


def test_nll_is_off_by_default_and_needs_a_source_density(tmp_path):
    assert Config().sample.nll is False
    with pytest.raises(ConfigError, match="sample.nll"):
        Config.from_dict({"data": {"source": "moons", "target": "circles"}, "sample": {"nll": True}})


def test_source_log_densities_are_the_closed_forms():
    x = torch.randn(6, 2, dtype=torch.float64)
    g = build_source("gaussian").log_prob(x)
    assert torch.allclose(g, -0.5 * x.pow(2).sum(1) - math.log(2 * math.pi))
    assert torch.allclose(
        build_source("8gaussians").log_prob(x), build_source("8gaussians").log_prob(x.float()).double(), atol=1e-5
    )
    with pytest.raises(ValueError, match="closed-form"):
        build_source("moons").log_prob(x)


def test_digits_have_no_held_out_split_and_score_in_bits_per_dim():
    digits = load_digits(8)
    data, what, fresh = held_out_target(build_source({"name": "digits", "size": 8}), digits)
    assert data is digits and "no held-out split" in what and not fresh
    source = build_source("gaussian", like=digits)
    res = evaluate_nll(lambda x, t: -0.0 * x, source, digits, n=8, description=what)  # identity flow
    # identity flow: log p(x) = log N(x; 0, I), so bpd = -(log N + D log 2)/(D log 2) + 8
    assert res.divergence == "exact" and res.bpd is not None and math.isfinite(res.bpd)
    assert "bits/dim" in format_nll({"id": res})
