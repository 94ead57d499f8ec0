"""The flow-map samplers: one jump per step, exact for the exact map, and the errors of the wrong kind."""

import pytest
import torch

from monge.models import MLP, ClassConditional
from monge.samplers import (
    SAMPLERS,
    mean_flow,
    nfe_for_steps,
    sample,
    steps_for_nfe,
)

F64 = torch.float64
M = torch.tensor([3.0, -1.0], dtype=F64)
S = 0.5


class ExactMap(torch.nn.Module):
    r"""Exact average velocity of N(0, I) -> N(M, S^2 I) on the linear path (independent pairs):
    :math:`X_t(z) = t M + \sigma_t z`, :math:`u(x, t, r) = (X_r(z) - x)/(r - t)`, :math:`z = (x - tM)/\sigma_t`."""

    second_time = True

    def __init__(self):
        super().__init__()
        self.calls = 0

    @staticmethod
    def sig(t):
        return torch.sqrt((1 - t) ** 2 + t**2 * S**2)

    def forward(self, x, t, y=None, r=None):
        self.calls += 1
        t, r = t[:, None], r[:, None]
        z = (x - t * M) / self.sig(t)
        return (r * M + self.sig(r) * z - x) / (r - t)


@pytest.mark.parametrize("name", ["mean_flow", "shortcut"])
@pytest.mark.parametrize("nfe", [1, 2, 4, 8])
def test_the_exact_map_is_exact_in_any_number_of_steps(name, nfe):
    """A perfectly trained flow map of the linear Gaussian case lands on the exact flow's endpoint
    M + S z in one jump, and in 2, 4, 8."""
    model = ExactMap()
    z = torch.randn(64, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    out = sample(model, z, sampler=name, nfe=nfe)
    torch.testing.assert_close(out.x, M + S * z, rtol=1e-12, atol=1e-12)
    assert out.nfe == model.calls == nfe == nfe_for_steps(name, steps_for_nfe(name, nfe))


def test_one_signature_and_trajectory():
    model = ExactMap()
    z = torch.randn(5, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
    ts = torch.tensor([0.0, 0.5, 0.75, 1.0], dtype=F64)
    out = mean_flow(model, z, None, ts, prediction="velocity", return_trajectory=True, generator=None)
    assert out.trajectory.shape == (4, 5, 2) and torch.equal(out.times, ts) and out.nfe == 3
    for k, t in enumerate(ts):  # every state is the exact flow at its time
        torch.testing.assert_close(out.trajectory[k], t * M + ExactMap.sig(t) * z, rtol=1e-12, atol=1e-12)
    # non-uniform dyadic steps are trained steps of a shortcut model
    torch.testing.assert_close(sample(model, z, sampler="shortcut", timesteps=ts, schedule=None, max_steps=4).x, out.x)
    info = SAMPLERS.info("mean_flow")
    assert info.flow_map and info.evals_per_step == 1 and not info.needs_schedule
    assert "mean_flow" not in SAMPLERS.costs()


def test_shortcut_refuses_untrained_step_sizes():
    z = torch.randn(4, 2, dtype=F64)
    with pytest.raises(ValueError, match=r"step 0.333333 is not a trained step size .*power of two up to 128"):
        sample(ExactMap(), z, sampler="shortcut", nfe=3)
    with pytest.raises(ValueError, match="not a trained step size"):
        sample(ExactMap(), z, sampler="shortcut", nfe=16, max_steps=8)
    sample(ExactMap(), z, sampler="shortcut", nfe=8, max_steps=8)
    sample(ExactMap(), z, sampler="mean_flow", nfe=3)  # continuous times: any step


def test_backward_jumps_and_bad_grids_are_refused():
    z = torch.randn(4, 2, dtype=F64)
    with pytest.raises(ValueError, match="must increase .* r < t is outside its training"):
        mean_flow(ExactMap(), z, None, torch.tensor([1.0, 0.0], dtype=F64))
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        mean_flow(ExactMap(), z, None, torch.tensor([0.0, 1.5], dtype=F64))
    with pytest.raises(ValueError, match="prediction='velocity'"):
        mean_flow(ExactMap(), z, None, torch.tensor([0.0, 1.0], dtype=F64), prediction="data")


def test_the_wrong_kind_of_model_is_refused_naming_the_right_sampler():
    velocity = MLP(2, hidden=8, depth=1)
    flow_map = MLP(2, hidden=8, depth=1, second_time=True)
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match="velocity field .* use euler, heun, rk4, dopri5"):
        sample(velocity, x, sampler="mean_flow", nfe=1)
    with pytest.raises(ValueError, match="velocity field .* use euler"):
        sample(velocity, x, sampler="shortcut", nfe=2)
    for name in ("euler", "dopri5", "ddim"):
        with pytest.raises(ValueError, match="flow map u\\(x, t, r\\) .* 'mean_flow' or 'shortcut' sampler"):
            sample(flow_map, x, sampler=name, **({} if name == "dopri5" else {"nfe": 2}))
    assert sample(flow_map, x, sampler="mean_flow", nfe=2).x.shape == x.shape


def test_class_conditional_flow_maps_pass_the_end_time():
    torch.manual_seed(0)
    net = MLP(2, hidden=8, depth=1, second_time=True, num_classes=3)
    x = torch.randn(6, 2)
    cond = ClassConditional(net, 1, guidance=2.0)
    out = sample(cond, x, sampler="mean_flow", nfe=1).x
    t, r, y = torch.zeros(6), torch.ones(6), torch.ones(6, dtype=torch.long)
    with torch.no_grad():
        a, b = net(x, t, y, r=r), net(x, t, None, r=r)
    torch.testing.assert_close(out, x + b + 2.0 * (a - b))
