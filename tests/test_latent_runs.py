"""Latent flows end to end: the autoencoder recipe trained and resumed by the trainer, a latent flow
recipe trained on it (cache reused on resume, refused after the autoencoder is retrained), decoded
samples, image-space evaluation beside the autoencoder's floor, and each bad input's message.

One autoencoder and one flow are trained per module (16x16 digits, a tiny autoencoder, a few dozen
steps) under ``ROOT/runs`` with the working directory at ``ROOT``, so that ``data.latent: runs/ae``
is relative and a copy of ``ROOT`` is a copy of both runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from monge.cli import app
from monge.config import Config, ConfigError, load_config

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:semidiscrete_ot. the fit stopped")]

runner = CliRunner()
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
AE = "runs/ae"
AE_ARGS = ["name=ae", "output_dir=runs", "model.channels=[8,16]", "train.batch_size=32",
           "train.checkpoint_every=10"]
FLOW_ARGS = ["name=flow", "output_dir=runs", f"data.latent={AE}", "model.hidden=64", "model.depth=2",
             "train.batch_size=32", "train.checkpoint_every=10", "train.eval_samples=100", "sample.nfe=[1]",
             "sample.adaptive=false", "coupling.max_time=null", "coupling.max_iter=50"]


def _train(recipe: str, *args: str) -> str:
    res = runner.invoke(app, ["train", str(CONFIGS / recipe), *args, "--no-progress"])
    assert res.exit_code == 0, res.output
    return res.output


def _fails(*args: str) -> str:
    res = runner.invoke(app, list(args))
    assert res.exit_code == 2, res.output
    return " ".join(res.output.split())


def _cache_files(run: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(run.glob("latents-*.safetensors"))}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """``ROOT`` with ``runs/ae`` (the autoencoder recipe, trained 20 steps then resumed to 30) and
    ``runs/flow`` (the semi-discrete latent recipe on it, 20 steps then resumed to 30)."""
    root = tmp_path_factory.mktemp("latent-runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MONGE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "classifier-cache"))
        _train("digits-autoencoder.yaml", *AE_ARGS, "train.steps=20")
        _train("digits-autoencoder.yaml", *AE_ARGS, "train.steps=30", "--resume")
        _train("digits-latent-semidiscrete_ot.yaml", *FLOW_ARGS, "train.steps=20")
        first = _cache_files(root / "runs/flow")
        _train("digits-latent-semidiscrete_ot.yaml", *FLOW_ARGS, "train.steps=30", "--resume")
        assert _cache_files(root / "runs/flow") == first, "the resumed flow encoded its data again"
        yield root


@pytest.fixture
def at_root(root, monkeypatch, tmp_path_factory):
    monkeypatch.chdir(root)
    monkeypatch.setenv("MONGE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "classifier-cache"))
    return root


def test_the_autoencoder_run_resumes_and_reports_its_reconstruction(at_root):
    from monge.latent import load_codec
    from monge.run.checkpoint import load_checkpoint

    run = at_root / AE
    _, config, state = load_checkpoint(run / "checkpoint.safetensors")
    assert state["step"] == 30 and state["sampler_kind"] is None and config["objective"]["name"] == "reconstruction"
    codec = load_codec(run)  # the EMA model, its latent scale set on the training digits at the checkpoint
    train = load_config(CONFIGS / "digits-autoencoder.yaml").data.target
    from monge.data.sources import build_source

    z = codec.encode(build_source(train).data)
    torch.testing.assert_close(z.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(dim=(0, 2, 3), unbiased=False), torch.ones(4), atol=1e-4, rtol=0)
    text = (run / "eval.md").read_text()
    assert "Reconstruction" in text and "held-out images of digits" in text
    rows = (run / "reconstruction.csv").read_text().splitlines()
    assert rows[0].startswith("step,mse,frechet") and rows[-1].startswith("30,")


def test_the_latent_flow_trains_on_all_encoded_digits(at_root):
    from monge.couplings.maps import load_run_map
    from monge.run.checkpoint import load_checkpoint

    run = at_root / "runs/flow"
    _, _, state = load_checkpoint(run / "checkpoint.safetensors")
    assert state["step"] == 30 and state["data_shape"] == [4, 4, 4]
    assert state["latent"]["spec"] == AE and state["latent"]["image_shape"] == [1, 16, 16]
    assert len(_cache_files(run)) == 2  # the training digits and the held-out ones
    assert load_run_map(run).n_targets == 1438  # every encoded training digit (80% of 1797)
    text = (run / "eval.md").read_text()
    assert "latent space" in text and "Autoencoder floor" in text and "classifier features" in text
    assert "| coverage | mixture |" in text


def test_sample_writes_decoded_images(at_root, tmp_path):
    out, grid = tmp_path / "s.npy", tmp_path / "g.png"
    res = runner.invoke(app, ["sample", "runs/flow", "-n", "6", "--nfe", "2", "-o", str(out), "--grid", str(grid)])
    assert res.exit_code == 0, res.output
    x = np.load(out)
    assert x.shape == (6, 1, 16, 16) and np.isfinite(x).all() and grid.is_file()
    res = runner.invoke(app, ["sample", "runs/flow", "-n", "4", "--nfe", "1", "--expressway", "0.5", "-o", str(out)])
    assert res.exit_code == 0, res.output  # from the map the run fitted on its latents
    assert np.load(out).shape == (4, 1, 16, 16)
    msg = _fails("fit-ot", "runs/flow")
    assert "semi-discrete map of a latent flow" in msg and "not supported yet" in msg


def test_eval_scores_decoded_images_and_reports_the_floor(at_root):
    res = runner.invoke(app, ["eval", "runs/flow", AE, "-n", "60", "--nfe", "1", "--no-adaptive"])
    assert res.exit_code == 0, res.output
    text = res.output
    assert "measured in the autoencoder's latent space" in text and "classifier features" in text
    assert "| coverage | mixture |" in text
    assert "**Autoencoder floor of the latent flows**" in text and f"| {AE} (of flow) |" in text
    assert "**Reconstruction**" in text and "| ae |" in text


def test_an_autoencoder_run_has_nothing_to_sample_and_restore_refuses_latent_flows(at_root, tmp_path):
    assert "an autoencoder run has nothing to sample; train a flow with data.latent: RUN" in _fails("sample", AE)
    y = tmp_path / "y.npy"
    np.save(y, np.zeros((1, 16, 16), dtype=np.float32))
    msg = _fails("restore", "runs/flow", "--operator", "denoise", "--input", str(y))
    assert "does not support latent flows yet" in msg


def test_bad_latent_runs_fail_before_training(at_root):
    recipe = str(CONFIGS / "digits-latent-independent.yaml")
    args = ["name=bad", "output_dir=runs", "model.hidden=16", "train.steps=2"]
    msg = _fails("train", recipe, *args, "data.latent=runs/nowhere")
    assert "not found" in msg and "monge train configs/digits-autoencoder.yaml" in msg
    msg = _fails("train", recipe, *args, "data.latent=runs/flow")
    assert "is a run of model 'mlp', not an autoencoder" in msg
    msg = _fails("train", recipe, *args, f"data.latent={AE}", "data.target.size=8")
    assert "was trained on data.target" in msg and "'size': 16" in msg and "'size': 8" in msg
    assert "point data.latent at an autoencoder trained on this data" in msg
    msg = _fails("train", recipe, *args, f"data.latent={AE}", "data.target=moons")
    assert "a latent flow encodes a finite set of images" in msg
    assert not (at_root / "runs/bad/checkpoint.safetensors").exists()


def test_retrained_autoencoder_refuses_the_flow_and_its_cache(root, tmp_path, monkeypatch, tmp_path_factory):
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    monkeypatch.chdir(copy)
    monkeypatch.setenv("MONGE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "classifier-cache"))
    _train("digits-autoencoder.yaml", *AE_ARGS, "train.steps=5", "--overwrite")  # other weights
    msg = _fails("train", str(CONFIGS / "digits-latent-semidiscrete_ot.yaml"), *FLOW_ARGS, "train.steps=40", "--resume")
    assert "refit or retrained since" in msg and "--overwrite" in msg
    assert "refit or retrained since" in _fails("sample", "runs/flow", "-n", "2")
    from monge.latent import load_codec
    from monge.run.latent import encode_target

    cfg = load_config(CONFIGS / "digits-latent-semidiscrete_ot.yaml", FLOW_ARGS)
    from monge.data.sources import build_source

    with pytest.raises(ValueError, match="built with another encoder.*--overwrite"):
        encode_target(load_codec(AE), build_source(cfg.data.target), copy / "runs/flow")
    _train("digits-latent-semidiscrete_ot.yaml", *FLOW_ARGS, "train.steps=2", "--overwrite")  # a fresh run encodes


@pytest.mark.parametrize("change, msg", [
    ({"objective": "velocity"}, "model autoencoder trains with objective: reconstruction"),
    ({"model": {"name": "mlp"}}, "objective reconstruction trains an autoencoder, not model 'mlp'"),
    ({"coupling": "exact_ot"}, "set coupling: independent"),
    ({"data": {"target": "digits", "latent": "runs/ae"}}, "an autoencoder run trains on the images themselves"),
])
def test_an_autoencoder_recipe_is_checked(change, msg):
    raw = {"data": {"target": "digits"}, "model": {"name": "autoencoder"}, "objective": "reconstruction",
           **change}
    with pytest.raises(ConfigError, match=msg):
        Config.from_dict(raw, check_data=False)


def test_a_latent_recipe_loads_without_its_autoencoder_and_is_checked():
    cfg = load_config(CONFIGS / "digits-latent-independent.yaml", ["data.latent=runs/not-trained-yet"])
    assert cfg.data.latent == "runs/not-trained-yet" and cfg.to_dict()["data"]["latent"] == cfg.data.latent
    assert "latent" not in Config.from_dict({}).to_dict()["data"]
    with pytest.raises(ConfigError, match="likelihood of the latents"):
        load_config(CONFIGS / "digits-latent-independent.yaml", ["sample.nll=true"])
    with pytest.raises(ConfigError, match="data.latent must name"):
        load_config(CONFIGS / "digits-latent-independent.yaml", ["data.latent=' '"])


def test_a_latent_flows_sample_figure_shows_decoded_images(at_root):
    """The TensorBoard sample figure of a latent flow tiles decoded images, not latents."""
    from monge.run.logs import sample_figure
    from monge.train import Trainer

    args = [a for a in FLOW_ARGS if not a.startswith("coupling.")] + ["name=figure"]
    trainer = Trainer(load_config(CONFIGS / "digits-latent-independent.yaml", args))
    trainer.prepare()
    shown = sample_figure(trainer, n=16).axes[0].images[0].get_array()
    assert shown.shape == (1 + 4 * 17, 1 + 4 * 17)  # a 4 x 4 grid of 16 x 16 grey digits, 1-pixel gaps


def test_a_latent_flow_may_be_a_unet(at_root, tmp_path):
    """``model: {name: unet}`` in a latent recipe is a U-Net over the (C, H, W) latents: it trains,
    loads back and samples decoded images."""
    from monge.models.unet import UNet
    from monge.run.load import load_model

    args = [a for a in FLOW_ARGS if not a.startswith(("model.", "coupling.", "name="))]
    _train("digits-latent-independent.yaml", *args, "name=flow-unet", "model={name: unet, channels: [8, 16]}",
           "train.steps=2")
    model, _ = load_model(at_root / "runs/flow-unet")
    assert isinstance(model, UNet) and model.shape == (4, 4, 4)
    out = tmp_path / "s.npy"
    res = runner.invoke(app, ["sample", "runs/flow-unet", "-n", "3", "--nfe", "2", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert np.load(out).shape == (3, 1, 16, 16)
