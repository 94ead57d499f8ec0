import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from monge.metrics import sliced_wasserstein, wasserstein2
from monge.ot.sliced import sliced_wasserstein as sw_original


def cloud(n, *shape, seed=0):
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def lsa_w2(x, y):
    a = x.reshape(len(x), -1).numpy()
    b = y.reshape(len(y), -1).numpy()
    cost = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    r, c = linear_sum_assignment(cost)
    return math.sqrt(cost[r, c].mean())


def quantile_w2_1d(a, b):
    # W2^2 = int_0^1 |F^-1(u) - G^-1(u)|^2 du for uniform 1D clouds of any sizes
    a, b = np.sort(a), np.sort(b)
    grid = np.unique(np.concatenate([np.arange(len(a) + 1) / len(a), np.arange(len(b) + 1) / len(b)]))
    mid = (grid[1:] + grid[:-1]) / 2
    qa = a[np.minimum((mid * len(a)).astype(int), len(a) - 1)]
    qb = b[np.minimum((mid * len(b)).astype(int), len(b) - 1)]
    return math.sqrt(float(((qa - qb) ** 2 * np.diff(grid)).sum()))


def test_translation_is_exact():
    x = cloud(200, 2)
    v = torch.tensor([3.0, -4.0], dtype=torch.float64)
    assert wasserstein2(x, x + v) == pytest.approx(5.0, abs=1e-9)
    assert wasserstein2(x, x) == pytest.approx(0.0, abs=1e-12)


def test_matches_assignment_equal_size():
    x, y = cloud(40, 3, 2, seed=1), cloud(40, 3, 2, seed=2) + 0.5
    assert wasserstein2(x, y) == pytest.approx(lsa_w2(x, y), rel=1e-9)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 12), d=st.integers(1, 4), seed=st.integers(0, 10_000))
def test_matches_assignment_property(n, d, seed):
    x, y = cloud(n, d, seed=seed), 2 * cloud(n, d, seed=seed + 1)
    assert wasserstein2(x, y) == pytest.approx(lsa_w2(x, y), rel=1e-8, abs=1e-10)
    assert wasserstein2(x, y) == pytest.approx(wasserstein2(y, x), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("n,m", [(7, 13), (30, 12), (1, 5)])
def test_unequal_sizes_match_1d_quantiles(n, m):
    x, y = cloud(n, 1, seed=3), cloud(m, 1, seed=4) * 1.5 + 1
    ref = quantile_w2_1d(x[:, 0].numpy(), y[:, 0].numpy())
    assert wasserstein2(x, y) == pytest.approx(ref, rel=1e-9)


def test_duplicated_cloud_is_zero_and_float32_ok():
    x = cloud(25, 2).float()
    assert wasserstein2(x, torch.cat([x, x, x])) == pytest.approx(0.0, abs=1e-6)


def test_iteration_cap_raises():
    x, y = cloud(50, 2, seed=5), cloud(50, 2, seed=6)
    with pytest.raises(RuntimeError, match="num_iter_max"):
        wasserstein2(x, y, num_iter_max=3)


def test_sliced_is_reexport():
    assert sliced_wasserstein is sw_original


@pytest.mark.parametrize(
    "x,y,match",
    [
        (torch.zeros(4, 2), torch.zeros(4, 3), "same sample shape"),
        (torch.zeros(4), torch.zeros(4, 1), "x must have shape"),
        (torch.zeros(0, 2), torch.zeros(4, 2), "x is empty"),
        (torch.zeros(4, 2), torch.full((4, 2), float("nan")), "y contains"),
        ([[0.0, 1.0]], torch.zeros(1, 2), "torch.Tensor"),
    ],
)
def test_validation(x, y, match):
    with pytest.raises(ValueError, match=match):
        wasserstein2(x, y)


@pytest.mark.parametrize("bad", [0, -1, 2.0, True])
def test_bad_num_iter_max(bad):
    with pytest.raises(ValueError, match="num_iter_max"):
        wasserstein2(torch.zeros(2, 2), torch.ones(2, 2), num_iter_max=bad)
