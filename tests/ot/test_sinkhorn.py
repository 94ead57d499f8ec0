"""Log-domain Sinkhorn against POT (balanced and unbalanced) and against the exact optimum."""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from monge.ot.exact import emd, squared_euclidean_cost
from monge.ot.sinkhorn import SinkhornResult, sinkhorn, sinkhorn_unbalanced

SETTINGS = settings(max_examples=20, deadline=None)


@st.composite
def problems(draw, max_n: int = 8):
    n = draw(st.integers(1, max_n))
    m = draw(st.integers(1, max_n))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    y = torch.randn(m, 2, generator=g, dtype=torch.float64)
    a = torch.rand(n, generator=g, dtype=torch.float64) + 0.05
    b = torch.rand(m, generator=g, dtype=torch.float64) + 0.05
    c = squared_euclidean_cost(x, y)
    return c / c.max().clamp_min(1e-3), a / a.sum(), b / b.sum()


@SETTINGS
@given(problems(), st.sampled_from([0.05, 0.2, 1.0]))
def test_matches_pot_sinkhorn_log(prob, eps):
    c, a, b = prob
    res = sinkhorn(c, a, b, eps, tol=1e-11, max_iter=20_000)
    assert isinstance(res, SinkhornResult) and res.converged
    ref = ot.bregman.sinkhorn_log(a.numpy(), b.numpy(), c.numpy(), eps, stopThr=1e-13, numItermax=50_000)
    np.testing.assert_allclose(res.plan.numpy(), ref, rtol=0, atol=1e-8)
    assert abs(float(res.cost) - float((ref * c.numpy()).sum())) <= 1e-8
    # marginals match the inputs
    torch.testing.assert_close(res.plan.sum(1), a, rtol=0, atol=1e-9)
    torch.testing.assert_close(res.plan.sum(0), b, rtol=0, atol=1e-9)
    assert float(res.marginal_error) <= 1e-9
    # the potentials reproduce the plan: P = a b^T exp((f + g - C) / eps)
    rebuilt = a[:, None] * b[None, :] * torch.exp((res.f[:, None] + res.g[None, :] - c) / eps)
    torch.testing.assert_close(rebuilt, res.plan, rtol=1e-9, atol=1e-12)


@SETTINGS
@given(problems(max_n=6))
def test_cost_converges_to_exact_as_eps_shrinks(prob):
    c, a, b = prob  # cost scale is 1
    exact = float(emd(c, a, b).cost)
    gaps = []
    for eps in (1e-1, 1e-2, 1e-3):
        res = sinkhorn(c, a, b, eps, tol=1e-10, max_iter=200_000, eps_scaling=0.5)
        assert res.converged
        assert float(res.marginal_error) <= 1e-9
        gaps.append(abs(float(res.cost) - exact))
    # entropic bias vanishes linearly in eps: |OT_eps - OT| <= eps * log(n m) (Genevay et al.)
    n, m = c.shape
    assert gaps[-1] <= 1e-3 * max(1.0, np.log(n * m)) + 1e-9
    assert gaps[-1] <= gaps[0] + 1e-9


def test_float32_stable_at_eps_1e_3_of_cost_scale():
    g = torch.Generator().manual_seed(3)
    c = squared_euclidean_cost(torch.randn(64, 2, generator=g), torch.randn(48, 2, generator=g))
    scale = float(c.max())
    res = sinkhorn(c, eps=1e-3 * scale, tol=1e-4, max_iter=50_000, eps_scaling=0.5)
    assert torch.isfinite(res.plan).all() and torch.isfinite(res.f).all() and torch.isfinite(res.g).all()
    assert res.plan.dtype == torch.float32
    assert float(res.marginal_error) <= 2e-3
    ref = sinkhorn(c.double(), eps=1e-3 * scale, tol=1e-10, max_iter=50_000, eps_scaling=0.5)
    assert abs(float(res.cost) - float(ref.cost)) <= 2e-3 * float(ref.cost)
    exact = float(emd(c.double()).cost)
    n, m = c.shape
    assert abs(float(ref.cost) - exact) <= 1e-3 * scale * np.log(n * m)


def test_batched_equals_loop():
    g = torch.Generator().manual_seed(0)
    c = torch.rand(3, 6, 5, generator=g, dtype=torch.float64)
    a = torch.rand(3, 6, generator=g, dtype=torch.float64) + 0.1
    a = a / a.sum(-1, keepdim=True)
    res = sinkhorn(c, a, None, 0.1, tol=1e-12, max_iter=10_000)
    assert res.plan.shape == (3, 6, 5) and res.f.shape == (3, 6) and res.cost.shape == (3,)
    for k in range(3):
        single = sinkhorn(c[k], a[k], None, 0.1, tol=1e-12, max_iter=10_000)
        torch.testing.assert_close(res.plan[k], single.plan, rtol=0, atol=1e-10)
        torch.testing.assert_close(res.cost[k], single.cost, rtol=0, atol=1e-10)


def test_eps_scaling_reaches_same_solution():
    g = torch.Generator().manual_seed(5)
    c = torch.rand(20, 30, generator=g, dtype=torch.float64)
    plain = sinkhorn(c, eps=0.01, tol=1e-11, max_iter=100_000)
    annealed = sinkhorn(c, eps=0.01, tol=1e-11, max_iter=100_000, eps_scaling=0.5)
    assert plain.converged and annealed.converged
    torch.testing.assert_close(annealed.plan, plain.plan, rtol=0, atol=1e-8)


def test_max_iter_cap_reports_not_converged():
    c = torch.rand(10, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    res = sinkhorn(c, eps=1e-3, tol=1e-12, max_iter=7)
    assert res.n_iter == 7 and not res.converged


@SETTINGS
@given(problems(), st.sampled_from([0.1, 1.0, 10.0]))
def test_unbalanced_matches_pot(prob, tau):
    c, a, b = prob
    eps = 0.1
    res = sinkhorn_unbalanced(c, a, b, eps, tau=tau, tol=1e-12, max_iter=50_000)
    assert res.converged
    ref = ot.unbalanced.sinkhorn_unbalanced(
        a.numpy(), b.numpy(), c.numpy(), eps, tau, stopThr=1e-14, numItermax=100_000
    )
    np.testing.assert_allclose(res.plan.numpy(), ref, rtol=0, atol=1e-8)


def test_unbalanced_tends_to_balanced_as_tau_grows():
    g = torch.Generator().manual_seed(1)
    c = torch.rand(6, 7, generator=g, dtype=torch.float64)
    bal = sinkhorn(c, eps=0.1, tol=1e-12, max_iter=10_000)
    inf = sinkhorn(c, eps=0.1, tau=float("inf"), tol=1e-12, max_iter=10_000)
    torch.testing.assert_close(inf.plan, bal.plan, rtol=0, atol=0)
    gaps = []
    for tau in (1.0, 10.0, 100.0):
        res = sinkhorn_unbalanced(c, eps=0.1, tau=tau, tol=1e-10, max_iter=20_000)
        gaps.append(float((res.plan - bal.plan).abs().max()))
    assert gaps[2] < gaps[1] < gaps[0]
    assert gaps[2] <= 1e-3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"a": torch.tensor([0.6, 0.6, -0.2])}, "a has negative"),
        ({"b": torch.tensor([0.3, 0.3, 0.3, 0.3])}, "b must sum to 1"),
        ({"a": torch.tensor([float("nan"), 0.5, 0.5])}, "a contains NaN"),
        ({"b": torch.tensor([])}, "b is empty"),
        ({"b": torch.tensor([0.5, 0.5])}, r"b must have shape \(4,\)"),
        ({"eps": 0.0}, "eps must be a positive"),
        ({"eps": float("nan")}, "eps must be a positive"),
        ({"tau": -1.0}, "tau must be a positive"),
        ({"eps_scaling": 1.5}, "eps_scaling"),
        ({"max_iter": 0}, "max_iter"),
    ],
)
def test_bad_inputs_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sinkhorn(torch.rand(3, 4), **kwargs)


def test_bad_costs_are_named():
    with pytest.raises(ValueError, match="cost contains"):
        sinkhorn(torch.tensor([[0.0, float("inf")]]))
    with pytest.raises(ValueError, match="cost is empty"):
        sinkhorn(torch.zeros(2, 0, 3))
    with pytest.raises(ValueError, match="cost must have shape"):
        sinkhorn(torch.rand(2, 2, 2, 2))
    with pytest.raises(ValueError, match=r"a must have shape \(2, 3\)"):
        sinkhorn(torch.rand(2, 3, 4), a=torch.full((5, 3), 1 / 3))
