"""Step grids (timesteps): closed forms, monotonicity, the Karras/EDM identity, and the fitted grid."""

import math

import pytest
import torch

from monge.data import GaussianMixture
from monge.paths import SCHEDULES
from monge.samplers import sample
from monge.samplers.timesteps import (
    GRIDS,
    EvalTimeWarp,
    _dp_path,
    fit_eval_times,
    karras,
    make_timesteps,
    optimized,
    optimized_decoupled,
    uniform_log_snr,
    uniform_t,
)

F64 = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    """Small tensors: one intra-op thread is faster, and much faster on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_uniform_t():
    torch.testing.assert_close(uniform_t(4, None, 0.2, 1.0), torch.tensor([0.2, 0.4, 0.6, 0.8, 1.0], dtype=F64))


@pytest.mark.parametrize("name", ["linear", "cosine", "vp_linear", "ve", "edm", "stochastic_interpolant"])
def test_uniform_log_snr_is_uniform_in_log_snr(name):
    sched = SCHEDULES.build(name)
    ts = uniform_log_snr(10, sched, 0.05, 0.95)
    lam = sched.log_snr(ts)
    assert ts[0] == 0.05 and ts[-1] == 0.95 and bool((ts.diff() > 0).all())
    torch.testing.assert_close(lam.diff(), torch.full((10,), float(lam[-1] - lam[0]) / 10, dtype=F64),
                               rtol=1e-6, atol=1e-6)


def test_infinite_ends_are_kept_and_clipped():
    sched = SCHEDULES.build("linear")
    ts = uniform_log_snr(4, sched, log_snr_clip=8.0)
    assert float(ts[0]) == 0.0 and float(ts[-1]) == 1.0
    # interior points as if the ends sat at lambda = -8, 8: t = sigmoid(lambda / 2)
    torch.testing.assert_close(ts[1:-1], torch.sigmoid(torch.tensor([-4.0, 0.0, 4.0], dtype=F64) / 2))


def test_karras_on_edm_is_uniform_t_and_closed_form():
    edm = SCHEDULES.build("edm")
    torch.testing.assert_close(karras(8, edm, rho=7.0), torch.linspace(0, 1, 9, dtype=F64), rtol=0, atol=1e-9)
    ve = SCHEDULES.build("ve", sigma_min=0.01, sigma_max=50.0)
    ts = karras(5, ve, rho=3.0)
    sig = ve.sigma(ts)
    ramp = torch.linspace(0, 1, 6, dtype=F64)
    expect = (50.0 ** (1 / 3) + ramp * (0.01 ** (1 / 3) - 50.0 ** (1 / 3))) ** 3
    torch.testing.assert_close(sig, expect, rtol=1e-9, atol=1e-12)


def test_registry_and_bad_input():
    sched = SCHEDULES.build("cosine")
    assert set(GRIDS.names()) == {"uniform", "uniform_log_snr", "karras"}
    assert make_timesteps("karras", 3, sched).shape == (4,)
    with pytest.raises(ValueError, match="n"):
        uniform_t(0)
    with pytest.raises(ValueError, match="t0"):
        uniform_t(3, None, 0.5, 0.2)
    with pytest.raises(ValueError, match="t1"):
        uniform_log_snr(3, sched, 0.0, 1.5)
    with pytest.raises(ValueError, match="rho"):
        karras(3, sched, rho=0.0)
    with pytest.raises(ValueError, match="schedule"):
        karras(3, "cosine")
    with pytest.raises(ValueError, match="step grid"):
        make_timesteps("optimised", 3, sched)


def test_dp_path_finds_the_cheapest_k_step_path():
    """Brute force over all 2-interior-point paths of a random DAG."""
    g = torch.Generator().manual_seed(0)
    m, k = 7, 3
    cost = torch.rand(m, m, generator=g, dtype=F64).triu(1)
    cost[cost == 0] = math.inf
    best = min((cost[0, a] + cost[a, b] + cost[b, m - 1], (0, a, b, m - 1))
               for a in range(1, m) for b in range(a + 1, m - 1))
    path = _dp_path(cost, k)
    assert tuple(path) == best[1]


GMM = GaussianMixture.eight_gaussians()
LIN = SCHEDULES.build("linear")


def _err(ts, sampler, x, ref):
    out = sample(lambda y, t: GMM.velocity(y, t, LIN), x, sampler=sampler, timesteps=ts, schedule=LIN)
    return float((out.x - ref).pow(2).sum(1).mean())


@pytest.mark.parametrize("sampler,nfe", [("euler", 4), ("dpm_solver_pp_2m", 4)])
def test_optimized_beats_fixed_grids_on_held_out_noise(sampler, nfe):
    fit_noise = torch.randn(128, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    ts = optimized(lambda y, t: GMM.velocity(y, t, LIN), LIN, nfe, sampler, fit_noise, reference_steps=16,
                   refine_sweeps=1)
    assert ts.shape == (nfe + 1,) and ts[0] == 0.0 and ts[-1] == 1.0 and bool((ts.diff() > 0).all())
    x = torch.randn(256, 2, generator=torch.Generator().manual_seed(2), dtype=F64)
    ref = sample(lambda y, t: GMM.velocity(y, t, LIN), x, sampler="rk4", timesteps=uniform_t(400), schedule=LIN).x
    fixed = min(_err(make_timesteps(name, nfe, LIN), sampler, x, ref) for name in GRIDS.names())
    assert _err(ts, sampler, x, ref) < fixed


def test_optimized_rejects_bad_input():
    m = lambda y, t: GMM.velocity(y, t, LIN)  # noqa: E731
    x = torch.randn(8, 2, dtype=F64)
    with pytest.raises(ValueError, match="deterministic"):
        optimized(m, LIN, 4, "euler_maruyama", x)
    with pytest.raises(ValueError, match="noise"):
        optimized(m, LIN, 4, "euler", None)
    with pytest.raises(ValueError, match="sampler"):
        optimized(m, LIN, 4, "plms", x)
    with pytest.raises(ValueError, match="reference_steps"):
        optimized(m, LIN, 8, "euler", x, reference_steps=4)


def test_pattern_search_lowers_the_error_on_held_out_noise():
    """UniPC-bh2 at NFE 5: the pattern search (refine_tol) starts from the coarse-sweep grid, so its fit
    error can only go down, and on held-out noise against an independent RK4 reference it is lower too."""
    m = lambda y, t: GMM.velocity(y, t, LIN)  # noqa: E731
    fit_noise = torch.randn(128, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    kw = dict(reference_steps=16, refine_sweeps=1)
    coarse = optimized(m, LIN, 5, "unipc_bh2", fit_noise, refine_tol=0.0, **kw)
    fine = optimized(m, LIN, 5, "unipc_bh2", fit_noise, refine_tol=0.01, **kw)
    assert fine.shape == (6,) and fine[0] == 0.0 and fine[-1] == 1.0 and bool((fine.diff() > 0).all())
    assert not torch.equal(coarse, fine)
    ref_fit = sample(m, fit_noise, sampler="rk4", timesteps=uniform_t(200), schedule=LIN).x
    assert _err(fine, "unipc_bh2", fit_noise, ref_fit) < _err(coarse, "unipc_bh2", fit_noise, ref_fit)
    x = torch.randn(256, 2, generator=torch.Generator().manual_seed(2), dtype=F64)
    ref = sample(m, x, sampler="rk4", timesteps=uniform_t(200), schedule=LIN).x
    assert _err(fine, "unipc_bh2", x, ref) < 0.9 * _err(coarse, "unipc_bh2", x, ref)
    with pytest.raises(ValueError, match="refine_tol"):
        optimized(m, LIN, 5, "euler", fit_noise, refine_tol=-0.1)


# ------------------------------------------------------------------------ decoupled evaluation times
def test_eval_time_warp_interpolates_the_evaluation_time():
    seen = []
    m = lambda y, t: (seen.append(t.clone()), y)[1]  # noqa: E731
    ts = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    warped = EvalTimeWarp(m, ts, torch.tensor([0.1, 0.3, 1.0], dtype=F64))
    x = torch.zeros(3, 2)
    warped(x, torch.tensor([0.0, 0.25, 0.75]))
    torch.testing.assert_close(seen[-1], torch.tensor([0.1, 0.2, 0.65]))
    assert seen[-1].dtype == torch.float32
    same = EvalTimeWarp(lambda y, t: GMM.velocity(y, t, LIN), ts, ts)
    y = torch.randn(5, 2, dtype=F64)
    t = torch.full((5,), 0.37, dtype=F64)
    torch.testing.assert_close(same(y, t), GMM.velocity(y, t, LIN))


def test_eval_time_warp_rejects_bad_grids():
    m = lambda y, t: y  # noqa: E731
    with pytest.raises(ValueError, match="same length"):
        EvalTimeWarp(m, torch.tensor([0.0, 1.0]), torch.tensor([0.0, 0.5, 1.0]))
    with pytest.raises(ValueError, match="increasing"):
        EvalTimeWarp(m, torch.tensor([0.0, 0.6, 0.5]), torch.tensor([0.0, 0.6, 0.5]))
    with pytest.raises(ValueError, match="finite"):
        EvalTimeWarp(m, torch.tensor([0.0, 1.0]), torch.tensor([0.0, float("nan")]))


@pytest.mark.parametrize("sampler", ["euler", "dpm_solver_pp_2m"])
def test_eval_times_lower_the_error_on_held_out_noise(sampler):
    """NFE 5 on the oracle: fitted evaluation times on top of the optimized grid at least halve the
    squared end-point error on held-out noise, measured against an independent RK4 reference."""
    m = lambda y, t: GMM.velocity(y, t, LIN)  # noqa: E731
    fit_noise = torch.randn(128, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    kw = dict(reference_steps=16, refine_sweeps=1)
    grid = optimized(m, LIN, 5, sampler, fit_noise, **kw)
    ev_only = fit_eval_times(m, LIN, grid, sampler, fit_noise, reference_steps=16)
    ts, ev = optimized_decoupled(m, LIN, 5, sampler, fit_noise, **kw)
    assert ts.shape == ev.shape == (6,) and ts[0] == 0.0 and ts[-1] == 1.0 and bool((ts.diff() > 0).all())
    assert ev.dtype == F64 and bool(((ev >= 0) & (ev <= 1)).all())
    x = torch.randn(256, 2, generator=torch.Generator().manual_seed(2), dtype=F64)
    ref = sample(m, x, sampler="rk4", timesteps=uniform_t(400), schedule=LIN).x

    def err(ts, ev):
        warped = sample(EvalTimeWarp(m, ts, ev), x, sampler=sampler, timesteps=ts, schedule=LIN)
        assert warped.nfe == 5
        return float((warped.x - ref).pow(2).sum(1).mean())

    assert err(grid, ev_only) < 0.5 * _err(grid, sampler, x, ref)
    assert err(ts, ev) < 1.1 * err(grid, ev_only)  # the joint fit starts from the better of two starts


def test_fit_eval_times_rejects_bad_input():
    m = lambda y, t: GMM.velocity(y, t, LIN)  # noqa: E731
    x = torch.randn(8, 2, dtype=F64)
    ts = uniform_t(4)
    with pytest.raises(ValueError, match="deterministic"):
        fit_eval_times(m, LIN, ts, "ddim", x, sampler_options={"eta": 1.0})
    with pytest.raises(ValueError, match="noise"):
        fit_eval_times(m, LIN, ts, "euler", None)
    with pytest.raises(ValueError, match="increasing"):
        fit_eval_times(m, LIN, ts.flip(0), "euler", x)
    with pytest.raises(ValueError, match="refine_tol"):
        fit_eval_times(m, LIN, ts, "euler", x, refine_tol=float("nan"))
    with pytest.raises(ValueError, match="joint_sweeps"):
        optimized_decoupled(m, LIN, 4, "euler", x, joint_sweeps=-1)
