"""Prediction conversions: round trips, closed forms and consistency with the GMM oracle."""

import itertools

import pytest
import torch

from monge.data import GaussianMixture
from monge.paths import SCHEDULES
from monge.predictions import PREDICTIONS, as_denoiser, as_velocity, convert, convert_with

SCHEDULE_NAMES = ["linear", "cosine", "vp_linear", "ve", "edm", "stochastic_interpolant"]


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
@pytest.mark.parametrize("src,dst", list(itertools.permutations(PREDICTIONS, 2)))
def test_round_trip(name, src, dst):
    g = torch.Generator().manual_seed(0)
    sched = SCHEDULES.build(name)
    x = torch.randn(16, 3, generator=g, dtype=torch.float64)
    pred = torch.randn(16, 3, generator=g, dtype=torch.float64)
    t = torch.rand(16, generator=g, dtype=torch.float64) * 0.9 + 0.05
    back = convert(convert(pred, src, dst, x, t, sched), dst, src, x, t, sched)
    torch.testing.assert_close(back, pred, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("src,dst", list(itertools.permutations(PREDICTIONS, 2)))
def test_one_time_for_the_batch_and_given_coefficients_match_per_sample_times(src, dst):
    """A scalar (or one-element) t is broadcast: same result as the same t repeated per sample; and
    convert_with on the schedule's coefficients reproduces convert."""
    sched = SCHEDULES.build("cosine")
    g = torch.Generator().manual_seed(1)
    x, pred = torch.randn(2, 8, 3, 4, 4, generator=g, dtype=torch.float64)
    t = torch.tensor(0.37, dtype=torch.float64)
    per_sample = convert(pred, src, dst, x, t.expand(8), sched)
    torch.testing.assert_close(convert(pred, src, dst, x, t, sched), per_sample, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(convert(pred, src, dst, x, t.reshape(1), sched), per_sample, rtol=1e-12, atol=1e-12)
    coeffs = (sched.alpha(t), sched.sigma(t), sched.d_alpha(t), sched.d_sigma(t))
    torch.testing.assert_close(convert_with(pred, src, dst, x, *coeffs), per_sample, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_oracle_quantities_are_consistent(name):
    """The oracle's E[x0|x], E[x1|x], score and velocity map onto each other exactly."""
    gmm = GaussianMixture(torch.tensor([[-2.0, 0.0], [1.5, 1.0]]), torch.tensor([0.3, 0.6]), torch.tensor([0.4, 0.6]))
    sched = SCHEDULES.build(name)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 2, generator=g, dtype=torch.float64) * 2
    t = torch.rand(32, generator=g, dtype=torch.float64) * 0.9 + 0.05
    oracle = {
        "noise": gmm.noise_mean(x, t, sched),
        "data": gmm.posterior_mean(x, t, sched),
        "score": gmm.score_t(x, t, sched),
        "velocity": gmm.velocity(x, t, sched),
    }
    for src, dst in itertools.permutations(PREDICTIONS, 2):
        got = convert(oracle[src], src, dst, x, t, sched)
        torch.testing.assert_close(got, oracle[dst], rtol=1e-6, atol=1e-6 * (1 + oracle[dst].abs().max().item()),
                                   msg=f"{src}->{dst}")


def test_linear_schedule_closed_forms():
    """Rectified flow: u = x1_hat - x0_hat, x_t = (1-t) x0_hat + t x1_hat."""
    sched = SCHEDULES.build("linear")
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(8, 2, generator=g, dtype=torch.float64)
    x1 = torch.randn(8, 2, generator=g, dtype=torch.float64)
    t = torch.full((8,), 0.3, dtype=torch.float64)
    xt = 0.7 * x0 + 0.3 * x1
    torch.testing.assert_close(convert(x1, "data", "velocity", xt, t, sched), x1 - x0)
    torch.testing.assert_close(convert(x1 - x0, "velocity", "noise", xt, t, sched), x0)
    torch.testing.assert_close(convert(x0, "noise", "score", xt, t, sched), -x0 / 0.7)
    # velocity -> data is defined at the pure-noise end t = 0 (Delta = -1)
    t0 = torch.zeros(8, dtype=torch.float64)
    torch.testing.assert_close(convert(x1 - x0, "velocity", "data", x0, t0, sched), x1)


def test_wrappers_and_dtype_follow_input():
    sched = SCHEDULES.build("cosine")
    gmm = GaussianMixture.eight_gaussians()
    x = torch.randn(5, 2)
    t = torch.full((5,), 0.4)
    den = as_denoiser(lambda x, t: gmm.noise_mean(x, t, sched), "noise", sched)
    vel = as_velocity(lambda x, t: gmm.noise_mean(x, t, sched), "noise", sched)
    assert den(x, t).dtype == torch.float32
    torch.testing.assert_close(den(x, t), gmm.posterior_mean(x, t, sched), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(vel(x, t), gmm.velocity(x, t, sched), rtol=1e-4, atol=1e-4)


def test_bad_arguments():
    sched = SCHEDULES.build("linear")
    x = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="from_type"):
        convert(x, "eps", "data", x, 0.5, sched)
    with pytest.raises(ValueError, match="to_type"):
        convert(x, "noise", "x0", x, 0.5, sched)
    with pytest.raises(ValueError, match="same shape"):
        convert(torch.zeros(2, 3), "noise", "data", x, 0.5, sched)
    with pytest.raises(ValueError, match="schedule"):
        convert(x, "noise", "data", x, 0.5, "linear")
    with pytest.raises(ValueError, match="prediction"):
        as_denoiser(lambda x, t: x, "v", sched)
    with pytest.raises(ValueError, match="model"):
        as_denoiser(3, "noise", sched)
