import pytest
import torch

from monge.objectives import velocity_loss


def test_unweighted_is_mse():
    p, t = torch.randn(8, 3), torch.randn(8, 3)
    assert velocity_loss(p, t).item() == pytest.approx(((p - t) ** 2).mean().item(), rel=1e-6)


def test_weights_are_self_normalised():
    p, t = torch.randn(8, 3), torch.randn(8, 3)
    w = torch.rand(8) + 0.1
    per = ((p - t) ** 2).mean(1)
    expected = (w * per).sum() / w.sum()
    assert velocity_loss(p, t, w).item() == pytest.approx(expected.item(), rel=1e-6)
    assert velocity_loss(p, t, 5 * w).item() == pytest.approx(expected.item(), rel=1e-6)
    one_hot = torch.zeros(8)
    one_hot[3] = 1.0
    assert velocity_loss(p, t, one_hot).item() == pytest.approx(per[3].item(), rel=1e-6)


@pytest.mark.parametrize(
    "w,msg", [(torch.ones(7), "shape"), (-torch.ones(8), "non-negative"), (torch.zeros(8), "zero")]
)
def test_bad_weights(w, msg):
    with pytest.raises(ValueError, match=msg):
        velocity_loss(torch.randn(8, 3), torch.randn(8, 3), w)


def test_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        velocity_loss(torch.randn(8, 3), torch.randn(8, 2))
