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
        out = KNNImmiscible(k=k)(x0, x1, generator=gk)
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
    kept = KNNImmiscible(k)(x0, x1, generator=g).x0
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


@pytest.mark.parametrize("d, var_low, lean", [(2, 0.75, 0.5), (32, 0.85, 0.2)])
def test_knn_immiscible_default_keeps_the_noise_close_to_standard_normal(d, var_low, lean):
    """The documented tolerance of the default k = 4 (data of unit scale): for centred data the kept
    noise's mean stays within 4 standard errors of 0 per coordinate and E||z||^2 / d within [var_low, 1] (it
    shrinks towards the data by O(1/sqrt(d))); for data with mean m the noise mean leans towards m
    by less than ``lean`` * m (about 0.4 m in 2D, 0.15 m in 32-D)."""
    g = torch.Generator().manual_seed(21)
    b = 8192
    assert KNNImmiscible().k == 4
    x0 = torch.randn(b, d, generator=g)
    kept = KNNImmiscible()(x0, torch.randn(b, d, generator=g) * 1.5, generator=g).x0
    assert kept.mean(0).abs().max().item() < 4 / math.sqrt(b)  # 4 standard errors of a N(0, 1) mean
    assert var_low <= kept.square().sum(1).mean().item() / d <= 1.0
    shifted = KNNImmiscible()(x0, torch.randn(b, d, generator=g) * 1.5 + 0.5, generator=g).x0
    assert 0.0 < shifted.mean().item() < lean * 0.5
