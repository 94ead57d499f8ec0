"""``monge restore`` and monge.restore: posterior samples of a trained run from a measurement."""

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from monge.cli import app
from monge.inverse import AvgPool, Mask
from monge.restore import as_batch, build_operator, measurement_image

runner = CliRunner()


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory, train_tiny_digits):
    return train_tiny_digits(tmp_path_factory.mktemp("restore"))


def _digits(n):
    from monge.data.digits import load_digits

    return load_digits(8).data[:n]


def test_inpaint_writes_samples_and_a_grid(digits_run, tmp_path):
    truth = _digits(2).numpy()
    mask = Mask.half((1, 8, 8), "top").mask.float().numpy()
    np.save(tmp_path / "y.npy", truth * mask)
    np.save(tmp_path / "m.npy", mask)
    np.save(tmp_path / "t.npy", truth)
    out, png = tmp_path / "x.npy", tmp_path / "g.png"
    res = runner.invoke(app, ["restore", str(digits_run), "--operator", "inpaint", "--input", str(tmp_path / "y.npy"),
                              "--mask", str(tmp_path / "m.npy"), "--nfe", "10", "-n", "3", "-o", str(out),
                              "--grid", str(png), "--truth", str(tmp_path / "t.npy")])
    assert res.exit_code == 0, res.output
    x = np.load(out)
    assert x.shape == (2, 3, 1, 8, 8)
    assert np.isfinite(x).all()  # a 5-step model: the samples' quality is the bench's business
    from PIL import Image

    w, h = Image.open(png).size
    assert w > h > 8  # two rows of measurement + 3 samples + truth


def test_one_measurement_gives_n_samples(digits_run, tmp_path):
    y = torch.nn.functional.avg_pool2d(_digits(1), 2)[0].numpy()
    np.save(tmp_path / "y.npy", y)
    res = runner.invoke(
        app,
        [
            "restore",
            str(digits_run),
            "--operator",
            "downsample",
            "--input",
            str(tmp_path / "y.npy"),
            "--sigma",
            "0.05",
            "--solver",
            "pnp_flow",
            "--nfe",
            "5",
            "-n",
            "4",
            "-o",
            str(tmp_path / "x.npy"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert np.load(tmp_path / "x.npy").shape == (4, 1, 8, 8)


@pytest.mark.parametrize("args,msg", [
    (["--operator", "denoise", "--input", "{bad_shape}"], "has shape (5, 5)"),
    (["--operator", "denoise", "--input", "{nan}"], "NaN"),
    (["--operator", "denoise", "--input", "{ok}", "--sigma", "-1"], "sigma must be"),
    (["--operator", "inpaint", "--input", "{ok}"], "needs --mask"),
    (["--operator", "denoise", "--input", "{ok}", "--mask", "{ok}"], "--mask belongs to --operator inpaint"),
    (["--operator", "denoise", "--input", "{ok}", "-o", "{ok}"], "would overwrite an input"),
    (["--operator", "denoise", "--input", "{ok}", "--solver", "nope"], "valid choices"),
    (["--operator", "warp", "--input", "{ok}"], "operator must be one of"),
    (["--operator", "project", "--input", "{ok}"], "needs the number of measurements"),
    (["--operator", "denoise", "--input", "{missing}"], "does not exist"),
    (["--operator", "blur", "--input", "{ok}", "--blur-std", "1e9"], "--blur-std must be in (0, 8]"),
    (["--operator", "blur", "--input", "{ok}", "--blur-std", "inf"], "--blur-std must be a positive finite number"),
    (["--operator", "blur", "--input", "{ok}", "--blur-std", "nan"], "--blur-std must be"),
])
def test_clear_errors(digits_run, tmp_path, args, msg):
    files = {"bad_shape": np.zeros((5, 5)), "nan": np.full((1, 8, 8), np.nan), "ok": np.zeros((1, 8, 8))}
    for k, v in files.items():
        np.save(tmp_path / f"{k}.npy", v)
    args = [a.format(**{k: str(tmp_path / f"{k}.npy") for k in [*files, "missing"]}) for a in args]
    res = runner.invoke(app, ["restore", str(digits_run), *args, "-o", str(tmp_path / "out.npy")]
                        if "-o" not in args else ["restore", str(digits_run), *args])
    assert res.exit_code == 2, res.output
    assert msg in res.output
    assert not (tmp_path / "out.npy").exists()


def test_a_run_of_another_shape_is_refused(recipe, tmp_path):
    """A 2D (moons) run given an image measurement: refused before sampling, naming both shapes."""
    res = runner.invoke(app, ["train", str(recipe), "train.steps=2", "--no-progress"])
    assert res.exit_code == 0, res.output
    np.save(tmp_path / "y.npy", np.zeros((1, 8, 8), dtype=np.float32))
    res = runner.invoke(app, ["restore", str(tmp_path / "runs" / "tiny"), "--operator", "denoise",
                              "--input", str(tmp_path / "y.npy"), "-o", str(tmp_path / "x.npy")])
    assert res.exit_code == 2 and "(2,)" in res.output and "(1, 8, 8)" in res.output
    np.save(tmp_path / "y2.npy", np.array([0.5, -0.2], dtype=np.float32))
    res = runner.invoke(app, ["restore", str(tmp_path / "runs" / "tiny"), "--operator", "denoise", "--input",
                              str(tmp_path / "y2.npy"), "-n", "2", "--nfe", "3", "--grid", str(tmp_path / "g.png")])
    assert res.exit_code == 2 and "image data" in res.output


def test_helpers():
    op = build_operator("downsample", (1, 4, 4), factor=2)
    assert isinstance(op, AvgPool)
    y = torch.arange(4.0).reshape(1, 1, 2, 2)
    assert measurement_image(op, y).shape == (1, 1, 4, 4)
    b, batched = as_batch(torch.zeros(1, 2, 2), (1, 2, 2), "y", "m")
    assert b.shape == (1, 1, 2, 2) and not batched
    b, batched = as_batch(torch.zeros(3, 1, 2, 2), (1, 2, 2), "y", "m")
    assert b.shape == (3, 1, 2, 2) and batched
