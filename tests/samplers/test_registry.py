"""One sampler registry: every sampler has one signature and a registered cost, its NFE is
counted as registered, the old names still import (with a DeprecationWarning)."""

import importlib
import sys
import warnings

import pytest
import torch

from monge.data import GaussianMixture
from monge.paths import SCHEDULES, LinearSchedule
from monge.registry import Registry
from monge.samplers import (SAMPLERS, SampleOutput, SamplerInfo, dopri5, euler, nfe_for_steps, rk4, sample, solve,
                            steps_for_nfe)
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
        out = solve(model, x, sched, ts, name, generator=torch.Generator().manual_seed(0))
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
    with the linear path as the default schedule; sample() and solve() run each by name."""
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
    with torch.no_grad():
        assert torch.equal(solve(model, x, lin, ts, name, generator=g()).x, same.x)
    if name != "dopri5":
        nfe = nfe_for_steps(name, 8)  # the same 8 uniform steps
        assert torch.equal(sample(model, x, sampler=name, nfe=nfe, generator=g()).x, out.x)
    # a data prediction converted through the schedule lands where the velocity does (up to rounding)
    data = lambda y, t: EIGHT.posterior_mean(y, t, lin)  # noqa: E731
    if name not in ("euler_maruyama",):
        ts_in = torch.linspace(1e-3, 1.0 - 1e-3, 9, dtype=F64)
        a = fn(model, x, lin, ts_in, generator=g()).x
        b = fn(data, x, lin, ts_in, prediction="data", generator=g()).x
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------- deprecated names
OLD_EVALS_PER_STEP = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}
OLD_STEP_COST = {"ddim": 1, "dpm_solver_pp": 1, "dpm_solver_pp_2m": 1, "dpm_solver_pp_3m": 1, "unipc": 1,
                 "unipc_bh1": 1, "unipc_bh2": 1, "heun_edm": 2, "euler_maruyama": 1,
                 "euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}


@pytest.mark.parametrize("module,name,expected", [
    ("monge.samplers", "MODEL_SAMPLERS", SAMPLERS),
    ("monge.samplers.diffusion", "MODEL_SAMPLERS", SAMPLERS),
    ("monge.samplers", "STEP_COST", OLD_STEP_COST),
    ("monge.samplers.diffusion", "STEP_COST", OLD_STEP_COST),
    ("monge.samplers", "EVALS_PER_STEP", OLD_EVALS_PER_STEP),
    ("monge.samplers.ode", "EVALS_PER_STEP", OLD_EVALS_PER_STEP),
    ("monge.samplers", "STEP_SCHEDULES", None),
    ("monge.samplers.timesteps", "STEP_SCHEDULES", None),
    ("monge.samplers", "fit_optimized_schedule", None),
])
def test_old_names_warn_and_still_work(module, name, expected):
    from monge.samplers import GRIDS, optimized

    mod = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match=name) as record:
        value = getattr(mod, name)
    assert len(record) == 1 and record[0].filename == __file__  # one warning, pointing at the caller
    expected = expected if expected is not None else {"STEP_SCHEDULES": GRIDS, "fit_optimized_schedule": optimized}[name]
    assert value == expected if isinstance(expected, dict) else value is expected


def test_from_import_of_an_old_name_warns():
    with pytest.warns(DeprecationWarning, match="MODEL_SAMPLERS"):
        from monge.samplers import MODEL_SAMPLERS  # noqa: F401
    with pytest.raises(AttributeError):
        importlib.import_module("monge.samplers").NOT_A_NAME


def test_schedules_module_is_a_deprecated_alias_of_timesteps():
    sys.modules.pop("monge.samplers.schedules", None)
    with pytest.warns(DeprecationWarning, match="monge.samplers.timesteps"):
        old = importlib.import_module("monge.samplers.schedules")
    from monge.samplers import timesteps

    assert old.make_timesteps is timesteps.make_timesteps and old.karras is timesteps.karras
    assert old._dp_path is timesteps._dp_path  # private helpers too
    with pytest.warns(DeprecationWarning, match="STEP_SCHEDULES"):
        assert old.STEP_SCHEDULES is timesteps.GRIDS


def test_old_ode_call_with_the_grid_third_warns_and_matches():
    field = lambda y, t: -y + t[:, None]  # noqa: E731
    x = torch.randn(5, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    ts = torch.linspace(1.0, 0.0, 7, dtype=F64)  # backwards, as an ODE solver allows
    with pytest.warns(DeprecationWarning, match=r"rk4\(field, x, ts\)") as record:
        old = rk4(field, x, ts, True)
    assert record[0].filename == __file__
    new = rk4(field, x, None, ts, return_trajectory=True)
    assert torch.equal(old.x, new.x) and torch.equal(old.trajectory, new.trajectory) and old.nfe == new.nfe == 24
    with pytest.warns(DeprecationWarning):
        assert torch.equal(euler(field, x, ts).x, euler(field, x, None, ts).x)
    with pytest.warns(DeprecationWarning, match="dopri5"):
        a = dopri5(field, x, 0.2, 0.9)
    b = dopri5(field, x, t0=0.2, t1=0.9)
    c = dopri5(field, x, None, torch.tensor([0.2, 0.5, 0.9], dtype=F64))
    assert torch.equal(a.x, b.x) and torch.equal(a.x, c.x) and a.nfe == b.nfe
    with pytest.raises(ValueError, match="not both"):
        dopri5(field, x, None, torch.tensor([0.0, 1.0]), t0=0.0)


def test_new_names_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from monge.samplers import GRIDS, SAMPLERS, make_timesteps, nfe_for_steps  # noqa: F401
        from monge.samplers.timesteps import GRIDS as G2  # noqa: F401


def test_the_expressway_gives_a_schedule_sampler_its_path():
    """On a non-linear path a diffusion sampler on the expressway runs on that path's schedule:
    the same as starting by hand and solving on the schedule's grid over [t_s, 1]."""
    from monge.ot.semidiscrete import SemiDiscreteMap
    from monge.paths import PATHS
    from monge.samplers import solve, steps_for_nfe
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
    ref = solve(field, x, path.schedule, ts, "dpm_solver_pp")
    torch.testing.assert_close(out.x, ref.x)
