"""The digits demo in a latent space (``latent=RUN``): a tiny autoencoder run trained here, a tiny
latent demo on it (two couplings, a few steps), rows rebuilt by hand from the saved runs (the
samples are decoded latents; the expressway starts from encoded training digits), the report's
latent lines and floor, and every bad ``RUN`` refused before any work."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from monge.cli import app
from monge.config import load_config
from monge.data.digits import load_digits
from monge.demo_images import DIGITS_MODELS, image_demo_config, run_image_demo, score_images
from monge.demo_latent import demo_digits_target, open_demo_latent
from monge.metrics.classifier import load_or_train_classifier

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning"),
              pytest.mark.filterwarnings("ignore:semidiscrete_ot. the fit stopped")]

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
N = 120


def _autoencoder(root: Path, name: str, steps: int, *overrides: str) -> Path:
    """A tiny run of ``configs/digits-autoencoder.yaml`` (8x8 digits) trained by the Trainer."""
    from monge.train import Trainer

    config = load_config(CONFIGS / "digits-autoencoder.yaml",
                         [f"name={name}", f"output_dir={root}", "data.target.size=8", "train.batch_size=32",
                          "train.checkpoint_every=0", *overrides])
    trainer = Trainer(config)
    trainer.run_dir.mkdir(parents=True)
    trainer.prepare()
    while trainer.step < steps:
        trainer.train_step()
    trainer.save()
    return trainer.run_dir


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("classifier-cache")


@pytest.fixture(scope="module")
def ae(tmp_path_factory):
    """Two levels on 8x8 digits: (4, 2, 2) latents."""
    return _autoencoder(tmp_path_factory.mktemp("ae"), "ae", 30, "model.channels=[8,16]")


@pytest.fixture(scope="module")
def demo(tmp_path_factory, cache, ae):
    out = tmp_path_factory.mktemp("demo-latent")
    return run_image_demo(out, couplings=("independent", "semidiscrete_ot"), size=8, steps=20, batch_size=32, n=N,
                          nfes=(1, 10), expressway_nfes=(10,), classifier_cache=cache, classifier_epochs=2,
                          coupling_params={"semidiscrete_ot": {"n_targets": 32, "tol": 0.3, "max_iter": 200}},
                          expressway_targets=32, progress=False, latent=str(ae),
                          command=f"monge demo --data digits --size 8 --latent {ae}")


def _split_and_classifier(cache):
    train, test = load_digits(8).split(0.2, seed=0)
    return train, test, load_or_train_classifier(train, cache, seed=0, epochs=2)


def test_report_states_the_latent_space_and_its_floor(demo, ae):
    text = demo.report.read_text()
    assert text.startswith(f"# monge demo: couplings on 8x8 digits in the latent space of {ae}")
    assert f"--latent {ae}" in text
    assert "every coupling trains on the (4, 2, 2) latents (16 numbers per 64-pixel digit)" in text
    assert "The 1438 training digits were encoded once" in text
    floor = demo.latent.floor
    assert floor is not None and floor.n == 359 and math.isfinite(floor.frechet) and floor.frechet > 0
    assert "**Autoencoder floor**" in text and f"| {ae} | {floor.mse:.5f} | {floor.frechet:.2f} | 359 |" in text
    assert demo.latent.target.data.shape == (1438, 4, 2, 2)
    assert demo.latent.target.held_out.data.shape == (359, 4, 2, 2)
    for rows in demo.rows.values():
        assert [r.setting for r in rows] == ["euler", "euler", "dopri5 (adaptive)", "expressway t_s=0.5"]
        for r in rows:  # scored on decoded images against the held-out images, novelty included
            assert math.isfinite(r.frechet) and r.frechet >= 0 and math.isfinite(r.w2) and r.w2 > 0
            assert 0 <= r.mixture <= 1 and 0 <= r.coverage <= 1 and 0 <= r.near_copies <= 1
    from PIL import Image

    for path in demo.grids.values():  # decoded 8x8 digits, not 2x2 latents: 16 per row, 2-pixel gaps, scale 8
        assert Image.open(path).size == ((16 * (8 + 2) + 2) * 8, (4 * (8 + 2) + 2) * 8)


def test_floor_is_the_reconstruction_under_the_demo_classifier(demo, cache):
    _, test, clf = _split_and_classifier(cache)
    codec = demo.latent.codec
    with torch.no_grad():
        recon = codec.decode(codec.encode(test.data)).clamp(-1, 1)
    ref = score_images(recon, test.data, clf)
    assert demo.latent.floor.frechet == pytest.approx(ref.frechet, rel=1e-4, abs=1e-4)
    assert demo.latent.floor.mse == pytest.approx(float((codec.decode(codec.encode(test.data)) - test.data)
                                                        .square().mean()), rel=1e-5)


def test_runs_are_latent_flows_and_their_samples_are_decoded(demo, cache, ae):
    # the independent run's Euler-1 row rebuilt by hand: noise of the latent shape, one step, decoded
    from monge.run.checkpoint import load_checkpoint
    from monge.run.load import load_model

    run = demo.report.parent / "independent"
    _, config, _ = load_checkpoint(run / "checkpoint.safetensors")
    assert config["data"]["latent"] == str(ae) and config["data"]["target"] == demo_digits_target(8, 0)
    net, _ = load_model(run / "checkpoint.safetensors")
    _, test, clf = _split_and_classifier(cache)
    z = torch.randn((N, 4, 2, 2), generator=torch.Generator().manual_seed(999))
    with torch.no_grad():
        x = demo.latent.codec.decode(z + net(z, torch.zeros(N)))
    ref = score_images(x, test.data, clf)
    row = demo.rows["independent"][0]
    assert (row.setting, row.nfe) == ("euler", 1)
    assert row.frechet == pytest.approx(ref.frechet, rel=1e-3, abs=1e-3) and row.w2 == pytest.approx(ref.w2, rel=1e-3)


def test_expressway_starts_from_encoded_training_digits(demo, cache):
    from monge.couplings.maps import load_map
    from monge.run.load import load_model

    run = demo.report.parent
    sd = load_map(run / "semidiscrete_ot" / "semidiscrete.safetensors")
    latents = demo.latent.target.data.reshape(1438, -1)
    targets = sd.targets.reshape(sd.targets.shape[0], -1)
    assert targets.shape == (32, 16)  # the map's cells are encoded training digits
    gap = (targets[:, None] - latents[None]).abs().amax(-1).min(1).values  # largest entry gap to the nearest
    assert float(gap.max()) < 1e-6
    # DPM-OT in latent space: the cell's latent noised to t_s = 0.5, Euler on [0.5, 1], decoded
    net, _ = load_model(run / "independent" / "checkpoint.safetensors")
    z = torch.randn((N, 4, 2, 2), generator=torch.Generator().manual_seed(999))
    xi = torch.randn(z.shape, generator=torch.Generator().manual_seed(5))
    x, k = 0.5 * xi + 0.5 * sd(z)[1], 10
    with torch.no_grad():
        for i in range(k):
            x = x + 0.5 / k * net(x, torch.full((N,), 0.5 + 0.5 * i / k))
        images = demo.latent.codec.decode(x)
    _, test, clf = _split_and_classifier(cache)
    ref = score_images(images, test.data, clf)
    row = demo.rows["independent"][-1]
    assert row.setting == "expressway t_s=0.5"
    assert row.frechet == pytest.approx(ref.frechet, rel=1e-3, abs=1e-3) and row.w2 == pytest.approx(ref.w2, rel=1e-3)


def _refused(tmp_path, latent, match: str, **kwargs) -> str:
    out = tmp_path / "never"
    with pytest.raises(ValueError, match=match) as err:
        run_image_demo(out, couplings=("independent",), steps=5, progress=False, latent=str(latent), **kwargs)
    assert not out.exists()  # refused before any work: no folder, no classifier, no training
    return str(err.value)


def test_a_bad_run_is_refused_before_any_work(tmp_path, demo, ae):
    msg = _refused(tmp_path, tmp_path / "missing", "not found", size=8)
    assert "monge train configs/digits-autoencoder.yaml data.target.size=8" in msg
    msg = _refused(tmp_path, demo.report.parent / "independent", "not an autoencoder", size=8)
    assert "--latent" in msg
    # trained on 8x8 digits: not the 16x16 demo's data
    msg = _refused(tmp_path, ae, "was trained on data.target", size=16)
    assert "data.target.size=16 data.target.holdout=0.2, then pass its run to --latent" in msg
    # another seed holds out other digits, which the autoencoder saw
    msg = _refused(tmp_path, ae, "was trained on data.target", size=8, seed=1)
    assert "data.target.seed=1" in msg


def test_unet_needs_latents_it_can_halve(tmp_path, ae):
    def check(run, model):
        config = image_demo_config("independent", tmp_path, size=8, model=model, latent=run)
        return open_demo_latent(run, config, model, DIGITS_MODELS[model])

    assert check(ae, "unet").codec.latent_shape == (4, 2, 2)  # the demo's U-Net halves 2x2 once
    three = _autoencoder(tmp_path, "ae3", 1, "model.channels=[8,8,8]")  # (4, 1, 1): nothing to halve
    assert check(three, "mlp").codec.latent_shape == (4, 1, 1)
    with pytest.raises(ValueError, match=r"--model unet cannot take the latents \(4, 1, 1\).*use --model mlp"):
        check(three, "unet")


def test_cli_latent(tmp_path, ae):
    runner = CliRunner()
    res = runner.invoke(app, ["demo", "--latent", str(ae), "-o", str(tmp_path / "toy")])
    assert res.exit_code == 2 and "--latent applies to the digits demo" in res.output
    res = runner.invoke(app, ["demo", "--data", "digits", "--latent", str(ae), "-o", str(tmp_path / "d")])
    assert res.exit_code == 2 and "was trained on data.target" in " ".join(res.output.split())
    assert not (tmp_path / "d").exists()
