"""Latent spaces: codecs read from runs and diffusers folders, the fingerprinted latent cache, LatentTarget."""

import sys

import pytest
import torch

from monge.config import Component
from monge.couplings.semidiscrete import SemiDiscreteOT
from monge.data.images import ImageDataset
from monge.latent import (
    AutoEncoderCodec,
    DiffusersCodec,
    LatentCodec,
    LatentTarget,
    check_codec_data,
    check_fingerprint,
    decode_latents,
    encode_dataset,
    load_codec,
    tensor_fingerprint,
)
from monge.models import AutoEncoder
from monge.run.checkpoint import save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (1, 8, 8)
PARAMS = {"channels": [8], "latent_channels": 2, "groups": 4}


def _images(n: int = 40, seed: int = 0, shape=SHAPE) -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *shape, generator=g) * 2 - 1
    return ImageDataset(x, torch.arange(n) % 3, "blobs", 3, ["a", "b", "c"])


def _write_run(run, seed: int = 0, model_name: str = "autoencoder", params=None):
    """A run directory as the trainer writes it: ``model.*`` and ``ema.*`` weights, config, state."""
    torch.manual_seed(seed)
    live = AutoEncoder(SHAPE, **PARAMS)
    ema = AutoEncoder(SHAPE, **PARAMS)
    ema.calibrate(_images().data)
    tensors = {f"model.{k}": v for k, v in live.state_dict().items()}
    tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    config = {"name": "ae", "model": {"name": model_name, **(params or PARAMS)},
              "data": {"source": "gaussian", "target": {"name": "digits", "size": 8}}}
    save_checkpoint(run / "checkpoint.safetensors", tensors, config, {"step": 10, "data_shape": list(SHAPE)})
    return live, ema


def test_codec_of_a_run_uses_its_ema_weights(tmp_path):
    live, ema = _write_run(tmp_path)
    codec = load_codec(tmp_path)
    assert isinstance(codec, AutoEncoderCodec) and isinstance(codec, LatentCodec)
    assert codec.image_shape == SHAPE and codec.latent_shape == (2, 4, 4)
    assert codec.run_config["data"]["target"]["name"] == "digits"
    x = _images().data
    z = codec.encode(x)
    torch.testing.assert_close(z, ema.eval().encode(x))
    assert not torch.allclose(z, live.eval().encode(x))
    assert codec.decode(z).shape == x.shape
    torch.testing.assert_close(codec.decode(z), ema(x), atol=1e-5, rtol=1e-5)  # the scale cancels
    assert load_codec(tmp_path / "checkpoint.safetensors", ema=False).fingerprint() != codec.fingerprint()


def test_load_codec_refuses_what_is_not_an_autoencoder(tmp_path):
    with pytest.raises(ValueError, match="not found.*digits-autoencoder"):
        load_codec(tmp_path / "nowhere")
    _write_run(tmp_path, model_name="mlp", params={"hidden": 8})
    with pytest.raises(ValueError, match="model 'mlp', not an autoencoder"):
        load_codec(tmp_path)


def test_mismatched_image_shape_is_one_clear_error_before_encoding(tmp_path, monkeypatch):
    _write_run(tmp_path)
    with pytest.raises(ValueError, match=r"shape \(3, 16, 16\).*takes \(1, 8, 8\).*train an autoencoder"):
        load_codec(tmp_path, image_shape=(3, 16, 16))
    codec = load_codec(tmp_path)
    monkeypatch.setattr(codec, "encode", lambda x: pytest.fail("encoded before checking the shape"))
    for bad in (_images(shape=(1, 16, 16)), _images(shape=(3, 8, 8))):
        with pytest.raises(ValueError, match=r"\(1, 8, 8\)"):
            encode_dataset(codec, bad.data, cache_dir=tmp_path / "cache")
        with pytest.raises(ValueError, match=r"the images of blobs have shape"):
            LatentTarget.from_images(codec, bad, cache_dir=None)
    with pytest.raises(ValueError, match="batch, 2, 4, 4"):
        load_codec(tmp_path).decode(torch.zeros(3, 2, 8, 8))


def test_fingerprint_follows_weights_and_scale():
    torch.manual_seed(0)
    a = AutoEncoderCodec(AutoEncoder(SHAPE, **PARAMS))
    torch.manual_seed(0)
    b = AutoEncoderCodec(AutoEncoder(SHAPE, **PARAMS))
    assert a.fingerprint() == b.fingerprint() and len(a.fingerprint()) == 64
    with torch.no_grad():
        b.module.latent_scale.mul_(2.0)
    assert a.fingerprint() != b.fingerprint()
    x = torch.zeros(2, 3)
    assert tensor_fingerprint(x) == tensor_fingerprint(x.clone()) != tensor_fingerprint(x.double())


def test_the_cache_is_reused_and_refused_after_the_encoder_changes(tmp_path, monkeypatch):
    _write_run(tmp_path / "ae")
    codec = load_codec(tmp_path / "ae")
    images = _images().data
    cache = tmp_path / "cache"
    z = encode_dataset(codec, images, cache_dir=cache, batch_size=16)
    files = list(cache.glob("latents-*.safetensors"))
    assert len(files) == 1 and z.shape == (40, 2, 4, 4)
    torch.testing.assert_close(z, codec.encode(images))

    # a second call reads the cache and does not encode
    with monkeypatch.context() as m:
        m.setattr(type(codec), "encode", lambda self, x: pytest.fail("encoded again despite the cache"))
        assert torch.equal(encode_dataset(codec, images, cache_dir=cache), z)

    # other data gets its own cache; a cache of other data under this data's name is refused
    other = _images(seed=1).data
    encode_dataset(codec, other, cache_dir=cache)
    assert len(list(cache.glob("latents-*.safetensors"))) == 2
    theirs = next(p for p in cache.glob("latents-*.safetensors") if p != files[0])
    files[0].write_bytes(theirs.read_bytes())
    with pytest.raises(ValueError, match="other data.*rebuild=True"):
        encode_dataset(codec, images, cache_dir=cache)
    encode_dataset(codec, images, cache_dir=cache, rebuild=True)

    # the autoencoder is refit: the cache is refused, naming the refit; rebuild=True replaces it
    with torch.no_grad():
        codec.module.decoder[-1].bias.add_(0.1)
    with pytest.raises(ValueError, match="another encoder.*refit or retrained.*rebuild=True"):
        encode_dataset(codec, images, cache_dir=cache)
    encode_dataset(codec, images, cache_dir=cache, rebuild=True)
    assert torch.equal(encode_dataset(codec, images, cache_dir=cache), z)  # the encoder half did not change


def test_latent_target_is_finite_data_for_the_couplings(tmp_path):
    _write_run(tmp_path / "ae")
    codec = load_codec(tmp_path / "ae")
    images = _images()
    target = LatentTarget.from_images(codec, images, cache_dir=tmp_path / "cache")
    assert target.shape == (2, 4, 4) and target.image_shape == SHAPE and len(target) == 40
    assert (
        torch.equal(target.labels, images.labels) and target.num_classes == 3 and target.class_names == ["a", "b", "c"]
    )
    z, y = target.sample_with_labels(7, generator=torch.Generator().manual_seed(0))
    assert z.shape == (7, 2, 4, 4) and y.shape == (7,)
    # the semi-discrete map's targets are all of the encoded training points
    assert torch.equal(SemiDiscreteOT().targets_from(target), target.data)
    assert target.decode(target.data[:5], batch_size=2).shape == (5, *SHAPE)
    with pytest.raises(ValueError, match=r"latents must have shape \(N, 2, 4, 4\)"):
        LatentTarget(codec, torch.zeros(3, 2, 2, 2))


def test_the_autoencoder_must_match_the_flow_run(tmp_path):
    _write_run(tmp_path)
    codec = load_codec(tmp_path)
    for same in ({"name": "digits", "size": 8}, Component("digits", {"size": 8}),
                 {"name": "digits", "params": {"size": 8}}):
        check_codec_data(codec, same)
    with pytest.raises(ValueError, match=r"trained on data.target \{'name': 'digits', 'size': 8\}.*'size': 16"):
        check_codec_data(codec, {"name": "digits", "size": 16})
    with pytest.raises(ValueError, match="data.target"):
        check_codec_data(codec, "moons")
    check_codec_data(AutoEncoderCodec(AutoEncoder(SHAPE, **PARAMS)), "moons")  # no run: nothing to compare

    fingerprint = codec.fingerprint()
    check_fingerprint(codec, fingerprint, "run flow")
    with torch.no_grad():
        codec.module.latent_scale.add_(1.0)
    with pytest.raises(ValueError, match="run flow was trained on the latents.*refit or retrained"):
        check_fingerprint(codec, fingerprint, "run flow")
    z = torch.randn(5, *codec.latent_shape)
    torch.testing.assert_close(decode_latents(codec, z, batch_size=2), codec.decode(z))
    with pytest.raises(ValueError, match="non-empty batch of latents"):
        decode_latents(codec, z[:0])


def _save_diffusers(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    kl = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
        latent_channels=4, norm_num_groups=4, sample_size=16, scaling_factor=0.5, shift_factor=0.1)
    kl.save_pretrained(tmp_path / "kl")
    tiny = diffusers.AutoencoderTiny(
        in_channels=1, out_channels=1, encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
        num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1), latent_channels=2, scaling_factor=2.0)
    tiny.save_pretrained(tmp_path / "tiny")
    return kl.eval(), tiny.eval()


def test_diffusers_autoencoders_load_from_a_local_folder(tmp_path):
    kl, tiny = _save_diffusers(tmp_path)
    codec = load_codec(tmp_path / "kl")
    assert isinstance(codec, DiffusersCodec) and isinstance(codec, LatentCodec)
    assert codec.image_shape == (3, 16, 16) and codec.latent_shape == (4, 8, 8)
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    z = codec.encode(x)
    with torch.no_grad():
        torch.testing.assert_close(z, (kl.encode(x).latent_dist.mean - 0.1) * 0.5)  # diffusers' scaling
        torch.testing.assert_close(codec.decode(z), kl.decode(z / 0.5 + 0.1).sample)

    codec = load_codec(tmp_path / "tiny", image_shape=(1, 16, 16))
    assert codec.latent_shape == (2, 8, 8)
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    z = codec.encode(x)
    assert z.shape == (4, 2, 8, 8) and codec.decode(z).shape == x.shape
    with torch.no_grad():
        torch.testing.assert_close(z, tiny.encode(x).latents * 2.0)
    assert codec.fingerprint() == load_codec(tmp_path / "tiny", image_shape=(1, 16, 16)).fingerprint()
    with pytest.raises(ValueError, match="3 channels but the AutoencoderTiny.*takes 1"):
        load_codec(tmp_path / "tiny", image_shape=(3, 16, 16))
    # encoded and cached like a monge autoencoder
    latents = encode_dataset(codec, x, cache_dir=tmp_path / "cache", batch_size=3)
    torch.testing.assert_close(latents, z)


def test_diffusers_missing_names_the_extra(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text('{"_class_name": "AutoencoderKL"}')
    monkeypatch.setitem(sys.modules, "diffusers", None)
    with pytest.raises(ImportError, match=r"monge\[diffusers\]"):
        load_codec(tmp_path)
    (tmp_path / "config.json").write_text('{"_class_name": "UNet2DModel"}')
    with pytest.raises(ValueError, match="AutoencoderKL, AutoencoderTiny"):
        load_codec(tmp_path)
