"""ODE samplers: convergence orders on a linear ODE, NFE accounting, the GMM oracle, bad input."""

import math

import numpy as np
import ot
import pytest
import torch

from monge.data import GaussianMixture
from monge.paths import CosineSchedule, LinearSchedule
from monge.samplers import SAMPLERS, euler, heun, midpoint, rk4, sample

A = torch.tensor([[-0.5, 2.0], [-2.0, -0.5]], dtype=torch.float64)  # damped rotation


def linear_field(x, t):
    return x @ A.T


def exact_linear(x0, t1=1.0):
    return x0 @ torch.linalg.matrix_exp(A * t1).T


def w2(a, b):
    return math.sqrt(ot.emd2([], [], ot.dist(a.double(), b.double()).numpy(), numItermax=10**7))


@pytest.mark.parametrize("fn,order", [(euler, 1), (midpoint, 2), (heun, 2), (rk4, 4)])
def test_convergence_order_on_linear_ode(fn, order):
    x0 = torch.tensor([[1.0, 0.5], [-0.3, 2.0]], dtype=torch.float64)
    ref = exact_linear(x0)
    steps = np.array([8, 16, 32, 64])
    errs = [
        float((fn(linear_field, x0, None, torch.linspace(0, 1, n + 1, dtype=torch.float64)).x - ref).abs().max())
        for n in steps
    ]
    slope = -np.polyfit(np.log(steps), np.log(errs), 1)[0]
    assert abs(slope - order) < 0.3, (slope, errs)


@pytest.mark.parametrize("name", ["euler", "midpoint", "heun", "rk4"])
def test_nfe_counted_and_budget_respected(name):
    calls = []

    def field(x, t):
        calls.append(t.shape)
        return -x

    out = sample(field, torch.ones(3, 2), sampler=name, nfe=8)
    assert out.nfe == len(calls) == (8 // SAMPLERS.info(name).evals_per_step) * SAMPLERS.info(name).evals_per_step
    assert all(s == (3,) for s in calls)  # time is broadcast to the batch


def test_dopri5_meets_tolerance_and_counts_nfe():
    calls = [0]

    def field(x, t):
        calls[0] += 1
        return linear_field(x, t)

    x0 = torch.randn(4, 2, dtype=torch.float64)
    out = sample(field, x0, sampler="dopri5", atol=1e-8, rtol=1e-8)
    assert out.nfe == calls[0] > 0
    assert torch.allclose(out.x, exact_linear(x0), atol=1e-6)


@pytest.mark.parametrize("name", ["euler", "rk4", "dopri5"])
def test_trajectory_shape_and_ends(name):
    x0 = torch.randn(5, 2, dtype=torch.float64)
    out = sample(linear_field, x0, sampler=name, nfe=None if name == "dopri5" else 8, return_trajectory=True)
    assert out.trajectory.shape[1:] == (5, 2) and out.trajectory.shape[0] == out.times.numel()
    assert torch.equal(out.trajectory[0], x0) and torch.equal(out.trajectory[-1], out.x)
    assert float(out.times[0]) == 0.0 and float(out.times[-1]) == 1.0


def test_custom_timesteps_and_backward_integration():
    x0 = torch.randn(4, 2, dtype=torch.float64)
    ts = torch.tensor([0.0, 0.1, 0.3, 0.6, 1.0], dtype=torch.float64) ** 1
    fwd = sample(linear_field, x0, sampler="rk4", timesteps=torch.linspace(0, 1, 33, dtype=torch.float64))
    back = rk4(linear_field, fwd.x, None, torch.linspace(1, 0, 33, dtype=torch.float64))
    assert torch.allclose(back.x, x0, atol=1e-7)
    assert sample(linear_field, x0, sampler="euler", timesteps=ts).nfe == 4


@pytest.mark.parametrize("schedule", [LinearSchedule(), CosineSchedule()], ids=["linear", "cosine"])
def test_exact_gmm_velocity_reproduces_the_mixture(schedule):
    gmm = GaussianMixture.eight_gaussians()
    ratios = []
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        x0 = torch.randn(800, 2, generator=g)
        ref, ref2 = gmm.sample(800, g), gmm.sample(800, g)
        out = sample(gmm.field(schedule), x0, sampler="rk4", nfe=64 if isinstance(schedule, LinearSchedule) else 128)
        ratios.append(w2(out.x, ref) / w2(ref2, ref))
    # W2 between independent samples of the same size is the floor: the integrated samples
    # sit at it (mean ratio ~1 over seeds; a wrong field gives ratios of 2 and more).
    assert np.mean(ratios) < 1.25, ratios


def test_low_nfe_euler_worse_than_rk4_on_oracle():
    gmm = GaussianMixture.eight_gaussians()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(600, 2, generator=g)
    ref = gmm.sample(600, g)
    exact = sample(gmm.field(), x0, sampler="rk4", nfe=64).x
    e2, e8 = (sample(gmm.field(), x0, sampler="euler", nfe=n).x for n in (2, 8))
    assert w2(e2, ref) > 1.5 * w2(exact, ref)
    # pathwise error to the exact flow map shrinks with the budget, and RK4 at 8 beats Euler at 8
    def err(y):
        return float((y - exact).norm(dim=1).mean())
    assert err(e2) > 2 * err(e8) > 2 * err(sample(gmm.field(), x0, sampler="rk4", nfe=8).x)


def test_registry_lists_samplers():
    assert set(SAMPLERS.names()) >= {"euler", "midpoint", "heun", "rk4", "dopri5"}


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(nfe=0), "positive integer"),
        (dict(nfe=2.5), "positive integer"),
        (dict(sampler="rk4", nfe=3), "below one step"),
        (dict(sampler="rk5"), "valid choices"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample(linear_field, torch.ones(2, 2, dtype=torch.float64), **kwargs)


def test_bad_x0_and_grid():
    with pytest.raises(ValueError, match="NaN"):
        sample(linear_field, torch.tensor([[float("nan"), 0.0]]))
    with pytest.raises(ValueError, match="monotonic"):
        euler(linear_field, torch.ones(1, 2), None, torch.tensor([0.0, 0.5, 0.2, 1.0]))
    with pytest.raises(ValueError, match="shape"):
        sample(lambda x, t: x[:, :1], torch.ones(2, 2), nfe=4)
