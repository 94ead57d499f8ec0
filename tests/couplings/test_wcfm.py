import math
import warnings

import pytest
import torch
from scipy import special

from monge.couplings import WCFM, Entropic


def test_wcfm_weights_are_normalised_gibbs_kernel():
    g = torch.Generator().manual_seed(5)
    x0, x1 = (
        torch.randn(100, 3, generator=g, dtype=torch.float64),
        torch.randn(100, 3, generator=g, dtype=torch.float64),
    )
    out = WCFM(eps=2.0, marginal_correction=False)(x0, x1)
    c = ((x0 - x1) ** 2).sum(1)
    ref = torch.exp(-c / 2.0)
    torch.testing.assert_close(out.weights, ref / ref.mean(), rtol=1e-10, atol=0)
    assert torch.equal(out.x0, x0) and torch.equal(out.x1, x1)
    # default eps: r * median cost * sqrt(2 / d), dimension-aware
    out = WCFM(relative_eps=0.5, marginal_correction=False)(x0, x1)
    ref = torch.exp(-c / (0.5 * c.median() * math.sqrt(2 / 3)))
    torch.testing.assert_close(out.weights, ref / ref.mean(), rtol=1e-10, atol=0)
    # euclidean cost
    out = WCFM(eps=1.0, cost="euclidean", marginal_correction=False)(x0, x1)
    ref = torch.exp(-c.sqrt())
    torch.testing.assert_close(out.weights, ref / ref.mean(), rtol=1e-10, atol=0)


def test_wcfm_is_stable_for_huge_costs():
    g = torch.Generator().manual_seed(6)
    x0, x1 = torch.randn(64, 2, generator=g) * 1e4, torch.randn(64, 2, generator=g) * 1e4
    w = WCFM(eps=1e-3, min_ess=0.0, marginal_correction=False)(x0, x1).weights  # exp(-c/eps) underflows for every pair
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
    w = WCFM(eps=eps, marginal_correction=False)(x0, x1).weights
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
    hw = torch.stack(
        [(w * ((delta_w >= lo) & (delta_w < hi))).mean() for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    )
    hp = torch.stack(
        [(plan * ((delta_p >= lo) & (delta_p < hi))).sum() for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    )
    assert 0.5 * (hw - hp).abs().sum().item() < 0.03


def test_wcfm_lowers_weighted_cost_and_tilts_marginals():
    g = torch.Generator().manual_seed(8)
    x0, x1 = torch.randn(4096, 2, generator=g), torch.randn(4096, 2, generator=g) + 2
    c = ((x0 - x1) ** 2).sum(1)
    out = WCFM(eps=0.5 * c.mean().item(), min_ess=0.0, marginal_correction=False)(x0, x1)
    weighted = (out.weights * c).mean().item()
    assert weighted < 0.8 * c.mean().item()
    # no potentials: the weighted noise marginal leans towards the data (the documented tilt);
    # for N(0, I) -> N(m, I) the tilted noise law is N(m / (2 + eps / 2), .) exactly
    eps = 0.5 * c.mean().item()
    tilted_mean = (out.weights[:, None] * out.x0).mean(0)
    torch.testing.assert_close(tilted_mean, torch.full((2,), 2.0 / (2 + eps / 2)), atol=0.06, rtol=0)


def test_wcfm_default_eps_keeps_the_effective_sample_size_across_dimensions():
    # eps = r median(c) sqrt(2/d) ~ r std(c): the ESS share ~ exp(-1/r^2) in any dimension
    g = torch.Generator().manual_seed(9)
    shares = []
    for d in (2, 32, 256):
        x0, x1 = torch.randn(2048, d, generator=g), torch.randn(2048, d, generator=g)
        c = WCFM(marginal_correction=False)
        c(x0, x1)
        shares.append(c.last_ess)
    assert max(shares) - min(shares) < 0.15 and all(0.55 < s < 0.9 for s in shares), shares


def test_wcfm_marginal_correction_reproduces_the_sinkhorn_plan():
    from monge.ot import sinkhorn

    g = torch.Generator().manual_seed(10)
    b = 64
    x0 = torch.randn(b, 2, generator=g, dtype=torch.float64)
    x1 = torch.randn(b, 2, generator=g, dtype=torch.float64) * 0.5 + 1.5
    coupling = WCFM(eps=1.0, marginal_correction=True, tol=1e-10, max_iter=5000)
    w = coupling(x0, x1).weights
    cost = torch.cdist(x0, x1).square()
    plan = sinkhorn(cost, eps=1.0, tol=1e-10, max_iter=5000).plan
    # the weights are the plan's density on the diagonal pairs, normalised to mean 1
    torch.testing.assert_close(w, plan.diagonal() / plan.diagonal().mean(), rtol=1e-6, atol=0)
    # the Gibbs kernel rescaled by the same potentials has the plan's (uniform) marginals
    lw = coupling.corrected_log_weights(x0, x1)
    f_plus_g = lw * 1.0 + cost.diagonal()
    res = sinkhorn(cost, eps=1.0, tol=1e-10, max_iter=5000)
    rebuilt = torch.exp((res.f[:, None] + res.g[None, :] - cost) / 1.0) / b**2
    torch.testing.assert_close(rebuilt.sum(1), torch.full((b,), 1 / b, dtype=torch.float64), rtol=1e-6, atol=0)
    torch.testing.assert_close(rebuilt.sum(0), torch.full((b,), 1 / b, dtype=torch.float64), rtol=1e-6, atol=0)
    torch.testing.assert_close(f_plus_g, res.f + res.g)


def test_wcfm_marginal_correction_removes_the_tilt():
    # N(0, I) -> N(m, I): the plain weights pull the weighted noise mean towards m, the corrected
    # ones keep it near 0 (the plan's noise marginal is uniform on the batch)
    g = torch.Generator().manual_seed(11)
    x0, x1 = torch.randn(1024, 2, generator=g), torch.randn(1024, 2, generator=g) + 2
    plain = WCFM(relative_eps=1.0, min_ess=0.0, marginal_correction=False)(x0, x1)
    fixed = WCFM(relative_eps=1.0, marginal_correction=True, min_ess=0.0)(x0, x1)
    mean_plain = (plain.weights[:, None] * x0).mean(0)
    mean_fixed = (fixed.weights[:, None] * x0).mean(0)
    assert mean_plain.min().item() > 0.15
    assert mean_fixed.abs().max().item() < 0.5 * mean_plain.min().item()


def test_wcfm_warns_on_a_small_effective_sample_size_and_on_a_failed_solve():
    g = torch.Generator().manual_seed(12)
    x0, x1 = torch.randn(256, 2, generator=g), torch.randn(256, 2, generator=g) + 3
    coupling = WCFM(eps=0.05, marginal_correction=False)
    with pytest.warns(RuntimeWarning, match="effective sample size"):
        coupling(x0, x1)
    assert coupling.last_ess < 0.1
    with pytest.warns(RuntimeWarning, match="did not converge"):
        WCFM(eps=0.05, marginal_correction=True, max_iter=1, min_ess=0.0)(x0, x1)
    with pytest.raises(ValueError, match="min_ess"):
        WCFM(min_ess=2.0)
    with pytest.raises(ValueError, match="marginal_correction"):
        WCFM(marginal_correction="yes")


def _pot_weights(x0, x1, eps, cost="sqeuclidean"):
    """Diagonal of POT's converged Sinkhorn plan on the batch's cost, normalised to mean 1."""
    import ot

    m = torch.cdist(x0.double(), x1.double()).square()
    if cost == "euclidean":
        m = m.sqrt()
    n = len(x0)
    plan = torch.as_tensor(ot.sinkhorn(ot.unif(n), ot.unif(n), m.numpy(), eps, stopThr=1e-12, numItermax=100_000))
    return plan, plan.diagonal() / plan.diagonal().mean()


@pytest.mark.parametrize("d", [2, 64, 256])
def test_wcfm_kernel_domain_correction_matches_pot_sinkhorn(d):
    g = torch.Generator().manual_seed(30 + d)
    x0 = torch.randn(256, d, generator=g, dtype=torch.float64)
    x1 = torch.randn(256, d, generator=g, dtype=torch.float64) * 0.7 + 0.5
    coupling = WCFM()
    w = coupling(x0, x1).weights
    assert coupling.last_marginal_error < coupling.tol and coupling.last_iterations < 20
    eps = coupling.temperature(((x0 - x1) ** 2).sum(1), d)
    _, ref = _pot_weights(x0, x1, eps)
    # tol bounds the L1 marginal error (1e-4): the weights are within a few 1e-4 of the exact plan's
    torch.testing.assert_close(w, ref, rtol=1e-3, atol=0)
    tight = WCFM(tol=1e-12)
    torch.testing.assert_close(tight(x0, x1).weights, ref, rtol=1e-8, atol=0)
    assert tight.last_marginal_error < 1e-12


def test_sinkhorn_scaling_gives_uniform_marginals_within_tol():
    import ot

    from monge.couplings.weighted import sinkhorn_scaling

    g = torch.Generator().manual_seed(31)
    x0, x1 = (
        torch.randn(200, 5, generator=g, dtype=torch.float64),
        torch.rand(200, 5, generator=g, dtype=torch.float64) * 3,
    )
    cost = torch.cdist(x0, x1).square()
    eps = 0.3 * cost.std().item()
    kernel = torch.exp(-(cost - cost.min()) / eps)
    for tol in (1e-3, 1e-6):
        u, v, err, it = sinkhorn_scaling(kernel, tol, 10_000)
        plan = u[:, None] * kernel * v[None]
        uniform = torch.full((200,), 1 / 200, dtype=torch.float64)
        torch.testing.assert_close(plan.sum(1), uniform, rtol=1e-12, atol=0)  # rows exact after the u update
        assert (plan.sum(0) - uniform).abs().sum().item() == pytest.approx(err, rel=1e-6) and err < tol
    ref = ot.sinkhorn(ot.unif(200), ot.unif(200), cost.numpy(), eps, stopThr=1e-12, numItermax=100_000)
    assert (plan - torch.as_tensor(ref)).abs().sum().item() < 1e-5
    u, v, err, it = sinkhorn_scaling(kernel, 1e-12, 2)
    assert it == 2 and err > 1e-12  # capped


def test_wcfm_kernel_and_log_domains_agree_and_the_log_domain_takes_small_eps():
    g = torch.Generator().manual_seed(32)
    x0 = torch.randn(128, 3, generator=g, dtype=torch.float64)
    x1 = torch.randn(128, 3, generator=g, dtype=torch.float64) + 1
    for cost in ("sqeuclidean", "euclidean"):
        fast, slow = WCFM(cost=cost, tol=1e-9), WCFM(cost=cost, tol=1e-9, sinkhorn_domain="log")
        a, b = fast(x0, x1), slow(x0, x1)
        torch.testing.assert_close(a.weights, b.weights, rtol=1e-6, atol=0)
        assert a.plan_entropy == pytest.approx(b.plan_entropy, abs=1e-8)
        torch.testing.assert_close(
            fast.corrected_log_weights(x0, x1), slow.corrected_log_weights(x0, x1), rtol=0, atol=1e-6
        )
    # a temperature far below the cost range (e^{-C/eps} spans > 100 e-folds): log domain, same plan as POT
    full = torch.cdist(x0, x1).square()
    eps = (full.max() - full.min()).item() / 150
    coupling = WCFM(eps=eps, tol=1e-6, max_iter=20_000, min_ess=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        w = coupling(x0, x1).weights
    _, ref = _pot_weights(x0, x1, eps)
    torch.testing.assert_close(w, ref, rtol=1e-3, atol=1e-12)
    with pytest.raises(ValueError, match="sinkhorn_domain"):
        WCFM(sinkhorn_domain="exp")


def test_scaled_plan_entropy_equals_plan_entropy_of_the_formed_plan():
    from monge.couplings.diagnostics import plan_entropy
    from monge.couplings.weighted import scaled_plan_entropy, sinkhorn_scaling

    g = torch.Generator().manual_seed(33)
    cost = torch.cdist(
        torch.randn(64, 2, generator=g, dtype=torch.float64), torch.randn(64, 2, generator=g, dtype=torch.float64)
    ).square()
    for eps in (0.1, 1.0, 10.0):
        log_k = -(cost - cost.min()) / eps
        kernel = log_k.exp()
        u, v, _, _ = sinkhorn_scaling(kernel, 1e-3, 1000)  # not exact marginals: the formula must not assume them
        want = plan_entropy(u[:, None] * kernel * v[None])
        assert scaled_plan_entropy(kernel, log_k, u, v) == pytest.approx(want, abs=1e-10)


def test_wcfm_cost_matrix_matches_cdist_in_float32():
    g = torch.Generator().manual_seed(34)
    x0, x1 = torch.randn(100, 256, generator=g) + 3, torch.randn(100, 256, generator=g) * 2 + 3  # off-centre
    ref = torch.cdist(x0.double(), x1.double()).square()
    got = WCFM()._cost_matrix(x0, x1)
    assert got.dtype == torch.float32
    # one matrix product on centred points: float32 rounding of the squared norms only
    assert ((got.double() - ref).abs().max() / ref.mean()).item() < 1e-5
    torch.testing.assert_close(got.diagonal(), ((x0 - x1) ** 2).sum(1))  # the pairs' own costs exactly
    torch.testing.assert_close(WCFM(cost="euclidean")._cost_matrix(x0, x1).double(), ref.sqrt(), rtol=1e-5, atol=0)
