"""One sampler registry: every sampler has one signature and a registered cost, its NFE is
counted as registered, and :func:`monge.samplers.sample` is the one entry."""

import importlib

import pytest
import torch

from monge.data import GaussianMixture
from monge.paths import SCHEDULES, LinearSchedule
from monge.registry import Registry
from monge.samplers import SAMPLERS, SampleOutput, SamplerInfo, dopri5, euler, nfe_for_steps, rk4, sample, steps_for_nfe
from monge.samplers.base import SamplerRegistry

F64 = torch.float64
EIGHT = GaussianMixture.eight_gaussians(radius=2.0, std=0.3)
EVERY = {"euler", "midpoint", "heun", "rk4", "dopri5", "ddim", "dpm_solver_pp", "dpm_solver_pp_2m",
         "dpm_solver_pp_3m", "unipc", "unipc_bh1", "unipc_bh2", "heun_edm", "euler_maruyama", "mean_flow", "shortcut"}
#: the samplers of flow maps model(x, t, r=r) (tests/samplers/test_flow_map_samplers.py); the rest take model(x, t)
FLOW_MAPS = {"mean_flow", "shortcut"}
FIXED = sorted(EVERY - {"dopri5"} - FLOW_MAPS)


def test_every_sampler_is_in_the_one_registry_with_its_cost():
    assert set(SAMPLERS.names()) == EVERY
    for name in EVERY:
        info = SAMPLERS.info(name)
        assert isinstance(info, SamplerInfo)
        assert info.adaptive == (name == "dopri5")
        assert info.adaptive or info.evals_per_step >= 1
    assert SAMPLERS.costs() == {n: SAMPLERS.info(n).evals_per_step for n in FIXED}
    assert {n: SAMPLERS.info(n).evals_per_step for n in ("euler", "midpoint", "heun", "rk4", "heun_edm")} == \
        {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4, "heun_edm": 2}
    # the ODE solvers need no schedule for a velocity; the diffusion and SDE samplers do
    assert {n for n in EVERY - FLOW_MAPS if not SAMPLERS.info(n).needs_schedule} == \
        {"euler", "midpoint", "heun", "rk4", "dopri5"}
    assert {n for n in EVERY if SAMPLERS.info(n).flow_map} == FLOW_MAPS


def test_registration_requires_a_cost():
    reg = SamplerRegistry("sampler")
    with pytest.raises(TypeError):
        reg.register("nocost")
    with pytest.raises(ValueError, match="evals_per_step"):
        reg.register("zero", evals_per_step=0)
    with pytest.raises(ValueError, match="final_step_evals"):
        reg.register("bad", evals_per_step=1, final_step_evals=2)
    reg.register("two", evals_per_step=2)(lambda *a, **k: None)
    assert reg.info("two") == SamplerInfo(2) and reg.meta("two") == {"info": SamplerInfo(2)}
    # the base registry keeps any registration metadata
    plain = Registry("thing")
    plain.register("a", colour="red")(object)
    assert plain.meta("a") == {"colour": "red"}
    with pytest.raises(ValueError, match="valid choices"):
        plain.meta("b")


@pytest.mark.parametrize("name", FIXED)
def test_counted_nfe_is_the_registered_cost_times_steps(name):
    """On a grid that starts where alpha > 0 (so that no step is shortened by an infinite log-SNR but
    heun_edm's last, registered as final_step_evals), the counted NFE is the registered cost."""
    sched = SCHEDULES.build("vp_linear")
    calls = [0]

    def model(y, t):
        calls[0] += 1
        return EIGHT.velocity(y, t, sched)

    x = torch.randn(8, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    info = SAMPLERS.info(name)
    for steps in (1, 3, 5):
        calls[0] = 0
        ts = torch.linspace(0.0, 1.0, steps + 1, dtype=F64)
        out = sample(model, x, sampler=name, timesteps=ts, schedule=sched, generator=torch.Generator().manual_seed(0))
        assert out.nfe == calls[0] == nfe_for_steps(name, steps)
        assert out.nfe == info.evals_per_step * (steps - 1) + (info.final_step_evals or info.evals_per_step)
        assert steps_for_nfe(name, out.nfe) == steps
    # an NFE budget through sample(): never more evaluations than the budget
    for nfe in (4, 7, 8):
        calls[0] = 0
        out = sample(model, x, sampler=name, nfe=nfe, schedule=sched, generator=torch.Generator().manual_seed(0))
        assert out.nfe == calls[0] == nfe_for_steps(name, steps_for_nfe(name, nfe)) <= nfe


def test_steps_for_nfe_errors():
    with pytest.raises(ValueError, match="below one step"):
        steps_for_nfe("rk4", 3)
    with pytest.raises(ValueError, match="adaptive"):
        steps_for_nfe("dopri5", 8)
    with pytest.raises(ValueError, match="positive integer"):
        steps_for_nfe("euler", 0)
    with pytest.raises(ValueError, match="valid choices"):
        steps_for_nfe("plms", 4)
    assert [steps_for_nfe("heun_edm", n) for n in (1, 2, 3, 9)] == [1, 1, 2, 5]


@pytest.mark.parametrize("name", sorted(EVERY - FLOW_MAPS))
def test_one_signature(name):
    """``sampler(model, x, schedule, ts, *, prediction, return_trajectory, generator)`` for every sampler,
    with the linear path as the default schedule; sample() runs each by name."""
    fn = SAMPLERS.get(name)
    lin = LinearSchedule()
    model = lambda y, t: EIGHT.velocity(y, t, lin)  # noqa: E731
    x = torch.randn(16, 2, dtype=F64, generator=torch.Generator().manual_seed(2))
    ts = torch.linspace(0.0, 1.0, 9, dtype=F64)
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    out = fn(model, x, None, ts, prediction="velocity", return_trajectory=True, generator=g())
    assert isinstance(out, SampleOutput) and out.x.shape == x.shape and out.trajectory is not None
    assert torch.isfinite(out.x).all() and out.nfe >= 1
    same = fn(model, x, lin, ts, prediction="velocity", generator=g())
    torch.testing.assert_close(same.x, out.x, rtol=1e-12, atol=1e-12)
    if name == "dopri5":  # its own steps between the grid's ends
        assert torch.equal(sample(model, x, sampler=name, schedule=lin).x, same.x)
    else:
        assert torch.equal(sample(model, x, sampler=name, timesteps=ts, schedule=lin, generator=g()).x, same.x)
        nfe = nfe_for_steps(name, 8)  # the same 8 uniform steps
        assert torch.equal(sample(model, x, sampler=name, nfe=nfe, generator=g()).x, out.x)
    # a data prediction converted through the schedule lands where the velocity does (up to rounding)
    data = lambda y, t: EIGHT.posterior_mean(y, t, lin)  # noqa: E731
    if name not in ("euler_maruyama",):
        ts_in = torch.linspace(1e-3, 1.0 - 1e-3, 9, dtype=F64)
        a = fn(model, x, lin, ts_in, generator=g()).x
        b = fn(data, x, lin, ts_in, prediction="data", generator=g()).x
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------- the one entry
def test_sample_takes_nfe_or_timesteps_and_an_adaptive_sampler_neither():
    field = lambda y, t: -y + t[:, None]  # noqa: E731
    x = torch.randn(5, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    ts = torch.linspace(0.0, 1.0, 5, dtype=F64)
    # nfe = 8 on rk4 buys the same two uniform steps as the grid of two steps
    assert torch.equal(sample(field, x, sampler="rk4", nfe=8).x,
                       sample(field, x, sampler="rk4", timesteps=torch.linspace(0.0, 1.0, 3, dtype=F64)).x)
    for kwargs in ({}, {"nfe": 4, "timesteps": ts}):
        with pytest.raises(ValueError, match="either nfe .* or timesteps"):
            sample(field, x, sampler="euler", **kwargs)
    with pytest.raises(ValueError, match="own ends"):
        sample(field, x, sampler="euler", timesteps=ts, t0=0.5)
    for kwargs in ({"nfe": 4}, {"timesteps": ts}):
        with pytest.raises(ValueError, match="adaptive"):
            sample(field, x, sampler="dopri5", **kwargs)
    # t0/t1 place the uniform steps of nfe and the ends of an adaptive solve alike
    a = sample(field, x, sampler="dopri5", t0=0.2, t1=0.9)
    b = dopri5(field, x, None, torch.tensor([0.2, 0.5, 0.9], dtype=F64))
    assert torch.equal(a.x, b.x) and a.nfe == b.nfe
    with pytest.raises(ValueError, match="not both"):
        dopri5(field, x, None, torch.tensor([0.0, 1.0]), t0=0.0)


def test_a_velocity_ode_solver_never_reads_the_schedule():
    """One meaning of ``schedule``: the path's alpha/sigma. An ODE solver integrates a velocity as
    it is (any monotonic grid, backwards too), whatever schedule it is given."""
    field = lambda y, t: -y + t[:, None]  # noqa: E731
    x = torch.randn(5, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    back = torch.linspace(1.0, 0.0, 7, dtype=F64)
    plain = rk4(field, x, None, back, return_trajectory=True)
    on_vp = rk4(field, x, SCHEDULES.build("vp_linear"), back, return_trajectory=True)
    assert torch.equal(plain.x, on_vp.x) and torch.equal(plain.trajectory, on_vp.trajectory) and plain.nfe == 24
    assert torch.equal(euler(field, x, None, back).x, sample(field, x, sampler="euler", nfe=6, t0=1.0, t1=0.0).x)


def test_the_old_names_are_gone():
    import monge.samplers as samplers

    for name in ("solve", "MODEL_SAMPLERS", "STEP_COST", "EVALS_PER_STEP", "STEP_SCHEDULES",
                 "fit_optimized_schedule"):
        assert not hasattr(samplers, name), name
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("monge.samplers.schedules")


def test_the_expressway_gives_a_schedule_sampler_its_path():
    """On a non-linear path a diffusion sampler on the expressway runs on that path's schedule:
    the same as starting by hand and solving on the schedule's grid over [t_s, 1]."""
    from monge.ot.semidiscrete import SemiDiscreteMap
    from monge.paths import PATHS
    from monge.samplers.expressway import expressway_sample, expressway_start

    g = torch.Generator().manual_seed(0)
    sd_map = SemiDiscreteMap(torch.randn(8, 2, generator=g), torch.zeros(8))
    noise = torch.randn(16, 2, generator=g)
    field = lambda x, t: -x * (1 + t[:, None])  # noqa: E731
    path = PATHS.build("vp")
    out = expressway_sample(field, sd_map, noise, t_start=0.4, sampler="dpm_solver_pp", nfe=3, path=path,
                            generator=torch.Generator().manual_seed(1))
    x, t0 = expressway_start(sd_map, noise, 0.4, path, torch.Generator().manual_seed(1))
    ts = torch.linspace(t0, 1.0, steps_for_nfe("dpm_solver_pp", 3) + 1)
    ref = sample(field, x, sampler="dpm_solver_pp", timesteps=ts, schedule=path.schedule)
    torch.testing.assert_close(out.x, ref.x)
