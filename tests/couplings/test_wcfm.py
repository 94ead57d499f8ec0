import math

import pytest
import torch
from scipy import special

from monge.couplings import WCFM, Entropic


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
