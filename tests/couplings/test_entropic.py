import numpy as np
import ot as pot
import pytest
import torch

from monge.couplings import COUPLINGS, Entropic, ExactOT, SchrodingerBridge


@pytest.mark.parametrize("eps,relative", [(None, 0.05), (None, 0.3), (0.5, 0.05)])
def test_entropic_plan_matches_pot(eps, relative, sq_cost):
    g = torch.Generator().manual_seed(0)
    x0, x1 = (
        torch.randn(48, 3, generator=g, dtype=torch.float64),
        torch.randn(40, 3, generator=g, dtype=torch.float64) + 1,
    )
    c = Entropic(eps=eps, relative_eps=relative, tol=1e-9, max_iter=20000)
    plan = c.plan(x0, x1)
    cost = sq_cost(x0, x1).numpy()
    reg = eps if eps is not None else relative * cost.mean()
    ref = pot.bregman.sinkhorn_log(np.full(48, 1 / 48), np.full(40, 1 / 40), cost, reg, numItermax=20000, stopThr=1e-12)
    np.testing.assert_allclose(plan.numpy(), ref, atol=1e-7, rtol=1e-4)


def test_entropic_data_sampling_follows_plan_columns(rows_index):
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
        counts.index_put_(
            (torch.arange(6).repeat(r), rows_index(out.x0, x0)), torch.ones(6 * r, dtype=torch.float64), accumulate=True
        )
    n_draws = r * calls
    freq = counts / n_draws
    se = (cond * (1 - cond) / n_draws).sqrt()
    assert bool(((freq - cond).abs() <= 5 * se + 2e-3).all()), (freq - cond).abs().max()


@pytest.mark.parametrize("sampling", ["data", "noise", "plan"])
def test_entropic_lowers_pair_cost_and_tends_to_exact(sampling, pair_cost):
    g = torch.Generator().manual_seed(2)
    x0, x1 = torch.randn(256, 2, generator=g), torch.randn(256, 2, generator=g) + torch.tensor([3.0, 0.0])
    ind = pair_cost(x0, x1)
    ot_cost = pair_cost(*(lambda o: (o.x0, o.x1))(ExactOT()(x0, x1)))
    costs = []
    for rel in (0.5, 0.05, 0.005):
        out = Entropic(relative_eps=rel, sampling=sampling, max_iter=3000)(x0, x1, generator=g)
        assert out.x0.shape == out.x1.shape == (256, 2)
        costs.append(pair_cost(out.x0, out.x1))
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


def test_schrodinger_bridge_eps_is_two_sigma_squared(pair_cost, sq_cost):
    g = torch.Generator().manual_seed(4)
    x0, x1 = torch.randn(32, 2, generator=g, dtype=torch.float64), torch.randn(32, 2, generator=g, dtype=torch.float64)
    sb = SchrodingerBridge(sigma=0.7, tol=1e-10, max_iter=20000)
    assert sb.eps == pytest.approx(2 * 0.49)
    u = np.full(32, 1 / 32)
    ref = pot.sinkhorn(u, u, sq_cost(x0, x1).numpy(), 2 * 0.7**2, numItermax=20000, stopThr=1e-12)
    np.testing.assert_allclose(sb.plan(x0, x1).numpy(), ref, atol=1e-7, rtol=1e-4)
    assert COUPLINGS.build("schrodinger_bridge", sigma=0.7).eps == pytest.approx(0.98)
    # pairs: lower cost than independent on a shifted target
    x1s = x1 + 3
    out = sb(x0, x1s, generator=g)
    assert pair_cost(out.x0, out.x1) < pair_cost(x0, x1s)
