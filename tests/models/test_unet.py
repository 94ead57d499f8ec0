"""The compact image U-Net: shapes, conditioning, registry, and that it learns a flow on digits."""

import pytest
import torch

from monge.config import Config, ConfigError
from monge.data.digits import load_digits
from monge.models import MODELS, UNet, build_model

TINY = dict(channels=(8, 16), groups=4, heads=2)


pytestmark = pytest.mark.usefixtures("one_thread")


def _randomise_output(model: UNet, seed: int = 0) -> None:
    """Give the zero-initialised output layers random weights so every path reaches the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if hasattr(mod, "weight") and mod.weight is not None and float(mod.weight.abs().sum()) == 0:
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) * 0.1)


@pytest.mark.parametrize("shape,channels", [((1, 16, 16), (8, 16)), ((3, 8, 8), (8, 16, 16)), ((1, 8, 12), (8, 16))])
def test_output_shape_and_zero_init(shape, channels):
    torch.manual_seed(0)
    model = UNet(shape, channels=channels, groups=4, heads=2)
    x = torch.randn(3, *shape)
    out = model(x, torch.rand(3))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert float(out.detach().abs().max()) == 0.0  # zero-initialised output convolution


@torch.no_grad()
def test_time_dependence_and_scalar_time():
    torch.manual_seed(0)
    model = UNet((1, 8, 8), **TINY)
    _randomise_output(model)
    x = torch.randn(4, 1, 8, 8)
    a, b = model(x, torch.full((4,), 0.1)), model(x, torch.full((4,), 0.9))
    assert float((a - b).abs().max()) > 1e-3
    torch.testing.assert_close(model(x, 0.1), a, rtol=0, atol=1e-6)


@torch.no_grad()
def test_batch_elements_are_independent():
    """GroupNorm is per sample: one image's output does not depend on the rest of the batch."""
    torch.manual_seed(0)
    model = UNet((1, 8, 8), **TINY)
    _randomise_output(model)
    x, t = torch.randn(5, 1, 8, 8), torch.rand(5)
    torch.testing.assert_close(model(x, t)[2:3], model(x[2:3], t[2:3]), rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_class_conditioning_changes_the_output():
    torch.manual_seed(0)
    model = UNet((1, 8, 8), num_classes=3, **TINY)
    _randomise_output(model)
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    y0 = model(x, t, torch.tensor([0, 0]))
    y1 = model(x, t, torch.tensor([1, 1]))
    assert float((y0 - y1).abs().max()) > 1e-3
    # y=None is the null class num_classes
    torch.testing.assert_close(model(x, t), model(x, t, torch.tensor([3, 3])), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"y must be in \[0, 3\]"):
        model(x, t, torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="y must be integer labels"):
        model(x, t, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="no num_classes"):
        UNet((1, 8, 8), **TINY)(x, t, torch.tensor([0, 1]))


def test_parameter_count_is_small_and_matches_a_manual_count():
    model = UNet((1, 16, 16))
    n = model.num_parameters()
    assert 200_000 < n < 1_500_000
    assert n == sum(p.numel() for p in model.parameters())
    # a conv layer 3x3 c->c' has 9 c c' + c' parameters: check the input convolution
    assert sum(p.numel() for p in model.conv_in.parameters()) == 9 * 1 * 32 + 32


def test_bad_arguments_name_the_fix():
    with pytest.raises(ValueError, match="divisible by 4"):
        UNet((1, 10, 10), channels=(8, 16, 16), groups=4)
    with pytest.raises(ValueError, match="divisible by groups=8"):
        UNet((1, 8, 8), channels=(12, 16))
    with pytest.raises(ValueError, match=r"shape must be \(C, H, W\)"):
        UNet((2,))
    with pytest.raises(ValueError, match="attention_levels"):
        UNet((1, 8, 8), attention_levels=[5], **TINY)
    model = UNet((1, 8, 8), **TINY)
    with pytest.raises(ValueError, match=r"expects x of shape \(batch, 1, H, W\)"):
        model(torch.randn(2, 3, 8, 8), torch.rand(2))
    with pytest.raises(ValueError, match="t must be a scalar or of shape"):
        model(torch.randn(2, 1, 8, 8), torch.rand(3))


def test_registry_config_and_meta_device():
    assert "unet" in MODELS
    model = build_model("unet", {"channels": [8, 16], "groups": 4}, (1, 8, 8))
    assert isinstance(model, UNet) and model.shape == (1, 8, 8)
    with pytest.raises(ValueError, match="shape is taken from the data"):
        build_model("unet", {"shape": [1, 8, 8]}, (1, 8, 8))
    raw = {"data": {"source": "gaussian", "target": {"name": "digits", "size": 8}},
           "model": {"name": "unet", "channels": [8, 16], "groups": 4, "heads": 2}}
    Config.from_dict(raw)  # validated on the meta device
    raw["model"]["channels"] = [8, 16, 16, 16, 16]  # 8 is not divisible by 2^4
    with pytest.raises(ConfigError, match="model:.*divisible by 16"):
        Config.from_dict(raw)


def test_a_few_steps_on_digits_lower_the_flow_matching_loss():
    torch.manual_seed(0)
    data = load_digits(8)
    model = UNet((1, 8, 8), channels=(16, 32), groups=8, heads=2)
    g = torch.Generator().manual_seed(1)

    def batch(n: int):
        x1 = data.sample(n, generator=g)
        x0 = torch.randn(x1.shape, generator=g)
        t = torch.rand(n, generator=g)
        xt = t[:, None, None, None] * x1 + (1 - t[:, None, None, None]) * x0
        return xt, t, x1 - x0

    eval_batch = batch(128)

    def loss(b) -> torch.Tensor:
        return (model(b[0], b[1]) - b[2]).pow(2).mean()

    with torch.no_grad():
        before = float(loss(eval_batch))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(30):
        opt.zero_grad()
        loss(batch(32)).backward()
        opt.step()
    with torch.no_grad():
        after = float(loss(eval_batch))
    # zero-initialised model: loss = E|x1 - x0|^2 / d; training must clearly beat predicting zero
    assert after < 0.75 * before, (before, after)
