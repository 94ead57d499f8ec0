"""Likelihoods of flows: divergences, the change of variables against closed forms, bits/dim."""

from __future__ import annotations

import math

import pytest
import torch

from monge.data.gmm import GaussianMixture
from monge.flow_likelihood import (
    LikelihoodResult,
    log_likelihood,
    prior_log_prob,
    probability_flow,
)
from monge.metrics import (
    bits_per_dim,
    dequantize,
    draw_probes,
    exact_divergence,
    gaussian_log_prob,
    hutchinson_divergence,
    standard_normal_log_prob,
)
from monge.paths import PATHS, CosineSchedule, LinearSchedule, ProbPath, VESchedule


def _mlp_field(dim: int, seed: int = 0, dtype=torch.float64):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(dim + 1, 32), torch.nn.Tanh(), torch.nn.Linear(32, dim)).to(dtype)

    def field(x, t):
        return net(torch.cat([x, t[:, None].to(x)], 1))

    return field


@pytest.fixture(scope="module")
def gmm() -> GaussianMixture:
    means = torch.tensor([[2.0, 0.0], [-1.0, 1.5], [0.0, -2.0]])
    return GaussianMixture(means, torch.tensor([0.3, 0.5, 0.4]), torch.tensor([0.5, 0.3, 0.2]))


# -- divergences -------------------------------------------------------------------------------
def test_exact_divergence_matches_finite_differences():
    field = _mlp_field(3)
    x = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    t = torch.full((5,), 0.3, dtype=torch.float64)
    v, div = exact_divergence(field, x, t)
    h = 1e-6
    fd = torch.zeros(5, dtype=torch.float64)
    for i in range(3):
        e = torch.zeros(3, dtype=torch.float64)
        e[i] = h
        fd += (field(x + e, t)[:, i] - field(x - e, t)[:, i]) / (2 * h)
    assert torch.allclose(v, field(x, t))
    assert torch.allclose(div, fd.detach(), atol=1e-7)
    assert not div.requires_grad


def test_exact_divergence_of_images_sums_every_pixel():
    a = torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(1, 3, 2, 2)
    field = lambda x, t: x * a + x.pow(2)  # noqa: E731  div = sum(a) + 2 sum(x)
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    _, div = exact_divergence(field, x, torch.zeros(4, dtype=torch.float64))
    assert torch.allclose(div, a.sum() + 2 * x.flatten(1).sum(1))


@pytest.mark.parametrize("dist", ["rademacher", "gaussian"])
def test_hutchinson_mean_converges_to_the_exact_trace(dist):
    field = _mlp_field(4, seed=2)
    x = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    t = torch.full((3,), 0.5, dtype=torch.float64)
    _, exact = exact_divergence(field, x, t)
    eps = draw_probes(x, 4000, dist, torch.Generator().manual_seed(4))
    assert eps.shape == (4000, 3, 4)
    _, est = hutchinson_divergence(field, x, t, eps)
    mean, se = est.mean(0), est.std(0) / math.sqrt(est.shape[0])
    assert bool(((mean - exact).abs() < 4 * se + 1e-12).all())
    assert float(se.max()) < 0.05 * float(exact.abs().max() + 1)


def test_rademacher_probes_are_signs_and_seeded():
    x = torch.zeros(6, 2)
    a = draw_probes(x, 3, "rademacher", torch.Generator().manual_seed(0))
    b = draw_probes(x, 3, "rademacher", torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and set(a.unique().tolist()) == {-1.0, 1.0}


# -- the change of variables ---------------------------------------------------------------------
def test_gmm_field_log_likelihood_equals_the_mixture_density(gmm):
    x = gmm.sample(64, generator=torch.Generator().manual_seed(0))
    out = log_likelihood(gmm.field(LinearSchedule()), x)
    assert isinstance(out, LikelihoodResult) and out.std_error is None
    err = (out.log_prob.double() - gmm.log_prob(x.double())).abs()
    assert float(err.max()) < 1e-3, float(err.max())
    assert out.nfe > 10 and out.z.shape == x.shape


def test_gmm_on_a_variance_exploding_path_with_its_marginal_prior(gmm):
    sched = VESchedule()
    m0, m1 = gmm.marginal(0.0, sched), gmm.marginal(1.0, sched)
    x = m1.sample(24, generator=torch.Generator().manual_seed(1)).double()
    out = log_likelihood(gmm.field(sched), x, source_log_prob=m0.log_prob)
    assert float((out.log_prob - m1.log_prob(x)).abs().max()) < 1e-3
    # the N(0, sigma_max^2 I) prior neglects Var[x1] against sigma_max^2 = 2500: a small bias
    approx = out.log_prob - out.source_log_prob + prior_log_prob(sched)(out.z)
    assert float((approx - m1.log_prob(x)).abs().max()) < 0.1


def test_noise_prediction_gives_the_same_likelihood_as_velocity(gmm):
    sched = CosineSchedule()
    x = gmm.sample(32, generator=torch.Generator().manual_seed(2)).double()
    t1 = 1 - 1e-4  # the noise prediction divides by alpha_t... and the velocity by sigma_t at t=1
    noise_model = lambda x, t: gmm.noise_mean(x, t, sched)  # noqa: E731
    a = log_likelihood(probability_flow(noise_model, PATHS.build("vp"), "noise"), x, t1=t1)
    b = log_likelihood(gmm.field(sched), x, t1=t1)
    assert torch.allclose(a.log_prob, b.log_prob, atol=1e-4)
    assert float((a.log_prob - gmm.marginal(t1, sched).log_prob(x)).abs().max()) < 1e-3


def _affine_gaussian_field(m: torch.Tensor, s: float):
    """x_t = (1 + t(s-1)) z + t m carries N(0, I) to N(m, s^2 I)."""
    def field(x, t):
        tt = t[:, None].to(x)
        return (s - 1) / (1 + tt * (s - 1)) * (x - tt * m) + m

    return field


@pytest.mark.parametrize("sampler,nfe,tol", [("dopri5", None, 1e-4), ("rk4", 40, 1e-4), ("euler", 400, 2e-2)])
def test_gaussian_to_gaussian_flow_gives_the_analytic_density(sampler, nfe, tol):
    m, s = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64), 0.5
    x = m + s * torch.randn(20, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = log_likelihood(_affine_gaussian_field(m, s), x, sampler=sampler, nfe=nfe)
    analytic = standard_normal_log_prob((x - m) / s) - 3 * math.log(s)
    assert float((out.log_prob - analytic).abs().max()) < tol
    assert torch.allclose(out.z, (x - m) / s, atol=10 * tol)
    if nfe is not None:
        assert out.nfe == nfe


def test_constant_linear_field_with_hutchinson_is_exact_for_diagonal_jacobian():
    a = torch.tensor([0.3, -0.7], dtype=torch.float64)
    field = lambda x, t: x * a  # noqa: E731  x_1 = e^a z, div = tr A
    x = torch.randn(10, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    out = log_likelihood(field, x, divergence="hutchinson", probes=3, generator=torch.Generator().manual_seed(0))
    analytic = standard_normal_log_prob(x * torch.exp(-a)) - a.sum()
    assert torch.allclose(out.log_prob, analytic, atol=1e-5)
    assert out.std_error is not None and float(out.std_error.max()) < 1e-6


def test_hutchinson_log_likelihood_agrees_with_exact_within_its_error():
    field = _mlp_field(3, seed=7)
    x = torch.randn(16, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    exact = log_likelihood(field, x, sampler="rk4", nfe=16)
    hutch = log_likelihood(field, x, sampler="rk4", nfe=16, divergence="hutchinson", probes=64,
                           probe_dist="gaussian", generator=torch.Generator().manual_seed(9))
    assert hutch.std_error is not None and hutch.std_error.shape == (16,)
    z = (hutch.log_prob - exact.log_prob) / hutch.std_error
    assert float(z.abs().max()) < 4.5
    again = log_likelihood(field, x, sampler="rk4", nfe=16, divergence="hutchinson", probes=64,
                           probe_dist="gaussian", generator=torch.Generator().manual_seed(9))
    assert torch.equal(hutch.log_prob, again.log_prob)


def test_half_precision_is_integrated_in_float32():
    x = torch.randn(4, 2).half()
    out = log_likelihood(lambda x, t: -x, x, sampler="rk4", nfe=8)
    assert out.log_prob.dtype == torch.float32


def test_gaussian_log_prob_scales():
    z = torch.randn(5, 3, dtype=torch.float64)
    assert torch.allclose(gaussian_log_prob(2.0)(z), standard_normal_log_prob(z / 2) - 3 * math.log(2.0))
    assert prior_log_prob(LinearSchedule()) is standard_normal_log_prob


# -- bits per dimension --------------------------------------------------------------------------
def test_uniform_model_scores_log2_bins_bits_per_dim():
    shape = (1, 4, 4)
    d = 16
    uniform = torch.full((3,), -d * math.log(2.0))  # uniform on [-1, 1]^D
    assert torch.allclose(bits_per_dim(uniform, shape, data_scale=2.0), torch.full((3,), 8.0, dtype=torch.float64))
    assert torch.allclose(bits_per_dim(uniform, shape, data_scale=2.0, n_bins=16),
                          torch.full((3,), 4.0, dtype=torch.float64))
    # a density twice as high everywhere saves one bit over D dimensions
    assert torch.allclose(bits_per_dim(uniform + math.log(2.0), shape, data_scale=2.0),
                          torch.full((3,), 8.0 - 1 / d, dtype=torch.float64))


def test_bits_per_dim_of_a_gaussian_on_unit_pixels():
    # a standard normal density on data in [0, 1] (scale 1): bpd = -log N / (D log 2) + 8
    x = torch.rand(10, 3, dtype=torch.float64)
    lp = standard_normal_log_prob(x)
    expect = -lp / (3 * math.log(2)) + 8
    assert torch.allclose(bits_per_dim(lp, (3,), data_scale=1.0), expect)


def test_dequantize_stays_in_the_level_bin():
    k = torch.randint(0, 256, (50, 1, 2, 2), generator=torch.Generator().manual_seed(0))
    x = k.float() / 127.5 - 1
    y = dequantize(x, generator=torch.Generator().manual_seed(1))
    u = (y + 1) / 2 * 256
    assert bool((u >= k).all()) and bool((u < k + 1).all())
    assert torch.equal(y, dequantize(x, generator=torch.Generator().manual_seed(1)))
    with pytest.raises(ValueError, match="data_range"):
        dequantize(x * 3)


# -- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"x": torch.randn(5)}, "shape"),
        ({"x": torch.tensor([[0.0, float("nan")]])}, "NaN"),
        ({"x": torch.zeros(2, 2, dtype=torch.int64)}, "floating"),
        ({"probes": 0}, "probes"),
        ({"probes": -2, "divergence": "hutchinson"}, "probes"),
        ({"divergence": "jacobian"}, "divergence"),
        ({"probe_dist": "uniform", "divergence": "hutchinson"}, "probe_dist"),
        ({"sampler": "euler"}, "nfe"),
        ({"sampler": "nope"}, "sampler"),
        ({"t0": 1.0, "t1": 0.0}, "t0 < t1"),
        ({"rtol": 0.0}, "rtol"),
        ({"source_log_prob": lambda z: z}, "source_log_prob"),
        ({"generator": 3}, "generator"),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs, match):
    args = {"x": torch.randn(4, 2)} | kwargs
    x = args.pop("x")
    with pytest.raises(ValueError, match=match):
        log_likelihood(lambda x, t: -x, x, **args)


def test_bad_fields_raise():
    x = torch.randn(3, 2)
    with pytest.raises(ValueError, match="shape"):
        log_likelihood(lambda x, t: x[:, :1], x, sampler="euler", nfe=2)
    with pytest.raises(ValueError, match="autograd"):
        log_likelihood(lambda x, t: torch.zeros_like(x), x, sampler="euler", nfe=2)
    with pytest.raises(ValueError, match="t1 < 1"):
        log_likelihood(lambda x, t: x / (1 - t[:, None]), x, sampler="euler", nfe=2)


def test_path_without_probability_flow_ode_is_refused():
    class Odd(ProbPath):
        def sample(self, x0, x1, t, generator=None):  # pragma: no cover
            raise NotImplementedError

    with pytest.raises(ValueError, match="probability-flow"):
        probability_flow(lambda x, t: x, Odd())
    with pytest.raises(ValueError, match="prediction"):
        probability_flow(lambda x, t: x, PATHS.build("linear"), "epsilon")


def test_bits_per_dim_bad_inputs():
    with pytest.raises(ValueError, match="x_shape"):
        bits_per_dim(torch.zeros(2), (), data_scale=2.0)
    with pytest.raises(ValueError, match="data_scale"):
        bits_per_dim(torch.zeros(2), (4,), data_scale=0.0)
    with pytest.raises(ValueError, match="n_bins"):
        bits_per_dim(torch.zeros(2), (4,), data_scale=2.0, n_bins=1)
