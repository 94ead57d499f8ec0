"""Diffusion samplers on the Gaussian-mixture oracle: convergence orders, high-NFE accuracy,
few-step ranking, prediction-type invariance, diffusers parity and input checks."""

import math

import numpy as np
import ot
import pytest
import torch
from torchdiffeq import odeint

from monge.data import GaussianMixture
from monge.paths import SCHEDULES, DiscreteVPSchedule
from monge.samplers import SAMPLERS, sample, steps_for_nfe

F64 = torch.float64


def w2(a, b):
    return math.sqrt(ot.emd2([], [], ot.dist(a.double(), b.double()).numpy(), numItermax=10**7))


def log_snr_grid(sched, n, t0, t1):
    ell = sched.log_snr(torch.tensor([t0, t1], dtype=F64))
    lo, hi = [float(v.clamp(-12.0, 12.0)) for v in ell]
    ts = sched.t_from_log_snr(torch.linspace(lo, hi, n + 1, dtype=F64))
    ts[0], ts[-1] = t0, t1
    return ts


def flow_map(gmm, sched, x, t0, t1, tol=1e-10):
    """Exact probability-flow map by adaptive Dormand-Prince on the closed-form velocity."""
    return odeint(lambda t, y: gmm.velocity(y, t.expand(y.shape[0]), sched), x,
                  torch.tensor([t0, t1], dtype=F64), rtol=tol, atol=tol, method="dopri5")[-1]


# ---------------------------------------------------------------------------- convergence orders
SMOOTH = GaussianMixture(torch.tensor([[-1.0, 0.5], [1.0, -0.5]]), 0.5)


@pytest.fixture(scope="module")
def order_problem():
    sched = SCHEDULES.build("cosine")
    t0, t1 = 0.1, 0.9
    x = SMOOTH.marginal(t0, sched).sample(32, torch.Generator().manual_seed(1), dtype=F64)
    return sched, t0, t1, x, flow_map(SMOOTH, sched, x, t0, t1)


def _errors(name, problem, steps, **opts):
    sched, t0, t1, x, ref = problem
    model = lambda y, t: SMOOTH.posterior_mean(y, t, sched)  # noqa: E731
    out = []
    for n in steps:
        res = sample(
            model, x, sampler=name, timesteps=log_snr_grid(sched, n, t0, t1), schedule=sched, prediction="data", **opts
        )
        out.append(float((res.x - ref).pow(2).mean().sqrt()))
    return np.array(out)


@pytest.mark.parametrize("name,opts,lo,hi", [
    ("ddim", {}, 0.9, 1.1),
    ("dpm_solver_pp_2m", {"lower_order_final": False}, 1.8, 2.2),
    ("unipc_bh1", {"lower_order_final": False}, 2.7, 3.3),  # UniPC-2: order 2 predictor + corrector = 3
    ("unipc_bh2", {"lower_order_final": False}, 2.7, 3.3),
    ("heun_edm", {}, 1.8, 2.3),
])
def test_convergence_order(order_problem, name, opts, lo, hi):
    steps = np.array([16, 32, 64])
    errs = _errors(name, order_problem, steps, **opts)
    slope = -np.polyfit(np.log(steps), np.log(errs), 1)[0]
    assert lo < slope < hi, (slope, errs)


def test_dpm_solver_3m_order_and_gain_over_2m(order_problem):
    """3M is third order per step; its first-order warm-up step (as in diffusers and the paper's
    code) limits the global order to 2 asymptotically, with a smaller error than 2M."""
    steps = np.array([8, 16, 32])
    e3 = _errors("dpm_solver_pp_3m", order_problem, steps, lower_order_final=False)
    e2 = _errors("dpm_solver_pp_2m", order_problem, steps, lower_order_final=False)
    slope = -np.polyfit(np.log(steps), np.log(e3), 1)[0]
    assert 1.8 < slope < 3.3, (slope, e3)
    assert (e3 < 0.5 * e2).all(), (e3, e2)


# ---------------------------------------------------------------------------- high NFE reproduces the mixture
EIGHT = GaussianMixture.eight_gaussians()


@pytest.fixture(scope="module")
def linear_problem():
    sched = SCHEDULES.build("linear")
    x = torch.randn(300, 2, generator=torch.Generator().manual_seed(3), dtype=F64)
    return sched, x, flow_map(EIGHT, sched, x, 0.0, 1.0, tol=1e-8)


@pytest.mark.parametrize("name", ["ddim", "dpm_solver_pp_2m", "dpm_solver_pp_3m", "unipc_bh1", "unipc_bh2", "heun_edm"])
def test_high_nfe_matches_flow_map_and_mixture(linear_problem, name):
    sched, x, ref = linear_problem
    out = sample(
        lambda y, t: EIGHT.velocity(y, t, sched),
        x,
        sampler=name,
        timesteps=log_snr_grid(sched, 80, 0.0, 1.0),
        schedule=sched,
    )
    tol = 0.05 if name == "ddim" else 0.01  # first order vs second and higher
    assert (out.x - ref).pow(2).sum(1).mean().sqrt() < tol
    data = EIGHT.sample(300, torch.Generator().manual_seed(4), dtype=F64)
    floor = w2(EIGHT.sample(300, torch.Generator().manual_seed(5), dtype=F64), data)
    assert w2(out.x, data) < 1.2 * floor + 0.02, (w2(out.x, data), floor)


@pytest.mark.parametrize("sname", ["vp_linear", "edm"])
def test_high_nfe_on_diffusion_schedules(sname):
    """Start from the exact t=0 marginal (VP-linear / EDM do not start at pure noise)."""
    sched = SCHEDULES.build(sname)
    x = EIGHT.marginal(0.0, sched).sample(300, torch.Generator().manual_seed(6), dtype=F64)
    data = EIGHT.sample(300, torch.Generator().manual_seed(7), dtype=F64)
    floor = w2(EIGHT.sample(300, torch.Generator().manual_seed(8), dtype=F64), data)
    for name in ["dpm_solver_pp_3m", "unipc_bh2"]:
        out = sample(
            lambda y, t: EIGHT.noise_mean(y, t, sched),
            x,
            sampler=name,
            timesteps=log_snr_grid(sched, 60, 0.0, 1.0),
            schedule=sched,
            prediction="noise",
        )
        assert w2(out.x, data) < 1.2 * floor + 0.03, (name, w2(out.x, data), floor)


# ---------------------------------------------------------------------------- few steps
def test_nfe10_dpm_solver_and_unipc_beat_ddim_and_euler(linear_problem):
    sched, x, ref = linear_problem
    model = lambda y, t: EIGHT.velocity(y, t, sched)  # noqa: E731
    grid = torch.linspace(0.0, 1.0, 11, dtype=F64)

    def err(name, ts):
        out = sample(model, x, sampler=name, timesteps=ts, schedule=sched)
        assert out.nfe == 10
        return float((out.x - ref).pow(2).sum(1).mean().sqrt())

    baseline = min(err("ddim", grid), err("euler", grid), err("euler", log_snr_grid(sched, 10, 0.0, 1.0)))
    for name in ["dpm_solver_pp_2m", "dpm_solver_pp_3m", "unipc_bh1", "unipc_bh2"]:
        assert err(name, grid) < 0.7 * baseline, name


# ---------------------------------------------------------------------------- prediction types, NFE, trajectories
@pytest.mark.parametrize("name", ["ddim", "dpm_solver_pp_3m", "unipc_bh2", "heun_edm", "heun"])
def test_prediction_types_give_the_same_samples(name):
    sched = SCHEDULES.build("cosine")
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(9), dtype=F64)
    ts = log_snr_grid(sched, 8, 0.05, 0.999)
    oracle = {"data": EIGHT.posterior_mean, "noise": EIGHT.noise_mean, "score": EIGHT.score_t,
              "velocity": EIGHT.velocity}
    outs = {
        k: sample(lambda y, t, f=f: f(y, t, sched), x, sampler=name, timesteps=ts, schedule=sched, prediction=k).x
        for k, f in oracle.items()
    }
    for k in ("noise", "score", "velocity"):
        torch.testing.assert_close(outs[k], outs["data"], rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("name", sorted(SAMPLERS.costs()))
def test_nfe_counted_honestly(name):
    sched = SCHEDULES.build("vp_linear")
    calls = [0]

    def model(y, t):
        calls[0] += 1
        assert t.shape == (y.shape[0],)
        return EIGHT.velocity(y, t, sched)

    ts = torch.linspace(0.0, 1.0, 6, dtype=F64)
    out = sample(
        model,
        torch.randn(8, 2, dtype=F64),
        sampler=name,
        timesteps=ts,
        schedule=sched,
        generator=torch.Generator().manual_seed(0),
    )
    assert out.nfe == calls[0]
    expected = (
        9 if name == "heun_edm" else 5 * SAMPLERS.info(name).evals_per_step
    )  # Heun's last step (into sigma=0) is Euler
    assert out.nfe == expected
    assert steps_for_nfe(name, expected) == 5


def test_trajectory_and_dtype_follow_input():
    sched = SCHEDULES.build("linear")
    x = torch.randn(4, 2)
    ts = torch.linspace(0.0, 1.0, 5)
    for name in ["ddim", "dpm_solver_pp", "unipc", "heun_edm", "euler_maruyama"]:
        out = sample(
            lambda y, t: EIGHT.velocity(y, t, sched),
            x,
            sampler=name,
            timesteps=ts,
            schedule=sched,
            return_trajectory=True,
            generator=torch.Generator().manual_seed(0),
        )
        assert out.x.dtype == torch.float32 and out.trajectory.shape == (5, 4, 2)
        assert torch.equal(out.trajectory[0], x) and torch.equal(out.trajectory[-1], out.x)
        assert torch.equal(out.times, ts)


def test_ddim_eta_one_is_ancestral_and_seeded():
    sched = SCHEDULES.build("cosine")
    x = torch.randn(8, 2, dtype=F64)
    ts = torch.linspace(0.0, 1.0, 6, dtype=F64)
    model = lambda y, t: EIGHT.velocity(y, t, sched)  # noqa: E731
    a = sample(
        model, x, sampler="ddim", timesteps=ts, schedule=sched, eta=1.0, generator=torch.Generator().manual_seed(1)
    ).x
    b = sample(
        model, x, sampler="ddim", timesteps=ts, schedule=sched, eta=1.0, generator=torch.Generator().manual_seed(1)
    ).x
    c = sample(model, x, sampler="ddim", timesteps=ts, schedule=sched, eta=0.0).x
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_bad_input_is_rejected():
    sched = SCHEDULES.build("linear")
    m = lambda y, t: EIGHT.velocity(y, t, sched)  # noqa: E731
    x = torch.randn(4, 2)
    ts = torch.linspace(0, 1, 5)
    with pytest.raises(ValueError, match="timesteps"):
        sample(m, x, sampler="ddim", timesteps=ts.flip(0), schedule=sched)
    with pytest.raises(ValueError, match="timesteps"):
        sample(m, x, sampler="ddim", timesteps=torch.tensor([0.0]), schedule=sched)
    with pytest.raises(ValueError, match="timesteps"):
        sample(m, x, sampler="ddim", timesteps=torch.tensor([0.0, 1.0, 1.5]), schedule=sched)
    with pytest.raises(ValueError, match="prediction"):
        sample(m, x, sampler="ddim", timesteps=ts, schedule=sched, prediction="eps")
    with pytest.raises(ValueError, match="eta"):
        sample(m, x, sampler="ddim", timesteps=ts, schedule=sched, eta=2.0)
    with pytest.raises(ValueError, match="order"):
        sample(m, x, sampler="dpm_solver_pp", timesteps=ts, schedule=sched, order=4)
    with pytest.raises(ValueError, match="variant"):
        sample(m, x, sampler="unipc", timesteps=ts, schedule=sched, variant="bh3")
    with pytest.raises(ValueError, match="sampler"):
        sample(m, x, sampler="plms", timesteps=ts, schedule=sched)
    with pytest.raises(ValueError, match="x"):
        sample(m, torch.full((4, 2), float("nan")), sampler="ddim", timesteps=ts, schedule=sched)
    with pytest.raises(ValueError, match="must match"):
        sample(lambda y, t: y[:, :1], x, sampler="ddim", timesteps=ts, schedule=sched)
    # a noise predictor carries no information at pure noise (alpha=0): refuse, name the fix
    with pytest.raises(ValueError, match="alpha_t > 0"):
        sample(lambda y, t: y, x, sampler="dpm_solver_pp", timesteps=ts, schedule=sched, prediction="noise")
    assert {"ddim", "dpm_solver_pp_2m", "unipc_bh1", "heun_edm", "euler", "rk4"} <= set(SAMPLERS.names())


# ---------------------------------------------------------------------------- diffusers parity
DiscreteVP = DiscreteVPSchedule
MIX3 = GaussianMixture(torch.tensor([[-1.0, 0.5], [1.0, -0.5], [0.0, 1.5]]), torch.tensor([0.3, 0.5, 0.2]))


def _flow_t(k, T=1000):
    return 1.0 - (k + 1) / T


def _run_diffusers(sched, oracle, x, **kw):
    s = x.clone()
    for k in sched.timesteps:
        t = torch.full((s.shape[0],), _flow_t(int(k)), dtype=F64)
        s = sched.step(oracle(s.double(), t).to(s.dtype), k, s, **kw).prev_sample
    return s


CASES = [
    ("DDIMScheduler", dict(clip_sample=False), "ddim", {}, "zero"),
    ("DPMSolverMultistepScheduler", dict(solver_order=2), "dpm_solver_pp", dict(order=2), "zero"),
    ("DPMSolverMultistepScheduler", dict(solver_order=3), "dpm_solver_pp", dict(order=3), "zero"),
    ("UniPCMultistepScheduler", dict(solver_order=2, solver_type="bh2"), "unipc", dict(order=2, variant="bh2"), "zero"),
    ("UniPCMultistepScheduler", dict(solver_order=3, solver_type="bh2"), "unipc", dict(order=3, variant="bh2"), "zero"),
    # diffusers' bh1 returns NaN on a final step into sigma=0 (B(h) = -inf times 0); compare at sigma_min
    ("UniPCMultistepScheduler", dict(solver_order=2, solver_type="bh1", final_sigmas_type="sigma_min"),
     "unipc", dict(order=2, variant="bh1"), "sigma_min"),
    ("UniPCMultistepScheduler", dict(solver_order=3, solver_type="bh1", final_sigmas_type="sigma_min"),
     "unipc", dict(order=3, variant="bh1"), "sigma_min"),
]


@pytest.mark.parametrize("cls,kwargs,name,opts,final", CASES)
@pytest.mark.parametrize("n", [5, 12])
def test_matches_diffusers(cls, kwargs, name, opts, final, n):
    diffusers = pytest.importorskip("diffusers")
    sched = getattr(diffusers, cls)(num_train_timesteps=1000, beta_schedule="linear", **kwargs)
    sched.set_timesteps(n)
    ours_sched = DiscreteVP(sched.alphas_cumprod)
    last = 1.0 if final == "zero" else _flow_t(0)
    ts = torch.tensor([_flow_t(k) for k in sched.timesteps.tolist()] + [last], dtype=F64)
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    oracle = lambda y, t: MIX3.noise_mean(y, t, ours_sched)  # noqa: E731
    ref = _run_diffusers(sched, oracle, x)
    ours = sample(oracle, x, sampler=name, timesteps=ts.float(), schedule=ours_sched, prediction="noise", **opts)
    assert ours.nfe == n
    torch.testing.assert_close(ours.x, ref, rtol=1e-5, atol=2e-5)


def test_ddim_eta_matches_diffusers_with_the_same_generator():
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.DDIMScheduler(num_train_timesteps=1000, clip_sample=False)
    sched.set_timesteps(10)
    ours_sched = DiscreteVP(sched.alphas_cumprod)
    ts = torch.tensor([_flow_t(k) for k in sched.timesteps.tolist()] + [1.0])
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    oracle = lambda y, t: MIX3.noise_mean(y, t, ours_sched)  # noqa: E731
    ref = _run_diffusers(sched, oracle, x, eta=0.7, generator=torch.Generator().manual_seed(5))
    ours = sample(
        oracle,
        x,
        sampler="ddim",
        timesteps=ts,
        schedule=ours_sched,
        prediction="noise",
        eta=0.7,
        generator=torch.Generator().manual_seed(5),
    )
    torch.testing.assert_close(ours.x, ref, rtol=1e-5, atol=2e-5)
