import pytest
import torch

from monge.models import MLP, build_model
from monge.models.embeddings import FourierEmbedding, SinusoidalEmbedding


@pytest.mark.parametrize("emb", ["sinusoidal", "fourier"])
def test_mlp_shapes_and_time_dependence(emb):
    torch.manual_seed(0)
    m = MLP(3, hidden=32, depth=2, time_embedding=emb)
    x = torch.randn(5, 3)
    out0, out1 = m(x, torch.zeros(5)), m(x, torch.ones(5))
    assert out0.shape == (5, 3)
    assert not torch.allclose(out0, out1)
    assert torch.allclose(m(x, 0.5), m(x, torch.full((5,), 0.5)))


def test_embeddings_are_bounded_and_distinct():
    t = torch.linspace(0, 1, 11)
    for emb in (SinusoidalEmbedding(16), FourierEmbedding(16)):
        e = emb(t)
        assert e.shape == (11, 16) and e.abs().max() <= 1.0
        assert torch.cdist(e, e).fill_diagonal_(1.0).min() > 1e-3


def test_build_model_and_errors():
    assert isinstance(build_model("mlp", {"hidden": 8}, (2,)), MLP)
    with pytest.raises(ValueError, match="product is dim"):
        MLP(10, shape=(3, 3))
    with pytest.raises(ValueError, match="accepted: .*hidden"):
        build_model("mlp", {"width": 3}, (2,))
    with pytest.raises(ValueError, match="time_embedding"):
        MLP(2, time_embedding="learned")
    with pytest.raises(ValueError, match="shape \\(batch, 2\\)"):
        MLP(2)(torch.randn(4, 3), torch.zeros(4))


def test_image_shaped_data_is_flattened_and_restored():
    m = build_model("mlp", {"hidden": 16, "depth": 1}, (1, 4, 4))
    x = torch.randn(3, 1, 4, 4)
    out = m(x, torch.rand(3))
    assert out.shape == (3, 1, 4, 4)
    flat = MLP(16, hidden=16, depth=1)
    flat.load_state_dict(m.state_dict())
    t = torch.rand(3)
    assert torch.allclose(m(x, t).reshape(3, 16), flat(x.reshape(3, 16), t))
    with pytest.raises(ValueError, match=r"shape \(batch, 1, 4, 4\)"):
        m(torch.randn(3, 16), t)


def test_mlp_class_condition_and_null_class():
    import pytest as _pytest

    from monge.models import MLP as _MLP

    torch.manual_seed(0)
    m = _MLP(2, hidden=16, depth=2, num_classes=3)
    x, t = torch.randn(5, 2), torch.rand(5)
    a = m(x, t, torch.tensor([0, 1, 2, 3, 0]))
    assert a.shape == (5, 2)
    # None is the null class; different labels give different outputs
    torch.testing.assert_close(m(x, t), m(x, t, torch.full((5,), 3)))
    assert not torch.allclose(m(x, t, torch.zeros(5, dtype=torch.long)), m(x, t, torch.ones(5, dtype=torch.long)))
    with _pytest.raises(ValueError, match=r"in \[0, 3\]"):
        m(x, t, torch.tensor([0, 1, 2, 4, 0]))
    with _pytest.raises(ValueError, match="integer"):
        m(x, t, torch.rand(5))
    with _pytest.raises(ValueError, match="not class-conditional"):
        _MLP(2, hidden=8)(x, t, torch.zeros(5, dtype=torch.long))
    with _pytest.raises(ValueError, match="num_classes"):
        _MLP(2, num_classes=0)


def test_mlp_continuous_condition_changes_the_output_and_is_required():
    import pytest
    import torch

    from monge.models import MLP

    torch.manual_seed(0)
    m = MLP(2, hidden=16, depth=2, cond_dim=3)
    x, t = torch.randn(5, 2), torch.rand(5)
    c = torch.randn(5, 3)
    out = m(x, t, c)
    assert out.shape == (5, 2) and not torch.allclose(out, m(x, t, c + 1.0))
    # the condition enters through a linear embedding added to the time embedding
    m2 = MLP(2, hidden=16, depth=2)
    m2.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith("cond_embed")})
    with torch.no_grad():
        m.cond_embed.weight.zero_()
        m.cond_embed.bias.zero_()
    assert torch.allclose(m(x, t, c), m2(x, t))
    with pytest.raises(ValueError, match="cond_dim=3"):
        m(x, t)
    with pytest.raises(ValueError, match=r"\(5, 3\)"):
        m(x, t, torch.randn(5, 2))
    with pytest.raises(ValueError, match="not both"):
        MLP(2, num_classes=3, cond_dim=1)
    with pytest.raises(ValueError, match="cond_dim"):
        MLP(2, cond_dim=0)
    one = MLP(2, hidden=8, depth=1, cond_dim=1)
    assert torch.allclose(one(x, t, torch.ones(5)), one(x, t, torch.ones(5, 1)))  # (B,) for a 1-D condition
    with pytest.raises(ValueError, match="not class-conditional"):
        m2(x, t, c)


def test_an_mlp_state_without_cond_dim_loads_as_before():
    from monge.models import MLP

    old = MLP(2, hidden=8, depth=1).state_dict()
    assert not any(k.startswith("cond_embed") for k in old)
    MLP(2, hidden=8, depth=1, cond_dim=None).load_state_dict(old)  # strict: same keys as before
