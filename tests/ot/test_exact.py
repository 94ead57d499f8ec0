"""Exact OT: plans, costs and permutations checked against scipy's LP / assignment solvers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment, linprog

from monge.ot.exact import ExactResult, assignment, emd, exact_ot, squared_euclidean_cost

SETTINGS = settings(max_examples=25, deadline=None)


def _lp_cost(c: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Independent reference: the Kantorovich LP solved by HiGHS."""
    n, m = c.shape
    a_eq = np.zeros((n + m, n * m))
    for i in range(n):
        a_eq[i, i * m : (i + 1) * m] = 1.0
    for j in range(m):
        a_eq[n + j, j::m] = 1.0
    res = linprog(c.ravel(), A_eq=a_eq, b_eq=np.concatenate([a, b]), bounds=(0, None), method="highs")
    assert res.status == 0
    return float(res.fun)


@st.composite
def problems(draw, square: bool = False):
    n = draw(st.integers(1, 7))
    m = n if square else draw(st.integers(1, 7))
    d = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(m, d, generator=g, dtype=torch.float64) + 0.5
    a = torch.rand(n, generator=g, dtype=torch.float64) + 0.05
    b = torch.rand(m, generator=g, dtype=torch.float64) + 0.05
    return x, y, a / a.sum(), b / b.sum()


def test_squared_euclidean_cost_matches_cdist():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 2, 3, generator=g, dtype=torch.float64)
    y = torch.randn(4, 2, 3, generator=g, dtype=torch.float64)
    ref = torch.cdist(x.flatten(1), y.flatten(1)) ** 2
    torch.testing.assert_close(squared_euclidean_cost(x, y), ref, rtol=1e-10, atol=1e-10)


@SETTINGS
@given(problems())
def test_weighted_plan_marginals_and_cost_match_lp(prob):
    x, y, a, b = prob
    res = exact_ot(x, y, a, b)
    assert isinstance(res, ExactResult)
    assert res.plan.shape == (x.shape[0], y.shape[0])
    assert bool((res.plan >= -1e-12).all())
    torch.testing.assert_close(res.plan.sum(1), a, rtol=0, atol=1e-9)
    torch.testing.assert_close(res.plan.sum(0), b, rtol=0, atol=1e-9)
    c = squared_euclidean_cost(x, y)
    ref = _lp_cost(c.numpy(), a.numpy(), b.numpy())
    assert abs(float(res.cost) - ref) <= 1e-7 * max(1.0, abs(ref))
    assert abs(float((res.plan * c).sum()) - ref) <= 1e-7 * max(1.0, abs(ref))


@SETTINGS
@given(problems(square=True), st.sampled_from(["auto", "scipy", "emd"]))
def test_assignment_is_an_optimal_permutation(prob, method):
    x, y, _, _ = prob
    n = x.shape[0]
    c = squared_euclidean_cost(x, y)
    perm = assignment(c, method=method)
    assert perm.dtype == torch.int64 and perm.shape == (n,)
    assert sorted(perm.tolist()) == list(range(n))
    got = float(c[torch.arange(n), perm].sum())
    brute = min(sum(float(c[i, s[i]]) for i in range(n)) for s in itertools.permutations(range(n)))
    assert abs(got - brute) <= 1e-9 * max(1.0, brute)


@SETTINGS
@given(problems(square=True))
def test_uniform_square_emd_returns_permutation_plan(prob):
    x, y, _, _ = prob
    n = x.shape[0]
    res = exact_ot(x, y)
    assert res.perm is not None
    expected = torch.zeros(n, n, dtype=x.dtype)
    expected[torch.arange(n), res.perm] = 1.0 / n
    torch.testing.assert_close(res.plan, expected, rtol=0, atol=0)
    u = np.full(n, 1.0 / n)
    ref = _lp_cost(squared_euclidean_cost(x, y).numpy(), u, u)
    assert abs(float(res.cost) - ref) <= 1e-9 * max(1.0, ref)


@pytest.mark.parametrize("n", [300, 600])
def test_emd_and_scipy_agree_on_larger_assignments(n):
    g = torch.Generator().manual_seed(n)
    c = squared_euclidean_cost(torch.randn(n, 2, generator=g), torch.randn(n, 2, generator=g))
    p_emd, p_sp = assignment(c, "emd"), assignment(c, "scipy")
    assert torch.equal(torch.sort(p_emd).values, torch.arange(n))
    c64 = c.double().numpy()
    r, col = linear_sum_assignment(c64)
    ref = c64[r, col].sum()
    for p in (p_emd, p_sp):
        assert abs(c64[np.arange(n), p.numpy()].sum() - ref) <= 1e-9 * ref


def test_result_follows_input_dtype():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 2, generator=g), torch.randn(5, 2, generator=g)
    res = exact_ot(x, y)
    assert res.plan.dtype == torch.float32 and res.cost.dtype == torch.float32
    assert res.perm is None
    torch.testing.assert_close(res.plan.sum(1), torch.full((6,), 1 / 6), rtol=0, atol=1e-6)


def test_single_point():
    c = torch.tensor([[2.5]])
    assert assignment(c).tolist() == [0]
    assert float(emd(c).cost) == pytest.approx(2.5)


@pytest.mark.parametrize(
    "a, match",
    [
        (torch.tensor([0.5, 0.7, -0.2]), "a has negative"),
        (torch.tensor([0.5, 0.2, 0.2]), "a must sum to 1"),
        (torch.tensor([0.5, float("nan"), 0.5]), "a contains NaN"),
        (torch.tensor([]), "a is empty"),
        (torch.tensor([0.5, 0.5]), r"a must have shape \(3,\)"),
    ],
)
def test_bad_weights_are_named(a, match):
    c = torch.rand(3, 4)
    with pytest.raises(ValueError, match=match):
        emd(c, a=a)
    with pytest.raises(ValueError, match="b" + match[1:]):
        emd(c.T, b=a)


def test_bad_costs_and_clouds_are_named():
    with pytest.raises(ValueError, match="cost contains 1 NaN"):
        emd(torch.tensor([[0.0, float("nan")], [1.0, 0.0]]))
    with pytest.raises(ValueError, match="cost is empty"):
        emd(torch.zeros(0, 3))
    with pytest.raises(ValueError, match="square"):
        assignment(torch.rand(3, 4))
    with pytest.raises(ValueError, match="method"):
        assignment(torch.rand(3, 3), method="hungarian")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="feature size"):
        exact_ot(torch.rand(3, 2), torch.rand(3, 3))
    with pytest.raises(ValueError, match="x is empty"):
        exact_ot(torch.rand(0, 2), torch.rand(3, 2))
