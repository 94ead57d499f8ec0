"""Training-time laws (monge.times) and ``train.time_sampling`` in recipes, the trainer and resume."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from monge.config import Config, ConfigError
from monge.run.checkpoint import CheckpointError
from monge.times import TIMES, LogitNormalTimes, UniformTimes
from monge.train import Trainer


def test_uniform_draws_what_torch_rand_draws():
    """Same generator, same times: runs recorded before the setting existed train identically."""
    a, b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(UniformTimes()(1000, generator=a), torch.rand(1000, generator=b))


@pytest.mark.parametrize(("loc", "scale"), [(0.0, 1.0), (0.8, 0.5), (-1.0, 1.6)])
def test_logit_normal_law(loc, scale):
    """logit(t) is N(loc, scale^2) (Kolmogorov-Smirnov against scipy) and the density integrates to 1
    and gives the same probabilities as the normal CDF."""
    law = LogitNormalTimes(loc, scale)
    t = law(20_000, generator=torch.Generator().manual_seed(0)).double()
    assert t.dtype == torch.float64 and bool(((t > 0) & (t < 1)).all())
    logit = torch.log(t) - torch.log1p(-t)
    assert stats.kstest(logit.numpy(), stats.norm(loc, scale).cdf).pvalue > 1e-3

    def p(u: float) -> float:
        return float(law.density(torch.tensor(u, dtype=torch.float64)))

    total, _ = integrate.quad(p, 0.0, 1.0, limit=200)
    assert total == pytest.approx(1.0, abs=1e-6)
    mass, _ = integrate.quad(p, 0.2, 0.6)
    expected = stats.norm(loc, scale).cdf(math.log(0.6 / 0.4)) - stats.norm(loc, scale).cdf(math.log(0.2 / 0.8))
    assert mass == pytest.approx(expected, abs=1e-8)
    # a shifted loc moves the mass towards the data end
    assert float(LogitNormalTimes(1.0, 1.0)(5000, torch.Generator().manual_seed(1)).mean()) > 0.6


def test_uniform_density_and_registry():
    assert torch.equal(UniformTimes().density(torch.tensor([0.1, 0.9])), torch.ones(2))
    assert TIMES.names() == ["logit_normal", "uniform"]
    with pytest.raises(ValueError, match="scale must be in"):
        LogitNormalTimes(0.0, 0.0)
    with pytest.raises(ValueError, match="loc must be"):
        LogitNormalTimes(float("nan"))


def _raw(tmp_path, **train):
    return {"name": "t", "output_dir": str(tmp_path / "runs"), "data": {"source": "gaussian", "target": "moons"},
            "model": {"name": "mlp", "hidden": 16, "depth": 1},
            "train": {"steps": 4, "batch_size": 32, "progress": False, "eval_samples": 50, **train},
            "sample": {"sampler": "euler", "nfe": [1], "adaptive": False}}


def test_recipe_setting_round_trip(tmp_path):
    """Written only away from ``uniform`` (configs recorded before it read the same), read back equal."""
    plain = Config.from_dict(_raw(tmp_path))
    assert "time_sampling" not in plain.to_dict()["train"]
    cfg = Config.from_dict(_raw(tmp_path, time_sampling={"name": "logit_normal", "loc": 0.5}))
    assert cfg.to_dict()["train"]["time_sampling"] == {"name": "logit_normal", "loc": 0.5}
    assert Config.from_dict(cfg.to_dict()).train.time_sampling == cfg.train.time_sampling


@pytest.mark.parametrize(("value", "words"), [
    ("beta", "unknown time sampling 'beta'; valid choices: logit_normal, uniform"),
    ({"name": "logit_normal", "scale": -1.0}, "scale must be in"),
    ({"name": "logit_normal", "mean": 0.0}, "mean"),
])
def test_recipe_setting_bad_input(tmp_path, value, words):
    with pytest.raises(ConfigError, match=f"train.time_sampling: .*{words}"):
        Config.from_dict(_raw(tmp_path, time_sampling=value))


def test_flow_maps_refuse_a_time_law(tmp_path):
    """mean_flow draws its own (t, r): a time law there would be silently ignored, so it is refused."""
    raw = _raw(tmp_path, time_sampling="logit_normal")
    raw.update(objective="mean_flow", model={"name": "mlp", "hidden": 16, "depth": 1, "second_time": True},
               sample={"sampler": "mean_flow", "nfe": [1], "adaptive": False})
    with pytest.raises(ConfigError, match="draws its own times"):
        Config.from_dict(raw)


def test_trainer_draws_its_times_from_the_law(tmp_path):
    """The batches' times follow ``train.time_sampling``: a narrow logit-normal around 0.3."""
    loc = math.log(0.3 / 0.7)
    trainer = Trainer(Config.from_dict(_raw(tmp_path, time_sampling={"name": "logit_normal", "loc": loc,
                                                                      "scale": 0.01})))
    t = trainer.batches.draw().t
    assert t.shape == (32,) and np.allclose(t.numpy(), 0.3, atol=0.01)
    trainer.fit()  # trains end to end
    assert trainer.step == 4


def test_resume_refuses_another_time_law(tmp_path):
    Trainer(Config.from_dict(_raw(tmp_path))).fit()
    other = Trainer(Config.from_dict(_raw(tmp_path, steps=8, time_sampling="logit_normal")))
    with pytest.raises(CheckpointError, match="train.time_sampling"):
        other.fit(resume=True)
    same = Trainer(Config.from_dict(_raw(tmp_path, steps=8)))
    same.fit(resume=True)
    assert same.step == 8
