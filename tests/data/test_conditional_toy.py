import pytest
import torch

from monge.data.conditional import ConditionalToy
from monge.data.sources import build_source
from monge.data.toy import sample_toy


def test_class_conditions_are_the_moon_of_each_point_and_the_points_are_moons():
    src = build_source({"name": "conditional_toy", "set": "moons", "condition": "class"})
    assert isinstance(src, ConditionalToy) and src.num_classes == 2 and src.cond_dim is None
    x, y = src.sample_with_labels(4000, generator=torch.Generator().manual_seed(0))
    ref = sample_toy("moons", 4000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, ref)  # the same points as the unconditional set
    assert y.dtype == torch.int64 and set(y.tolist()) == {0, 1}
    # the upper moon (class 0) lies above the lower one on average: centres (0, 0.4) against (0, -0.9) x scale
    assert float(x[y == 0, 1].mean()) > 0.5 > -0.5 > float(x[y == 1, 1].mean())
    with pytest.raises(ValueError, match="sample_with_labels"):
        src.sample_with_conditions(4)


def test_mode_classes_of_the_mixtures_match_the_labelled_toy_sets():
    from monge.data.toy import sample_toy_with_labels

    src = ConditionalToy("8gaussians", "class")
    x, y = src.sample_with_labels(64, generator=torch.Generator().manual_seed(1))
    rx, ry = sample_toy_with_labels("8gaussians", 64, generator=torch.Generator().manual_seed(1))
    assert torch.equal(x, rx) and torch.equal(y, ry) and src.modes() is not None


@pytest.mark.parametrize("axis", ["x", "y"])
def test_continuous_conditions_are_the_points_coordinate(axis):
    src = ConditionalToy("moons", axis)
    assert src.cond_dim == 1 and src.labels is None and src.num_classes is None
    x, c = src.sample_with_conditions(100, generator=torch.Generator().manual_seed(2))
    assert c.shape == (100, 1) and c.is_floating_point()
    assert torch.equal(c[:, 0], x[:, "xy".index(axis)])
    with pytest.raises(ValueError, match="sample_with_conditions"):
        src.sample_with_labels(4)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="condition must be one of"):
        ConditionalToy("moons", "angle")
    with pytest.raises(ValueError, match="has no classes"):
        ConditionalToy("circles", "class")
    with pytest.raises(ValueError, match="set must be a toy set"):
        ConditionalToy("gaussian", "x")
    assert ConditionalToy("circles", "x").cond_dim == 1
