"""The objective protocol: the regression loss, the targets of the velocity / noise / data / score
objectives against closed forms and monge.predictions, and the class attributes a run reads."""

import pytest
import torch

from monge.couplings import Coupled
from monge.objectives import (
    OBJECTIVES,
    Objective,
    check_sampler,
    flow_map_objectives,
    is_flow_map,
    prediction_of,
    regression_loss,
    sampler_kind,
)
from monge.paths import PATHS
from monge.predictions import PREDICTIONS, convert

F64 = torch.float64


def test_unweighted_is_mse():
    p, t = torch.randn(8, 3), torch.randn(8, 3)
    assert regression_loss(p, t).item() == pytest.approx(((p - t) ** 2).mean().item(), rel=1e-6)


def test_weights_are_self_normalised():
    p, t = torch.randn(8, 3), torch.randn(8, 3)
    w = torch.rand(8) + 0.1
    per = ((p - t) ** 2).mean(1)
    expected = (w * per).sum() / w.sum()
    assert regression_loss(p, t, w).item() == pytest.approx(expected.item(), rel=1e-6)
    assert regression_loss(p, t, 5 * w).item() == pytest.approx(expected.item(), rel=1e-6)
    one_hot = torch.zeros(8)
    one_hot[3] = 1.0
    assert regression_loss(p, t, one_hot).item() == pytest.approx(per[3].item(), rel=1e-6)


@pytest.mark.parametrize(
    "w,msg", [(torch.ones(7), "shape"), (-torch.ones(8), "non-negative"), (torch.zeros(8), "zero")]
)
def test_bad_weights(w, msg):
    with pytest.raises(ValueError, match=msg):
        regression_loss(torch.randn(8, 3), torch.randn(8, 3), w)


def test_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        regression_loss(torch.randn(8, 3), torch.randn(8, 2))


def _problem(n=64):
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(n, 3, dtype=F64, generator=g), 2 + torch.randn(n, 3, dtype=F64, generator=g)
    return x0, x1, 0.05 + 0.9 * torch.rand(n, dtype=F64, generator=g)


class _Recorder:
    """A network that records its inputs and outputs zeros: the loss is then the mean squared target."""

    def __call__(self, x, t, *labels):
        self.x, self.t, self.labels = x, t, labels
        return torch.zeros_like(x)


@pytest.mark.parametrize("name,closed_form", [
    ("velocity", lambda x0, x1, t: x1 - x0),
    ("noise", lambda x0, x1, t: x0),
    ("data", lambda x0, x1, t: x1),
    ("score", lambda x0, x1, t: -x0 / (1 - t)[:, None]),
])
def test_regression_targets_on_the_linear_path_are_the_closed_forms(name, closed_form):
    x0, x1, t = _problem()
    path, objective = PATHS.build("linear"), OBJECTIVES.build(name)
    ps = path.sample(x0, x1, t)
    assert torch.allclose(objective.target(ps, path), closed_form(x0, x1, t), rtol=1e-10, atol=1e-10)
    net = _Recorder()
    loss, logs = objective.loss(net, Coupled(x0, x1), t, path)
    assert torch.equal(net.x, ps.x_t) and torch.equal(net.t, t) and net.labels == () and logs == {}
    assert float(loss) == pytest.approx(float(closed_form(x0, x1, t).pow(2).mean()), rel=1e-10)


@pytest.mark.parametrize("name", ["noise", "data", "score"])
@pytest.mark.parametrize("path_name", ["vp", "ve", "vp_linear"])
def test_regression_targets_are_the_velocity_target_converted(name, path_name):
    """On any affine path the target is what monge.predictions makes of the velocity target, so a
    model of the objective's prediction is converted back to the same velocity by the samplers."""
    x0, x1, t = _problem()
    path, objective = PATHS.build(path_name), OBJECTIVES.build(name)
    ps = path.sample(x0, x1, t)
    want = convert(ps.target, "velocity", name, ps.x_t, ps.t, path.schedule)
    got = objective.target(ps, path)
    assert torch.allclose(got, want, rtol=1e-9, atol=1e-9)
    back = convert(got, name, "velocity", ps.x_t, ps.t, path.schedule)
    assert torch.allclose(back, ps.target, rtol=1e-6, atol=1e-6)


def test_labels_and_weights_reach_the_network_and_the_mean():
    x0, x1, t = _problem(8)
    w = torch.zeros(8, dtype=F64)
    w[2] = 1.0
    net, labels = _Recorder(), torch.arange(8)
    loss, _ = OBJECTIVES.build("data").loss(net, Coupled(x0, x1, w), t, PATHS.build("linear"), labels=labels)
    assert net.labels == (labels,)
    assert float(loss) == pytest.approx(float(x1[2].pow(2).mean()), rel=1e-10)


def test_every_objective_declares_its_prediction_and_sampler_kind():
    for name in OBJECTIVES.names():
        cls = OBJECTIVES.get(name)
        assert issubclass(cls, Objective)
        assert cls.prediction in (*PREDICTIONS, "average_velocity", "reconstruction")
        assert sampler_kind(name) == cls.sampler_kind
        assert is_flow_map(name) == (cls.sampler_kind not in ("ode", None)) == (cls.prediction == "average_velocity")
        assert (cls.sampler_kind is None) == (cls.prediction == "reconstruction")
    assert {"velocity", "noise", "data", "score"} <= set(OBJECTIVES.names())
    assert flow_map_objectives() == ["mean_flow", "shortcut"]
    assert sampler_kind("mean_flow") == "mean_flow" and sampler_kind("score") == "ode"


def test_reconstruction_is_the_autoencoders_loss_of_the_data_alone():
    from monge.models import AutoEncoder

    torch.manual_seed(0)
    net = AutoEncoder((1, 8, 8), channels=[8], latent_channels=2, groups=4).eval()
    x1 = torch.rand(5, 1, 8, 8) * 2 - 1
    pairs = Coupled(torch.randn(5, 1, 8, 8), x1, None)  # the noise and the times are ignored
    loss, logs = OBJECTIVES.build("reconstruction").loss(net, pairs, torch.rand(5), PATHS.build("linear"))
    assert float(loss.detach()) == pytest.approx(float((net(x1) - x1).pow(2).mean().detach()), rel=1e-6)
    assert logs == {"mse": pytest.approx(float(loss)), "kl": 0.0}
    with pytest.raises(ValueError, match="an autoencoder run has nothing to sample"):
        check_sampler("reconstruction", "euler")


def test_sampler_checks_read_the_sampler_kind():
    check_sampler("noise", "ddim")
    check_sampler("shortcut", "shortcut")
    with pytest.raises(ValueError, match="'mean_flow' sampler"):
        check_sampler("mean_flow", "euler")
    with pytest.raises(ValueError, match="trained with the 'score' objective"):
        check_sampler("score", "shortcut")


def test_prediction_of_a_model_reads_its_attribute_then_the_objective():
    class Net(torch.nn.Module):
        pass

    net = Net()
    assert prediction_of(net, "noise") == "noise"
    net.prediction = "data"
    assert prediction_of(net, "velocity") == "data"
