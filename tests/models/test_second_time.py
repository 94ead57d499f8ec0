"""The optional second time input of the MLP and the U-Net (flow maps u(x, t, r)): off by default
with the layers of a velocity network, so old checkpoints and recipes load unchanged."""

import pytest
import torch

from monge.models import MLP, UNet, build_model


def test_default_networks_keep_their_state_dict():
    """A default MLP / U-Net has exactly the parameters it had before the option existed."""
    mlp = MLP(2, hidden=16, depth=2)
    assert sorted(mlp.state_dict()) == ["net.0.bias", "net.0.weight", "net.2.bias", "net.2.weight",
                                        "net.4.bias", "net.4.weight"]
    assert mlp.net[0].weight.shape == (16, 2 + 32) and mlp.embed_step is None and not mlp.second_time
    unet = UNet((1, 8, 8), channels=(8, 16), groups=4)
    assert not any(k.startswith("step_embed") for k in unet.state_dict()) and unet.step_embed is None
    # and a second_time network cannot load a velocity network's weights silently
    two = MLP(2, hidden=16, depth=2, second_time=True)
    with pytest.raises(RuntimeError):
        two.load_state_dict(mlp.state_dict())


@pytest.mark.parametrize("make", [
    lambda: MLP(3, hidden=16, depth=2, second_time=True, time_scale=10.0),
    lambda: UNet((1, 8, 8), channels=(8, 16), groups=4, second_time=True, time_scale=10.0),
])
def test_second_time_network_depends_on_the_end_time(make):
    torch.manual_seed(0)
    net = make()
    if isinstance(net, UNet):  # its output layer starts at zero
        torch.nn.init.normal_(net.conv_out.weight)
    shape = (4, 3) if isinstance(net, MLP) else (4, 1, 8, 8)
    x, t = torch.randn(*shape), torch.rand(4) * 0.5
    a, b = net(x, t, r=t + 0.25), net(x, t, r=t + 0.5)
    assert a.shape == x.shape and not torch.allclose(a, b)
    torch.testing.assert_close(net(x, t, r=0.75), net(x, t, r=torch.full((4,), 0.75)))
    with pytest.raises(ValueError, match="needs the end time r"):
        net(x, t)
    with pytest.raises(ValueError, match=r"r must be a scalar or have shape \(4,\)"):
        net(x, t, r=torch.zeros(3))


def test_velocity_networks_refuse_an_end_time():
    with pytest.raises(ValueError, match="second_time=True"):
        MLP(2, hidden=8, depth=1)(torch.randn(2, 2), torch.rand(2), r=torch.rand(2))
    with pytest.raises(ValueError, match="second_time=True"):
        UNet((1, 8, 8), channels=(8, 16), groups=4)(torch.randn(2, 1, 8, 8), torch.rand(2), r=torch.rand(2))


@pytest.mark.parametrize("kw,msg", [({"second_time": 1}, "second_time must be true or false"),
                                    ({"time_scale": 0}, "scale must be a positive number")])
def test_bad_options(kw, msg):
    with pytest.raises(ValueError, match=msg):
        build_model("mlp", {"hidden": 8, **kw}, (2,))
    with pytest.raises(ValueError, match=msg):
        build_model("unet", {"channels": [8, 16], "groups": 4, **kw}, (1, 8, 8))


def test_time_scale_sets_the_embedding_frequencies():
    low, default = MLP(2, time_scale=10.0), MLP(2)
    assert float(low.embed.freqs.max()) == pytest.approx(10.0) and float(default.embed.freqs.max()) == pytest.approx(
        1000.0
    )
