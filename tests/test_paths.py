"""Schedules and paths: endpoints, derivatives vs finite differences, log-SNR inverse, targets."""

import math

import pytest
import torch

from monge.paths import (
    PATHS,
    SCHEDULES,
    BrownianBridgePath,
    DiscreteVPSchedule,
    EDMSchedule,
    InterpolantSchedule,
    LinearPath,
    StochasticInterpolantPath,
    VESchedule,
    VPLinearSchedule,
    ddpm_alphas_cumprod,
    expand_t,
)

ALL = ["linear", "cosine", "vp_linear", "ve", "edm", "stochastic_interpolant"]
T = torch.linspace(0.02, 0.98, 49, dtype=torch.float64)


@pytest.mark.parametrize("name", ALL)
def test_derivatives_match_finite_differences(name):
    s = SCHEDULES.build(name)
    h = 1e-6
    for f, df in [(s.alpha, s.d_alpha), (s.sigma, s.d_sigma), (s.log_snr, s.d_log_snr)]:
        fd = (f(T + h) - f(T - h)) / (2 * h)
        torch.testing.assert_close(df(T), fd, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", [*ALL, "ddpm"])
def test_log_snr_definition_and_monotone(name):
    s = SCHEDULES.build(name)
    lam = s.log_snr(T)
    torch.testing.assert_close(lam, torch.log(s.alpha(T) ** 2 / s.sigma(T) ** 2), rtol=1e-9, atol=1e-9)
    assert bool((lam.diff() > 0).all())


@pytest.mark.parametrize("name", [*ALL, "ddpm"])
def test_log_snr_inverse_round_trip(name):
    s = SCHEDULES.build(name)
    torch.testing.assert_close(s.t_from_log_snr(s.log_snr(T)), T, rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", ["ve", "edm", "vp_linear", "stochastic_interpolant"])
def test_closed_form_inverse_matches_bisection(name):
    from monge.paths import Schedule

    s = SCHEDULES.build(name)
    lam = s.log_snr(T)
    torch.testing.assert_close(s.t_from_log_snr(lam), Schedule.t_from_log_snr(s, lam), rtol=0, atol=1e-9)


def test_inverse_clamps_out_of_range_and_rejects_nan():
    s = SCHEDULES.build("ve")
    big = torch.tensor([-1e3, 1e3], dtype=torch.float64)
    assert s.t_from_log_snr(big).tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="log_snr"):
        SCHEDULES.build("stochastic_interpolant").t_from_log_snr(torch.tensor([float("nan")]))


def test_endpoints():
    t0, t1 = torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    for name in ["linear", "cosine", "stochastic_interpolant"]:
        s = SCHEDULES.build(name)
        assert abs(float(s.alpha(t0))) < 1e-12 and abs(float(s.alpha(t1)) - 1) < 1e-12
        assert abs(float(s.sigma(t0)) - 1) < 1e-12 and abs(float(s.sigma(t1))) < 1e-12
    vp = VPLinearSchedule()
    assert math.isclose(float(vp.alpha(t0)), math.exp(-0.5 * (0.1 + 0.5 * 19.9)), rel_tol=1e-12)
    assert float(vp.alpha(t1)) == 1.0 and float(vp.sigma(t1)) == 0.0
    torch.testing.assert_close(vp.alpha(T) ** 2 + vp.sigma(T) ** 2, torch.ones_like(T))
    ve = VESchedule(0.01, 50.0)
    assert math.isclose(float(ve.sigma(t0)), 50.0) and math.isclose(float(ve.sigma(t1)), 0.01)
    edm = EDMSchedule()
    assert math.isclose(float(edm.sigma(t0)), 80.0) and math.isclose(float(edm.sigma(t1)), 0.002)
    # EDM: uniform t is the Karras rho=7 grid
    i = torch.arange(5, dtype=torch.float64) / 4
    karras = (80 ** (1 / 7) + i * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    torch.testing.assert_close(edm.sigma(i), karras)


def test_bad_schedule_parameters():
    with pytest.raises(ValueError, match="beta_max"):
        VPLinearSchedule(beta_min=1.0, beta_max=0.5)
    with pytest.raises(ValueError, match="sigma_max"):
        VESchedule(sigma_min=2.0, sigma_max=1.0)
    with pytest.raises(ValueError, match="sigma_min"):
        EDMSchedule(sigma_min=-1.0)
    with pytest.raises(ValueError, match="a must"):
        InterpolantSchedule(a=-1.0)
    with pytest.raises(ValueError, match="unknown schedule"):
        SCHEDULES.build("nope")


@pytest.mark.parametrize("name", ["linear", "vp", "vp_linear", "ve", "edm"])
def test_affine_paths_target_is_time_derivative(name):
    """u_t = d/dt x_t along the conditional path (finite difference with the same x0, x1)."""
    path = PATHS.build(name)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(6, 3, generator=g, dtype=torch.float64)
    x1 = torch.randn(6, 3, generator=g, dtype=torch.float64)
    t = torch.rand(6, generator=g, dtype=torch.float64) * 0.9 + 0.05
    h = 1e-6
    fd = (path.sample(x0, x1, t + h).x_t - path.sample(x0, x1, t - h).x_t) / (2 * h)
    out = path.sample(x0, x1, t)
    torch.testing.assert_close(out.target, fd, rtol=1e-6, atol=1e-6)
    s = path.schedule
    torch.testing.assert_close(out.x_t, s.sigma(t)[:, None] * x0 + s.alpha(t)[:, None] * x1)


def test_stochastic_interpolant_target_and_marginal_moments():
    a = 0.5
    path = StochasticInterpolantPath(a=a)
    g = torch.Generator().manual_seed(3)
    n = 200_000
    x0 = torch.randn(n, 1, generator=g, dtype=torch.float64)
    x1 = torch.full((n, 1), 2.0, dtype=torch.float64)
    t = torch.full((n,), 0.3, dtype=torch.float64)
    out = path.sample(x0, x1, t, generator=torch.Generator().manual_seed(4))
    gamma = math.sqrt(a * 0.3 * 0.7)
    z = (out.x_t - 0.7 * x0 - 0.3 * x1) / gamma
    assert abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1) < 0.01
    dgamma = a * (1 - 0.6) / (2 * gamma)
    torch.testing.assert_close(out.target, x1 - x0 + dgamma * z)
    # marginal of x_t for fixed x1: N(0.3 * 2, sigma_t^2) with the equivalent schedule's sigma
    sig = float(path.schedule.sigma(torch.tensor(0.3, dtype=torch.float64)))
    assert abs(float(out.x_t.std()) - sig) < 0.01 and abs(float(out.x_t.mean()) - 0.6) < 0.01


def test_brownian_bridge_matches_sbcfm_form():
    """u = (1-2t)/(2t(1-t)) (x_t - mu_t) + (x1 - x0) (Tong et al., SB-CFM)."""
    sigma = 0.7
    path = BrownianBridgePath(sigma=sigma)
    assert math.isclose(path.a, sigma**2)
    g = torch.Generator().manual_seed(5)
    x0 = torch.randn(64, 2, generator=g, dtype=torch.float64)
    x1 = torch.randn(64, 2, generator=g, dtype=torch.float64)
    t = torch.rand(64, generator=g, dtype=torch.float64) * 0.9 + 0.05
    out = path.sample(x0, x1, t, generator=g)
    tt = t[:, None]
    mu = (1 - tt) * x0 + tt * x1
    ref = (1 - 2 * tt) / (2 * tt * (1 - tt)) * (out.x_t - mu) + (x1 - x0)
    torch.testing.assert_close(out.target, ref)
    # variance sigma^2 t (1 - t) of x_t around mu_t
    std = ((out.x_t - mu) / torch.sqrt(tt * (1 - tt))).std()
    assert abs(float(std) - sigma) < 0.15


def test_zero_noise_interpolant_is_linear_path_and_seeded():
    x0, x1 = torch.randn(4, 2), torch.randn(4, 2)
    t = torch.rand(4)
    a = StochasticInterpolantPath(a=0.0).sample(x0, x1, t)
    b = LinearPath().sample(x0, x1, t)
    torch.testing.assert_close(a.x_t, b.x_t) and torch.testing.assert_close(a.target, b.target)
    p = BrownianBridgePath(0.5)
    s1 = p.sample(x0, x1, t, generator=torch.Generator().manual_seed(0))
    s2 = p.sample(x0, x1, t, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(s1.x_t, s2.x_t)


def test_path_bad_input():
    with pytest.raises(ValueError, match="x0 and x1"):
        LinearPath().sample(torch.zeros(3, 2), torch.zeros(3, 3), torch.zeros(3))
    with pytest.raises(ValueError, match="t must"):
        expand_t(torch.zeros(2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="sigma"):
        BrownianBridgePath(sigma=-1.0)
    with pytest.raises(ValueError, match="t_eps"):
        StochasticInterpolantPath(t_eps=0.7)
    assert set(PATHS.names()) >= {"linear", "vp", "vp_linear", "ve", "edm", "stochastic_interpolant", "brownian_bridge"}


# ------------------------------------------------------------------------- discrete DDPM schedule
def test_ddpm_schedule_hits_alphas_cumprod_at_the_training_steps():
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    s = DiscreteVPSchedule()  # linear betas, T = 1000
    torch.testing.assert_close(s.alphas_cumprod, abar, rtol=1e-12, atol=0)
    k = torch.tensor([0, 1, 10, 500, 998, 999])
    t = 1 - (k.double() + 1) / 1000
    torch.testing.assert_close(s.alpha(t).square(), abar[k], rtol=1e-10, atol=0)
    torch.testing.assert_close(s.sigma(t).square(), 1 - abar[k], rtol=1e-10, atol=0)
    torch.testing.assert_close(s.timestep(t), k.double(), rtol=0, atol=1e-9)
    # after the last training step the variance falls linearly to 0 (clean data at t = 1)
    t_end = torch.tensor([1 - 0.4 / 1000, 1.0], dtype=torch.float64)
    torch.testing.assert_close(s.sigma(t_end).square(), torch.stack([0.4 * (1 - abar[0]), abar.new_zeros(())]))
    assert float(s.alpha(t_end[1:])) == 1.0 and math.isinf(float(s.log_snr(t_end[1:])))


def test_ddpm_schedule_derivatives_between_knots():
    s = DiscreteVPSchedule(beta_schedule="squaredcos_cap_v2")
    k = torch.cat(
        [torch.arange(20, 990, 37, dtype=torch.float64) + 0.5, torch.tensor([-0.7, -0.3], dtype=torch.float64)]
    )
    t = 1 - (k + 1) / 1000  # mid-segment, and inside the last interval k in (-1, 0)
    h = 1e-7
    for f, df in [(s.alpha, s.d_alpha), (s.sigma, s.d_sigma), (s.log_snr, s.d_log_snr)]:
        torch.testing.assert_close(df(t), (f(t + h) - f(t - h)) / (2 * h), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("beta_schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_ddpm_alphas_cumprod_match_diffusers(beta_schedule):
    diffusers = pytest.importorskip("diffusers")
    kw = {"beta_start": 0.00085, "beta_end": 0.012} if beta_schedule == "scaled_linear" else {}
    ref = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule=beta_schedule, **kw).alphas_cumprod
    torch.testing.assert_close(ddpm_alphas_cumprod(1000, beta_schedule, **kw).float(), ref, rtol=1e-5, atol=1e-7)


def test_ddpm_schedule_bad_input():
    with pytest.raises(ValueError, match="non-increasing"):
        DiscreteVPSchedule(torch.tensor([0.5, 0.9]))
    with pytest.raises(ValueError, match="open interval"):
        DiscreteVPSchedule(torch.tensor([1.0, 0.5]))
    with pytest.raises(ValueError, match="finite"):
        DiscreteVPSchedule(torch.tensor([0.9, float("nan")]))
    with pytest.raises(ValueError, match="beta_schedule"):
        ddpm_alphas_cumprod(1000, "cubic")
    with pytest.raises(ValueError, match="num_train_timesteps"):
        ddpm_alphas_cumprod(1)
