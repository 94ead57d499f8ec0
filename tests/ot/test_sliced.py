"""Sliced Wasserstein: identities, the exact 1D case and closed forms."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import wasserstein_distance

from monge.ot.sliced import random_directions, sliced_wasserstein

SETTINGS = settings(max_examples=25, deadline=None)


@st.composite
def clouds(draw):
    n = draw(st.integers(1, 30))
    d = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(n, d, generator=g, dtype=torch.float64) * 2


@SETTINGS
@given(clouds(), st.sampled_from([1.0, 2.0, 3.0]), st.integers(0, 1000))
def test_self_distance_is_zero_and_symmetric(xy, p, seed):
    x, y = xy
    sw = lambda u, v: sliced_wasserstein(u, v, 32, p, torch.Generator().manual_seed(seed))  # noqa: E731
    assert float(sw(x, x)) == 0.0
    assert float(sw(x, y)) == pytest.approx(float(sw(y, x)), rel=1e-12, abs=0)
    assert float(sw(x, y)) >= 0.0


@SETTINGS
@given(clouds())
def test_one_dimension_is_exact_w1_and_w2(xy):
    x, y = xy
    x, y = x[:, :1], y[:, :1]
    ref_w1 = wasserstein_distance(x[:, 0].numpy(), y[:, 0].numpy())
    assert float(sliced_wasserstein(x, y, 4, p=1.0)) == pytest.approx(ref_w1, rel=1e-10, abs=1e-12)
    # W2 between equal-size 1D clouds: match sorted samples (monotone rearrangement)
    ref_w2 = math.sqrt(float(((x.sort(0).values - y.sort(0).values) ** 2).mean()))
    assert float(sliced_wasserstein(x, y, 4, p=2.0)) == pytest.approx(ref_w2, rel=1e-10, abs=1e-12)


def test_translation_closed_form():
    # SW_2^2(mu, mu + c) = E_theta <theta, c>^2 = |c|^2 / d for theta uniform on the sphere
    d = 4
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, d, generator=g, dtype=torch.float64)
    c = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    sw = sliced_wasserstein(x, x + c, n_projections=20_000, generator=g)
    expected = math.sqrt(float(c @ c) / d)
    # Monte Carlo over 20k directions: relative standard error of SW^2 ~ 1e-2
    assert float(sw) == pytest.approx(expected, rel=3e-2)


def test_differentiable_and_gradcheck():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)

    def f(u, v):
        return sliced_wasserstein(u, v, 8, 2.0, torch.Generator().manual_seed(7))

    assert torch.autograd.gradcheck(f, (x, y), eps=1e-6, atol=1e-6)
    f(x, y).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and float(x.grad.abs().sum()) > 0


def test_random_directions_are_unit_and_seeded():
    th = random_directions(5, 100, torch.Generator().manual_seed(3), torch.float64)
    torch.testing.assert_close(th.norm(dim=0), torch.ones(100, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(th, random_directions(5, 100, torch.Generator().manual_seed(3), torch.float64))


def test_image_shaped_inputs_are_flattened():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(8, 2, 3, 3, generator=g), torch.randn(8, 2, 3, 3, generator=g)
    a = sliced_wasserstein(x, y, 16, generator=torch.Generator().manual_seed(0))
    b = sliced_wasserstein(x.flatten(1), y.flatten(1), 16, generator=torch.Generator().manual_seed(0))
    assert a.dtype == torch.float32 and float(a) == float(b)


@pytest.mark.parametrize(
    "x, y, kwargs, match",
    [
        (torch.rand(4, 2), torch.rand(5, 2), {}, "same shape"),
        (torch.rand(4, 2), torch.rand(4, 3), {}, "same shape"),
        (torch.rand(0, 2), torch.rand(0, 2), {}, "x is empty"),
        (torch.tensor([[float("nan")]]), torch.rand(1, 1), {}, "x contains 1 NaN"),
        (torch.rand(4, 2), torch.rand(4, 2), {"p": 0.5}, "p must be >= 1"),
        (torch.rand(4, 2), torch.rand(4, 2), {"n_projections": 0}, "n_projections"),
    ],
)
def test_bad_inputs_are_named(x, y, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sliced_wasserstein(x, y, **kwargs)
