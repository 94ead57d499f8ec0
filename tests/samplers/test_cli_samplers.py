"""Every sampler under the same name in recipes, ``monge sample`` and ``monge eval``."""

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from monge.cli import app
from monge.config import ConfigError, load_config
from monge.samplers import SAMPLERS

runner = CliRunner()


@pytest.fixture
def run(recipe, tmp_path):
    res = runner.invoke(app, ["train", str(recipe), "train.steps=20", "--no-progress"])
    assert res.exit_code == 0, res.output
    return tmp_path / "runs" / "tiny"


@pytest.mark.parametrize("sampler", ["ddim", "dpm_solver_pp", "unipc", "heun_edm", "euler_maruyama", "rk4"])
def test_eval_with_any_sampler(run, sampler):
    res = runner.invoke(app, ["eval", str(run), "--sampler", sampler, "--nfe", "5", "-n", "60", "--no-adaptive"])
    assert res.exit_code == 0, res.output
    # rk4: one step of 4; heun_edm: 3 steps, whose first (out of alpha = 0 on the linear path) and
    # last (into sigma = 0) are Euler steps of one evaluation
    nfe = {"rk4": 4, "heun_edm": 4}.get(sampler, 5)
    assert f"| {sampler} | {nfe} |" in res.output


def test_eval_ddim_matches_sample_ddim_grid_cost(run, tmp_path):
    """``monge sample`` and ``monge eval`` turn the NFE into steps by the same registered cost."""
    out = tmp_path / "d.npy"
    res = runner.invoke(app, ["sample", str(run), "--sampler", "dpm_solver_pp_3m", "--nfe", "5", "-n", "30",
                              "-o", str(out)])
    assert res.exit_code == 0 and "5 NFE" in res.output, res.output
    res = runner.invoke(app, ["eval", str(run), "--sampler", "dpm_solver_pp_3m", "--nfe", "5", "-n", "30",
                              "--no-adaptive"])
    assert res.exit_code == 0 and "| dpm_solver_pp_3m | 5 |" in res.output, res.output


def test_sample_timesteps_flag(run, tmp_path):
    out = tmp_path / "s.npy"
    res = runner.invoke(
        app,
        ["sample", str(run), "--sampler", "unipc", "--timesteps", "karras", "--nfe", "4", "-n", "20", "-o", str(out)],
    )
    assert res.exit_code == 0, res.output
    assert "unipc, karras steps, 4 NFE" in res.output and np.load(out).shape == (20, 2)
    res = runner.invoke(app, ["sample", str(run), "--sampler", "dopri5", "--timesteps", "uniform", "-o", str(out)])
    assert res.exit_code == 2 and "adaptive" in res.output


def test_recipe_with_a_diffusion_sampler_trains_and_evaluates(recipe, tmp_path):
    raw = yaml.safe_load(recipe.read_text())
    raw["sample"] = {"sampler": "dpm_solver_pp", "nfe": [2, 3], "adaptive": False}
    raw["train"]["steps"] = 10
    recipe.write_text(yaml.safe_dump(raw))
    assert load_config(recipe).sample.sampler == "dpm_solver_pp"
    res = runner.invoke(app, ["train", str(recipe), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "| dpm_solver_pp | 2 |" in res.output and "| dpm_solver_pp | 3 |" in res.output
    res = runner.invoke(app, ["eval", str(tmp_path / "runs" / "tiny"), "--sampler", "unipc_bh1", "--nfe", "2",
                              "-n", "40", "--no-adaptive"])
    assert res.exit_code == 0 and "| unipc_bh1 | 2 |" in res.output, res.output


@pytest.mark.parametrize("name", sorted(SAMPLERS.names()))
def test_every_sampler_name_is_a_valid_recipe_sampler(tiny_config, name):
    if SAMPLERS.info(name).flow_map:  # the sampler of its own objective's runs
        tiny_config(sample={"sampler": name, "nfe": [4], "adaptive": False}, objective=name,
                    model={"name": "mlp", "hidden": 32, "depth": 2, "second_time": True}).validate()
        return
    tiny_config(sample={"sampler": name, "nfe": [4]}).validate()


def test_recipe_rejects_an_unknown_sampler(tiny_config):
    with pytest.raises(ConfigError, match="valid choices: .*dpm_solver_pp.*unipc"):
        tiny_config(sample={"sampler": "plms"}).validate()


def test_generate_is_run_sampler_then_sample(run):
    """``monge sample`` (generate) and ``monge eval`` reach the sampler by one road: run_sampler's
    settings (the path's schedule, the run's prediction) handed to monge.samplers.sample."""
    import torch

    from monge.generate import generate, run_sampler
    from monge.run.load import load_model
    from monge.rundata import sampling_source
    from monge.samplers import make_timesteps, sample

    model, cfg = load_model(run)
    rs = run_sampler(cfg, "ddim")
    assert rs.schedule is not None and rs.prediction == "velocity" and rs.options == {} and not rs.flow_map
    g = torch.Generator().manual_seed(2)
    x0 = sampling_source(cfg.data, getattr(model, "shape", None)).sample(16, generator=g)
    by_hand = sample(model, x0, sampler="ddim", timesteps=make_timesteps("karras", 3, rs.schedule),
                     schedule=rs.schedule, prediction=rs.prediction, generator=g)
    out = generate(model, cfg, 16, sampler="ddim", nfe=3, timesteps="karras", seed=2)
    assert torch.equal(out.x, by_hand.x) and out.nfe == by_hand.nfe == 3
    # no grid given: a sampler that needs the schedule runs on the uniform grid
    assert torch.equal(generate(model, cfg, 16, sampler="ddim", nfe=3, seed=2).x,
                       generate(model, cfg, 16, sampler="ddim", nfe=3, timesteps="uniform", seed=2).x)
    with pytest.raises(ValueError, match="flow map u\\(x, t, r\\)"):
        run_sampler(cfg, "mean_flow")
    with pytest.raises(ValueError, match="valid choices"):
        run_sampler(cfg, "plms")
