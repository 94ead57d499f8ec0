"""The convolutional autoencoder: shapes, bad input, the KL term, the latent scale, and that it learns."""

import pytest
import torch

from monge.data.digits import load_digits
from monge.models import MODELS, AutoEncoder, build_model
from monge.models.autoencoder import kl_divergence, reconstruction_loss

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(channels=(8, 16), latent_channels=3, groups=4)


@pytest.mark.parametrize("shape,channels,kl", [((1, 16, 16), (8, 16), 0.0), ((3, 8, 12), (8,), 0.1),
                                               ((2, 32, 32), (8, 8, 16), 1e-3)])
def test_shapes(shape, channels, kl):
    torch.manual_seed(0)
    model = AutoEncoder(shape, channels=channels, latent_channels=3, groups=4, kl=kl)
    f = 2 ** len(channels)
    assert model.latent_shape() == (3, shape[1] // f, shape[2] // f)
    x = torch.rand(5, *shape) * 2 - 1
    z = model.encode(x)
    assert z.shape == (5, *model.latent_shape())
    assert model.decode(z).shape == x.shape and model(x).shape == x.shape
    mean, logvar = model.moments(x)
    assert (logvar is None) == (kl == 0) and mean.shape == z.shape
    # fully convolutional: a larger image of the same channels encodes too
    big = (shape[0], 2 * shape[1], 2 * shape[2])
    assert model.encode(torch.zeros(2, *big)).shape == (2, *model.latent_shape(big))


def test_registered_and_built_from_the_data_shape():
    assert "autoencoder" in MODELS.names()
    model = build_model("autoencoder", {"channels": [8], "groups": 4}, (1, 8, 8))
    assert isinstance(model, AutoEncoder) and model.shape == (1, 8, 8)
    with pytest.raises(ValueError, match="shape is taken from the data"):
        build_model("autoencoder", {"shape": [1, 8, 8]}, (1, 8, 8))


@pytest.mark.parametrize("kwargs,match", [
    (dict(shape=(1, 10, 10), channels=(8, 16)), "divisible by 4"),
    (dict(shape=(16,), channels=(8,)), r"\(C, H, W\)"),
    (dict(shape=(1, 8, 8), channels=(6,), groups=4), "divisible by groups"),
    (dict(shape=(1, 8, 8), channels=[]), "non-empty list"),
    (dict(shape=(1, 8, 8), latent_channels=0), "latent_channels"),
    (dict(shape=(1, 8, 8), kl=-1.0), "kl"),
])
def test_bad_construction(kwargs, match):
    kwargs.setdefault("groups", 4)
    kwargs.setdefault("channels", (8,))
    with pytest.raises(ValueError, match=match):
        AutoEncoder(**kwargs)


def test_bad_inputs_name_the_shapes():
    model = AutoEncoder((1, 8, 8), **TINY)
    with pytest.raises(ValueError, match=r"\(batch, 1, H, W\).*got \(2, 3, 8, 8\)"):
        model.encode(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="divisible by 4"):
        model(torch.zeros(2, 1, 6, 6))
    with pytest.raises(ValueError, match="latents of shape"):
        model.decode(torch.zeros(2, 4, 2, 2))
    with pytest.raises(ValueError, match="variational"):
        model.encode(torch.zeros(2, 1, 8, 8), sample=True)
    with pytest.raises(ValueError, match="needs an AutoEncoder"):
        reconstruction_loss(torch.nn.Identity(), torch.zeros(2, 1, 8, 8))


def test_kl_term():
    mean, logvar = torch.zeros(4, 3, 2, 2), torch.zeros(4, 3, 2, 2)
    assert float(kl_divergence(mean, logvar)) == 0.0
    assert float(kl_divergence(mean + 0.5, logvar)) == pytest.approx(0.125)  # mu^2 / 2
    assert float(kl_divergence(mean, logvar + 1.0)) == pytest.approx(0.5 * (torch.e - 2.0))

    torch.manual_seed(0)
    model = AutoEncoder((1, 8, 8), **TINY, kl=0.5)
    x = torch.rand(6, 1, 8, 8) * 2 - 1
    loss, logs = reconstruction_loss(model, x, generator=torch.Generator().manual_seed(0))
    assert float(logs["kl"]) > 0
    assert float(loss.detach()) == pytest.approx(float(logs["mse"]) + 0.5 * float(logs["kl"]), rel=1e-6)
    # an encoder that outputs N(0, I) (mean 0, log-variance 0) has no KL
    last = model.encoder[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    _, logs = reconstruction_loss(model, x, generator=torch.Generator().manual_seed(0))
    assert float(logs["kl"]) == 0.0

    plain = AutoEncoder((1, 8, 8), **TINY)
    loss, logs = reconstruction_loss(plain, x)
    assert float(logs["kl"]) == 0.0 and float(loss.detach()) == pytest.approx(float(logs["mse"]))


def test_vae_sampling_is_seeded_and_around_the_mean():
    torch.manual_seed(0)
    model = AutoEncoder((1, 8, 8), **TINY, kl=0.1).eval()
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    a = model.encode(x, torch.Generator().manual_seed(1), sample=True)
    b = model.encode(x, torch.Generator().manual_seed(1), sample=True)
    assert torch.equal(a, b) and not torch.allclose(a, model.encode(x))


def test_latent_scale_calibration_and_running_statistics():
    torch.manual_seed(0)
    model = AutoEncoder((1, 8, 8), **TINY)
    x = torch.rand(64, 1, 8, 8) * 2 - 1
    assert int(model.latent_updates) == 0
    # one training-mode loss on the whole set: the running statistics are that batch's exactly
    reconstruction_loss(model.train(), x)
    assert int(model.latent_updates) == 1
    running = model.latent_shift.clone(), model.latent_scale.clone()
    shift, scale = model.calibrate(x, batch_size=10)
    torch.testing.assert_close(running[0], shift, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(running[1], scale, rtol=1e-4, atol=1e-5)
    assert model.training  # calibrate leaves the mode as it was
    # calibrated latents have zero mean and unit variance per channel; decode undoes the scale
    model.eval()
    z = model.encode(x)
    torch.testing.assert_close(z.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(model.decode(z), model(x), atol=1e-5, rtol=1e-5)
    # evaluation-mode losses leave the statistics alone
    before = model.latent_shift.clone()
    reconstruction_loss(model, x * 0.5)
    assert torch.equal(before, model.latent_shift) and int(model.latent_updates) == 1
    # and they are saved with the weights
    assert {"latent_shift", "latent_scale", "latent_updates"} <= set(model.state_dict())


def test_a_trained_autoencoder_reconstructs_digits():
    torch.manual_seed(0)
    x = load_digits(8).data
    model = AutoEncoder((1, 8, 8), channels=(8,), latent_channels=2, groups=4)  # 64 pixels -> 32 latents
    assert model.latent_shape() == (2, 4, 4)

    def mse() -> float:
        with torch.no_grad():
            return float((model.eval()(x) - x).square().mean())

    untrained = mse()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(200):
        loss, _ = reconstruction_loss(model, x[torch.randint(len(x), (32,), generator=g)], generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    trained = mse()
    mean_image = float((x - x.mean(0)).square().mean())
    assert trained < 0.1 * untrained
    assert trained < 0.25 * mean_image
    # encode -> decode is the same reconstruction, whatever the latent scale
    model.calibrate(x)
    with torch.no_grad():
        torch.testing.assert_close(model.decode(model.encode(x)), model(x), atol=1e-5, rtol=1e-4)


class _Wrapper(torch.nn.Module):
    """Holds the model as ``.module`` and counts ``forward`` calls, as DistributedDataParallel does."""

    def __init__(self, module):
        super().__init__()
        self.module = module
        self.calls = 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        return self.module(*args, **kwargs)


def test_the_loss_runs_through_forward_of_a_wrapper():
    torch.manual_seed(0)
    model = AutoEncoder((1, 8, 8), **TINY, kl=0.1)
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    wrapped = _Wrapper(model)
    loss, logs = reconstruction_loss(wrapped, x, generator=torch.Generator().manual_seed(3))
    direct, _ = reconstruction_loss(model, x, generator=torch.Generator().manual_seed(3))
    assert wrapped.calls == 1 and float(loss.detach()) == pytest.approx(float(direct.detach()))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
