import math

import pytest
import torch

from monge.couplings import Coupled, Entropic, ExactOT, Independent
from monge.couplings.diagnostics import DIAGNOSTICS, coupling_diagnostics


def test_diagnostics_match_direct_computations():
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(8, 3, generator=g, dtype=torch.float64), torch.randn(8, 3, generator=g, dtype=torch.float64)
    w = torch.rand(8, generator=g, dtype=torch.float64) + 0.5
    z = x0.flip(0)
    d = coupling_diagnostics(x0, x1, Coupled(z, x1, w))
    wn = w / w.mean()
    assert list(d) == list(DIAGNOSTICS)
    ratio = sum(wn[i] * ((z[i] - x1[i]) ** 2).sum() for i in range(8)) / sum(
        ((x0[i] - x1[i]) ** 2).sum() for i in range(8)
    )
    assert d["pair_cost_ratio"] == pytest.approx(float(ratio), rel=1e-12)
    assert d["weights_ess"] == pytest.approx(float(w.sum() ** 2 / (8 * (w**2).sum())), rel=1e-12)
    zbar = (wn[:, None] * z).mean(0)
    assert d["noise_mean_z"] == pytest.approx(float((8 * (zbar**2).sum() - 3) / math.sqrt(6)), rel=1e-12)
    assert d["noise_var_ratio"] == pytest.approx(float((wn * (z**2).sum(1)).mean() / 3), rel=1e-12)


def test_diagnostics_tell_independent_from_ot_and_flag_drift():
    g = torch.Generator().manual_seed(1)
    x0, x1 = torch.randn(512, 2, generator=g), torch.randn(512, 2, generator=g) + 3
    ind = coupling_diagnostics(x0, x1, Independent()(x0, x1))
    ot = coupling_diagnostics(x0, x1, ExactOT()(x0, x1))
    assert ind["pair_cost_ratio"] == pytest.approx(1.0) and ind["weights_ess"] == pytest.approx(1.0)
    assert ot["pair_cost_ratio"] < 0.85  # (18 + ~0) / (18 + 4): only the translation is left
    assert abs(ind["noise_mean_z"]) < 4 and abs(ot["noise_mean_z"]) < 4  # a permutation: no drift
    shifted = coupling_diagnostics(x0, x1, Coupled(x0 + 0.5, x1))
    assert shifted["noise_mean_z"] > 50


def test_entropic_warns_when_sinkhorn_stops_early_and_refuses_a_nan_plan(monkeypatch):
    g = torch.Generator().manual_seed(2)
    x0, x1 = torch.randn(64, 2, generator=g), torch.randn(64, 2, generator=g) + 2
    c = Entropic(relative_eps=0.01, max_iter=2, tol=1e-9)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        c(x0, x1, generator=g)
    assert c.unconverged == 1
    import dataclasses

    from monge.couplings import entropic

    real = entropic.sinkhorn

    def nan_plan(*args, **kwargs):
        res = real(*args, **kwargs)
        return dataclasses.replace(res, plan=torch.full_like(res.plan, float("nan")))

    monkeypatch.setattr(entropic, "sinkhorn", nan_plan)
    with pytest.raises(FloatingPointError, match="NaN"):
        Entropic(eps=1.0)(x0, x1, generator=g)


def test_entropic_unconverged_warnings_thin_out():
    import warnings

    g = torch.Generator().manual_seed(3)
    x0, x1 = torch.randn(32, 2, generator=g), torch.randn(32, 2, generator=g) + 2
    c = Entropic(relative_eps=0.01, max_iter=2, tol=1e-9)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(9):
            c(x0, x1, generator=g)
    assert c.unconverged == 9 and len(caught) == 4  # solves 1, 2, 4 and 8


def _direct_conditional_entropy(plan) -> float:
    """H(noise | data) / log B0 of a plan, by scipy, column by column."""
    import numpy as np
    from scipy.stats import entropy

    p = np.asarray(plan, dtype=np.float64)
    p = p / p.sum()
    col = p.sum(0)
    return float(sum(col[j] * entropy(p[:, j] / col[j]) for j in range(p.shape[1]) if col[j] > 0) / np.log(p.shape[0]))


def test_plan_entropy_is_zero_for_a_permutation_one_for_the_product_and_matches_scipy():
    from monge.couplings.diagnostics import plan_entropy

    b = 7
    perm = torch.eye(b, dtype=torch.float64)[torch.randperm(b)] / b
    assert plan_entropy(perm) == pytest.approx(0.0, abs=1e-12)
    assert plan_entropy(torch.full((b, b), 1.0 / b**2)) == pytest.approx(1.0, abs=1e-12)
    assert plan_entropy(torch.ones(5, 3)) == pytest.approx(1.0, abs=1e-12)  # rectangular, unnormalised
    g = torch.Generator().manual_seed(4)
    for shape in [(4, 4), (6, 3), (3, 9)]:
        p = torch.rand(*shape, generator=g, dtype=torch.float64) ** 3
        p[0, 0] = 0.0  # 0 log 0 = 0
        assert plan_entropy(p) == pytest.approx(_direct_conditional_entropy(p), rel=1e-10)
    assert math.isnan(plan_entropy(torch.ones(1, 4)))
    for bad in [torch.ones(3), torch.zeros(3, 3), torch.tensor([[1.0, -1.0], [1.0, 1.0]]),
                torch.tensor([[float("nan"), 1.0], [1.0, 1.0]])]:
        with pytest.raises(ValueError, match="plan_entropy"):
            plan_entropy(bad)


def test_couplings_report_the_entropy_of_their_batch_plan():
    import ot

    from monge.couplings import WCFM, ConditionalOT, KNNImmiscible
    from monge.ot.exact import squared_euclidean_cost

    g = torch.Generator().manual_seed(5)
    x0, x1 = (
        torch.randn(12, 2, generator=g, dtype=torch.float64),
        torch.randn(12, 2, generator=g, dtype=torch.float64) + 1,
    )
    assert coupling_diagnostics(x0, x1, Independent()(x0, x1))["plan_entropy"] == 1.0
    assert coupling_diagnostics(x0, x1, ExactOT()(x0, x1))["plan_entropy"] == 0.0
    labels = torch.arange(12) % 3
    assert coupling_diagnostics(x0, x1, ConditionalOT()(x0, x1, g, labels=labels))["plan_entropy"] == 0.0
    assert math.isnan(coupling_diagnostics(x0, x1, KNNImmiscible()(x0, x1, g))["plan_entropy"])
    # entropic: POT's Sinkhorn plan at the same eps, its entropy by scipy
    cost = squared_euclidean_cost(x0, x1)
    eps = 0.5 * float(cost.mean())
    ref = ot.sinkhorn(ot.unif(12), ot.unif(12), cost.numpy(), eps, numItermax=10000, stopThr=1e-12)
    got = coupling_diagnostics(x0, x1, Entropic(eps=eps, tol=1e-10, max_iter=10000)(x0, x1, g))["plan_entropy"]
    assert 0.1 < got < 0.99
    assert got == pytest.approx(_direct_conditional_entropy(ref), rel=1e-5)
    # wcfm with its marginal correction: the Sinkhorn plan at its own temperature
    w = WCFM(tol=1e-10, max_iter=10000)
    eps_w = w.temperature((x0 - x1).square().sum(1), 2)
    ref_w = ot.sinkhorn(ot.unif(12), ot.unif(12), cost.numpy(), eps_w, numItermax=10000, stopThr=1e-12)
    got_w = w(x0, x1, g).plan_entropy
    assert got_w == pytest.approx(_direct_conditional_entropy(ref_w), rel=1e-5)
    assert WCFM(marginal_correction=False)(x0, x1, g).plan_entropy is None
