"""Class-conditional sampling wrapper: guidance arithmetic, label handling, errors."""

import pytest
import torch
from torch import nn

from monge.models import ClassConditional, UNet


class Toy(nn.Module):
    """v(x, t | y) = x * (1 + t) + e_y (null class K: zero offset), so every term is known."""

    num_classes = 3

    def __init__(self):
        super().__init__()
        self.offsets = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0], [0.0, 0.0]])

    def forward(self, x, t, y):
        t = torch.as_tensor(t).reshape(-1, 1) if torch.as_tensor(t).dim() else torch.as_tensor(t)
        return x * (1 + t) + self.offsets[y]


def test_guidance_mixes_conditional_and_null_predictions():
    m, x, t = Toy(), torch.randn(5, 2), torch.rand(5)
    y = torch.tensor([0, 1, 2, 1, 0])
    base = x * (1 + t[:, None])
    torch.testing.assert_close(ClassConditional(m, y)(x, t), base + m.offsets[y])
    torch.testing.assert_close(ClassConditional(m, y, guidance=0.0)(x, t), base)
    torch.testing.assert_close(ClassConditional(m, y, guidance=3.0)(x, t), base + 3.0 * m.offsets[y])
    torch.testing.assert_close(ClassConditional(m, 2, guidance=2.0)(x, 0.5), x * 1.5 + 2.0 * m.offsets[2])


def test_unet_labels_reach_the_network():
    torch.manual_seed(0)
    net = UNet((1, 8, 8), channels=(8, 16), num_classes=4).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.2)  # the output layer starts at zero; make the labels matter
    x, t = torch.randn(4, 1, 8, 8), torch.rand(4)
    with torch.no_grad():
        torch.testing.assert_close(ClassConditional(net, 2)(x, t), net(x, t, torch.full((4,), 2)))
        a, b = ClassConditional(net, 0)(x, t), ClassConditional(net, 1)(x, t)
        assert (a - b).abs().max() > 1e-4


def test_bad_input():
    with pytest.raises(ValueError, match="not class-conditional"):
        ClassConditional(nn.Linear(2, 2), 0)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        ClassConditional(Toy(), 3)
    with pytest.raises(ValueError, match="integer"):
        ClassConditional(Toy(), torch.tensor([0.5]))
    with pytest.raises(ValueError, match="guidance"):
        ClassConditional(Toy(), 0, guidance=-1.0)
    with pytest.raises(ValueError, match="one label per sample"):
        ClassConditional(Toy(), torch.tensor([0, 1]))(torch.randn(3, 2), 0.5)


def test_continuous_conditional_passes_the_conditions_and_checks_them():
    import pytest

    from monge.models import MLP, ContinuousConditional

    torch.manual_seed(0)
    m = MLP(2, hidden=8, depth=1, cond_dim=2)
    x, t = torch.randn(4, 2), torch.rand(4)
    c = torch.randn(4, 2)
    assert torch.equal(ContinuousConditional(m, c)(x, t), m(x, t, c))
    shared = ContinuousConditional(m, torch.tensor([0.5, -1.0]))
    assert torch.equal(shared(x, t), m(x, t, torch.tensor([[0.5, -1.0]]).expand(4, 2)))
    with pytest.raises(ValueError, match="3 conditions for a batch of 4"):
        ContinuousConditional(m, torch.randn(3, 2))(x, t)
    with pytest.raises(ValueError, match="NaN"):
        ContinuousConditional(m, torch.tensor([float("nan"), 0.0]))
    with pytest.raises(ValueError, match=r"\(2,\) or \(n, 2\)"):
        ContinuousConditional(m, torch.randn(4, 3))
    with pytest.raises(ValueError, match="cond_dim"):
        ContinuousConditional(MLP(2, hidden=8, depth=1), c)
    one = MLP(2, hidden=8, depth=1, cond_dim=1)
    assert torch.equal(ContinuousConditional(one, torch.arange(4.0))(x, t), one(x, t, torch.arange(4.0)[:, None]))
    assert torch.equal(ContinuousConditional(one, 0.5)(x, t), one(x, t, torch.full((4, 1), 0.5)))
