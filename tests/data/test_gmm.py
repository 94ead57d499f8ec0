"""Gaussian-mixture oracle: closed forms against autograd, Monte Carlo and identities."""

import math

import pytest
import torch

from monge.data import GaussianMixture
from monge.paths import CosineSchedule, LinearSchedule, VPLinearSchedule

SCHEDULES = [LinearSchedule(), CosineSchedule(), VPLinearSchedule()]


def mixture():
    means = torch.tensor([[-2.0, 0.0], [1.5, 1.0], [0.0, -2.5]])
    return GaussianMixture(means, torch.tensor([0.3, 0.6, 0.4]), torch.tensor([0.5, 0.3, 0.2]))


def test_log_prob_matches_torch_distributions():
    gmm = mixture()
    x = torch.randn(50, 2, dtype=torch.float64)
    comps = torch.distributions.Independent(
        torch.distributions.Normal(gmm.means, gmm.stds[:, None].expand(-1, 2)), 1
    )
    ref = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(gmm.weights), comps).log_prob(x)
    assert torch.allclose(gmm.log_prob(x), ref, atol=1e-10)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("t", [0.2, 0.7])
def test_score_t_is_gradient_of_marginal_log_prob(schedule, t):
    gmm = mixture()
    x = torch.randn(20, 2, dtype=torch.float64, requires_grad=True)
    lp = gmm.marginal(t, schedule).log_prob(x).sum()
    (grad,) = torch.autograd.grad(lp, x)
    assert torch.allclose(gmm.score_t(x.detach(), t, schedule), grad, atol=1e-9)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: type(s).__name__)
def test_posterior_means_decompose_x(schedule):
    gmm = mixture()
    x = torch.randn(30, 2, dtype=torch.float64)
    t = torch.rand(30, dtype=torch.float64) * 0.98 + 0.01
    e0, e1 = gmm.noise_mean(x, t, schedule), gmm.posterior_mean(x, t, schedule)
    recon = schedule.sigma(t)[:, None] * e0 + schedule.alpha(t)[:, None] * e1
    assert torch.allclose(recon, x, atol=1e-9)
    # Tweedie: E[x0 | x] = -sigma * score
    assert torch.allclose(e0, -schedule.sigma(t)[:, None] * gmm.score_t(x, t, schedule), atol=1e-9)


def test_velocity_matches_monte_carlo_conditional_expectation():
    """u_t(x) = E[x1 - x0 | x_t = x], estimated by importance weights over x1 samples."""
    gmm = mixture()
    t = 0.6
    x = torch.tensor([[0.3, -0.2], [-1.0, 0.4]], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    x1 = gmm.sample(200_000, g, dtype=torch.float64)
    # p(x_t = x | x1) = N(x; t x1, (1-t)^2 I); x0 = (x - t x1) / (1 - t)
    for xi, u in zip(x, gmm.velocity(x, t), strict=True):
        logw = -((xi - t * x1) ** 2).sum(1) / (2 * (1 - t) ** 2)
        w = torch.softmax(logw, 0)
        x0 = (xi - t * x1) / (1 - t)
        mc = (w[:, None] * (x1 - x0)).sum(0)
        ess = 1.0 / (w**2).sum()
        assert ess > 1000
        assert torch.allclose(u, mc, atol=0.05), (u, mc)


def test_single_gaussian_velocity_is_linear_closed_form():
    m, s = torch.tensor([[1.0, -2.0]], dtype=torch.float64), 0.5
    gmm = GaussianMixture(m, s)
    x = torch.randn(10, 2, dtype=torch.float64)
    t = 0.3
    # linear path: x_t ~ N(t m, v), v = (1-t)^2 + t^2 s^2; u = m + (t s^2 - (1-t)) / v (x - t m)
    v = (1 - t) ** 2 + t**2 * s**2
    ref = m + (t * s**2 - (1 - t)) / v * (x - t * m)
    assert torch.allclose(gmm.velocity(x, t), ref, atol=1e-12)


def test_endpoints_are_finite_and_marginal_at_one_is_the_mixture():
    gmm = mixture()
    x = torch.randn(8, 2)
    for t in (0.0, 1.0):
        for fn in (gmm.velocity, gmm.posterior_mean, gmm.score_t):
            assert torch.isfinite(fn(x, t)).all()
    m1 = gmm.marginal(1.0)
    assert torch.allclose(m1.means, gmm.means) and torch.allclose(m1.stds, gmm.stds)
    assert torch.allclose(gmm.score(x.double()), gmm.score_t(x.double(), 1.0))
    assert gmm.velocity(x, 0.5).dtype == torch.float32


def test_sample_moments_and_standard_sets():
    gmm = mixture()
    x, lab = gmm.sample(40_000, torch.Generator().manual_seed(1), return_labels=True)
    freq = torch.bincount(lab, minlength=3).double() / len(lab)
    assert torch.allclose(freq, gmm.weights, atol=0.01)
    assert torch.allclose(x.double().mean(0), (gmm.weights[:, None] * gmm.means).sum(0), atol=0.03)
    e = GaussianMixture.eight_gaussians()
    assert e.n_components == 8 and torch.allclose(
        e.means.norm(dim=1), torch.full((8,), 2 * math.sqrt(2), dtype=torch.float64)
    )
    assert GaussianMixture.grid().n_components == 25


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(means=torch.zeros(3)), r"\(K, d\)"),
        (dict(means=torch.zeros(2, 2), stds=torch.tensor([1.0, -1.0])), "> 0"),
        (dict(means=torch.zeros(2, 2), weights=torch.tensor([0.5, 0.6])), "sum to 1"),
        (dict(means=torch.zeros(2, 2), weights=torch.tensor([1.5, -0.5])), "non-negative"),
        (dict(means=torch.tensor([[float("nan"), 0.0]])), "NaN"),
        (dict(means=torch.zeros(1, 2), stds=2e38), "float32's range"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(**kwargs)


def test_bad_x_shape():
    with pytest.raises(ValueError, match=r"\(batch, 2\)"):
        mixture().velocity(torch.zeros(4, 3), 0.5)
