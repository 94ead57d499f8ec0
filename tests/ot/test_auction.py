"""The certified auction: optimal cost against SciPy, a valid dual bound, batches, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from monge.ot import AssignmentResult, assignment, auction
from monge.ot.exact import pick_method, squared_euclidean_cost

SETTINGS = settings(max_examples=30, deadline=None)


def _opt(c: torch.Tensor) -> float:
    r, k = linear_sum_assignment(c.double().numpy())
    return float(c.double().numpy()[r, k].sum())


def _is_perm(perm: torch.Tensor, n: int) -> bool:
    return sorted(perm.tolist()) == list(range(n))


@st.composite
def costs(draw):
    """Random costs with ties: small integers, 2D clouds with repeated points, constant rows."""
    n = draw(st.integers(1, 24))
    kind = draw(st.sampled_from(["int", "cloud", "dup", "const", "neg"]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    if kind == "int":
        return torch.randint(0, draw(st.integers(1, 5)), (n, n), generator=g).double()
    if kind == "cloud":
        return squared_euclidean_cost(torch.randn(n, 2, generator=g), torch.randn(n, 2, generator=g)).double()
    if kind == "dup":  # degenerate 2D: few distinct points, many equal costs
        pts = torch.randn(3, 2, generator=g)
        x = pts[torch.randint(0, 3, (n,), generator=g)]
        y = pts[torch.randint(0, 3, (n,), generator=g)]
        return squared_euclidean_cost(x, y).double()
    if kind == "const":
        return torch.full((n, n), 2.5, dtype=torch.float64)
    return torch.randn(n, n, generator=g, dtype=torch.float64)  # mixed signs


@SETTINGS
@given(costs())
def test_auction_cost_is_optimal_and_bound_is_valid(c):
    n = c.shape[0]
    res = assignment(c, method="auction", return_certificate=True, tol=1e-9)
    assert isinstance(res, AssignmentResult) and _is_perm(res.perm, n)
    opt = _opt(c)
    got = float(c[torch.arange(n), res.perm].sum())
    assert float(res.cost) == pytest.approx(got, abs=1e-9)
    assert float(res.lower_bound) <= opt + 1e-9 * max(1.0, abs(opt))
    assert got - opt <= float(res.gap) + 1e-9 * max(1.0, abs(opt))
    assert float(res.gap) >= 0
    assert float(res.gap) <= n * float(res.eps) + 1e-9 * max(1.0, abs(opt))
    if bool(res.exact):
        assert float(res.gap) == 0.0 and got == pytest.approx(opt, abs=1e-9)


@SETTINGS
@given(st.integers(1, 30), st.integers(0, 10_000), st.integers(1, 50))
def test_integer_costs_are_solved_exactly_with_zero_gap(n, seed, high):
    g = torch.Generator().manual_seed(seed)
    c = torch.randint(0, high, (n, n), generator=g)  # an integer dtype is accepted
    res = assignment(c, method="auction", return_certificate=True)
    assert bool(res.exact) and float(res.gap) == 0.0
    assert float(res.cost) == _opt(c.double()) == float(res.lower_bound)


@pytest.mark.parametrize("d", [2, 16])
def test_real_costs_meet_the_relative_tolerance(d):
    g = torch.Generator().manual_seed(d)
    c = squared_euclidean_cost(torch.randn(200, d, generator=g), torch.randn(200, d, generator=g) * 2)
    res = assignment(c, method="auction", return_certificate=True, tol=1e-6)
    opt = _opt(c)
    assert float(res.rel_gap) <= 1e-6
    assert float(res.lower_bound) <= opt <= float(res.cost) <= opt * (1 + 1e-6)


def test_batched_equals_a_loop_and_float32_input():
    g = torch.Generator().manual_seed(0)
    c = torch.stack([squared_euclidean_cost(torch.randn(40, 3, generator=g), torch.randn(40, 3, generator=g))
                     for _ in range(6)])
    batch = auction(c, tol=1e-6)
    assert batch.perm.shape == (6, 40) and batch.cost.shape == (6,)
    for k in range(6):
        one = auction(c[k], tol=1e-6)  # the same problem alone: same certified cost
        assert _is_perm(batch.perm[k], 40)
        assert float(batch.cost[k]) == pytest.approx(float(one.cost), rel=2e-6)
        assert float(batch.cost[k]) <= _opt(c[k]) * (1 + 1e-6)
    exact = assignment(c, method="emd", return_certificate=True)  # the CPU solvers loop over a batch
    assert exact.perm.shape == (6, 40) and bool(exact.exact.all())
    assert bool((batch.lower_bound <= exact.cost + 1e-9).all())


def test_deterministic_and_default_return_type():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 3, (64, 2), generator=g).float()  # many exact ties
    c = squared_euclidean_cost(x, x.flip(0))
    p1, p2 = assignment(c, method="auction"), assignment(c, method="auction")
    assert torch.is_tensor(p1) and p1.dtype == torch.int64 and torch.equal(p1, p2)
    assert float(c[torch.arange(64), p1].sum()) == pytest.approx(_opt(c), abs=1e-9)


def test_auto_picks_exact_cpu_solver():
    c = torch.rand(8, 8)
    assert pick_method(c, "auto") in ("scipy", "emd")
    assert pick_method(torch.rand(600, 600), "auto") == "emd"
    assert pick_method(c, "auction") == "auction"


def test_large_range_float32_switches_to_float64():
    g = torch.Generator().manual_seed(2)
    c = torch.rand(50, 50, generator=g) + 1e4  # float32 cannot resolve tol * cost / n here
    res = assignment(c, method="auction", return_certificate=True, tol=1e-9)
    assert float(res.rel_gap) <= 1e-9 and float(res.cost) <= _opt(c) * (1 + 1e-9)


@pytest.mark.parametrize(
    "cost, match",
    [
        (torch.zeros(3, 4), "square.*emd"),
        (torch.zeros(0, 0), "empty"),
        (torch.tensor([[0.0, float("nan")], [1.0, 0.0]]), "NaN/Inf"),
        (torch.tensor([[0.0, float("inf")], [1.0, 0.0]]), "NaN/Inf"),
        ([torch.zeros(2, 2), torch.zeros(3, 3)], "share one size"),
        (torch.zeros(2, 2, dtype=torch.bool), "bool"),
        (torch.zeros(2, 2, 2, 2), "shape"),
    ],
)
def test_bad_input_is_refused_with_the_fix(cost, match):
    with pytest.raises(ValueError, match=match):
        assignment(cost, method="auction")


def test_unknown_method_and_bad_tol():
    with pytest.raises(ValueError, match="method"):
        assignment(torch.zeros(2, 2), method="hungarian")
    with pytest.raises(ValueError, match="tol"):
        assignment(torch.zeros(2, 2), method="auction", tol=0.0)


def test_list_of_equal_costs_is_a_batch():
    cs = [torch.eye(3), 1 - torch.eye(3)]
    perm = assignment(cs, method="auction")
    assert perm.shape == (2, 3)
    assert np.array_equal(perm[1].numpy(), linear_sum_assignment((1 - torch.eye(3)).numpy())[1]) or \
        float((1 - torch.eye(3))[torch.arange(3), perm[1]].sum()) == 0.0
