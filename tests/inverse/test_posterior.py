"""The closed-form posterior of a Gaussian-mixture prior against importance sampling and Bayes' rule."""

import math

import pytest
import torch

from monge.data import GaussianMixture
from monge.inverse import Identity, Mask, RandomProjection, gmm_posterior


def prior():
    means = torch.tensor([[-2.0, 0.0, 1.0], [1.5, 1.0, -1.0], [0.0, -2.5, 0.5]])
    return GaussianMixture(means, torch.tensor([0.5, 0.8, 0.6]), torch.tensor([0.5, 0.3, 0.2]))


CASES = [
    (Mask(torch.tensor([1.0, 0.0, 1.0])), torch.tensor([0.2, 0.0, 0.0]), 0.4),
    (RandomProjection(3, 2, seed=2), torch.tensor([0.5, -1.0]), 0.3),
    (Identity(3), torch.tensor([0.0, -1.0, 0.5]), 0.7),
]


def _log_lik(op, x, y, sigma):
    r = (y[None] - op(x)).flatten(1)
    return -0.5 * r.pow(2).sum(1) / sigma**2


@pytest.mark.parametrize("op,y,sigma", CASES, ids=["mask", "project", "identity"])
def test_matches_importance_sampling(op, y, sigma):
    """Prior samples weighted by the likelihood N(y; A x, sigma^2 I): mean, covariance and the
    posterior probability of each component agree with the closed form within Monte Carlo error."""
    p = prior()
    g = torch.Generator().manual_seed(0)
    x, labels = p.sample(400_000, g, return_labels=True, dtype=torch.float64)
    w = torch.softmax(_log_lik(op, x, y, sigma), 0)
    ess = 1.0 / float(w.pow(2).sum())
    assert ess > 2000
    post = gmm_posterior(p, op, y, sigma)
    mean = (post.weights[:, None] * post.means).sum(0)
    second = (post.weights[:, None, None] * (post.covs + post.means[:, :, None] * post.means[:, None, :])).sum(0)
    cov = second - mean[:, None] * mean[None]
    is_mean = (w[:, None] * x).sum(0)
    is_cov = (w[:, None, None] * (x - is_mean)[:, :, None] * (x - is_mean)[:, None, :]).sum(0)
    tol = 6.0 / math.sqrt(ess)
    scale = float(cov.diagonal().max().sqrt())
    assert float((is_mean - mean).abs().max()) < tol * scale * 2
    assert float((is_cov - cov).abs().max()) < tol * scale**2 * 4
    is_weights = torch.zeros(3, dtype=torch.float64).index_add_(0, labels, w)
    assert float((is_weights - post.weights).abs().max()) < tol


@pytest.mark.parametrize("op,y,sigma", CASES, ids=["mask", "project", "identity"])
def test_bayes_rule_pointwise(op, y, sigma):
    """log p(x | y) - log p(x) - log N(y; A x, sigma^2 I) is the same constant -log p(y) at every x."""
    p = prior()
    x = torch.randn(50, 3, dtype=torch.float64) * 2
    post = gmm_posterior(p, op, y, sigma)
    m = op.measurement_shape[0]
    log_norm = -0.5 * m * math.log(2 * math.pi * sigma**2)
    diff = post.log_prob(x) - p.log_prob(x) - _log_lik(op, x, y, sigma) - log_norm
    assert float(diff.max() - diff.min()) < 1e-9


def test_samples_have_the_posterior_moments():
    p = prior()
    op, y, sigma = CASES[0]
    post = gmm_posterior(p, op, y, sigma)
    s = post.sample(200_000, torch.Generator().manual_seed(1), dtype=torch.float64)
    mean = (post.weights[:, None] * post.means).sum(0)
    assert float((s.mean(0) - mean).abs().max()) < 0.02
    assert float(post.log_prob(s[:5]).isfinite().all())


def test_bad_input():
    p = prior()
    with pytest.raises(ValueError, match="sigma must be a positive"):
        gmm_posterior(p, Identity(3), torch.zeros(3), 0.0)
    with pytest.raises(ValueError, match="NaN"):
        gmm_posterior(p, Identity(3), torch.tensor([0.0, float("nan"), 0.0]), 0.1)
    with pytest.raises(ValueError, match="prior has dimension 3"):
        gmm_posterior(p, Identity(4), torch.zeros(4), 0.1)
    with pytest.raises(ValueError, match="one measurement"):
        gmm_posterior(p, Identity(3), torch.zeros(2, 3), 0.1)


def test_responsibilities_and_weight_error():
    p = prior()
    op, y, sigma = CASES[0]
    post = gmm_posterior(p, op, y, sigma)
    x = post.sample(20_000, torch.Generator().manual_seed(3), dtype=torch.float64)
    r = post.responsibilities(x[:10])
    torch.testing.assert_close(r.sum(1), torch.ones(10, dtype=torch.float64))
    assert post.weight_error(x) < 0.03
    # all mass on the least probable component: TV = 1 - its weight
    k = int(post.weights.argmin())
    assert post.weight_error(post.means[k].expand(50, -1)) == pytest.approx(1 - float(post.weights[k]))
