import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from monge.couplings import COUPLINGS, ConditionalOT, ExactOT


def _perm_of(kept, x0):
    """Row of x0 that each kept noise is (x0 rows are distinct)."""
    return torch.cdist(kept.double(), x0.double()).argmin(1)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), b=st.integers(1, 40), k=st.integers(1, 6))
def test_discrete_pairs_by_exact_ot_within_each_class_only(seed, b, k):
    """A permutation of the noise; each class's data is paired with a share of the noise of its
    size, and optimally so within that share (never a better swap across the class boundary is
    taken: the pairing is per class, checked against scipy on each class)."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(b, 2, generator=g, dtype=torch.float64)
    x1 = torch.randn(b, 2, generator=g, dtype=torch.float64) * 2
    y = torch.randint(k, (b,), generator=g)
    out = ConditionalOT()(x0, x1, generator=torch.Generator().manual_seed(seed), labels=y)
    assert torch.equal(out.x1, x1) and out.index1 is None
    perm = _perm_of(out.x0, x0)
    assert torch.equal(perm.sort().values, torch.arange(b))  # every noise used once
    for c in y.unique():
        rows = (y == c).nonzero().flatten()
        share = perm[rows]
        cost = torch.cdist(x1[rows], x0[share]).square().numpy()
        r, col = linear_sum_assignment(cost)
        assert cost[r, col].sum() == pytest.approx(cost.trace(), rel=1e-9, abs=1e-9)


def test_discrete_keeps_each_class_noise_standard_normal():
    """The C2OT point: given a class, the paired noise is N(0, I); batch OT shifts it to the class."""
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[4.0, 0.0], [-4.0, 0.0]])
    means_c, means_ot = [], []
    for _ in range(20):
        y = torch.randint(2, (256,), generator=g)
        x1 = centres[y] + 0.3 * torch.randn(256, 2, generator=g)
        x0 = torch.randn(256, 2, generator=g)
        cond = ConditionalOT()(x0, x1, generator=g, labels=y).x0
        plain = ExactOT()(x0, x1).x0
        means_c.append(cond[y == 0].mean(0))
        means_ot.append(plain[y == 0].mean(0))
    assert torch.stack(means_c).mean(0).abs().max() < 0.05
    assert torch.stack(means_ot).mean(0)[0] > 0.5  # plain OT: class 0's noise leans to its mode


def test_continuous_cost_adds_the_weighted_condition_distance():
    g = torch.Generator().manual_seed(1)
    x0, x1 = torch.randn(30, 2, generator=g, dtype=torch.float64), torch.randn(30, 2, generator=g, dtype=torch.float64)
    y = torch.randn(30, 1, generator=g, dtype=torch.float64)
    c = ConditionalOT(condition="continuous", weight=3.0)
    perm = c.permutation(x0, x1, y, torch.Generator().manual_seed(5))
    shuffled = torch.randperm(30, generator=torch.Generator().manual_seed(5))  # the noise's conditions
    cost = (torch.cdist(x1, x0).square() + 3.0 * torch.cdist(y, y[shuffled]).square()).numpy()
    r, col = linear_sum_assignment(cost)
    assert cost[r, col].sum() == pytest.approx(cost[torch.arange(30), perm].sum(), rel=1e-9)
    # weight 0 is plain exact OT
    plain = ConditionalOT(condition="continuous", weight=0.0)(x0, x1, labels=y).x0
    torch.testing.assert_close(plain, ExactOT()(x0, x1).x0)


def test_conditional_bad_input():
    x0, x1 = torch.randn(8, 2), torch.randn(8, 2)
    with pytest.raises(ValueError, match="needs the data's labels"):
        ConditionalOT()(x0, x1)
    with pytest.raises(ValueError, match="weight must be"):
        ConditionalOT(condition="continuous", weight=-1.0)
    with pytest.raises(ValueError, match="condition must be"):
        ConditionalOT(condition="ordinal")
    with pytest.raises(ValueError, match="NaN"):
        ConditionalOT(condition="continuous")(x0, x1, labels=torch.tensor([0.0, float("nan")] * 4))
    with pytest.raises(ValueError, match="integer class labels"):
        ConditionalOT()(x0, x1, labels=torch.rand(8))
    with pytest.raises(ValueError, match="labels for a data batch of 8"):
        ConditionalOT()(x0, x1, labels=torch.zeros(5, dtype=torch.long))
    # a class of one point: paired with one random noise of its share, with a warning (once)
    y = torch.tensor([0, 0, 0, 0, 0, 0, 0, 1])
    c = ConditionalOT()
    with pytest.warns(RuntimeWarning, match="1 class\\(es\\) have a single point in this batch of 8"):
        out = c(x0, x1, generator=torch.Generator().manual_seed(0), labels=y)
    assert torch.equal(_perm_of(out.x0, x0).sort().values, torch.arange(8))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c(x0, x1, generator=torch.Generator().manual_seed(1), labels=y)  # warned once
    assert c.singleton_classes == 2
    with pytest.raises(ValueError, match="NaN"):
        ConditionalOT(condition="continuous")(x0, x1, labels=torch.full((8, 2), float("inf")))
    # the other couplings accept and ignore labels
    assert torch.equal(COUPLINGS.build("independent")(x0, x1, labels=y).x0, x0)


def test_adaptive_weight_brings_the_share_of_cheap_entries_to_target_r():
    from monge.couplings.conditional import adaptive_weight

    g = torch.Generator().manual_seed(7)
    x0, x1 = torch.randn(64, 2, generator=g, dtype=torch.float64), torch.randn(64, 2, generator=g, dtype=torch.float64)
    y0, y1 = torch.rand(64, 1, generator=g, dtype=torch.float64), torch.rand(64, 1, generator=g, dtype=torch.float64)
    cost, dist = torch.cdist(x1, x0) ** 2, torch.cdist(y1, y0) ** 2

    def share(w):  # direct: entries no dearer than the row's drawn pair
        return sum(float(cost[j, i] + w * dist[j, i] <= cost[j, j]) for j in range(64) for i in range(64)) / 64**2

    w = adaptive_weight(cost, dist, 0.05)
    assert w > 0 and share(w) <= 0.05 < share(w * (1 - 1e-6))
    assert adaptive_weight(cost, dist, 0.99) == 0.0  # already below r without conditions


def test_target_r_pairs_by_the_chosen_weight():
    g = torch.Generator().manual_seed(8)
    x0, x1, y = torch.randn(32, 2, generator=g), torch.randn(32, 2, generator=g), torch.randn(32, 1, generator=g)
    c = ConditionalOT(condition="continuous", target_r=0.05)
    out = c(x0, x1, generator=torch.Generator().manual_seed(1), labels=y)
    assert c.last_weight > 0
    fixed = ConditionalOT(condition="continuous", weight=c.last_weight)(
        x0, x1, generator=torch.Generator().manual_seed(1), labels=y
    )
    torch.testing.assert_close(out.x0, fixed.x0)
    with pytest.raises(ValueError, match="target_r"):
        ConditionalOT(target_r=0.05)
    with pytest.raises(ValueError, match="target_r"):
        ConditionalOT(condition="continuous", target_r=1.5)
