"""Sampling a run: step grids, the optimized grid cache and the expressway, on the exact
velocity of a Gaussian mixture (no training)."""

import pytest
import torch
from torch import nn

from monge.config import Config
from monge.data.gmm import GaussianMixture
from monge.generate import TIMESTEPS_FILE, generate, optimized_eval_times, optimized_timesteps, path_schedule


class Oracle(nn.Module):
    """The exact marginal velocity of the 8-Gaussian mixture for the run's path."""

    def __init__(self, schedule):
        super().__init__()
        self.gmm, self.schedule = GaussianMixture.eight_gaussians(), schedule

    def forward(self, x, t):
        return self.gmm.velocity(x, t, self.schedule).to(x.dtype)


def _config(path="linear"):
    return Config.from_dict({"data": {"source": "gaussian", "target": "8gaussians"}, "path": {"name": path},
                             "model": {"name": "mlp", "hidden": 8, "depth": 1}})


@pytest.mark.parametrize("path", ["linear", "vp"])
def test_few_step_samplers_on_the_path_schedule_match_the_exact_flow(path):
    cfg = _config(path)
    model = Oracle(path_schedule(cfg))
    exact = generate(model, cfg, 300, sampler="rk4", nfe=400, seed=1).x
    fast = generate(model, cfg, 300, sampler="dpm_solver_pp", nfe=20, timesteps="uniform", seed=1)
    crude = generate(model, cfg, 300, sampler="euler", nfe=4, seed=1).x
    assert fast.nfe == 20
    err = (fast.x - exact).norm(dim=1).mean()
    assert err < 0.05, err
    assert err < 0.5 * (crude - exact).norm(dim=1).mean()


def test_optimized_grid_is_fitted_once_and_cached(tmp_path, monkeypatch):
    cfg = _config()
    model = Oracle(path_schedule(cfg))
    grid = optimized_timesteps(model, cfg, tmp_path, "euler", 4, n_noise=64)
    assert (tmp_path / TIMESTEPS_FILE).is_file()
    assert grid.shape == (5,) and torch.all(grid[1:] > grid[:-1]) and grid[0] == 0 and grid[-1] == 1

    import monge.samplers

    monkeypatch.setattr(monge.samplers, "optimized", lambda *a, **k: pytest.fail("refitted a cached grid"))
    assert torch.equal(optimized_timesteps(model, cfg, tmp_path, "euler", 4), grid)
    out = generate(model, cfg, 200, sampler="euler", nfe=4, timesteps="optimized", run_dir=tmp_path, seed=1)
    uniform = generate(model, cfg, 200, sampler="euler", nfe=4, timesteps="uniform", seed=1)
    exact = generate(model, cfg, 200, sampler="rk4", nfe=400, seed=1).x
    assert out.nfe == 4
    assert (out.x - exact).norm(dim=1).mean() < (uniform.x - exact).norm(dim=1).mean()


def test_decoupled_schedule_is_fitted_once_cached_and_beats_the_grid(tmp_path, monkeypatch):
    cfg = _config()
    model = Oracle(path_schedule(cfg))
    ts, ev = optimized_eval_times(model, cfg, tmp_path, "euler", 4, n_noise=64)
    assert ts.shape == ev.shape == (5,) and ts[0] == 0 and ts[-1] == 1 and torch.all(ts[1:] > ts[:-1])

    import monge.samplers

    monkeypatch.setattr(monge.samplers, "optimized_decoupled", lambda *a, **k: pytest.fail("refitted a cached fit"))
    cached = optimized_eval_times(model, cfg, tmp_path, "euler", 4)
    assert torch.equal(cached[0], ts) and torch.equal(cached[1], ev)
    out = generate(model, cfg, 200, sampler="euler", nfe=4, timesteps="optimized_decoupled", run_dir=tmp_path,
                   seed=1)
    grid_only = generate(model, cfg, 200, sampler="euler", nfe=4, timesteps="optimized", run_dir=tmp_path, seed=1)
    exact = generate(model, cfg, 200, sampler="rk4", nfe=400, seed=1).x
    assert out.nfe == 4
    assert (out.x - exact).norm(dim=1).mean() < 0.7 * (grid_only.x - exact).norm(dim=1).mean()


def test_bad_requests_name_the_problem(tmp_path):
    cfg = _config()
    model = Oracle(path_schedule(cfg))
    with pytest.raises(ValueError, match="unknown sampler 'dpm'"):
        generate(model, cfg, 4, sampler="dpm", timesteps="uniform")
    with pytest.raises(ValueError, match="needs the run directory"):
        generate(model, cfg, 4, expressway=0.5)
    with pytest.raises(ValueError, match="needs the run directory"):
        generate(model, cfg, 4, timesteps="optimized")
    with pytest.raises(ValueError, match="needs the run directory"):
        generate(model, cfg, 4, timesteps="optimized_decoupled")
    with pytest.raises(ValueError, match="unknown step grid.*'nope'.*optimized_decoupled"):
        generate(model, cfg, 4, sampler="ddim", timesteps="nope")


def test_expressway_of_an_independent_run_fits_and_caches_the_map(tmp_path, monkeypatch):
    """DPM-OT proper: the exact field of the independent coupling, started at t_s from the noised
    target of each noise's OT cell, lands on the data (W2 close to the exact flow's samples)."""
    import monge.couplings.semidiscrete as sd_coupling
    from monge.couplings.maps import load_map
    from monge.metrics import wasserstein2

    monkeypatch.setattr(sd_coupling, "SAMPLER_TARGETS", 256)  # a sampler's default sample, smaller
    cfg = _config()
    model = Oracle(path_schedule(cfg))
    out = generate(model, cfg, 400, sampler="heun", nfe=4, expressway=0.5, run_dir=tmp_path, seed=2)
    sd = load_map(tmp_path / "semidiscrete.safetensors")
    assert sd.n_targets == 256 and out.nfe == 4
    gmm = GaussianMixture.eight_gaussians()
    ref = gmm.sample(400, generator=torch.Generator().manual_seed(9)).float()
    floor = wasserstein2(gmm.sample(400, generator=torch.Generator().manual_seed(10)).float(), ref)
    assert wasserstein2(out.x, ref) < floor + 0.15  # floor: two samples of the mixture, ~0.5 at n = 400


def test_class_labels_and_guidance_reach_a_conditional_model():
    """generate(label=...) wraps the model: one class for all, or classes in turn for 'all'."""

    class Probe(nn.Module):
        num_classes = 3

        def forward(self, x, t, y):
            self.y = y
            return torch.zeros_like(x)

    cfg, probe = _config(), Probe()
    generate(probe, cfg, 7, sampler="euler", nfe=1, label=2)
    assert probe.y.tolist() == [2] * 7
    generate(probe, cfg, 7, sampler="euler", nfe=1, label="all", guidance=1.5)
    assert probe.y.tolist() == [0, 1, 2, 0, 1, 2, 0] + [3] * 7  # conditional and null halves
    with pytest.raises(ValueError, match="not class-conditional"):
        generate(Oracle(path_schedule(cfg)), cfg, 4, sampler="euler", nfe=1, label=0)
    with pytest.raises(ValueError, match="needs a class label"):
        generate(probe, cfg, 4, sampler="euler", nfe=1, guidance=2.0)


def test_generate_conditions_a_continuous_model_on_the_given_conditions(tmp_path):
    """One Euler step from the run's noise: x0 + v(x0, 0, c), with the given conditions."""
    import torch

    from monge.config import Config
    from monge.data.sources import build_data
    from monge.generate import generate
    from monge.models import MLP

    cfg = Config.from_dict({"name": "c", "output_dir": str(tmp_path),
                            "data": {"source": "8gaussians", "target": {"name": "conditional_toy", "condition": "y"}},
                            "model": {"name": "mlp", "hidden": 8, "depth": 1, "cond_dim": 1}})
    torch.manual_seed(0)
    model = MLP(2, hidden=8, depth=1, cond_dim=1)
    c = torch.linspace(-1, 1, 6)[:, None]
    out = generate(model, cfg, 6, sampler="euler", nfe=1, seed=3, conditions=c)
    x0 = build_data(cfg.data)[0].sample(6, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = x0 + model(x0, torch.zeros(6), c)
    torch.testing.assert_close(out.x, ref)
    import pytest

    with pytest.raises(ValueError, match="--condition"):
        generate(model, cfg, 6, sampler="euler", nfe=1)


class ScaledOracle(Oracle):
    """The oracle times a weight, so that its fitted grids depend on its weights."""

    def __init__(self, schedule, scale=1.0):
        super().__init__(schedule)
        self.scale = nn.Parameter(torch.tensor(scale))

    def forward(self, x, t):
        return super().forward(x, t) * self.scale


def test_a_cached_grid_of_other_weights_or_the_wrong_length_is_fitted_again(tmp_path, monkeypatch, capsys):
    from safetensors.torch import load_file, save_file

    import monge.samplers

    cfg = _config()
    calls = []
    real = monge.samplers.optimized

    def counted(*args, **kwargs):
        calls.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(monge.samplers, "optimized", counted)
    model = ScaledOracle(path_schedule(cfg))
    first = optimized_timesteps(model, cfg, tmp_path, "euler", 2, n_noise=32)
    optimized_timesteps(model, cfg, tmp_path, "euler", 2, n_noise=32)
    assert calls == [2]  # cached
    with torch.no_grad():
        model.scale.fill_(0.5)  # other weights: the grid is fitted again, saying why
    optimized_timesteps(model, cfg, tmp_path, "euler", 2, n_noise=32)
    assert calls == [2, 2] and "fitted to other weights or settings" in capsys.readouterr().err

    file = tmp_path / TIMESTEPS_FILE
    meta = __import__("safetensors").safe_open(str(file), "pt").metadata()
    grids = load_file(file)
    grids["euler/nfe2"] = torch.linspace(0, 1, 50, dtype=torch.float64)  # a grid of 49 steps under nfe2
    save_file(grids, file, metadata=meta)
    grid = optimized_timesteps(model, cfg, tmp_path, "euler", 2, n_noise=32)
    assert grid.shape == first.shape == (3,) and len(calls) == 3
    out = generate(model, cfg, 16, sampler="euler", nfe=2, timesteps="optimized", run_dir=tmp_path)
    assert out.nfe == 2


def test_samples_that_are_not_finite_are_never_written(tiny_config, tmp_path, monkeypatch):
    import dataclasses

    import monge.generate as gen
    from monge.generate import sample_checkpoint
    from monge.train import Trainer

    cfg = tiny_config(name="nan", train__steps=2)
    Trainer(cfg).fit()
    real = gen.generate

    def blown_up(*args, **kwargs):
        out = real(*args, **kwargs)
        return dataclasses.replace(out, x=out.x.index_fill(0, torch.tensor([1]), float("inf")))

    monkeypatch.setattr(gen, "generate", blown_up)
    with pytest.raises(ValueError, match="the samples hold 2 NaN/Inf values of 16; nothing was written"):
        sample_checkpoint(cfg.run_dir, n=8, output=tmp_path / "s.npy", nfe=2)
    assert not (tmp_path / "s.npy").exists()
