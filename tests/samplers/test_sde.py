"""Euler-Maruyama: marginals on the oracle, Gaussian closed form, the noise_scale=0 limit, input checks."""

import math

import pytest
import torch

from monge.data import GaussianMixture
from monge.paths import SCHEDULES
from monge.samplers import sample
from monge.samplers.sde import euler_maruyama
from monge.samplers.timesteps import uniform_log_snr

F64 = torch.float64
EIGHT = GaussianMixture.eight_gaussians()


ORACLE = {"velocity": EIGHT.velocity, "score": EIGHT.score_t, "data": EIGHT.posterior_mean}


@pytest.mark.parametrize("sname,prediction", [("cosine", "velocity"), ("vp_linear", "score"), ("linear", "data")])
def test_reverse_sde_reproduces_the_mixture(sname, prediction):
    """Mode weights within 4 standard errors of 1/8 and the within-mode spread of the data."""
    sched = SCHEDULES.build(sname)
    n = 1000
    x = EIGHT.marginal(0.0, sched).sample(n, torch.Generator().manual_seed(0), dtype=F64)
    f = ORACLE[prediction]
    # near alpha=0 the reverse SDE is stiff (epsilon_t / sigma_t^2 ~ 1/t): steps must shrink like t there,
    # which the log-SNR grid does (a uniform-t grid inflates the variance of the first steps)
    out = euler_maruyama(lambda y, t: f(y, t, sched), x, sched, uniform_log_snr(200, sched, log_snr_clip=10.0),
                         prediction=prediction, generator=torch.Generator().manual_seed(1))
    assert out.nfe == 200
    dist, mode = torch.cdist(out.x, EIGHT.means).min(1)
    weights = torch.bincount(mode, minlength=8).double() / n
    assert (weights - 0.125).abs().max() < 4 * math.sqrt(0.125 * 0.875 / n), weights
    spread = float(dist.pow(2).mean().div(2).sqrt())  # per-coordinate std around the nearest mode
    assert abs(spread - EIGHT.stds[0].item()) < 0.03, spread


def test_gaussian_marginal_variance_is_kept():
    """Data N(0, s^2): under the reverse SDE x_t stays N(0, sigma_t^2 + alpha_t^2 s^2) at every t."""
    s = 0.5
    gauss = GaussianMixture(torch.zeros(1, 1), s)
    sched = SCHEDULES.build("cosine")
    x = torch.randn(20000, 1, generator=torch.Generator().manual_seed(4), dtype=F64)
    ts = torch.linspace(0.0, 0.8, 201, dtype=F64)
    out = euler_maruyama(lambda y, t: gauss.velocity(y, t, sched), x, sched, ts, last_step="euler_maruyama",
                         generator=torch.Generator().manual_seed(5))
    t1 = torch.tensor(0.8, dtype=F64)
    var = float(sched.sigma(t1) ** 2 + sched.alpha(t1) ** 2 * s**2)
    assert abs(float(out.x.var()) - var) < 0.04 * var  # 4 sigma of the sample variance is ~0.04 var
    assert abs(float(out.x.mean())) < 0.03


def test_noise_scale_zero_is_the_euler_ode():
    sched = SCHEDULES.build("linear")
    x = torch.randn(16, 2, dtype=F64)
    ts = torch.linspace(0.0, 1.0, 9, dtype=F64)
    model = lambda y, t: EIGHT.velocity(y, t, sched)  # noqa: E731
    a = euler_maruyama(model, x, sched, ts, noise_scale=0.0).x
    b = sample(model, x, sampler="euler", timesteps=ts, schedule=sched).x
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_seeded_and_custom_diffusion():
    sched = SCHEDULES.build("cosine")
    x = torch.randn(16, 2, dtype=F64)
    ts = torch.linspace(0.05, 1.0, 9, dtype=F64)
    model = lambda y, t: EIGHT.velocity(y, t, sched)  # noqa: E731
    run = lambda seed, **kw: euler_maruyama(model, x, sched, ts, generator=torch.Generator().manual_seed(seed), **kw).x  # noqa: E731
    assert torch.equal(run(0), run(0)) and not torch.allclose(run(0), run(1))
    const = run(0, diffusion=lambda t: torch.full_like(t, 0.3))
    assert torch.isfinite(const).all() and not torch.allclose(const, run(0))


def test_bad_input():
    sched = SCHEDULES.build("cosine")
    m = lambda y, t: EIGHT.velocity(y, t, sched)  # noqa: E731
    x, ts = torch.randn(4, 2), torch.linspace(0, 1, 5)
    with pytest.raises(ValueError, match="noise_scale"):
        euler_maruyama(m, x, sched, ts, noise_scale=-1.0)
    with pytest.raises(ValueError, match="last_step"):
        euler_maruyama(m, x, sched, ts, last_step="tweedie")
    with pytest.raises(ValueError, match="diffusion"):
        euler_maruyama(m, x, sched, ts, diffusion="ve")
    with pytest.raises(ValueError, match="diffusion"):
        euler_maruyama(m, x, sched, ts, diffusion=lambda t: -torch.ones_like(t))
    with pytest.raises(ValueError, match="timesteps"):
        euler_maruyama(m, x, sched, ts.flip(0))
