"""The exact field of a coupling on a finite data set, against independent references."""

from __future__ import annotations

import math

import pytest
import torch

from monge.data.gmm import GaussianMixture
from monge.metrics import exact_velocity, field_error
from monge.ot.semidiscrete import SemiDiscreteMap


@pytest.fixture
def targets():
    return torch.randn(7, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_independent_field_is_the_mixture_of_points(targets):
    """Independent pairing onto N points: a Gaussian mixture of (almost) zero-width components."""
    x = torch.randn(20, 3, dtype=torch.float64)
    weights = torch.tensor([0.05, 0.1, 0.1, 0.15, 0.2, 0.2, 0.2], dtype=torch.float64)
    mixture = GaussianMixture(targets, 1e-6, weights)
    for t in (0.0, 0.3, 0.8):
        got = exact_velocity(x, t, targets, weights=weights)
        torch.testing.assert_close(got, mixture.velocity(x, t), rtol=1e-5, atol=1e-5)


def test_a_very_wide_epsilon_is_independent_pairing(targets):
    sd_map = SemiDiscreteMap(targets, torch.randn(7, dtype=torch.float64), epsilon=1e9)
    x = torch.randn(10, 3, dtype=torch.float64)
    torch.testing.assert_close(exact_velocity(x, 0.4, targets, sd_map), exact_velocity(x, 0.4, targets))


@pytest.mark.parametrize("epsilon", [0.0, 0.5])
def test_semidiscrete_field_matches_monte_carlo(epsilon):
    """1-D, 3 points, any heights: E[y - x0 | x_t near x] over 4e6 pairs drawn from the coupling."""
    y = torch.tensor([[-1.5], [0.2], [1.8]], dtype=torch.float64)
    sd_map = SemiDiscreteMap(y, torch.tensor([0.3, 0.0, -0.4], dtype=torch.float64), epsilon=epsilon)
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(4_000_000, 1, generator=g, dtype=torch.float64)
    _, y1 = sd_map.sample_cells(x0, generator=g)
    t = 0.4
    xt, v = (1 - t) * x0 + t * y1, (y1 - x0)
    centres = torch.tensor([[-0.9], [-0.2], [0.5], [1.0]], dtype=torch.float64)
    exact = exact_velocity(centres, t, y, sd_map)
    for c, e in zip(centres, exact, strict=True):
        near = (xt - c).abs()[:, 0] < 0.01
        if e.isnan().any():  # hard cells: a gap between the cells' paths, where no pair passes
            assert epsilon == 0 and int(near.sum()) == 0
            continue
        assert int(near.sum()) > 5000
        assert float(v[near].mean()) == pytest.approx(float(e), abs=0.03)
    assert exact.isnan().any() == (epsilon == 0)


def test_hard_cells_leave_gaps_and_the_error_skips_them():
    y = torch.tensor([[-2.0], [2.0]], dtype=torch.float64)
    sd_map = SemiDiscreteMap(y, torch.zeros(2, dtype=torch.float64))
    # at t = 0.9 the cell x0 < 0 reaches (0.1 x0 - 1.8) < -1.8 only: 0 is in no path's reach
    v = exact_velocity(torch.tensor([[0.0], [-1.9]], dtype=torch.float64), 0.9, y, sd_map)
    assert torch.isnan(v[0]).all() and torch.isfinite(v[1]).all()
    net = lambda x, t: exact_velocity(x, float(t[0]), y, sd_map).nan_to_num()  # noqa: E731
    fit = field_error(net, torch.tensor([[0.0], [-1.9]], dtype=torch.float64), 0.9, y, sd_map)
    assert fit.error == pytest.approx(0.0, abs=1e-12) and fit.scale == pytest.approx(0.1) and fit.reached == 0.5
    none = field_error(net, torch.tensor([[0.0]], dtype=torch.float64), 0.9, y, sd_map)
    assert math.isnan(none.error) and math.isnan(none.scale) and none.reached == 0.0


def test_field_error_is_in_clean_point_units(targets):
    x = torch.randn(30, 3, dtype=torch.float64)
    exact = lambda x, t: exact_velocity(x, float(t[0]), targets)  # noqa: E731
    assert field_error(exact, x, 0.5, targets).error == pytest.approx(0.0, abs=1e-12)
    err, scale, reached = field_error(lambda x, t: torch.zeros_like(x), x, 0.5, targets)
    assert err == pytest.approx(scale) and reached == 1.0
    # scale = (1 - t) |v*| = |E[y | x] - x|, RMS per coordinate
    mean = GaussianMixture(targets, 1e-6).posterior_mean(x, 0.5)
    assert scale == pytest.approx(float((mean - x).square().mean().sqrt()), rel=1e-5)


def test_bad_input_is_refused(targets):
    x = torch.randn(4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"t must be in \[0, 1\)"):
        exact_velocity(x, 1.0, targets)
    with pytest.raises(ValueError, match="features per point"):
        exact_velocity(torch.randn(4, 2), 0.5, targets)
    with pytest.raises(ValueError, match="cells for 7 targets"):
        exact_velocity(x, 0.5, targets, SemiDiscreteMap(targets[:3], torch.zeros(3, dtype=torch.float64)))
