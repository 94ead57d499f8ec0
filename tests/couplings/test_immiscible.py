import math

import pytest
import torch
from scipy import integrate, stats
from scipy.optimize import linear_sum_assignment

from monge.couplings import COUPLINGS, Immiscible, KNNImmiscible, prepare_coupling
from monge.data.sources import GaussianSource, ToySource


@pytest.mark.parametrize("seed", range(3))
def test_immiscible_matches_scipy_on_unsquared_distance(seed, sq_cost):
    g = torch.Generator().manual_seed(seed)
    x0, x1 = torch.randn(64, 1, 4, 4, generator=g), torch.rand(64, 1, 4, 4, generator=g) * 2 - 1
    out = Immiscible()(x0, x1)
    dist = sq_cost(x1, x0).sqrt()
    rows, cols = linear_sum_assignment(dist.numpy())
    got = (out.x0 - out.x1).reshape(64, -1).double().norm(dim=1).sum().item()
    assert got == pytest.approx(dist[rows, cols].sum().item(), rel=1e-5)
    assert got < (x0 - x1).reshape(64, -1).double().norm(dim=1).sum().item()
    assert torch.equal(out.x1, x1)


def test_immiscible_keeps_the_noise_marginal(pair_cost, rows_index):
    g = torch.Generator().manual_seed(9)
    x0 = torch.randn(1024, 8, generator=g, dtype=torch.float64)
    x1 = torch.rand(1024, 8, generator=g, dtype=torch.float64) * 4 - 2 + 1.0  # data far from 0
    out = Immiscible()(x0, x1)
    # the noise is only permuted: the same set of points
    assert torch.equal(out.x0[rows_index(x0, out.x0)], x0)
    # still N(0, I): per-coordinate KS tests and a norm test against chi^2_8
    pvals = [stats.kstest(out.x0[:, k].numpy(), "norm").pvalue for k in range(8)]
    assert min(pvals) * 8 > 1e-3  # Bonferroni
    assert stats.kstest(out.x0.square().sum(1).numpy(), "chi2", args=(8,)).pvalue > 1e-3
    # ...but re-paired: pair distance drops
    assert pair_cost(out.x0, out.x1) < 0.9 * pair_cost(x0, x1)


def _mean_min_of_k_normals(k):
    f = lambda z: z * k * stats.norm.pdf(z) * stats.norm.sf(z) ** (k - 1)  # noqa: E731
    return integrate.quad(f, -12, 12)[0]


def test_knn_immiscible_keeps_nearest_candidate_and_lowers_cost(pair_cost):
    g = torch.Generator().manual_seed(10)
    x0, x1 = torch.randn(512, 16, generator=g), torch.randn(512, 16, generator=g) + 0.5
    costs = []
    for k in (1, 2, 4, 16):
        gk = torch.Generator().manual_seed(11)
        out = KNNImmiscible(k=k, rescale=False)(x0, x1, generator=gk)
        d_kept = ((out.x0 - out.x1) ** 2).sum(1)
        d_own = ((x0 - x1) ** 2).sum(1)
        assert bool((d_kept <= d_own + 1e-5).all())  # never farther than its own candidate
        assert torch.equal(out.x1, x1)
        costs.append(d_kept.mean().item())
    assert costs[0] == pytest.approx(pair_cost(x0, x1))
    assert costs[0] > costs[1] > costs[2] > costs[3]
    # reproducible from the generator
    a = KNNImmiscible(4)(x0, x1, generator=torch.Generator().manual_seed(3)).x0
    b = KNNImmiscible(4)(x0, x1, generator=torch.Generator().manual_seed(3)).x0
    assert torch.equal(a, b)


def test_knn_immiscible_noise_shift_is_small_and_as_predicted():
    # The kept noise leans to its data point: E||z||^2 drops by ~ 2d |m_k| / sqrt(2d + 4||x||^2),
    # a relative shift of order 1/sqrt(d) (Gaussian approximation of the candidate distances).
    d, b, k = 512, 2048, 4
    g = torch.Generator().manual_seed(12)
    x1 = torch.randn(b, d, generator=g, dtype=torch.float64)  # ||x||^2 ~ d
    x0 = torch.randn(b, d, generator=g, dtype=torch.float64)
    kept = KNNImmiscible(k, rescale=False)(x0, x1, generator=g).x0
    shift = kept.square().sum(1).mean().item() / d - 1.0
    predicted = 2 * d * _mean_min_of_k_normals(k) / math.sqrt(2 * d + 4 * d) / d
    assert predicted == pytest.approx(-0.0372, abs=5e-4)
    assert shift == pytest.approx(predicted, rel=0.25)
    # the documented non-Gaussianity is detectable on norms at this size, yet small:
    # per coordinate the kept noise still has mean ~0 and variance within 5% of 1
    assert stats.ks_2samp(kept.square().sum(1).numpy(), x0.square().sum(1).numpy()).pvalue < 1e-6
    assert abs(kept.mean().item()) < 0.01 and abs(kept.var().item() - 1) < 0.05


def test_knn_immiscible_draws_candidates_from_a_prepared_source(tmp_path):
    class Constant(GaussianSource.__mro__[1]):  # a DataSource drawing one fixed point
        shape = (2,)

        def sample(self, n, generator=None, device="cpu"):
            return torch.full((n, 2), 5.0, device=device)

    c = COUPLINGS.build("knn_immiscible", k=3)
    assert prepare_coupling(c, Constant(), ToySource("moons"), tmp_path) is None
    x0 = torch.randn(100, 2, generator=torch.Generator().manual_seed(0))
    x1 = torch.randn(100, 2, generator=torch.Generator().manual_seed(1)) * 0.1 + 5
    kept = c(x0, x1, generator=torch.Generator().manual_seed(2)).x0
    assert torch.equal(kept, torch.full((100, 2), 5.0))  # the source's point is nearest to every x1
    c.prepare(GaussianSource((2,)), ToySource("moons"))  # Gaussian source: built-in sampler
    assert c.source is None


def test_knn_immiscible_rescale_scales_the_nearest_candidates_to_the_drawn_noise_norm():
    g = torch.Generator().manual_seed(20)
    x0, x1 = torch.randn(256, 2, 4, 4, generator=g), torch.randn(256, 2, 4, 4, generator=g) * 1.5
    nearest = KNNImmiscible(4, rescale=False)(x0, x1, generator=torch.Generator().manual_seed(1)).x0
    out = KNNImmiscible(4)(x0, x1, generator=torch.Generator().manual_seed(1))
    s = (x0.square().sum() / nearest.square().sum()).sqrt()
    assert s.item() > 1.0  # the nearest candidates are shorter than the drawn noise
    torch.testing.assert_close(out.x0, nearest * s)
    assert out.x0.square().sum().item() == pytest.approx(x0.square().sum().item(), rel=1e-5)
    assert torch.equal(out.x1, x1) and out.x0.shape == x0.shape
    with pytest.raises(ValueError, match="rescale"):
        KNNImmiscible(rescale="yes")


def _gaussian_w2(z):
    """W2 between the Gaussian fit of the sample z and N(0, I)."""
    z = z.double()
    ev = torch.linalg.eigvalsh(torch.cov(z.T)).clamp_min(0)
    return (z.mean(0).square().sum() + (ev + 1 - 2 * ev.sqrt()).sum()).sqrt().item()


@pytest.mark.parametrize("d", [2, 32, 64])
def test_knn_immiscible_default_keeps_the_noise_law_in_every_dimension(d):
    """Unscaled, the kept noise stays a fixed W2 distance from N(0, I) as d grows (about
    |m_4| / sqrt(2 + 4 sigma^2) for data of scale sigma, and as far in 2D); the default rescale brings its Gaussian fit
    back to the floor of a fresh N(0, I) sample, and the pairs stay shorter than independent ones."""
    g = torch.Generator().manual_seed(21)
    b, batches, sigma = 256, 32, 1.0
    x0 = torch.randn(batches, b, d, generator=g)
    x1 = torch.randn(batches, b, d, generator=g) * sigma
    runs = {}
    for rescale in (False, True):
        gk = torch.Generator().manual_seed(22)
        runs[rescale] = torch.cat(
            [KNNImmiscible(4, rescale=rescale)(x0[i], x1[i], generator=gk).x0 for i in range(batches)]
        )
    floor = _gaussian_w2(torch.randn(batches * b, d, generator=g))
    predicted = abs(_mean_min_of_k_normals(4)) / math.sqrt(2 + 4 * sigma**2)
    unscaled = math.sqrt(max(_gaussian_w2(runs[False]) ** 2 - floor**2, 0.0))
    if d >= 32:  # the Gaussian approximation of the candidate distances: the same in 32 and 64 dimensions
        assert unscaled == pytest.approx(predicted, rel=0.3)
    else:
        assert unscaled > 0.5 * predicted
    rescaled = _gaussian_w2(runs[True])
    assert rescaled < floor + 0.25 * predicted
    kept = runs[True]
    assert kept.mean(0).abs().max().item() < 4.5 / math.sqrt(len(kept))  # ~4 standard errors of a N(0, 1) mean
    assert kept.square().sum(1).mean().item() / d == pytest.approx(1.0, abs=4 * math.sqrt(2 / (d * len(kept))))
    x1f = x1.reshape(-1, d)
    assert ((kept - x1f) ** 2).sum(1).mean() < 0.97 * ((x0.reshape(-1, d) - x1f) ** 2).sum(1).mean()


def test_knn_immiscible_unscaled_leans_towards_the_data_mean():
    """The documented limit: rescaling fixes the scale, not the lean towards data with mean m."""
    g = torch.Generator().manual_seed(23)
    b, d = 8192, 32
    x0 = torch.randn(b, d, generator=g)
    for rescale in (False, True):
        kept = KNNImmiscible(rescale=rescale)(x0, torch.randn(b, d, generator=g) * 1.5 + 0.5, generator=g).x0
        assert 0.0 < kept.mean().item() < 0.2 * 0.5
