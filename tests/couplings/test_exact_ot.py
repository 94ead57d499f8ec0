import pytest
import torch
from scipy.optimize import linear_sum_assignment

from monge.couplings import ExactOT, Independent


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("shape", [(64, 2), (33, 5), (16, 1, 3, 3)])
def test_exact_ot_matches_scipy_assignment_cost(seed, shape, pair_cost):
    g = torch.Generator().manual_seed(seed)
    x0, x1 = torch.randn(shape, generator=g), torch.randn(shape, generator=g) * 2 + 1
    out = ExactOT()(x0, x1)
    cost = ((x1.reshape(len(x1), -1)[:, None] - x0.reshape(len(x0), -1)[None]) ** 2).sum(-1).double()
    rows, cols = linear_sum_assignment(cost.numpy())
    assert pair_cost(out.x0.reshape(len(x0), -1), out.x1.reshape(len(x1), -1)) == pytest.approx(
        cost[rows, cols].mean().item(), rel=1e-5
    )
    # a permutation of the source: every sample used once, data untouched
    assert torch.equal(out.x1, x1)
    assert torch.equal(out.x0.reshape(len(x0), -1).sort(0).values, x0.reshape(len(x0), -1).sort(0).values)


def test_exact_ot_lowers_pair_cost_vs_independent(pair_cost):
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(256, 2, generator=g), torch.randn(256, 2, generator=g)
    ind, ot = Independent()(x0, x1), ExactOT()(x0, x1)
    # same law on both sides: independent pairs cost E||x0 - x1||^2 = 4, OT pairs only the
    # finite-sample W2^2, which shrinks with the batch
    assert pair_cost(ind.x0, ind.x1) == pytest.approx(4.0, rel=0.15)
    assert pair_cost(ot.x0, ot.x1) < 0.25 * pair_cost(ind.x0, ind.x1)


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
