import pytest
import torch
from scipy.optimize import linear_sum_assignment

from monge.couplings import COUPLINGS, ExactOT, Independent


def _pair_cost(x0, x1):
    return ((x0 - x1) ** 2).sum(1).mean().item()


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("shape", [(64, 2), (33, 5), (16, 1, 3, 3)])
def test_exact_ot_matches_scipy_assignment_cost(seed, shape):
    g = torch.Generator().manual_seed(seed)
    x0, x1 = torch.randn(shape, generator=g), torch.randn(shape, generator=g) * 2 + 1
    out = ExactOT()(x0, x1)
    cost = ((x1.reshape(len(x1), -1)[:, None] - x0.reshape(len(x0), -1)[None]) ** 2).sum(-1).double()
    rows, cols = linear_sum_assignment(cost.numpy())
    assert _pair_cost(out.x0.reshape(len(x0), -1), out.x1.reshape(len(x1), -1)) == pytest.approx(
        cost[rows, cols].mean().item(), rel=1e-5
    )
    # a permutation of the source: every sample used once, data untouched
    assert torch.equal(out.x1, x1)
    assert torch.equal(out.x0.reshape(len(x0), -1).sort(0).values, x0.reshape(len(x0), -1).sort(0).values)


def test_exact_ot_lowers_pair_cost_vs_independent():
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(256, 2, generator=g), torch.randn(256, 2, generator=g)
    ind, ot = Independent()(x0, x1), ExactOT()(x0, x1)
    # same law on both sides: independent pairs cost E||x0 - x1||^2 = 4, OT pairs only the
    # finite-sample W2^2, which shrinks with the batch
    assert _pair_cost(ind.x0, ind.x1) == pytest.approx(4.0, rel=0.15)
    assert _pair_cost(ot.x0, ot.x1) < 0.25 * _pair_cost(ind.x0, ind.x1)


def test_independent_truncates_to_common_batch():
    out = Independent()(torch.randn(10, 2), torch.randn(7, 2))
    assert out.x0.shape == out.x1.shape == (7, 2) and out.weights is None


def test_registry_lists_choices_on_unknown_name():
    with pytest.raises(ValueError, match="valid choices: .*exact_ot.*independent"):
        COUPLINGS.build("exact-ot")


@pytest.mark.parametrize(
    "x0,x1,msg",
    [
        (torch.randn(4, 2), torch.randn(5, 2), "equal batch sizes"),
        (torch.randn(4, 2), torch.randn(4, 3), "sample shape"),
        (torch.full((4, 2), float("nan")), torch.randn(4, 2), "x0 contains 8 NaN"),
        (torch.randn(0, 2), torch.randn(0, 2), "empty"),
    ],
)
def test_exact_ot_bad_input(x0, x1, msg):
    with pytest.raises(ValueError, match=msg):
        ExactOT()(x0, x1)


# ---------------------------------------------------------------------------------- entropic
import math  # noqa: E402

import numpy as np  # noqa: E402
import ot as pot  # noqa: E402
from scipy import integrate, special, stats  # noqa: E402

from monge.couplings import (  # noqa: E402
    WCFM,
    Entropic,
    Immiscible,
    KNNImmiscible,
    SchrodingerBridge,
)


def _sq_cost(a, b):
    return ((a.reshape(len(a), -1)[:, None].double() - b.reshape(len(b), -1)[None].double()) ** 2).sum(-1)


def _rows_index(sub, full):
    """Index in ``full`` of each row of ``sub`` (rows of ``full`` are distinct)."""
    eq = (sub[:, None, :] == full[None, :, :]).all(-1)
    assert bool((eq.sum(1) == 1).all())
    return eq.float().argmax(1)


@pytest.mark.parametrize("eps,relative", [(None, 0.05), (None, 0.3), (0.5, 0.05)])
def test_entropic_plan_matches_pot(eps, relative):
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(48, 3, generator=g, dtype=torch.float64), torch.randn(40, 3, generator=g, dtype=torch.float64) + 1
    c = Entropic(eps=eps, relative_eps=relative, tol=1e-9, max_iter=20000)
    plan = c.plan(x0, x1)
    cost = _sq_cost(x0, x1).numpy()
    reg = eps if eps is not None else relative * cost.mean()
    ref = pot.bregman.sinkhorn_log(np.full(48, 1 / 48), np.full(40, 1 / 40), cost, reg, numItermax=20000, stopThr=1e-12)
    np.testing.assert_allclose(plan.numpy(), ref, atol=1e-7, rtol=1e-4)


def test_entropic_data_sampling_follows_plan_columns():
    # every data point kept once; its noise drawn from the conditional plan column. Six noises
    # and six data points, each repeated r times: the plan is the 6x6 plan spread over blocks,
    # so one call gives r draws from each conditional column.
    g = torch.Generator().manual_seed(1)
    x0, x1 = torch.randn(6, 2, generator=g, dtype=torch.float64), torch.randn(6, 2, generator=g, dtype=torch.float64)
    c = Entropic(eps=1.0, tol=1e-8, max_iter=5000)
    cond = (c.plan(x0, x1) * 6).T  # rows: data j, cols: noise i
    r, calls = 100, 12
    big0, big1 = x0.repeat(r, 1), x1.repeat(r, 1)
    counts = torch.zeros(6, 6, dtype=torch.float64)
    fast = Entropic(eps=1.0)  # default tol 1e-3: L1 plan error below the tolerance used here
    for _ in range(calls):
        out = fast(big0, big1, generator=g)
        assert torch.equal(out.x1, big1)
        counts.index_put_((torch.arange(6).repeat(r), _rows_index(out.x0, x0)), torch.ones(6 * r, dtype=torch.float64), accumulate=True)
    n_draws = r * calls
    freq = counts / n_draws
    se = (cond * (1 - cond) / n_draws).sqrt()
    assert bool(((freq - cond).abs() <= 5 * se + 2e-3).all()), (freq - cond).abs().max()


@pytest.mark.parametrize("sampling", ["data", "noise", "plan"])
def test_entropic_lowers_pair_cost_and_tends_to_exact(sampling):
    g = torch.Generator().manual_seed(2)
    x0, x1 = torch.randn(256, 2, generator=g), torch.randn(256, 2, generator=g) + torch.tensor([3.0, 0.0])
    ind = _pair_cost(x0, x1)
    ot_cost = _pair_cost(*(lambda o: (o.x0, o.x1))(ExactOT()(x0, x1)))
    costs = []
    for rel in (0.5, 0.05, 0.005):
        out = Entropic(relative_eps=rel, sampling=sampling, max_iter=3000)(x0, x1, generator=g)
        assert out.x0.shape == out.x1.shape == (256, 2)
        costs.append(_pair_cost(out.x0, out.x1))
    assert ind > costs[0] > costs[1] > costs[2] >= ot_cost * 0.98
    assert costs[2] < 1.15 * ot_cost  # small eps: near the exact OT cost


def test_entropic_sampling_duplicates():
    g = torch.Generator().manual_seed(3)
    x0, x1 = torch.randn(128, 2, generator=g), torch.randn(128, 2, generator=g)
    data = Entropic(relative_eps=0.5, sampling="data")(x0, x1, generator=g)
    noise = Entropic(relative_eps=0.5, sampling="noise")(x0, x1, generator=g)
    plan = Entropic(relative_eps=0.5, sampling="plan")(x0, x1, generator=g)
    assert torch.equal(data.x1, x1) and torch.equal(noise.x0, x0)
    # with-replacement sampling from the whole plan drops data points (TorchCFM issue #142)
    assert len(torch.unique(plan.x1, dim=0)) < 128


def test_schrodinger_bridge_eps_is_two_sigma_squared():
    g = torch.Generator().manual_seed(4)
    x0, x1 = torch.randn(32, 2, generator=g, dtype=torch.float64), torch.randn(32, 2, generator=g, dtype=torch.float64)
    sb = SchrodingerBridge(sigma=0.7, tol=1e-10, max_iter=20000)
    assert sb.eps == pytest.approx(2 * 0.49)
    u = np.full(32, 1 / 32)
    ref = pot.sinkhorn(u, u, _sq_cost(x0, x1).numpy(), 2 * 0.7**2, numItermax=20000, stopThr=1e-12)
    np.testing.assert_allclose(sb.plan(x0, x1).numpy(), ref, atol=1e-7, rtol=1e-4)
    assert COUPLINGS.build("schrodinger_bridge", sigma=0.7).eps == pytest.approx(0.98)
    # pairs: lower cost than independent on a shifted target
    x1s = x1 + 3
    out = sb(x0, x1s, generator=g)
    assert _pair_cost(out.x0, out.x1) < _pair_cost(x0, x1s)


# -------------------------------------------------------------------------------------- wcfm
def test_wcfm_weights_are_normalised_gibbs_kernel():
    g = torch.Generator().manual_seed(5)
    x0, x1 = torch.randn(100, 3, generator=g, dtype=torch.float64), torch.randn(100, 3, generator=g, dtype=torch.float64)
    out = WCFM(eps=2.0)(x0, x1)
    c = ((x0 - x1) ** 2).sum(1)
    ref = torch.exp(-c / 2.0)
    torch.testing.assert_close(out.weights, ref / ref.mean(), rtol=1e-10, atol=0)
    assert torch.equal(out.x0, x0) and torch.equal(out.x1, x1)
    # default eps: relative to the batch's mean cost
    out = WCFM(relative_eps=0.5)(x0, x1)
    ref = torch.exp(-c / (0.5 * c.mean()))
    torch.testing.assert_close(out.weights, ref / ref.mean(), rtol=1e-10, atol=0)
    # euclidean cost
    out = WCFM(eps=1.0, cost="euclidean")(x0, x1)
    ref = torch.exp(-c.sqrt())
    torch.testing.assert_close(out.weights, ref / ref.mean(), rtol=1e-10, atol=0)


def test_wcfm_is_stable_for_huge_costs():
    g = torch.Generator().manual_seed(6)
    x0, x1 = torch.randn(64, 2, generator=g) * 1e4, torch.randn(64, 2, generator=g) * 1e4
    w = WCFM(eps=1e-3)(x0, x1).weights  # exp(-c/eps) underflows for every pair
    assert bool(torch.isfinite(w).all()) and w.mean().item() == pytest.approx(1.0, rel=1e-5)
    assert w.max().item() == pytest.approx(64.0, rel=1e-5)  # all mass on the nearest pair


def test_wcfm_large_batch_matches_entropic_plan_on_the_circle():
    # On the circle with uniform marginals the entropic potentials are constant, so the Gibbs
    # kernel tilt of W-CFM *is* the entropic plan: both give a von Mises law of the angle
    # difference with concentration 2/eps (cost |e^{ia} - e^{ib}|^2 = 2 - 2 cos(a - b)).
    eps = 0.5
    kappa = 2.0 / eps
    g = torch.Generator().manual_seed(7)

    def circle(n):
        a = torch.rand(n, generator=g, dtype=torch.float64) * 2 * math.pi
        return a, torch.stack([a.cos(), a.sin()], 1)

    a0, x0 = circle(50_000)
    a1, x1 = circle(50_000)
    w = WCFM(eps=eps)(x0, x1).weights
    delta_w = torch.remainder(a1 - a0 + math.pi, 2 * math.pi) - math.pi
    closed = special.i1(kappa) / special.i0(kappa)
    assert (w * delta_w.cos()).mean().item() == pytest.approx(closed, abs=0.01)

    b0, y0 = circle(800)
    b1, y1 = circle(800)
    plan = Entropic(eps=eps, tol=1e-8, max_iter=5000).plan(y0, y1)
    delta_p = torch.remainder(b1[None] - b0[:, None] + math.pi, 2 * math.pi) - math.pi
    assert (plan * delta_p.cos()).sum().item() == pytest.approx(closed, abs=0.01)
    # weighted pair histogram vs plan histogram of the angle difference: total variation
    edges = torch.linspace(-math.pi, math.pi, 13, dtype=torch.float64)
    hw = torch.stack([(w * ((delta_w >= lo) & (delta_w < hi))).mean() for lo, hi in zip(edges[:-1], edges[1:])])
    hp = torch.stack([(plan * ((delta_p >= lo) & (delta_p < hi))).sum() for lo, hi in zip(edges[:-1], edges[1:])])
    assert 0.5 * (hw - hp).abs().sum().item() < 0.03


def test_wcfm_lowers_weighted_cost_and_tilts_marginals():
    g = torch.Generator().manual_seed(8)
    x0, x1 = torch.randn(4096, 2, generator=g), torch.randn(4096, 2, generator=g) + 2
    out = WCFM(relative_eps=0.5)(x0, x1)
    c = ((x0 - x1) ** 2).sum(1)
    weighted = (out.weights * c).mean().item()
    assert weighted < 0.8 * c.mean().item()
    # no potentials: the weighted noise marginal leans towards the data (the documented tilt);
    # for N(0, I) -> N(m, I) the tilted noise law is N(m / (2 + eps / 2), .) exactly
    eps = 0.5 * c.mean().item()
    tilted_mean = (out.weights[:, None] * out.x0).mean(0)
    torch.testing.assert_close(tilted_mean, torch.full((2,), 2.0 / (2 + eps / 2)), atol=0.06, rtol=0)


# -------------------------------------------------------------------------------- immiscible
@pytest.mark.parametrize("seed", range(3))
def test_immiscible_matches_scipy_on_unsquared_distance(seed):
    g = torch.Generator().manual_seed(seed)
    x0, x1 = torch.randn(64, 1, 4, 4, generator=g), torch.rand(64, 1, 4, 4, generator=g) * 2 - 1
    out = Immiscible()(x0, x1)
    dist = _sq_cost(x1, x0).sqrt()
    rows, cols = linear_sum_assignment(dist.numpy())
    got = (out.x0 - out.x1).reshape(64, -1).double().norm(dim=1).sum().item()
    assert got == pytest.approx(dist[rows, cols].sum().item(), rel=1e-5)
    assert got < (x0 - x1).reshape(64, -1).double().norm(dim=1).sum().item()
    assert torch.equal(out.x1, x1)


def test_immiscible_keeps_the_noise_marginal():
    g = torch.Generator().manual_seed(9)
    x0 = torch.randn(1024, 8, generator=g, dtype=torch.float64)
    x1 = torch.rand(1024, 8, generator=g, dtype=torch.float64) * 4 - 2 + 1.0  # data far from 0
    out = Immiscible()(x0, x1)
    # the noise is only permuted: the same set of points
    assert torch.equal(out.x0[_rows_index(x0, out.x0)], x0)
    # still N(0, I): per-coordinate KS tests and a norm test against chi^2_8
    pvals = [stats.kstest(out.x0[:, k].numpy(), "norm").pvalue for k in range(8)]
    assert min(pvals) * 8 > 1e-3  # Bonferroni
    assert stats.kstest(out.x0.square().sum(1).numpy(), "chi2", args=(8,)).pvalue > 1e-3
    # ...but re-paired: pair distance drops
    assert _pair_cost(out.x0, out.x1) < 0.9 * _pair_cost(x0, x1)


def _mean_min_of_k_normals(k):
    f = lambda z: z * k * stats.norm.pdf(z) * stats.norm.sf(z) ** (k - 1)  # noqa: E731
    return integrate.quad(f, -12, 12)[0]


def test_knn_immiscible_keeps_nearest_candidate_and_lowers_cost():
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
    assert costs[0] == pytest.approx(_pair_cost(x0, x1))
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


@pytest.mark.parametrize(
    "coupling,match",
    [
        (lambda: Immiscible()(torch.randn(4, 2), torch.randn(5, 2)), "equal batch sizes"),
        (lambda: KNNImmiscible(0), "k must be a positive integer"),
        (lambda: WCFM(eps=-1.0), "eps must be a positive"),
        (lambda: WCFM(cost="l1"), "cost must be"),
        (lambda: Entropic(sampling="rows"), "sampling must be"),
        (lambda: SchrodingerBridge(sigma=0), "sigma must be a positive"),
        (lambda: COUPLINGS.build("wcfm", temperature=1.0), "accepted: eps, relative_eps, cost"),
        (lambda: Entropic()(torch.randn(4, 2), torch.full((4, 2), float("inf"))), "x1 contains 8 NaN/Inf"),
    ],
)
def test_new_couplings_bad_input(coupling, match):
    with pytest.raises(ValueError, match=match):
        coupling()


# ---------------------------------------------------------------------------- semi-discrete
from monge.couplings import SemiDiscreteOT, expressway_sample, expressway_start, prepare_coupling  # noqa: E402
from monge.data.sources import GaussianSource, ToySource  # noqa: E402


def _fitted(n_targets=32, seed=0, target="8gaussians"):
    c = SemiDiscreteOT(n_targets=n_targets, tol=0.05)
    c.prepare(GaussianSource((2,)), ToySource(target), torch.Generator().manual_seed(seed))
    return c


def test_semidiscrete_pairs_match_fitted_cells():
    c = _fitted()
    m = c.map
    assert m.n_targets == 32 and c.fit_info["converged"]
    g = torch.Generator().manual_seed(1)
    x0, x1 = torch.randn(500, 2, generator=g), torch.randn(500, 2, generator=g)
    out = c(x0, x1, generator=g)
    assert torch.equal(out.x0, x0)
    # brute force: argmax_i <x, y_i> + h_i
    best = (x0.double() @ m.flat.double().T + m.heights.double()).argmax(1)
    torch.testing.assert_close(out.x1, m.targets[best])
    # cells of the fitted map carry equal source mass (fresh samples; noise ~ sqrt(32/2e5) = 1.3%)
    masses = m.cell_masses(200_000, torch.Generator().manual_seed(2))
    assert (masses * 32 - 1).abs().mean().item() < 0.08
    # OT: lower mean pair cost than pairing the noise with random targets
    rand = m.targets[torch.randint(32, (500,), generator=g)]
    assert _pair_cost(out.x0, out.x1) < 0.7 * _pair_cost(x0, rand)


def test_semidiscrete_uses_finite_data_sets_and_other_sources():
    class Finite(GaussianSource):
        def __init__(self, data):
            super().__init__((3,))
            self.data = data

    data = torch.randn(40, 3, generator=torch.Generator().manual_seed(3)) + 2
    whole = SemiDiscreteOT(n_targets=None, tol=0.1)
    whole.prepare(GaussianSource((3,)), Finite(data), torch.Generator().manual_seed(4))
    assert torch.equal(whole.map.targets, data)
    sub = SemiDiscreteOT(n_targets=10, tol=0.1)
    y = sub.targets_from(Finite(data), torch.Generator().manual_seed(5))
    assert y.shape == (10, 3) and bool(((y[:, None] == data[None]).all(-1)).any(1).all())
    assert len(torch.unique(y, dim=0)) == 10  # a subset without repeats
    # a non-Gaussian source: cells equal in the mass of that source
    src = ToySource("moons")
    c = SemiDiscreteOT(n_targets=16, tol=0.05)
    c.prepare(src, ToySource("8gaussians"), torch.Generator().manual_seed(6))
    masses = c.map.cell_masses(100_000, torch.Generator().manual_seed(7), source=lambda n, g: src.sample(n, g))
    assert (masses * 16 - 1).abs().mean().item() < 0.1
    with pytest.raises(ValueError, match="n_targets=None needs a finite data set"):
        SemiDiscreteOT(n_targets=None).targets_from(ToySource("moons"))


def test_semidiscrete_prepare_is_cached_next_to_the_checkpoint(tmp_path):
    src, tgt = GaussianSource((2,)), ToySource("moons")
    a = COUPLINGS.build("semidiscrete_ot", n_targets=24, tol=0.1)
    path = prepare_coupling(a, src, tgt, tmp_path, torch.Generator().manual_seed(0))
    assert path == tmp_path / "semidiscrete.safetensors" and path.is_file()
    b = COUPLINGS.build("semidiscrete_ot", n_targets=24, tol=0.1)
    b.prepare = None  # type: ignore[assignment]  # must load, not refit
    assert prepare_coupling(b, src, tgt, tmp_path) == path
    x0 = torch.randn(64, 2)
    assert torch.equal(a(x0, x0).x1, b(x0, x0).x1)
    assert prepare_coupling(COUPLINGS.build("exact_ot"), src, tgt, tmp_path) is None
    with pytest.raises(ValueError, match="semidiscrete_ot is not fitted"):
        SemiDiscreteOT()(x0, x0)


def test_expressway_start_and_sample():
    c = _fitted(seed=8)
    z = torch.randn(200, 2, generator=torch.Generator().manual_seed(9))
    y = c.map(z)[1]
    x, t = expressway_start(c.map, z, 0.6, "linear", reuse_noise=True)
    assert t == 0.6
    torch.testing.assert_close(x, 0.4 * z + 0.6 * y)
    x, _ = expressway_start(c.map, z, 0.6, "vp", generator=torch.Generator().manual_seed(1))
    xi = torch.randn(200, 2, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(x, torch.cos(torch.tensor(0.3 * math.pi)) * xi + torch.sin(torch.tensor(0.3 * math.pi)) * y)
    # with the exact conditional field towards y, the sampler lands on y from the start
    field = lambda xt, tt: (y - xt) / (1 - tt[:, None])  # noqa: E731
    out = expressway_sample(field, c.map, z, t_start=0.5, nfe=2, reuse_noise=True)
    assert out.nfe == 2
    torch.testing.assert_close(out.x, y, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="t_start must be"):
        expressway_start(c.map, z, 1.0)
    with pytest.raises(ValueError, match="affine path"):
        expressway_start(c.map, z, 0.5, object())  # type: ignore[arg-type]


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
