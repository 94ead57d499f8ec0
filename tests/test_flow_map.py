"""Flow-map objectives (mean_flow, shortcut): their targets against finite differences and exact flow
maps (a Gaussian in closed form, the Gaussian-mixture oracle by a fine ODE solve), training, and the
checks that keep flow maps and velocity models apart."""

import math

import pytest
import torch
from torch import nn

from monge.couplings import Coupled
from monge.data import GaussianMixture
from monge.models import MLP
from monge.objectives import (
    OBJECTIVES,
    MeanFlowObjective,
    ShortcutObjective,
    check_model,
    check_sampler,
    mean_flow_target,
    sampler_options,
    shortcut_steps,
    shortcut_target,
)
from monge.paths import PATHS, LinearSchedule

F64 = torch.float64


class GaussianFlowMap(nn.Module):
    r"""Exact average velocity of N(0, I) -> N(m, s^2 I) with independent pairs on the linear path:
    the marginal flow is :math:`X_t(x_0) = t m + \sigma_t x_0`, :math:`\sigma_t^2 = (1-t)^2 + t^2 s^2`,
    so :math:`u(x, t, r) = (r m + \sigma_r (x - t m)/\sigma_t - x)/(r - t)` (the velocity at r = t)."""

    second_time = True

    def __init__(self, m: torch.Tensor, s: float) -> None:
        super().__init__()
        self.m, self.s = m, s

    def sig(self, t):
        return torch.sqrt((1 - t) ** 2 + t**2 * self.s**2)

    def dsig(self, t):
        return (-(1 - t) + t * self.s**2) / self.sig(t)

    def forward(self, x, t, y=None, r=None):
        t, r = t[:, None], r[:, None]
        z = (x - t * self.m) / self.sig(t)  # the noise x comes from
        h = r - t
        safe = torch.where(h.abs() > 1e-12, h, torch.ones_like(h))
        jump = (r * self.m + self.sig(r) * z - x) / safe
        return torch.where(h.abs() > 1e-12, jump, self.m + self.dsig(t) * z)


def _mlp(seed=0, **kw):
    torch.manual_seed(seed)
    return MLP(2, hidden=32, depth=2, second_time=True, time_scale=10.0, **kw).to(F64)


def test_registered_beside_velocity():
    assert {"velocity", "mean_flow", "shortcut"} <= set(OBJECTIVES.names())
    assert isinstance(OBJECTIVES.build("mean_flow", p=0.5), MeanFlowObjective)
    assert OBJECTIVES.build("shortcut", max_steps=8).max_steps == 8


def test_jvp_target_matches_finite_differences():
    """u_tgt = v - (t - r) du/dt, du/dt = v . d_x u + d_t u: the JVP against a central difference."""
    net = _mlp()
    def f(x, t, r):
        return net(x, t, r=r)
    g = torch.Generator().manual_seed(1)
    x, v = torch.randn(6, 2, generator=g, dtype=F64), torch.randn(6, 2, generator=g, dtype=F64)
    t = torch.rand(6, generator=g, dtype=F64) * 0.5
    r = t + 0.4 * torch.rand(6, generator=g, dtype=F64)
    u, target = mean_flow_target(f, x, t, r, v)
    eps = 1e-5
    with torch.no_grad():
        dudt = (f(x + eps * v, t + eps, r) - f(x - eps * v, t - eps, r)) / (2 * eps)
        torch.testing.assert_close(u, f(x, t, r))
    torch.testing.assert_close(target, v - (t - r)[:, None] * dudt, rtol=1e-7, atol=1e-8)
    assert not target.requires_grad and u.requires_grad


def test_identity_holds_for_the_exact_gaussian_map():
    """The exact average velocity is its own MeanFlow target with the marginal velocity u(x, t, t)."""
    exact = GaussianFlowMap(torch.tensor([3.0, -1.0], dtype=F64), 0.5)
    g = torch.Generator().manual_seed(2)
    t = torch.rand(32, generator=g, dtype=F64) * 0.6
    r = t + torch.rand(32, generator=g, dtype=F64) * (1 - t)
    x = torch.randn(32, 2, generator=g, dtype=F64) * 1.3
    v = exact(x, t, r=t)
    u, target = mean_flow_target(lambda x, t, r: exact(x, t, r=r), x, t, r, v)
    torch.testing.assert_close(target, u, rtol=1e-10, atol=1e-10)


def _flow(mix: GaussianMixture, x: torch.Tensor, t: torch.Tensor, r: torch.Tensor, steps: int = 400) -> torch.Tensor:
    """x_t moved to time r by RK4 on the mixture's exact velocity (per-sample times)."""
    lin = LinearSchedule()
    h = (r - t)[:, None] / steps
    for k in range(steps):
        s = t + k * h[:, 0]
        k1 = mix.velocity(x, s, lin)
        k2 = mix.velocity(x + 0.5 * h * k1, s + 0.5 * h[:, 0], lin)
        k3 = mix.velocity(x + 0.5 * h * k2, s + 0.5 * h[:, 0], lin)
        k4 = mix.velocity(x + h * k3, s + h[:, 0], lin)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


def test_identity_holds_on_the_gaussian_mixture_oracle():
    """The mixture's exact average velocity u = (x_r - x_t)/(r - t) from a fine ODE solve satisfies
    u = v - (t - r) du/dt, with du/dt by the library's JVP through the solve (t = 0 noise, t = 1 data)."""
    mix = GaussianMixture.eight_gaussians(radius=2.0, std=0.3)
    lin = LinearSchedule()
    g = torch.Generator().manual_seed(3)
    n = 12
    t = 0.1 + 0.4 * torch.rand(n, generator=g, dtype=F64)
    r = t + (0.9 - t) * torch.rand(n, generator=g, dtype=F64) + 0.05
    x0 = torch.randn(n, 2, generator=g, dtype=F64)
    x_t = _flow(mix, x0, torch.zeros(n, dtype=F64), t, 200)  # a typical point of the marginal at t

    def exact_u(x, t, r):
        return (_flow(mix, x, t, r, 200) - x) / (r - t)[:, None]

    v = mix.velocity(x_t, t, lin)
    u, target = mean_flow_target(exact_u, x_t, t, r, v)
    torch.testing.assert_close(target, u, rtol=1e-6, atol=1e-6)
    # and the order matters: the identity with the paper's reversed sign fails
    dudt = (target - v) / (r - t)[:, None]
    assert (v + (t - r)[:, None] * dudt - u).abs().max() > 1e-2


def test_shortcut_target_is_exact_for_the_exact_map():
    """Two exact half steps make the exact double step; the smallest step's half steps are Euler steps
    of the velocity (step 0)."""
    exact = GaussianFlowMap(torch.tensor([2.0, 1.0], dtype=F64), 0.7)
    def f(x, t, r):
        return exact(x, t, r=r)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(8, 2, generator=g, dtype=F64)
    big = torch.full((8,), 0.25, dtype=F64)
    t = torch.full((8,), 0.5, dtype=F64)
    torch.testing.assert_close(shortcut_target(f, x, t, big, 8), f(x, t, t + big), rtol=1e-10, atol=1e-10)
    small = torch.full((8,), 1 / 8, dtype=F64)
    v1 = f(x, t, t)
    v2 = f(x + v1 / 16, t + 1 / 16, t + 1 / 16)
    torch.testing.assert_close(shortcut_target(f, x, t, small, 8), 0.5 * (v1 + v2))
    assert shortcut_steps(8) == [1.0, 0.5, 0.25, 0.125]


@pytest.mark.parametrize("objective", ["mean_flow", "shortcut"])
def test_a_short_training_run_lowers_the_loss_and_the_one_step_error(objective):
    """N(0, I) -> N(m, s^2 I): the loss falls and one jump lands nearer the exact flow map's endpoint."""
    torch.manual_seed(0)
    obj = OBJECTIVES.build(objective)
    net = MLP(2, hidden=64, depth=2, second_time=True, time_scale=10.0)
    path = PATHS.build("linear")
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    m = torch.tensor([2.0, -1.0])
    exact = GaussianFlowMap(m.double(), 0.5)
    g = torch.Generator().manual_seed(5)
    test_x0 = torch.randn(512, 2, generator=g)
    want = exact(test_x0.double(), torch.zeros(512, dtype=F64), r=torch.ones(512, dtype=F64)) + test_x0.double()

    def one_step_error():
        with torch.no_grad():
            got = test_x0 + net(test_x0, torch.zeros(512), r=torch.ones(512))
        return float((got.double() - want).pow(2).sum(1).mean())

    before, losses = one_step_error(), []
    for _ in range(300):
        x0 = torch.randn(256, 2, generator=g)
        x1 = m + 0.5 * torch.randn(256, 2, generator=g)
        loss = obj.loss(net, Coupled(x0, x1), torch.rand(256, generator=g), path, generator=g)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-30:]) / 30 < 0.5 * sum(losses[:30]) / 30
    after = one_step_error()
    assert after < 0.1 * before, (before, after)


def test_mean_flow_times_and_weights():
    obj = MeanFlowObjective(ratio=0.25)
    t, r = obj.sample_times(20000, torch.Generator().manual_seed(0))
    assert bool((r >= t).all()) and 0.0 < float(t.min()) and float(r.max()) < 1.0
    assert abs(float((r > t).double().mean()) - 0.25) < 0.02
    # mu = 0.4 in monge's time is the paper's -0.4 on its reversed time: the median of all draws is sigmoid(0.4)
    both = torch.cat([t[r > t], r[r > t]])
    assert abs(float(torch.logit(both.double()).mean()) - 0.4) < 0.05
    # value: the plain MSE; gradient: the adaptively weighted squared norm
    net = _mlp(3)
    path = PATHS.build("linear")
    def g():
        return torch.Generator().manual_seed(9)
    x0, x1 = torch.randn(16, 2, dtype=F64, generator=g()), torch.randn(16, 2, dtype=F64, generator=g()) + 2
    for p in (0.0, 1.0):
        loss = MeanFlowObjective(p=p).loss(net, Coupled(x0, x1), torch.rand(16), path, generator=g())[0]
        tt, rr = MeanFlowObjective(p=p).sample_times(16, g(), dtype=F64)
        ps = path.sample(x0, x1, tt)
        u, target = mean_flow_target(lambda x, t, r: net(x, t, r=r), ps.x_t, tt, rr, ps.target)
        assert float(loss) == pytest.approx(float((u - target).pow(2).mean()), rel=1e-6)


@pytest.mark.parametrize("kw,msg", [({"ratio": 1.5}, "ratio"), ({"p": -1}, "p must"), ({"c": 0}, "c must"),
                                    ({"sigma": 0}, "sigma")])
def test_mean_flow_bad_parameters(kw, msg):
    with pytest.raises(ValueError, match=msg):
        MeanFlowObjective(**kw)


@pytest.mark.parametrize("kw,msg", [({"max_steps": 12}, "power of two"), ({"consistency": 1.0}, "consistency"),
                                    ({"max_steps": 0}, "positive integer")])
def test_shortcut_bad_parameters(kw, msg):
    with pytest.raises(ValueError, match=msg):
        ShortcutObjective(**kw)


def test_kind_checks_name_the_right_sampler_and_model():
    with pytest.raises(ValueError, match="Use the 'mean_flow' sampler"):
        check_sampler("mean_flow", "euler")
    with pytest.raises(ValueError, match="Use the 'shortcut' sampler"):
        check_sampler("shortcut", "dopri5")
    with pytest.raises(ValueError, match="velocity model .* use euler"):
        check_sampler("velocity", "mean_flow")
    check_sampler("velocity", "heun")
    check_sampler("shortcut", "shortcut")
    with pytest.raises(ValueError, match="second_time: true"):
        check_model("mean_flow", False)
    with pytest.raises(ValueError, match="drop second_time"):
        check_model("velocity", True)
    assert sampler_options("shortcut", {"max_steps": 16}) == {"max_steps": 16}
    assert sampler_options("mean_flow") == {} == sampler_options("velocity")


def test_pair_weights_weight_the_loss():
    """A coupling's pair weights (W-CFM) enter as a self-normalised weighted mean."""
    net = _mlp(4)
    path = PATHS.build("linear")
    def g():
        return torch.Generator().manual_seed(11)
    x0, x1 = torch.randn(8, 2, dtype=F64, generator=g()), torch.randn(8, 2, dtype=F64, generator=g())
    obj = ShortcutObjective(consistency=0.5)
    t = torch.rand(8, dtype=F64, generator=g())
    one = torch.zeros(8, dtype=F64)
    one[5] = 1.0
    a = obj.loss(net, Coupled(x0, x1, one), t, path, generator=g())[0]
    b = obj.loss(net, Coupled(x0, x1, 3 * one), t, path, generator=g())[0]
    assert float(a) == pytest.approx(float(b), rel=1e-9)
    with pytest.raises(ValueError, match="weights"):
        obj.loss(net, Coupled(x0, x1, -torch.ones(8, dtype=F64)), t, path, generator=g())
    assert math.isfinite(float(MeanFlowObjective().loss(net, Coupled(x0, x1, one + 0.5), t, path, generator=g())[0]))


# ---------------------------------------------------------------------------- runs: recipe, train, sample, eval
FLOW_MAP_MODEL = {"name": "mlp", "hidden": 32, "depth": 2, "second_time": True, "time_scale": 10.0}


def _flow_map_config(tiny_config, objective, **kw):
    return tiny_config(objective=objective, model=FLOW_MAP_MODEL,
                       sample={"sampler": objective, "nfe": [1, 2, 4], "adaptive": False}, **kw)


@pytest.mark.parametrize("objective", ["mean_flow", "shortcut"])
@pytest.mark.parametrize("coupling", ["independent", "exact_ot", "wcfm", "semidiscrete_ot"])
def test_every_kind_of_coupling_trains_a_flow_map(tiny_config, objective, coupling, one_thread):
    """Batch, weighted and fitted couplings feed the flow-map objectives as they feed velocity regression."""
    from monge.train import Trainer

    params = {
        "name": coupling,
        **({"n_targets": 16, "tol": 0.3, "max_iter": 300} if coupling == "semidiscrete_ot" else {}),
    }
    cfg = _flow_map_config(tiny_config, objective, coupling=params, train__steps=10)
    res = Trainer(cfg).fit()
    assert math.isfinite(res.loss) and [r.nfe for r in res.eval_rows if r.sampler == objective] == [1, 2, 4]
    # a semidiscrete_ot run adds DPM-OT's expressway rows: the flow map jumps from t_s to 1
    assert {r.sampler for r in res.eval_rows} <= {objective, f"expressway@0.5+{objective}"}


def test_recipes_refuse_a_mismatched_model_sampler_or_evaluation(tiny_config):
    from monge.config import ConfigError

    with pytest.raises(ConfigError, match="second_time: true"):
        tiny_config(objective="mean_flow", sample={"sampler": "mean_flow", "adaptive": False})
    with pytest.raises(ConfigError, match="Use the 'mean_flow' sampler"):
        tiny_config(objective="mean_flow", model=FLOW_MAP_MODEL)
    with pytest.raises(ConfigError, match="sample.adaptive: false"):
        tiny_config(objective="shortcut", model=FLOW_MAP_MODEL, sample={"sampler": "shortcut", "adaptive": True})
    with pytest.raises(ConfigError, match="sample.nll: false"):
        tiny_config(objective="shortcut", model=FLOW_MAP_MODEL,
                    sample={"sampler": "shortcut", "adaptive": False, "nll": True})
    with pytest.raises(ConfigError, match="drop second_time"):
        tiny_config(model=FLOW_MAP_MODEL)
    with pytest.raises(ConfigError, match="unknown objective 'meanflow'"):
        tiny_config(objective="meanflow")
    with pytest.raises(ConfigError, match="bad parameters for objective 'mean_flow'"):
        tiny_config(objective={"name": "mean_flow", "ratio_": 0.5}, model=FLOW_MAP_MODEL,
                    sample={"sampler": "mean_flow", "adaptive": False})
    # a config written before objectives existed is a velocity run
    old = tiny_config().to_dict()
    del old["objective"]
    from monge.config import Config

    assert Config.from_dict(old).objective.name == "velocity"


def test_cli_samples_and_evaluates_a_flow_map_run_and_refuses_the_wrong_sampler(tiny_config, tmp_path, one_thread):
    from typer.testing import CliRunner

    from monge.cli import app
    from monge.train import Trainer

    runner = CliRunner()
    cfg = _flow_map_config(tiny_config, "shortcut", train__steps=20)
    Trainer(cfg).fit()
    run = str(cfg.run_dir)
    res = runner.invoke(app, ["sample", run, "-n", "50", "-o", str(tmp_path / "s.npy")])
    assert res.exit_code == 2 and "Use the 'shortcut' sampler" in res.output, res.output
    res = runner.invoke(app, ["sample", run, "--sampler", "shortcut", "--nfe", "3", "-n", "50",
                              "-o", str(tmp_path / "s.npy")])
    assert res.exit_code == 2 and "not a trained step size" in res.output, res.output
    res = runner.invoke(app, ["sample", run, "--sampler", "shortcut", "--nfe", "1", "-n", "50",
                              "-o", str(tmp_path / "s.npy")])
    assert res.exit_code == 0 and "1 NFE" in res.output, res.output
    import numpy as np

    assert np.load(tmp_path / "s.npy").shape == (50, 2)
    res = runner.invoke(app, ["eval", run, "--sampler", "shortcut", "--nfe", "1,2,4", "-n", "100"])
    assert res.exit_code == 0 and "| shortcut | 4 |" in res.output and "dopri5" not in res.output, res.output
    res = runner.invoke(app, ["eval", run, "--nfe", "1", "-n", "100"])
    assert res.exit_code == 2 and "Use the 'shortcut' sampler" in res.output
    res = runner.invoke(app, ["sample", run, "--sampler", "shortcut", "--timesteps", "karras", "-n", "5",
                              "-o", str(tmp_path / "s.npy")])
    assert res.exit_code == 2 and "drop --timesteps" in res.output
    # the reverse: a velocity run refuses the flow-map samplers
    vel = tiny_config(name="vel", train__steps=5)
    Trainer(vel).fit()
    res = runner.invoke(app, ["sample", str(vel.run_dir), "--sampler", "mean_flow", "-n", "5",
                              "-o", str(tmp_path / "v.npy")])
    assert res.exit_code == 2 and "velocity model" in res.output and "use euler" in res.output, res.output


def test_a_flow_map_run_resumes_and_samples_through_the_python_api(tiny_config, one_thread):
    from monge.generate import generate
    from monge.run.load import load_model
    from monge.train import Trainer

    cfg = _flow_map_config(tiny_config, "mean_flow", train__steps=20)
    first = Trainer(cfg)
    first.fit()
    cfg.train.steps = 30
    res = Trainer(cfg).fit(resume=True)
    assert res.step == 30 and res.trained == 10
    model, loaded = load_model(cfg.run_dir)
    assert loaded.objective.name == "mean_flow" and model.second_time
    out = generate(model, loaded, 32, sampler="mean_flow", nfe=2, seed=1)
    assert out.nfe == 2 and out.x.shape == (32, 2) and bool(torch.isfinite(out.x).all())
    with pytest.raises(ValueError, match="Use the 'mean_flow' sampler"):
        generate(model, loaded, 8, sampler="dpm_solver_pp", nfe=2)


def test_demo_adds_flow_map_rows(tmp_path, one_thread):
    from typer.testing import CliRunner

    from monge.cli import app

    runner = CliRunner()
    out = tmp_path / "demo"
    res = runner.invoke(app, ["demo", "-o", str(out), "--steps", "15", "--batch-size", "32", "--no-progress",
                              "--couplings", "exact_ot", "--flow-maps", "mean_flow,shortcut"])
    assert res.exit_code == 0, res.output
    report = (out / "report.md").read_text()
    assert "**mean_flow (exact_ot)**" in report and "| shortcut | 8 |" in report and "| mean_flow | 1 |" in report
    assert "for the flow maps (mean_flow, shortcut) the objective" in report
    assert (out / "samples.png").stat().st_size > 0
    res = runner.invoke(app, ["demo", "-o", str(out), "--flow-maps", "meanflow"])
    assert res.exit_code == 2 and "--flow-maps must list distinct flow-map objectives" in res.output


@pytest.mark.parametrize("objective", ["mean_flow", "shortcut"])
@pytest.mark.parametrize("path", sorted(PATHS.names()))
def test_every_path_gives_a_finite_loss_and_gradient(objective, path):
    """Every path's target is the derivative of its x_t, which is all the flow-map objectives use."""
    net = _mlp(5)
    g = torch.Generator().manual_seed(6)
    x0, x1 = torch.randn(32, 2, dtype=F64, generator=g), torch.randn(32, 2, dtype=F64, generator=g)
    loss = OBJECTIVES.build(objective).loss(
        net, Coupled(x0, x1), torch.rand(32, dtype=F64, generator=g), PATHS.build(path), generator=g
    )[0]
    loss.backward()
    assert math.isfinite(float(loss)) and all(bool(torch.isfinite(p.grad).all()) for p in net.parameters())


_DDP_CHECK = """
import sys, torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from monge.couplings import Coupled
from monge.objectives import MeanFlowObjective
from monge.models import MLP
from monge.paths import PATHS

F64 = torch.float64


def mlp(seed):
    torch.manual_seed(seed)
    return MLP(2, hidden=32, depth=2, second_time=True, time_scale=10.0).to(F64)


dist.init_process_group("gloo", init_method="file://" + sys.argv[1], rank=0, world_size=1)
try:
    plain, wrapped = mlp(7), mlp(7)
    ddp = DistributedDataParallel(wrapped, broadcast_buffers=False)
    path, obj = PATHS.build("linear"), MeanFlowObjective(ratio=0.5)
    g = lambda: torch.Generator().manual_seed(12)
    x0, x1 = torch.randn(16, 2, dtype=F64, generator=g()), torch.randn(16, 2, dtype=F64, generator=g())
    a = obj.loss(plain, Coupled(x0, x1), torch.rand(16), path, generator=g())[0]
    b = obj.loss(ddp, Coupled(x0, x1), torch.rand(16), path, generator=g())[0]
    a.backward()
    b.backward()
    assert abs(float(a) - float(b)) <= 1e-12 * abs(float(a)), (float(a), float(b))
    for p, q in zip(plain.parameters(), wrapped.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-10, atol=1e-12)
finally:
    dist.destroy_process_group()
print("same loss and gradients")
"""


def test_mean_flow_under_ddp_matches_the_plain_network(tmp_path):
    """DDP's forward cannot run inside torch.func.jvp; the objective takes the JVP of the wrapped module
    and u through DDP: same loss and gradients as without DDP (a one-process gloo group, in its own
    process with a time limit, so that a stuck gloo group cannot block the suite)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", _DDP_CHECK, str(tmp_path / "pg")], env=env, capture_output=True,
                         text=True, timeout=180)
    assert res.returncode == 0 and "same loss and gradients" in res.stdout, res.stdout + res.stderr
